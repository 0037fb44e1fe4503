"""The pages of ``pages`` as HTML fragments: every value read from Redis or given by a
request is escaped here (``html.escape``), so a state, key or crash message shows as text.

A framework passes its URLs (``Urls``) and, for the forms, its CSRF field; the Django admin
puts a fragment into its own layout, the Flask blueprint into ``document``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from ..cli.queries import ActorChild, SupervisorStatus
from ..status import PUBLIC_STATUSES
from .pages import ACTIONS, PAGE_SIZE, ActorList, ActorView, Overview

__all__ = ["STYLE", "Urls", "actor_html", "actor_list_html", "document", "overview_html"]

#: Longest state, message or traceback shown before it is cut (the CLI's --json has all).
SHOWN_CHARS = 4000

#: The few rules the pages need; the Django admin's own stylesheet does the rest there.
STYLE = """
.cs-page table { border-collapse: collapse; margin: 0 0 1.2em; }
.cs-page th, .cs-page td { border: 1px solid #ccc; padding: 3px 8px; text-align: left;
  vertical-align: top; }
.cs-page pre { background: #f6f6f6; padding: 6px; max-height: 24em; overflow: auto;
  white-space: pre-wrap; }
.cs-page form.cs-inline { display: inline; }
.cs-page .cs-status { font-weight: bold; }
.cs-page .cs-quarantined, .cs-page .cs-stopped { color: #b00; }
.cs-page .cs-backoff { color: #a60; }
.cs-page .cs-idle, .cs-page .cs-running { color: #070; }
.cs-page .cs-active { color: #057; }
.cs-page .cs-actions button { margin-right: .4em; }
.cs-notice { padding: 6px 10px; margin: 0 0 1em; border: 1px solid; }
.cs-ok { background: #e8f5e9; border-color: #7b7; }
.cs-refused { background: #fdecea; border-color: #d77; }
"""


class Urls:
    """Where a framework serves each page: ``route(page)`` is the path of one of
    ``overview``, ``actors``, ``actor``, ``act`` (Django's ``reverse``, Flask's ``url_for``);
    the query carries the rest, empty values left out."""

    def __init__(self, route: Callable[[str], str]) -> None:
        self.route = route

    def _url(self, page: str, **query: Any) -> str:
        url = self.route(page)
        shown = {k: v for k, v in query.items() if v not in (None, 0, "")}
        return f"{url}?{urlencode(shown)}" if shown else url

    def overview(self) -> str:
        return self._url("overview")

    def actors(
        self, type_name: str, status: str | None = None, cursor: int = 0, limit: int = 0
    ) -> str:
        return self._url("actors", type=type_name, status=status, cursor=cursor, limit=limit)

    def actor(self, type_name: str, key: str) -> str:
        return self._url("actor", type=type_name, key=key)

    def act(self) -> str:
        return self._url("act")


def e(value: Any) -> str:
    return escape(str(value), quote=True)


def _when(at: float | None) -> str:
    if not at:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _json(value: Any) -> str:
    shown = json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    if len(shown) > SHOWN_CHARS:
        shown = shown[:SHOWN_CHARS] + f"\n... ({len(shown) - SHOWN_CHARS} more characters)"
    return f"<pre>{e(shown)}</pre>"


def _pre(value: Any) -> str:
    """Text (a traceback) as it is, cut at ``SHOWN_CHARS``."""
    shown = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
    if len(shown) > SHOWN_CHARS:
        shown = f"... ({len(shown) - SHOWN_CHARS} characters before)\n" + shown[-SHOWN_CHARS:]
    return f"<pre>{e(shown)}</pre>"


def _status(status: str) -> str:
    return f'<span class="cs-status cs-{e(status)}">{e(status)}</span>'


def _table(headings: list[str], rows: list[list[str]], empty: str) -> str:
    """A table of already escaped cells (or ``empty``, escaped, when there is no row)."""
    if not rows:
        return f"<p>{e(empty)}</p>"
    head = "".join(f"<th>{e(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if any(headings) else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _link(href: str, label: Any) -> str:
    return f'<a href="{e(href)}">{e(label)}</a>'


# -- the overview ---------------------------------------------------------------------------------
def overview_html(ov: Overview, urls: Urls) -> str:
    tree = ov.tree
    tick = "running now" if tree.tick_running else "not running at this moment"
    parts = [
        f"<p>Key prefix <code>{e(tree.key_prefix)}</code>; the supervisor tick runs every "
        f"{e(tree.tick_interval)} s ({e(tick)}). Read at {e(_when(tree.now))}.</p>",
        "<h2>Supervision tree</h2>",
        _table(
            ["supervisor", "status", "strategy", "restarts in period", "flagged actors",
             "children", "actor types"],
            [_supervisor_row(s, urls) for s in tree.supervisors],
            "no supervisor is declared",
        ),
        "<h2>Actor types</h2>",
        _table(
            ["type", "supervisor", "actors", "holding dead letters", "by status"],
            [
                [
                    _link(urls.actors(t.name), t.name),
                    e(t.supervisor),
                    e(t.actors),
                    e(t.dead_letter_holders),
                    " ".join(_link(urls.actors(t.name, s), s) for s in PUBLIC_STATUSES),
                ]
                for t in ov.types
            ],
            "no actor type is registered in this process",
        ),
    ]
    if tree.unplaced_types:
        parts.append(f"<p>Types whose supervisor is not declared here: "
                     f"{e(', '.join(tree.unplaced_types))}</p>")  # fmt: skip
    parts.append("<h2>Recent decisions</h2>")
    parts.append(
        _table(
            ["at", "event", "details"],
            [
                _event_row(ev) for ev in reversed(tree.recent_events)
            ],
            "no decision recorded yet",
        )
    )
    return _page(parts)


def _supervisor_row(s: SupervisorStatus, urls: Urls) -> list[str]:
    children = []
    for child in s.children:
        if isinstance(child, ActorChild):
            type_name, _, key = child.child.partition(":")
            children.append(f"{_link(urls.actor(type_name, key), child.child)} "
                            f"{_status(child.status)}")  # fmt: skip
        else:
            children.append(e(child.child))
    status = _status(s.status) + (f" ({e(s.reason)})" if s.reason else "")
    flagged = e(s.flagged.count)
    if s.flagged.shown:
        flagged += ": " + ", ".join(
            _link(urls.actor(*member.partition(":")[::2]), member) for member in s.flagged.shown
        )
    return [
        "&nbsp;" * 4 * s.depth + e(s.name),
        status,
        e(s.strategy),
        e(f"{s.restarts.in_period} of {s.intensity} in {s.period:g} s"),
        flagged,
        ", ".join(children) or "-",
        ", ".join(_link(urls.actors(t), t) for t in s.actor_types) or "-",
    ]


def _event_row(ev: dict[str, Any]) -> list[str]:
    """A decision or event, newest first: when, what (a decision's action), the rest."""
    what = ev.get("event", "") + (f": {ev['action']}" if ev.get("action") else "")
    rest = {k: v for k, v in ev.items() if k not in ("at", "id", "event", "action")}
    return [e(_when(ev.get("at"))), e(what), e(_compact(rest))]


def _compact(value: Any, limit: int = 160) -> str:
    shown = json.dumps(value, default=str, ensure_ascii=False)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


# -- a list of actors ------------------------------------------------------------------------------
def actor_list_html(al: ActorList, urls: Urls) -> str:
    filters = [_link(urls.actors(al.type), "all")] + [
        _link(urls.actors(al.type, s), s) for s in PUBLIC_STATUSES
    ]
    which = f"in status {al.status}" if al.status else "all"
    rows = [
        [_link(urls.actor(al.type, r.key), r.key), _status(r.status), e(r.version),
         e(r.pending), e(r.dead_letters)]
        for r in al.rows
    ]
    parts = [
        f"<p>{_link(urls.overview(), 'Supervision tree')} &rsaquo; {e(al.type)} ({e(which)})</p>",
        f"<p>Show: {' | '.join(filters)}</p>",
        _table(["key", "status", "version", "queued", "dead letters"], rows,
               f"no actor of {al.type} {which} on this page"),
    ]
    pages = []
    limit = 0 if al.limit == PAGE_SIZE else al.limit  # a page size asked for is kept
    if al.cursor:
        pages.append(_link(urls.actors(al.type, al.status, 0, limit), "first page"))
    if al.next_cursor:
        pages.append(_link(urls.actors(al.type, al.status, al.next_cursor, limit), "next page"))
    if pages:
        parts.append(f"<p>{' | '.join(pages)}</p>")
    return _page(parts)


# -- one actor -------------------------------------------------------------------------------------
def actor_html(
    view: ActorView, urls: Urls, *, csrf_field: str, actions: Collection[str]
) -> str:
    """One actor's page, with a button for each of ``actions`` (those this user may take,
    names of ``ACTIONS``). ``csrf_field`` is the framework's hidden input, already HTML."""
    r = view.report
    target = f"{r.type}:{r.key}"

    def form(action: str, label: str, **fields: Any) -> str:
        hidden = "".join(
            f'<input type="hidden" name="{e(k)}" value="{e(v)}">'
            for k, v in {"type": r.type, "key": r.key, **fields}.items()
        )
        return (f'<form class="cs-inline" method="post" action="{e(urls.act())}">{csrf_field}'
                f'{hidden}<button type="submit" name="action" value="{e(action)}" '
                f'data-action="{e(action)}">{e(label)}</button></form>')  # fmt: skip

    parts = [
        f"<p>{_link(urls.overview(), 'Supervision tree')} &rsaquo; "
        f"{_link(urls.actors(r.type), r.type)} &rsaquo; {e(r.key)}</p>",
    ]
    if not r.exists:
        parts.append(f"<p>{e(target)} has not received a message yet: it does not exist.</p>")
    parts.append(_table(["", ""], [
        ["status", _status(r.status) + (f" ({e(r.halt_reason)})" if r.halt_reason else "")],
        ["supervisor", e(r.supervisor)],
        ["version", f'<span id="cs-version">{e(r.version)}</span>'],
        ["queued", f'<span id="cs-pending">{e(r.pending)}</span>'],
        ["consecutive crashes", e(r.consecutive_crashes)],
        ["dead letters", e(r.dead_letters)],
        ["undeliverable effects", e(r.undeliverable)],
    ], ""))  # fmt: skip
    buttons = [a for a in ("resume", "restart", "restart_reset") if a in actions]
    if buttons and r.exists:
        parts.append('<p class="cs-actions">' + "".join(form(a, ACTIONS[a]) for a in buttons)
                     + "</p>")  # fmt: skip
    elif r.exists and not actions:
        parts.append("<p>You may read this page; the actions need the change permission.</p>")
    parts += ["<h2>State</h2>", _json(r.state)]
    if r.last_crash:
        parts += ["<h2>Last crash</h2>", _crashes_html([r.last_crash], numbered=False)]
    parts.append("<h2>Dead letters</h2>")
    parts.append(_table(
        ["message id", "sent", "dead since", "crashes", "message", ""],
        [[e(d.message_id), e(_when(d.sent_at)), e(_when(d.dead_at)), _crashes_html(d.crashes),
          _json(d.message), form("requeue", ACTIONS["requeue"], message_id=d.message_id)
          if "requeue" in actions else ""]
         for d in view.dead_letters],
        "no dead letter",
    ))  # fmt: skip
    parts.append("<h2>Crashes</h2>")
    parts.append(_crashes_html(view.crashes) if view.crashes else "<p>no crash recorded</p>")
    parts.append("<h2>Timers</h2>")
    parts.append(_table(
        ["name", "due", "every", "message"],
        [[e(t.name or "-"), e(_when(t.due_at)), e(f"{t.every:g} s" if t.every else "once"),
          _json(t.message)] for t in r.timers],
        "no pending timer",
    ))  # fmt: skip
    parts.append("<h2>History</h2>")
    parts.append(_table(
        ["version", "committed", "message id", "state", ""],
        [[e(h.version) + (" (reset)" if h.reset else "")
          + (f" (rollback of {e(h.rollback_of)})" if h.rollback_of else ""),
          e(_when(h.at)), e(h.message_id or "-"), _json(h.state),
          form("rollback", ACTIONS["rollback"], version=h.version)
          if "rollback" in actions and h.version != r.version else ""]
         for h in r.history],
        "no committed version kept",
    ))  # fmt: skip
    if r.undeliverable_effects:
        parts.append("<h2>Undeliverable effects</h2>")
        parts.append(_table(
            ["kind", "target", "error", "at"],
            [[e(u.kind), e(u.target), e(u.error), e(_when(u.at))]
             for u in r.undeliverable_effects], "",
        ))  # fmt: skip
    return _page(parts)


def _crashes_html(crashes: list[dict[str, Any]], *, numbered: bool = True) -> str:
    items = []
    for c in crashes:
        head = (f"{_when(c.get('time'))} {c.get('reason', '')}: {c.get('type', '')}: "
                f"{c.get('message', '')} (message {c.get('message_id') or '-'}, attempt "
                f"{c.get('attempt', '?')}, worker {c.get('worker') or '-'})")  # fmt: skip
        tb = c.get("traceback")
        detail = f"<details><summary>traceback</summary>{_pre(tb)}</details>" if tb else ""
        items.append(f"<li>{e(head)}{detail}</li>")
    tag = "ol" if numbered else "ul"
    return f"<{tag}>{''.join(items)}</{tag}>"


# -- a whole page ----------------------------------------------------------------------------------
def _page(parts: list[str]) -> str:
    return '<div class="cs-page">' + "\n".join(parts) + "</div>"


def document(title: str, body: str, *, notices: Sequence[tuple[bool, str]] = ()) -> str:
    """A standalone HTML page around a fragment (the Flask blueprint's layout); each notice
    is (ok, message)."""
    shown = "".join(
        f'<div class="cs-notice {"cs-ok" if ok else "cs-refused"}" role="status">{e(m)}</div>'
        for ok, m in notices
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>body {{ font-family: sans-serif; margin: 1.5em; }}"
        f"{STYLE}</style></head><body><h1>{e(title)}</h1>{shown}{body}</body></html>"
    )
