"""The Django admin's "Supervision" section: add ``"celery_supervise.contrib.django"`` to
``INSTALLED_APPS`` (beside ``django.contrib.admin``) and run ``migrate`` once.

What it shows and does is ``celery_supervise.contrib.pages``; here are only Django's parts:

``apps``     the app (label ``celery_supervise``, shown as "Supervision")
``models``   ``Actor``, an unmanaged model without a table: it exists to carry the
             permission ``celery_supervise.change_actor`` that the actions need
``admin``    its ``ModelAdmin``, whose URLs are the pages

Reading needs an active staff user (the admin's own login); an action needs
``celery_supervise.change_actor`` (or a superuser), a POST and Django's CSRF token. The
pages show the ``Supervision`` of the Celery app named by the Django setting
``SUPERVISION_ADMIN_CELERY_APP`` (a dotted path, e.g. ``"proj.celery.app"``), or of Celery's
current app when it is not set.
"""
