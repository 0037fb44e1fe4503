"""Integrations with web frameworks: the operator's pages in a browser (docs/operations.md).

``pages``   what the pages show and do, read from Redis into dataclasses (no framework)
``render``  those dataclasses as HTML, every value escaped (no template engine)
``django``  a Django app: ``"celery_supervise.contrib.django"`` in ``INSTALLED_APPS`` adds a
            "Supervision" section to the admin
``flask``   ``blueprint(supervision, authorize=...)``: the same pages as a Flask blueprint

Nothing here is imported by the rest of the package: the two framework modules import their
framework, the core imports neither.
"""
