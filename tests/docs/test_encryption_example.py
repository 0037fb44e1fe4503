"""docs/examples/encryption.py, as docs/long-lived.md shows it: both ways of naming the
codec load at ``Supervision(app)`` and seal a payload that opens again."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from celery import Celery
from cryptography.fernet import Fernet

from celery_supervise import Supervision
from celery_supervise.codecs import FernetCodec, Payloads

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_both_ways_of_naming_the_codec_load(monkeypatch: pytest.MonkeyPatch) -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("SUPERVISE_FERNET_KEYS", f"{new},{old}")
    monkeypatch.setenv("PROJ_FERNET_KEYS", f"{new},{old}")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    sys.modules.pop("encryption", None)
    example = importlib.import_module("encryption")
    for named in (example.supervise_codec, "encryption:codec"):
        app = Celery("codec_docs", set_as_current=False)
        app.conf.update(supervise_redis_url="redis://localhost:1/0", supervise_codec=named)
        codec = Supervision(app).settings.codec
        assert isinstance(codec, FernetCodec)
        sealed = Payloads(codec).seal(b'{"balance":1}')
        assert Payloads(FernetCodec([old, new])).open(sealed, what="x") == b'{"balance":1}'
