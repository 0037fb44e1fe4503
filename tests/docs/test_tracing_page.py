"""docs/tracing.md states what the code does: the extra's packages, the span's name, its
attributes and outcomes (the links themselves: tests/redis/test_tracing.py and
tests/workers/test_tracing_workers.py)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from celery_supervise import tracing

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "tracing.md"


def _text() -> str:
    return " ".join(PAGE.read_text().split())


def test_the_otel_extra_installs_what_the_page_says() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[<>=\[]", req)[0] for req in extras["otel"]}
    assert names == {"opentelemetry-api", "opentelemetry-sdk",
                     "opentelemetry-instrumentation-celery"}  # fmt: skip
    assert set(extras["otel"]) <= set(extras["dev"])  # `make install` installs them
    text = _text()
    assert "pip install 'celery_supervise[otel]'" in text
    assert all(f"`{name}`" in text for name in names)


def test_the_attribute_table_is_the_code_s() -> None:
    rows = re.findall(r"^\| `celery_supervise\.([a-z.]+)` \|", PAGE.read_text(), re.M)
    assert tuple(rows) == tracing.ATTRIBUTES
    text = _text()
    outcomes = ", ".join(f"`{o}`" for o in tracing.OUTCOMES[:-1])
    assert f"{outcomes} or `{tracing.OUTCOMES[-1]}`" in text


def test_the_span_name_and_the_header_field_are_the_code_s() -> None:
    text = _text()
    assert f"`{tracing.SPAN_PREFIX} <actor type>`" in text
    from celery_supervise.mailbox import Entry, header_json

    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    header = header_json("m", trace=trace)
    assert Entry.parse(f"1 0 {header}\nnull", where="t").header["trace"] == trace
    assert 'field `"trace"`' in text
