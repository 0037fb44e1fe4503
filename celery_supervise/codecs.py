"""Encryption at rest: the ``supervise_codec`` setting and the payloads it seals.

A codec is any object with ``encode(bytes) -> bytes`` and ``decode(bytes) -> bytes``. It is
applied to the JSON of each *payload* -- a message body, a state -- never to the records
around them: ids, sequence numbers, headers, crash records and the JSON structure of history
entries and dead letters stay clear, because the Lua scripts read them and splice payloads
into them. So a sealed payload is itself a JSON value, a string::

    "sealed:<base64 of codec.encode(json)>"

which every script can splice where it splices a payload today. With the default ``"json"``
there is no codec and a payload is stored as its JSON, byte for byte as before.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .errors import CodecError, ConfigurationError

__all__ = ["ENV_KEYS", "SEALED_PREFIX", "Codec", "FernetCodec", "Payloads", "load_codec"]

#: What starts the JSON string of a sealed payload (after its opening quote).
SEALED_PREFIX = "sealed:"
#: The environment variable ``FernetCodec()`` reads its keys from when given none.
ENV_KEYS = "SUPERVISE_FERNET_KEYS"

_SEALED = re.compile(rb'"sealed:([A-Za-z0-9+/]*={0,2})"')


@runtime_checkable
class Codec(Protocol):
    """What ``supervise_codec`` names: bytes in, bytes out, and back."""

    def encode(self, data: bytes) -> bytes: ...

    def decode(self, data: bytes) -> bytes: ...


class FernetCodec:
    """Fernet (AES-128-CBC + HMAC-SHA256) with key rotation, from the ``cryptography``
    package (``pip install celery_supervise[crypto]``).

    ``keys``: newest first, as a sequence or one comma-separated string; None reads them
    from ``$SUPERVISE_FERNET_KEYS``. The first key encrypts; every key decrypts
    (``MultiFernet``), so a rotation is: put the new key first everywhere, run ``celery
    supervise reencrypt TYPE``, then drop the old key. To take the keys from your own
    settings, build an instance in a module and name it: ``supervise_codec =
    "proj.crypto:codec"`` with ``codec = FernetCodec(settings.SUPERVISE_KEYS)``."""

    def __init__(self, keys: str | bytes | Sequence[str | bytes] | None = None) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError:  # pragma: no cover - the extra is installed in the test env
            raise ConfigurationError(
                "FernetCodec needs the cryptography package: pip install celery_supervise[crypto]"
            ) from None
        given = os.environ.get(ENV_KEYS, "") if keys is None else keys
        if isinstance(given, bytes):
            given = given.decode()
        if isinstance(given, str):
            given = [p.strip() for p in given.split(",") if p.strip()]
        if not given:
            raise ConfigurationError(f"FernetCodec: no keys given (and ${ENV_KEYS} is empty)")
        try:
            self._fernet = MultiFernet([Fernet(k) for k in given])
        except (ValueError, TypeError, binascii.Error) as exc:
            raise ConfigurationError(f"FernetCodec: a key is not a Fernet key ({exc})") from None

    def encode(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decode(self, data: bytes) -> bytes:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(data)
        except InvalidToken:
            raise CodecError(
                "no key of FernetCodec decrypts it (a wrong key, or tampered bytes)"
            ) from None


def load_codec(value: Any, where: str) -> Codec | None:
    """The codec ``supervise_codec`` names (None for ``"json"``): a dotted path
    (``pkg.mod.attr`` or ``pkg.mod:attr``) of an instance, or of a class or factory called
    with no arguments; or the object itself. ``ConfigurationError`` naming ``where``."""
    if value == "json":
        return None
    found = _import(value, where) if isinstance(value, str) else value
    if isinstance(found, type) or (callable(found) and not isinstance(found, Codec)):
        try:
            found = found()
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
    if not isinstance(found, Codec):
        raise ConfigurationError(
            f"{where}: {value!r} has no encode(bytes) -> bytes and decode(bytes) -> bytes"
        )
    return found


def _import(path: str, where: str) -> Any:
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise ConfigurationError(f"{where}: {path!r} is neither 'json' nor a dotted path")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{where}: cannot import {path!r} ({exc})") from None


class Payloads:
    """Seals payloads for storage and opens them again, under one codec (None: plain JSON,
    stored as it is)."""

    def __init__(self, codec: Codec | None) -> None:
        self.codec = codec

    @property
    def plain(self) -> bool:
        return self.codec is None

    def seal(self, data: bytes) -> bytes:
        """The stored form of the JSON ``data``."""
        if self.codec is None:
            return data
        sealed = base64.b64encode(self.codec.encode(data))
        return b'"' + SEALED_PREFIX.encode() + sealed + b'"'

    def open(self, stored: bytes | str, *, what: str) -> bytes:
        """The JSON a stored payload holds; ``CodecError`` if this codec cannot open it."""
        raw = stored.encode() if isinstance(stored, str) else bytes(stored)
        found = _SEALED.fullmatch(raw)
        if self.codec is None:
            if found is not None:  # never hand a handler the sealed string as its data
                raise CodecError(f"{what}: sealed by a supervise_codec, and this process has "
                                 f"no supervise_codec (it is \"json\")")  # fmt: skip
            return raw
        if found is None:
            raise CodecError(f"{what}: not sealed by supervise_codec (written under another "
                             f"codec?): {raw[:40]!r}")  # fmt: skip
        try:
            return self.codec.decode(base64.b64decode(found.group(1)))
        except CodecError as exc:
            raise CodecError(f"{what}: {exc}") from None
        except Exception as exc:  # a user's codec may raise anything on a bad input
            raise CodecError(f"{what}: supervise_codec cannot decode it "
                             f"({type(exc).__name__}: {exc})") from None  # fmt: skip

    def open_value(self, value: Any, *, what: str) -> Any:
        """A payload met as a value inside a decoded record (history, dead letter, reply)."""
        if self.codec is None and not (isinstance(value, str) and value.startswith(SEALED_PREFIX)):
            return value
        if not isinstance(value, str):
            raise CodecError(f"{what}: not sealed by supervise_codec: a {type(value).__name__}")
        try:
            return json.loads(self.open(json.dumps(value), what=what))
        except ValueError as exc:
            raise CodecError(f"{what}: decoded, but not JSON ({exc})") from None

    def reseal(self, stored: bytes, *, what: str) -> bytes:
        """``stored`` sealed again under this codec's newest key (a rotation); a payload
        stored as plain JSON (written before ``supervise_codec`` was set) is sealed too."""
        if _SEALED.fullmatch(stored) is not None:
            return self.seal(self.open(stored, what=what))
        try:
            json.loads(stored)
        except ValueError as exc:
            raise CodecError(f"{what}: neither sealed nor JSON ({exc})") from None
        return self.seal(stored)

    def reseal_value(self, value: Any, *, what: str) -> Any:
        """``reseal`` for a payload met as a value inside a decoded record."""
        raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        return json.loads(self.reseal(raw, what=what))
