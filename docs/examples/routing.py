"""Giving the supervisor tick a queue of its own (docs/operations.md)."""

from __future__ import annotations

from celery import Celery


def route_tick(app: Celery) -> None:
    # --8<-- [start:tick_queue]
    app.conf.task_routes = {"celery_supervise.tick": {"queue": "supervise"}}
    # --8<-- [end:tick_queue]
