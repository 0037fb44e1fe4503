"""The tick's per-task lines from Celery itself (a worker's "received" and "succeeded",
beat's "Sending due task") are logged at DEBUG, through Celery's own log calls; other
tasks' lines stay at INFO. (tests/workers/test_bounded_mailbox_workers.py checks the logs
of a real worker and beat.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from celery.app import trace

from celery_supervise.supervision import TICK_LOGGERS, TICK_TASK, quiet_tick_logs


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[Keep]:
    quiet_tick_logs()
    quiet_tick_logs()  # installed once, however often Supervision(app) runs
    handler = Keep()
    for name in TICK_LOGGERS:
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    yield handler
    for name in TICK_LOGGERS:
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).setLevel(logging.NOTSET)


def _success(task: str) -> None:
    trace.info(trace.LOG_SUCCESS, {"id": "1", "name": task, "return_value": {}, "runtime": 0.1})


def test_tick_lines_drop_to_debug_and_others_stay(kept: Keep) -> None:
    for name in TICK_LOGGERS:
        filters = logging.getLogger(name).filters
        assert sum(type(f).__name__ == "TickLogsAtDebug" for f in filters) == 1
    _success(TICK_TASK)
    logging.getLogger("celery.beat").info("Scheduler: Sending due task %s (%s)",
                                          TICK_TASK, TICK_TASK)  # fmt: skip
    assert kept.records == []  # at INFO: not shown
    _success("bank.account")
    logging.getLogger("celery.beat").info("Scheduler: Sending due task %s (%s)", "x", "proj.x")
    assert [r.levelname for r in kept.records] == ["INFO", "INFO"]

    kept.records.clear()
    for name in TICK_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)  # `celery worker -l debug`
    _success(TICK_TASK)
    assert [(r.levelname, r.getMessage().split(" ")[0]) for r in kept.records] == [
        ("DEBUG", "Task")
    ]
    assert TICK_TASK in kept.records[0].getMessage()
