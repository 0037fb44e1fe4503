"""Who may read the supervision pages and who may act on them: the ``authorize`` that
``celery_supervise.contrib.flask.blueprint`` calls on every request.

A stand-in for the app's own login: HTTP Basic, with two users whose passwords come from the
environment (a user whose variable is unset cannot log in). ``viewer``
(``EXAMPLE_VIEWER_PASSWORD``) reads the pages; ``operator`` (``EXAMPLE_OPERATOR_PASSWORD``)
reads them and may act (resume, restart, requeue, roll back).
"""

from __future__ import annotations

import os
import secrets

from flask import Request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

__all__ = ["authorize"]

#: user -> (its password's environment variable, may it act?)
USERS = {
    "viewer": ("EXAMPLE_VIEWER_PASSWORD", False),
    "operator": ("EXAMPLE_OPERATOR_PASSWORD", True),
}


# --8<-- [start:authorize]
def authorize(request: Request, action: str | None) -> bool:
    """Reading (``action`` None) needs either user; an action needs ``operator``."""
    auth = request.authorization
    user = USERS.get(auth.username or "") if auth is not None else None
    password = os.environ.get(user[0], "") if user else ""
    given = (auth.password or "") if auth is not None else ""
    if user is None or not password or not secrets.compare_digest(password, given):
        # No (or wrong) login: ask the browser for one.
        raise Unauthorized(www_authenticate=WWWAuthenticate("basic", {"realm": "supervision"}))
    return action is None or user[1]
# --8<-- [end:authorize]
