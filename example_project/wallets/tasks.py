"""The Celery tasks of the wallets app, where Celery's ``autodiscover_tasks()`` looks.

The actors live in ``actors.py``, which celery_supervise finds the same way (it imports
``<app>.actors`` of every installed Django app): nothing here imports them."""

from .gateway import gateway

__all__ = ["gateway"]
