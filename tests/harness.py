"""Process helpers for the integration tests: the ones ``celery_supervise.testing`` ships,
plus the project root, which the test apps (``tests.apps.*``) are imported from."""

from __future__ import annotations

import sys
from pathlib import Path

from celery_supervise.testing import CeleryProcess, start_beat, start_worker, wait_until

__all__ = ["PROJECT_ROOT", "CeleryProcess", "start_beat", "start_worker", "wait_until"]

#: The project root (the directory holding ``celery_supervise/`` and ``tests/``).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The test process imports test apps by the same dotted name (``tests.apps.x``) the workers use.
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))
