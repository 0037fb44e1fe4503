"""Strict JSON for states and messages.

``json.dumps`` alone is too forgiving for data that must survive a round trip unchanged:
it turns ``{1: "a"}`` into ``{"1": "a"}``, tuples into lists, accepts NaN, and dies with
``RecursionError`` on deep nesting. The walk below rejects all of that with a message that
says *where* in the value the problem is.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidMessage

__all__ = ["MAX_DEPTH", "decode", "encode", "text", "validate_json_value"]

#: Deepest nesting accepted; deeper values are rejected rather than risking RecursionError.
MAX_DEPTH = 64

_SCALARS = (str, bool, int, type(None))


def text(value: Any) -> str:
    """A Redis reply as str (the clients return bytes; tests and scripts may give str)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def validate_json_value(value: Any, *, what: str = "value") -> None:
    """Raise ``InvalidMessage`` naming the path of the first non-JSON part of ``value``."""
    stack: list[tuple[Any, str, int]] = [(value, what, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidMessage(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, _SCALARS):
            continue
        if isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise InvalidMessage(f"{path}: {item!r} is not valid JSON")
            continue
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise InvalidMessage(
                        f"{path}: dict key {k!r} is a {type(k).__name__}; JSON keys must be str"
                    )
                stack.append((v, f"{path}[{k!r}]", depth + 1))
            continue
        if isinstance(item, list):
            for i, v in enumerate(item):
                stack.append((v, f"{path}[{i}]", depth + 1))
            continue
        raise InvalidMessage(
            f"{path}: {type(item).__name__} is not JSON (use dict, list, str, int, float, "
            f"bool or None)"
        )


def encode(value: Any, *, what: str = "value") -> bytes:
    """Encode ``value`` as compact UTF-8 JSON, rejecting anything that would not round-trip."""
    validate_json_value(value, what=what)
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode()
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise InvalidMessage(
            f"{what}: a string holds {bad!r}, a lone surrogate, which is not valid Unicode "
            f"and cannot be encoded as UTF-8 JSON"
        ) from None
    except ValueError as exc:  # e.g. an int past sys.get_int_max_str_digits()
        raise InvalidMessage(f"{what}: cannot be encoded as JSON ({exc})") from None


def decode(data: bytes | str, *, what: str = "value") -> Any:
    """Decode JSON written by ``encode``; anything else is reported, never guessed at."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"{what}: not valid JSON ({exc})") from None
