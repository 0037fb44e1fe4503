"""The Lua scripts, called by SHA, loaded once per client.

Each script lives in ``scripts/<name>.lua`` with a header documenting KEYS and ARGV;
``_prelude.lua`` (time, entry parsing, ownership check) is prepended to each.

redis-py's ``Script`` objects, queued on a pipeline, make the pipeline send ``SCRIPT
EXISTS`` first: a second round trip on every send and every commit. Instead the SHA is
computed here, pipelines queue a plain ``EVALSHA``, and a ``NOSCRIPT`` answer (a Redis
restarted or flushed since) loads every script and runs the call again -- safe, because a
script refused with NOSCRIPT did not run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis

__all__ = ["ACCOUNTED", "SCRIPT_NAMES", "LuaScript", "Scripts", "source"]

SCRIPT_NAMES = (
    "send",
    "ready",
    "claim",
    "commit",
    "crash",
    "release",
    "renew",
    "forfeit",
    "settle",
    "halt",
    "restart",
    "rewake",
    "fire_timers",
    "hint_move",
    "tick_lock",
    "iso_outcome",
    "iso_mark",
    "reply",
    "undeliver",
    "requeue",
    "zrem_unchanged",
    "delete",
    "upgrade",
    "reencrypt",
    "census",
)


#: Scripts wrapped by ``_account.lua``: each takes ``Keyspace.metric_keys`` as its last
#: KEYS and KEYS[1] is the actor's meta.
ACCOUNTED = frozenset({
    "send", "claim", "commit", "crash", "release", "halt", "restart", "rewake",
    "fire_timers", "settle", "iso_outcome", "requeue", "delete", "census",
})  # fmt: skip

#: Scripts that include ``_ready.lua`` (a type's ready set and live runs).
READY_USERS = frozenset({"ready", "send"})

_WRAPPED = """
local census_err = check_census()
if census_err then return census_err end
local census_seen = census_before(KEYS[1])
local function body()
{body}
end
local reply = body()
if type(reply) == 'table' and reply.err then return reply end
account(KEYS[1], census_seen)
return reply
"""


@cache
def source(name: str) -> str:
    folder = resources.files("celery_supervise") / "scripts"
    prelude = (folder / "_prelude.lua").read_text()
    if name in READY_USERS:
        prelude += "\n" + (folder / "_ready.lua").read_text()
    body = (folder / f"{name}.lua").read_text()
    if name in ACCOUNTED:
        census = (folder / "_account.lua").read_text()
        return prelude + "\n" + census + _WRAPPED.replace("{body}", body)
    return prelude + "\n" + body


class LuaScript:
    """One script: ``script(keys=[...], args=[...], client=pipeline_or_None)``."""

    def __init__(self, owner: Scripts, name: str) -> None:
        self.owner = owner
        self.name = name
        self.source = source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        if client is not None:  # a pipeline: NOSCRIPT surfaces at execute (run_pipeline)
            # As a plain command: a cluster's pipeline blocks its ``evalsha`` method, but
            # routes an EVALSHA by its keys' slot like any other command.
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return self.owner.client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self.owner.load_all()
            return self.owner.client.evalsha(self.sha, len(keys), *keys, *args)


def primaries(client: Any) -> list[Any]:
    """A client per primary: the cluster's nodes as it knows them now, or ``client``."""
    if not hasattr(client, "get_primaries"):
        return [client]
    return [client.get_redis_connection(node) for node in client.get_primaries()]


class Scripts:
    """The scripts of one Redis client, as attributes named like the files."""

    send: LuaScript
    ready: LuaScript
    claim: LuaScript
    commit: LuaScript
    crash: LuaScript
    release: LuaScript
    renew: LuaScript
    forfeit: LuaScript
    settle: LuaScript
    halt: LuaScript
    restart: LuaScript
    rewake: LuaScript
    fire_timers: LuaScript
    hint_move: LuaScript
    tick_lock: LuaScript
    iso_outcome: LuaScript
    iso_mark: LuaScript
    reply: LuaScript
    undeliver: LuaScript
    requeue: LuaScript
    zrem_unchanged: LuaScript
    delete: LuaScript
    upgrade: LuaScript
    reencrypt: LuaScript
    census: LuaScript

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.all = [LuaScript(self, name) for name in SCRIPT_NAMES]
        for script in self.all:
            setattr(self, script.name, script)

    def load_all(self) -> None:
        """SCRIPT LOAD every script (one round trip per primary); after a Redis restart or
        flush, or a cluster node's restart or failover (each node has its own cache).

        On a cluster, NOSCRIPT mostly means a replica was promoted: the slot map is read
        again first, so the scripts go to the primaries there are now, not to a dead one
        this client still remembered (which refused every load, for ever)."""
        if hasattr(self.client, "nodes_manager"):
            self.client.nodes_manager.initialize()
        for node in primaries(self.client):
            pipe = node.pipeline(transaction=False)
            for script in self.all:
                pipe.script_load(script.source)
            pipe.execute()
