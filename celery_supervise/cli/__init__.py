"""``celery -A proj supervise ...``: the operator's view of the supervision tree (SPEC 5).

Installed through Celery's ``celery.commands`` entry point group, so *every* ``celery``
command imports this package: importing it does nothing but define the click commands. The
runtime (Redis, the tick, the tree shell) is reached only inside a subcommand, through
function-level imports.

Nothing here scans Redis: ``status`` reads the supervisors' own keys, the static children
named in the specs, and the capped events stream; per-actor detail is ``actor TYPE KEY``.
Every subcommand takes ``--json``. Errors a user can cause (unknown type or supervisor, bad
key, Redis down, app without ``Supervision(app)``) end with a one-line message on stderr and
a non-zero exit, never a traceback.

The modules, from the bottom up:

``base``       the ``supervise`` group, operator errors and exit codes, the app's Supervision
``queries``    what the reading commands show, as dataclasses read from Redis (no printing)
``render``     those dataclasses as text or ``--json``
``reading``    ``status``, ``actor``, ``dead-letters``
``operating``  ``resume``, ``restart``, ``delete``, ``tick``
``replaying``  ``replay`` (replay before release)
``migrating``  ``migrate`` (state versions)
``diagnosing`` ``doctor`` (is the deployment set up so the guarantees hold?)
``observing``  ``metrics``, ``actors`` (by status), ``reindex`` (the census)
"""

from __future__ import annotations

# Importing the command modules registers their commands on the group.
from . import diagnosing, migrating, observing, operating, reading, replaying  # noqa: F401
from .base import supervise

__all__ = ["supervise"]
