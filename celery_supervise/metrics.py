"""Prometheus metrics (SPEC 7), read from the census: a custom collector for
``prometheus_client`` and the server behind ``celery -A proj supervise metrics``.

Every number comes from Redis (``census.py``; the supervisors' own hashes for restarts and
quarantines), so any process scraping gets the same ones, and a scrape costs one pipelined
round trip of O(types x statuses x shards) commands, whatever the number of actors.
``prometheus_client`` is the ``metrics`` extra, imported only when a collector is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .census import read_census, read_tick_histogram
from .codec import text
from .registry import all_types
from .runtime import Runtime

__all__ = ["DEFAULT_PORT", "METRIC_NAMES", "SupervisionCollector", "exposition", "server"]

#: The port ``supervise metrics`` listens on unless told otherwise.
DEFAULT_PORT = 9808
#: Every metric family exposed, as Prometheus names it (without _bucket/_sum/_count).
METRIC_NAMES = (
    "celery_supervise_actors",
    "celery_supervise_mailbox_messages",
    "celery_supervise_dead_letters",
    "celery_supervise_steps_total",
    "celery_supervise_crashes_total",
    "celery_supervise_restarts_total",
    "celery_supervise_quarantines_total",
    "celery_supervise_step_seconds",
    "celery_supervise_tick_seconds",
)


def _import_prometheus() -> Any:
    try:
        import prometheus_client.core as core
    except ImportError as exc:  # an optional extra
        from .errors import ConfigurationError

        raise ConfigurationError(
            "Prometheus metrics need prometheus_client: pip install 'celery-supervise[metrics]'"
        ) from exc
    return core


class SupervisionCollector:
    """A ``prometheus_client`` collector: each ``collect()`` reads the census of the actor
    types registered in this process and the supervisors of its tree."""

    def __init__(self, runtime: Runtime, type_names: list[str] | None = None) -> None:
        self.rt = runtime
        self.type_names = type_names
        self.core = _import_prometheus()

    def describe(self) -> list[Any]:
        return []  # no describe-time scrape: registering stays free of Redis

    def collect(self) -> Iterator[Any]:
        core = self.core
        names = self.type_names if self.type_names is not None else sorted(all_types())
        census = read_census(self.rt, names)
        actors = core.GaugeMetricFamily(
            "celery_supervise_actors", "Actors by type and status.", labels=["type", "status"]
        )
        mailbox = core.GaugeMetricFamily(
            "celery_supervise_mailbox_messages", "Messages queued in mailboxes.", labels=["type"]
        )
        dead = core.GaugeMetricFamily(
            "celery_supervise_dead_letters", "Dead letters held.", labels=["type"]
        )
        steps = core.CounterMetricFamily(
            "celery_supervise_steps", "Committed steps.", labels=["type"]
        )
        crashes = core.CounterMetricFamily(
            "celery_supervise_crashes", "Crashes by reason.", labels=["type", "reason"]
        )
        step_seconds = core.HistogramMetricFamily(
            "celery_supervise_step_seconds", "Time a step took, handler to commit.",
            labels=["type"],
        )  # fmt: skip
        for name, c in census.items():
            for status, n in c.actors.items():
                actors.add_metric([name, status], n)
            mailbox.add_metric([name], c.mailbox)
            dead.add_metric([name], c.dead_letters)
            steps.add_metric([name], c.steps)
            for reason, n in sorted(c.crashes.items()):
                crashes.add_metric([name, reason], n)
            step_seconds.add_metric(
                [name], c.step_seconds.cumulative(), sum_value=c.step_seconds.total
            )
        yield from (actors, mailbox, dead, steps, crashes)
        yield from self._supervisors()
        yield step_seconds
        tick = read_tick_histogram(self.rt)
        tick_seconds = core.HistogramMetricFamily(
            "celery_supervise_tick_seconds", "Time a supervisor tick took."
        )
        tick_seconds.add_metric([], tick.cumulative(), sum_value=tick.total)
        yield tick_seconds

    def _supervisors(self) -> Iterator[Any]:
        core = self.core
        names = self.rt.tree.names()
        pipe = self.rt.client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self.rt.keyspace.supervisor(name), "restarts_total", "quarantines_total")
        restarts = core.CounterMetricFamily(
            "celery_supervise_restarts", "Restarts a supervisor made.", labels=["supervisor"]
        )
        quarantines = core.CounterMetricFamily(
            "celery_supervise_quarantines", "Actors quarantined under a supervisor.",
            labels=["supervisor"],
        )  # fmt: skip
        for name, (made, held) in zip(names, pipe.execute(), strict=True):
            restarts.add_metric([name], int(text(made)) if made is not None else 0)
            quarantines.add_metric([name], int(text(held)) if held is not None else 0)
        yield restarts
        yield quarantines


def exposition(runtime: Runtime) -> bytes:
    """One scrape in Prometheus' text format (``supervise metrics --once``)."""
    core = _import_prometheus()
    from prometheus_client import generate_latest

    registry = core.CollectorRegistry(auto_describe=False)
    registry.register(SupervisionCollector(runtime))
    return bytes(generate_latest(registry))


def server(runtime: Runtime, *, host: str, port: int) -> Any:
    """A WSGI server answering ``/metrics`` on ``host:port`` (port 0: any free one; the
    bound port is ``server.server_port``); the caller runs ``serve_forever()``."""
    core = _import_prometheus()
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape is noise; Prometheus records its own scrapes

    registry = core.CollectorRegistry(auto_describe=False)
    registry.register(SupervisionCollector(runtime))
    return make_server(host, port, make_wsgi_app(registry), handler_class=QuietHandler)
