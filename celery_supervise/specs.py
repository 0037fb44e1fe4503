"""Supervisor specs: parsed and validated once, then assembled into a tree.

Like OTP's ``check_childspec``, every spec is checked and its defaults merged when it is
declared, so the tick never meets a half-valid spec. Everything here is a pure function of its
arguments (no Redis, no Celery, no clock); errors are ``ConfigurationError`` (worded by
``validators``) and name the setting and key as the user wrote them, e.g.
``CELERY_SUPERVISE_SUPERVISORS['billing']['intensity']`` in Django.

A supervisor's parent may be given two ways: its own ``parent`` key, or by being listed in
another supervisor's ``children``. ``SupervisorSpec.parent_explicit`` remembers which, so the
tree can default the parent to the supervisor that lists it and reject a contradiction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from celery_supervise.errors import ConfigurationError
from celery_supervise.validators import (
    MAX_KEY_LENGTH,
    check_choice,
    check_int,
    check_keys,
    check_number,
    check_supervisor_name,
    invalid,
)

__all__ = [
    "RECOVERIES",
    "RESTART_TYPES",
    "ROOT",
    "SPEC_KEYS",
    "BackoffSpec",
    "OnLimit",
    "Recovery",
    "RestartType",
    "Strategy",
    "SupervisorSpec",
    "SupervisorTree",
    "build_tree",
    "is_actor_child",
    "parse_supervisor_spec",
    "split_actor_child",
]

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
OnLimit = Literal["quarantine", "escalate"]
#: An actor type's ``restart`` option (OTP's child restart type).
RestartType = Literal["permanent", "transient", "temporary"]
#: An actor type's ``recovery`` option: the state a restarted actor resumes from.
Recovery = Literal["last_good", "reset"]

RESTART_TYPES: tuple[RestartType, ...] = get_args(RestartType)
RECOVERIES: tuple[Recovery, ...] = get_args(Recovery)

#: The supervisor that always exists and has no parent.
ROOT = "root"
#: Keys of a spec, in ``supervise_supervisors[name]`` or ``supervision.supervisor(name, **spec)``.
SPEC_KEYS = frozenset(
    {
        "parent",
        "strategy",
        "intensity",
        "period",
        "on_limit",
        "children",
        "max_consecutive_crashes",
        "backoff",
    }
)
#: Keys of the ``backoff`` dict; a partial dict is merged onto ``BackoffSpec()``.
BACKOFF_KEYS = frozenset({"initial", "factor", "max", "reset_after"})

_STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
_ON_LIMITS: tuple[OnLimit, ...] = get_args(OnLimit)


@dataclass(frozen=True)
class BackoffSpec:
    """Delay before restarting a crashed actor: ``initial``, times ``factor`` per crash, capped.

    The level goes back to the start once ``reset_after`` seconds pass without a crash.
    """

    initial: float = 0.5
    factor: float = 2.0
    max: float = 60.0
    reset_after: float = 300.0


@dataclass(frozen=True)
class SupervisorSpec:
    """One validated supervisor node; build it with ``parse_supervisor_spec``.

    ``children`` are the static children in order: actors as ``"type.name:key"`` and child
    supervisors by name. ``parent_explicit`` is False when ``parent`` is only the default
    (``"root"``): the tree may then replace it by the supervisor that lists this one.
    """

    name: str
    parent: str | None
    strategy: Strategy = "one_for_one"
    intensity: int = 3
    period: float = 5.0
    on_limit: OnLimit = "quarantine"
    children: tuple[str, ...] = ()
    max_consecutive_crashes: int = 5
    backoff: BackoffSpec = field(default_factory=BackoffSpec)
    parent_explicit: bool = False


def is_actor_child(child: str) -> bool:
    """True for an actor child (``"type.name:key"``); supervisor names never contain ``:``."""
    return ":" in child


def split_actor_child(child: str) -> tuple[str, str]:
    """Split ``"type.name:key"`` into ``(type, key)`` on the first ``:`` (keys may hold ``:``)."""
    actor_type, sep, key = child.partition(":")
    if not sep:
        raise ConfigurationError(f"{child!r} is not an actor child ('type.name:key')")
    return actor_type, key


def _parse_backoff(raw: object, where: str) -> BackoffSpec:
    if not isinstance(raw, Mapping):
        raise invalid(where, "must be a dict with keys " + ", ".join(sorted(BACKOFF_KEYS)), raw)
    check_keys(raw, BACKOFF_KEYS, where)
    merged = {**vars(BackoffSpec()), **raw}
    initial = check_number(merged["initial"], f"{where}['initial']", at_least=0)
    factor = check_number(merged["factor"], f"{where}['factor']", at_least=1)
    maximum = check_number(
        merged["max"], f"{where}['max']", at_least=initial, bound=f"initial ({initial:g})"
    )
    reset_after = check_number(merged["reset_after"], f"{where}['reset_after']", above=0)
    return BackoffSpec(initial=initial, factor=factor, max=maximum, reset_after=reset_after)


def _parse_child(child: object, where: str) -> str:
    if not isinstance(child, str):
        raise invalid(where, "a child must be 'type.name:key' or a supervisor name", child)
    if not is_actor_child(child):
        return check_supervisor_name(child, where)
    actor_type, key = split_actor_child(child)
    if not actor_type:
        raise invalid(where, "an actor child needs a type before ':' ('type.name:key')", child)
    if not key or len(key) > MAX_KEY_LENGTH:
        raise invalid(
            where,
            f"an actor child's key (after ':') must be 1..{MAX_KEY_LENGTH} characters",
            child,
        )
    return child


def _parse_children(raw: object, where: str) -> tuple[str, ...]:
    # A bare string is iterable too; "acct:1" would silently become six children.
    if not isinstance(raw, list | tuple):
        raise invalid(where, "must be a list of 'type.name:key' or supervisor names", raw)
    children: list[str] = []
    for i, item in enumerate(raw):
        child = _parse_child(item, f"{where}[{i}]")
        if child in children:
            raise invalid(f"{where}[{i}]", "a child may be listed only once", child)
        children.append(child)
    return tuple(children)


def parse_supervisor_spec(name: str, raw: Mapping[str, Any], *, where: str) -> SupervisorSpec:
    """Validate one user-written spec and merge its defaults.

    ``where`` is how the user wrote it (``"supervise_supervisors['billing']"``); every error
    names it and the offending key. Cross-spec checks (parents exist, no cycles) are the
    tree's job.
    """
    check_supervisor_name(name, where)
    if not isinstance(raw, Mapping):
        raise invalid(where, "a supervisor spec must be a dict", raw)
    check_keys(raw, SPEC_KEYS, where)
    parent: str | None
    if name == ROOT:
        if raw.get("parent") is not None:
            raise invalid(f"{where}['parent']", "'root' has no parent", raw["parent"])
        parent = None
    else:
        parent = check_supervisor_name(raw.get("parent", ROOT), f"{where}['parent']")
    return SupervisorSpec(
        name=name,
        parent=parent,
        strategy=check_choice(
            raw.get("strategy", "one_for_one"), _STRATEGIES, f"{where}['strategy']"
        ),
        intensity=check_int(raw.get("intensity", 3), f"{where}['intensity']", minimum=0),
        period=check_number(raw.get("period", 5.0), f"{where}['period']", above=0),
        on_limit=check_choice(
            raw.get("on_limit", "quarantine"), _ON_LIMITS, f"{where}['on_limit']"
        ),
        children=_parse_children(raw.get("children", ()), f"{where}['children']"),
        max_consecutive_crashes=check_int(
            raw.get("max_consecutive_crashes", 5),
            f"{where}['max_consecutive_crashes']",
            minimum=1,
        ),
        backoff=_parse_backoff(raw.get("backoff", {}), f"{where}['backoff']"),
        parent_explicit="parent" in raw and name != ROOT,
    )


class SupervisorTree:
    """The validated supervisor tree: parents resolved, no cycles, every child known.

    Parents are resolved once here: a supervisor listed in another's ``children`` has that one
    as parent unless it named a different parent itself (an error); otherwise its ``parent``
    (default ``"root"``). ``spec(name).parent`` is always the resolved parent.
    """

    def __init__(self, specs: Mapping[str, SupervisorSpec]) -> None:
        declared = dict(specs)
        declared.setdefault(ROOT, SupervisorSpec(name=ROOT, parent=None))
        for name, spec in declared.items():
            if spec.name != name:
                raise ConfigurationError(f"supervisor {name!r}: its spec is named {spec.name!r}")
        self._declared = declared
        listed_by = self._check_children(declared)
        parents: dict[str, str | None] = {}
        for name, spec in declared.items():
            parents[name] = self._resolve_parent(spec, listed_by.get(name), declared)
        self._check_cycles(parents)
        self._specs = {n: replace(s, parent=parents[n]) for n, s in declared.items()}
        self._actor_owner = {c: s for c, s in listed_by.items() if is_actor_child(c)}
        self._children: dict[str, tuple[str, ...]] = {}
        for name, spec in self._specs.items():
            unlisted = sorted(n for n, p in parents.items() if p == name and n not in spec.children)
            self._children[name] = spec.children + tuple(unlisted)
        self._order = self._preorder(ROOT)

    @staticmethod
    def _check_children(declared: Mapping[str, SupervisorSpec]) -> dict[str, str]:
        """Map each statically listed child to the one supervisor listing it."""
        listed_by: dict[str, str] = {}
        for name in sorted(declared):
            seen: set[str] = set()
            for child in declared[name].children:
                if child in seen:
                    raise ConfigurationError(f"supervisor {name!r} lists {child!r} twice")
                seen.add(child)
                if not is_actor_child(child):
                    if child not in declared:
                        known = ", ".join(sorted(declared))
                        raise ConfigurationError(
                            f"supervisor {name!r} lists child supervisor {child!r}, which is "
                            f"not declared (known: {known})"
                        )
                    if child == ROOT:
                        raise ConfigurationError(
                            f"supervisor {name!r} lists 'root' as a child; root has no parent"
                        )
                if child in listed_by:
                    what = "actor" if is_actor_child(child) else "supervisor"
                    raise ConfigurationError(
                        f"{what} {child!r} is listed as a child by both {listed_by[child]!r} "
                        f"and {name!r}; a child has one supervisor"
                    )
                listed_by[child] = name
        return listed_by

    @staticmethod
    def _resolve_parent(
        spec: SupervisorSpec, lister: str | None, declared: Mapping[str, SupervisorSpec]
    ) -> str | None:
        if spec.name == ROOT:
            if spec.parent is not None:
                raise ConfigurationError(f"supervisor 'root' has no parent, got {spec.parent!r}")
            return None
        if lister is not None:
            if spec.parent_explicit and spec.parent != lister:
                raise ConfigurationError(
                    f"supervisor {spec.name!r} has parent {spec.parent!r} but is listed in the "
                    f"children of {lister!r}"
                )
            return lister
        if spec.parent is None:
            raise ConfigurationError(f"supervisor {spec.name!r}: only 'root' may have no parent")
        if spec.parent not in declared:
            known = ", ".join(sorted(declared))
            raise ConfigurationError(
                f"supervisor {spec.name!r} has parent {spec.parent!r}, which is not declared "
                f"(known: {known})"
            )
        return spec.parent

    @staticmethod
    def _check_cycles(parents: Mapping[str, str | None]) -> None:
        # Every parent exists, so walking up either reaches root or comes back on itself.
        for start in sorted(parents):
            path = [start]
            node = parents[start]
            while node is not None:
                if node in path:
                    cycle = [*path[path.index(node) :], node]
                    raise ConfigurationError(
                        "supervisor cycle: " + " -> ".join(repr(n) for n in cycle)
                    )
                path.append(node)
                node = parents[node]

    def _preorder(self, name: str) -> tuple[str, ...]:
        order: list[str] = []
        stack = [name]
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(reversed(self.child_supervisors(node)))
        return tuple(order)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __repr__(self) -> str:
        return f"SupervisorTree({', '.join(self._order)})"

    def spec(self, name: str) -> SupervisorSpec:
        """The resolved spec of ``name``; ``ConfigurationError`` if no such supervisor."""
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(self._order)
            raise ConfigurationError(f"unknown supervisor {name!r} (known: {known})") from None

    def names(self) -> tuple[str, ...]:
        """Every supervisor, parents before children (root first, siblings in child order)."""
        return self._order

    def parent(self, name: str) -> str | None:
        return self.spec(name).parent

    def static_children(self, name: str) -> tuple[str, ...]:
        """Listed children in order, then unlisted child supervisors in name order."""
        self.spec(name)
        return self._children[name]

    def child_supervisors(self, name: str) -> tuple[str, ...]:
        return tuple(c for c in self.static_children(name) if not is_actor_child(c))

    def subtree(self, name: str) -> tuple[str, ...]:
        """``name`` and all supervisors below it, parents before children."""
        self.spec(name)
        return self._preorder(name)

    def supervisor_of_actor(self, actor_child: str, type_supervisor: str) -> str:
        """The supervisor listing ``"type:key"`` statically, else the actor type's supervisor."""
        split_actor_child(actor_child)
        self.spec(type_supervisor)
        return self._actor_owner.get(actor_child, type_supervisor)

    def with_spec(self, spec: SupervisorSpec) -> SupervisorTree:
        """A new validated tree with ``spec`` added or replacing the one of the same name."""
        return SupervisorTree({**self._declared, spec.name: spec})


def build_tree(
    raw_specs: Mapping[str, Any], *, where_prefix: str = "supervise_supervisors"
) -> SupervisorTree:
    """Parse ``supervise_supervisors`` (a dict of name -> spec dict) into a tree."""
    if not isinstance(raw_specs, Mapping):
        raise invalid(where_prefix, "must be a dict of supervisor name -> spec dict", raw_specs)
    specs: dict[str, SupervisorSpec] = {}
    for name, raw in raw_specs.items():
        where = f"{where_prefix}[{name!r}]"
        specs[check_supervisor_name(name, where)] = parse_supervisor_spec(name, raw, where=where)
    return SupervisorTree(specs)
