"""Checks of user-written configuration, shared by settings, supervisor specs and ``@actor``.

Every check takes ``where``, the place as the user wrote it (``CELERY_SUPERVISE_TICK_INTERVAL``,
``supervise_supervisors['orders']['intensity']``, ``@actor 'shop.cart'``), and an optional
``option`` for a keyword argument of ``where``; it returns the value, narrowed, or raises
``ConfigurationError`` worded the same way everywhere::

    supervise_supervisors['orders']['intensity']: must be an int >= 0, got -1
    @actor 'shop.cart': restart must be one of 'permanent', 'transient', 'temporary', got 'x'

``bool`` is never accepted as a number: ``intensity=True`` is a mistake, not 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from .errors import ConfigurationError

__all__ = [
    "MAX_KEY_LENGTH",
    "check_choice",
    "check_int",
    "check_keys",
    "check_migrations",
    "check_number",
    "check_supervisor_name",
    "invalid",
]

#: Longest actor key (SPEC 1), also for the keys of static children.
MAX_KEY_LENGTH = 200

T = TypeVar("T", bound=str)

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")


def invalid(
    where: str, problem: str, value: object, *, option: str | None = None
) -> ConfigurationError:
    """The error for a bad ``value``: ``"{where}: [{option} ]{problem}, got {value!r}"``."""
    subject = f"{option} " if option else ""
    return ConfigurationError(f"{where}: {subject}{problem}, got {value!r}")


def _bound(number: float) -> str:
    return f"{number:g}"


def check_int(value: object, where: str, *, minimum: int, option: str | None = None) -> int:
    """An int (not bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise invalid(where, f"must be an int >= {minimum}", value, option=option)
    return value


def check_number(
    value: object,
    where: str,
    *,
    at_least: float | None = None,
    above: float | None = None,
    bound: str | None = None,
    option: str | None = None,
) -> float:
    """A finite int or float (not bool), ``>= at_least`` or ``> above``, as a float.

    ``bound`` names the limit in the message when it is not a constant (``"initial (0.5)"``).
    """
    if at_least is not None:
        rule = f">= {bound or _bound(at_least)}"
    elif above is not None:
        rule = f"> {bound or _bound(above)}"
    else:
        rule = ""
    rule = f" {rule}" if rule else ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(where, f"must be a number{rule}", value, option=option)
    number = float(value)
    if not math.isfinite(number):
        raise invalid(where, f"must be a finite number{rule}", value, option=option)
    if (at_least is not None and number < at_least) or (above is not None and number <= above):
        raise invalid(where, f"must be a number{rule}", value, option=option)
    return number


def check_choice(
    value: object, allowed: tuple[T, ...], where: str, *, option: str | None = None
) -> T:
    """One of ``allowed`` (the values of a ``Literal``), returned with that type."""
    for choice in allowed:
        if value == choice and isinstance(value, str):
            return choice
    listed = ", ".join(map(repr, allowed))
    raise invalid(where, f"must be one of {listed}", value, option=option)


def check_keys(raw: Mapping[Any, Any], known: Collection[str], where: str) -> None:
    """No key outside ``known``; the error lists the unknown and the known keys."""
    unknown = [k for k in raw if k not in known]
    if unknown:
        listed = ", ".join(repr(k) for k in sorted(unknown, key=repr))
        raise ConfigurationError(
            f"{where}: unknown key(s) {listed}; known keys: {', '.join(sorted(known))}"
        )


def check_supervisor_name(value: object, where: str) -> str:
    """A supervisor name: letters, digits, ``_``, ``.`` and ``-`` (never ``:``, which marks
    an actor child ``"type.name:key"``)."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise invalid(
            where,
            "a supervisor name must be a non-empty string of letters, digits, '_', '.' or '-'",
            value,
        )
    return value


def check_migrations(value: object, state_version: int, where: str) -> dict[int, Any]:
    """``migrate``: a dict mapping each ``n`` in ``1 .. state_version - 1`` (nothing else)
    to a callable upgrading a version-``n`` state to ``n + 1``."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise invalid(where, "must be a dict of int -> callable", value, option="migrate")
    needed = set(range(1, state_version))
    for n, upgrade in value.items():
        if isinstance(n, bool) or n not in needed:
            raise invalid(
                where, f"keys must be the ints 1..{state_version - 1} (state_version - 1)",
                n, option="migrate",
            )
        if not callable(upgrade):
            raise invalid(where, f"[{n}] must be callable", upgrade, option="migrate")
    missing = sorted(needed - set(value))
    if missing:
        raise invalid(where, "must cover every version below state_version, missing",
                      missing, option="migrate")  # fmt: skip
    return dict(value)
