"""Every Celery task of the wallets app, where Celery's ``autodiscover_tasks()`` looks.

Importing this module registers the actors and the gateway on every Celery app of the
process (like ``@shared_task``)."""

from .actors import LEDGER_KEY, ledger, wallet
from .gateway import gateway

__all__ = ["LEDGER_KEY", "gateway", "ledger", "wallet"]
