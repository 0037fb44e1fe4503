"""Wallets: a reusable app (Django-app style) built on celery_supervise.

It never imports a Celery, Django or Flask app: its actors are declared with ``@actor`` and
its gateway task with ``@shared_task``, so any project that calls ``Supervision(app)`` and
declares the ``payments`` and ``audit`` supervisors in its settings can use it.

- ``wallets.wallet`` (actor, one per wallet id): balance in cents, payments on hold, recent
  payments. Payments go through the gateway as isolated subtasks.
- ``wallets.ledger`` (actor, key ``"main"``): the audit trail every wallet writes to.
- ``wallets.gateway`` (task): a flaky payment provider; see ``wallets.gateway``.
- ``wallets.api``: what a web view needs, framework-neutral.
"""
