"""The Lua scripts, loaded once per client and called by SHA.

Each script lives in ``scripts/<name>.lua`` with a header documenting KEYS and ARGV;
``_prelude.lua`` (time, entry parsing, ownership check) is prepended to each.
redis-py's ``Script`` calls EVALSHA and falls back to EVAL after a script flush.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

__all__ = ["SCRIPT_NAMES", "Scripts", "source"]

SCRIPT_NAMES = (
    "send",
    "claim",
    "commit",
    "crash",
    "release",
    "renew",
    "settle",
    "halt",
    "restart",
    "rewake",
    "fire_timers",
    "hint_clear",
    "tick_lock",
    "iso_outcome",
    "iso_mark",
)


@cache
def source(name: str) -> str:
    folder = resources.files("celery_supervise") / "scripts"
    prelude = (folder / "_prelude.lua").read_text()
    return prelude + "\n" + (folder / f"{name}.lua").read_text()


class Scripts:
    """The registered scripts of one Redis client, as attributes named like the files."""

    send: Script
    claim: Script
    commit: Script
    crash: Script
    release: Script
    renew: Script
    settle: Script
    halt: Script
    restart: Script
    rewake: Script
    fire_timers: Script
    hint_clear: Script
    tick_lock: Script
    iso_outcome: Script
    iso_mark: Script

    def __init__(self, client: redis.Redis) -> None:
        for name in SCRIPT_NAMES:
            setattr(self, name, client.register_script(source(name)))

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)
