"""The Celery app of the documentation's examples: what ``celery -A proj ...`` loads.

Run from this directory (``cd docs/examples``) with a Redis at ``$REDIS_URL``.
``tests/docs/test_docs.py`` imports it against a throwaway Redis, so it stays correct.
"""

from __future__ import annotations

import os

# --8<-- [start:app]
from celery import Celery

from celery_supervise import Supervision

app = Celery("proj", broker=os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
app.conf.update(
    imports=["billing"],  # the modules holding actor types and tasks, as for any task
    supervise_key_prefix="proj",
    supervise_supervisors={
        # --8<-- [start:supervisors]
        "billing": {
            "strategy": "one_for_one",
            "intensity": 10,  # restarts of one child within `period` (per child: quarantine)
            "period": 5,
            "on_limit": "quarantine",  # a child over its limit stops alone
            "max_consecutive_crashes": 3,  # crashes in a row with no commit between
            # Short delays so the examples run in a second; keep the defaults in production.
            "backoff": {"initial": 0.05, "factor": 2.0, "max": 0.2},
        },
        "ledger": {
            "parent": "billing",
            "strategy": "rest_for_one",  # a crash restarts this child and the ones after it
            "on_limit": "escalate",  # OTP: over the limit, fail to the parent
            "intensity": 3,
            "period": 5,
            "children": ["billing.journal:main", "billing.journal:audit"],
        },
        # --8<-- [end:supervisors]
    },
)
supervision = Supervision(app)  # validates the settings, adds the tick to beat_schedule
# --8<-- [end:app]
