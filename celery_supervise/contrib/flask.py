"""The operator's pages as a Flask blueprint::

    from celery_supervise.contrib.flask import blueprint

    def authorize(request, action):  # action: None to read a page, else the action's name
        return current_user.is_admin and (action is None or current_user.is_operator)

    app.register_blueprint(blueprint(supervision, authorize=authorize),
                           url_prefix="/supervision")

What the pages show and do is ``celery_supervise.contrib.pages``; here are only Flask's parts.
``authorize(request, action)`` decides every request: ``action`` is ``None`` for reading and
one of ``pages.ACTIONS`` for an action. It returns a bool (False: 403), or raises an HTTP
error of its own (``flask.abort(401, www_authenticate=...)`` for a login prompt). An action
is a POST that carries the CSRF token kept in Flask's session, so the app needs a
``secret_key``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import cast

from flask import (
    Blueprint,
    Request,
    current_app,
    flash,
    get_flashed_messages,
    redirect,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from ..errors import ConfigurationError, SuperviseError
from ..supervision import Supervision
from . import pages, render

__all__ = ["CSRF_FIELD", "Authorize", "blueprint"]

#: The decision on each request: (request, None) to read, (request, action name) to act.
Authorize = Callable[[Request, str | None], bool]
#: The form field and the session key holding the CSRF token.
CSRF_FIELD = "csrf_token"
_SESSION_KEY = "celery_supervise_csrf"


def blueprint(
    supervision: Supervision, *, authorize: Authorize, name: str = "supervision"
) -> Blueprint:
    """The pages of ``supervision`` (the tree at ``/``, ``/actors``, ``/actor``, ``/act``),
    each request first decided by ``authorize``."""
    if not isinstance(supervision, Supervision):
        raise ConfigurationError(
            f"blueprint() takes the app's Supervision (Supervision(celery_app)), got "
            f"{type(supervision).__name__}"
        )
    if not callable(authorize):
        raise ConfigurationError(
            "blueprint(authorize=...) must be a callable (request, action) -> bool; "
            f"got {authorize!r}"
        )
    bp = Blueprint(name, __name__)
    urls = render.Urls(lambda page: url_for(f"{name}.{page}"))

    def allowed(action: str | None) -> bool:
        return bool(authorize(request, action))

    def page(title: str, body: Callable[[], str]) -> Response:
        if not allowed(None):
            return _message(403, "Not allowed", "You are not allowed to read these pages.")
        try:
            html = body()
        except pages.NotFound as exc:
            return _message(404, "Not found", str(exc))
        except SuperviseError as exc:  # Redis down, corrupt data: say so
            return _message(503, "Not available", str(exc))
        flashed = cast("list[tuple[str, str]]", get_flashed_messages(with_categories=True))
        notices = [(category == "ok", text) for category, text in flashed]
        return Response(render.document(title, html, notices=notices), mimetype="text/html")

    @bp.get("/")
    def overview() -> Response:
        return page("Supervision tree", lambda: render.overview_html(
            pages.overview(supervision), urls))  # fmt: skip

    @bp.get("/actors")
    def actors() -> Response:
        q = request.args
        type_name = q.get("type", "")
        return page(f"Actors of {type_name}", lambda: render.actor_list_html(
            pages.actor_list(
                supervision, type_name, q.get("status") or None,
                cursor=_whole(q.get("cursor", "0"), "cursor"),
                limit=_whole(q.get("limit", str(pages.PAGE_SIZE)), "limit"),
            ), urls))  # fmt: skip

    @bp.get("/actor")
    def actor() -> Response:
        type_name, key = request.args.get("type", ""), request.args.get("key", "")
        field = f'<input type="hidden" name="{CSRF_FIELD}" value="{render.e(_csrf_token())}">'
        actions = [a for a in pages.ACTIONS if allowed(a)]
        return page(f"{type_name}:{key}", lambda: render.actor_html(
            pages.actor_view(supervision, type_name, key), urls,
            csrf_field=field, actions=actions))  # fmt: skip

    @bp.route("/act", methods=["GET", "POST"])
    def act() -> Response:
        if request.method != "POST":
            return _message(405, "Method not allowed", "An action is a POST from the actor's page.")
        form = request.form
        action = form.get("action", "")
        if not _csrf_ok(form.get(CSRF_FIELD, "")):
            return _message(403, "Not allowed", "The form's CSRF token is missing or out "
                                                "of date: reload the actor's page and try "
                                                "again.")  # fmt: skip
        if not allowed(None) or not allowed(action):
            return _message(403, "Not allowed", f"You are not allowed to {action or 'act'} "
                                                "here.")  # fmt: skip
        type_name, key = form.get("type", ""), form.get("key", "")
        try:
            outcome = pages.perform(supervision, type_name, key, action, form)
        except SuperviseError as exc:
            return _message(503, "Not available", str(exc))
        flash(outcome.message, "ok" if outcome.ok else "refused")
        return redirect(urls.actor(type_name, key), code=303)

    return bp



def _csrf_token() -> str:
    """This session's CSRF token, made on its first page."""
    _need_secret_key()
    token = session.get(_SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[_SESSION_KEY] = token
    return token


def _csrf_ok(given: str) -> bool:
    _need_secret_key()
    token = session.get(_SESSION_KEY)
    return isinstance(token, str) and bool(given) and secrets.compare_digest(token, given)


def _need_secret_key() -> None:
    if not current_app.secret_key:
        raise ConfigurationError(
            "celery_supervise's Flask blueprint keeps its CSRF token in the session: set "
            "app.secret_key (or SECRET_KEY in the app's config)"
        )


def _message(status: int, title: str, text: str) -> Response:
    body = f'<div class="cs-page"><p class="cs-refusal">{render.e(text)}</p></div>'
    return Response(render.document(title, body), status=status, mimetype="text/html")


def _whole(raw: str, what: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise pages.NotFound(f"{what} must be a whole number, got {raw!r}") from None
