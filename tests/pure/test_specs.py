"""Supervisor spec parsing and the tree: every validation error names where and which key."""

from __future__ import annotations

from typing import Any

import pytest

from celery_supervise.errors import ConfigurationError
from celery_supervise.specs import (
    SPEC_KEYS,
    BackoffSpec,
    SupervisorSpec,
    SupervisorTree,
    build_tree,
    is_actor_child,
    parse_supervisor_spec,
    split_actor_child,
)

WHERE = "supervise_supervisors['billing']"


def parse(raw: dict[str, Any], name: str = "billing") -> SupervisorSpec:
    return parse_supervisor_spec(name, raw, where=WHERE)


def test_spec_keys_are_exactly_the_documented_ones() -> None:
    assert {
        "parent",
        "strategy",
        "intensity",
        "period",
        "on_limit",
        "children",
        "max_consecutive_crashes",
        "backoff",
    } == SPEC_KEYS


def test_defaults() -> None:
    spec = parse({})
    assert spec == SupervisorSpec(name="billing", parent="root")
    assert spec.strategy == "one_for_one"
    assert (spec.intensity, spec.period, spec.on_limit) == (3, 5.0, "quarantine")
    assert spec.max_consecutive_crashes == 5
    assert spec.backoff == BackoffSpec(0.5, 2.0, 60.0, 300.0)
    assert spec.children == ()
    assert not spec.parent_explicit


def test_full_spec_is_parsed() -> None:
    spec = parse(
        {
            "parent": "ops",
            "strategy": "rest_for_one",
            "intensity": 0,
            "period": 2,
            "on_limit": "escalate",
            "children": ["billing.account:acct-1", "ledger", "a.b:k:with:colons"],
            "max_consecutive_crashes": 1,
            "backoff": {"initial": 0, "max": 10},
        }
    )
    assert spec.parent == "ops" and spec.parent_explicit
    assert spec.strategy == "rest_for_one"
    assert spec.intensity == 0
    assert spec.period == 2.0 and isinstance(spec.period, float)
    assert spec.on_limit == "escalate"
    assert spec.children == ("billing.account:acct-1", "ledger", "a.b:k:with:colons")
    assert spec.max_consecutive_crashes == 1
    assert spec.backoff == BackoffSpec(initial=0.0, factor=2.0, max=10.0, reset_after=300.0)


def test_tuple_children_and_200_char_key_are_accepted() -> None:
    spec = parse({"children": ("t:" + "k" * 200,)})
    assert spec.children == ("t:" + "k" * 200,)


def test_root_spec_has_no_parent() -> None:
    assert parse({}, name="root").parent is None
    assert parse({"parent": None}, name="root").parent is None
    with pytest.raises(ConfigurationError, match=r"\['parent'\]: 'root' has no parent"):
        parse({"parent": "ops"}, name="root")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"intensity": -1}, "['intensity']: must be an int >= 0, got -1"),
        ({"intensity": True}, "['intensity']: must be an int >= 0, got True"),
        ({"intensity": 1.5}, "['intensity']: must be an int >= 0, got 1.5"),
        ({"intensity": "3"}, "['intensity']: must be an int >= 0, got '3'"),
        ({"max_consecutive_crashes": 0}, "['max_consecutive_crashes']: must be an int >= 1"),
        ({"max_consecutive_crashes": False}, "['max_consecutive_crashes']: must be an int >= 1"),
        ({"period": 0}, "['period']: must be a number > 0, got 0"),
        ({"period": -1.0}, "['period']: must be a number > 0, got -1.0"),
        ({"period": True}, "['period']: must be a number > 0, got True"),
        ({"period": "5"}, "['period']: must be a number > 0, got '5'"),
        ({"period": float("nan")}, "['period']: must be a finite number > 0, got nan"),
        ({"period": float("inf")}, "['period']: must be a finite number > 0, got inf"),
        ({"strategy": "one_for_some"}, "['strategy']: must be one of 'one_for_one', "),
        ({"strategy": None}, "['strategy']: must be one of"),
        ({"on_limit": "explode"}, "['on_limit']: must be one of 'quarantine', 'escalate'"),
        ({"parent": 3}, "['parent']: a supervisor name must be"),
        ({"parent": None}, "['parent']: a supervisor name must be"),
        ({"parent": "a:b"}, "['parent']: a supervisor name must be"),
        ({"children": "acct:1"}, "['children']: must be a list of"),
        ({"children": {"acct:1": 1}}, "['children']: must be a list of"),
        ({"children": [3]}, "['children'][0]: a child must be"),
        ({"children": ["ok:1", ":key"]}, "['children'][1]: an actor child needs a type"),
        ({"children": ["type:"]}, "['children'][0]: an actor child's key (after ':') must be"),
        ({"children": ["t:" + "k" * 201]}, "['children'][0]: an actor child's key"),
        ({"children": ["bad name"]}, "['children'][0]: a supervisor name must be"),
        ({"children": [""]}, "['children'][0]: a supervisor name must be"),
        ({"children": ["a:1", "a:1"]}, "['children'][1]: a child may be listed only once"),
        ({"backoff": 5}, "['backoff']: must be a dict with keys factor, initial, max"),
        ({"backoff": {"initial": -0.1}}, "['backoff']['initial']: must be a number >= 0"),
        ({"backoff": {"initial": True}}, "['backoff']['initial']: must be a number >= 0"),
        ({"backoff": {"factor": 0.5}}, "['backoff']['factor']: must be a number >= 1"),
        ({"backoff": {"factor": "2"}}, "['backoff']['factor']: must be a number >= 1"),
        ({"backoff": {"max": 0.1}}, "['backoff']['max']: must be a number >= initial (0.5)"),
        ({"backoff": {"max": float("inf")}}, "['backoff']['max']: must be a finite number"),
        ({"backoff": {"reset_after": 0}}, "['backoff']['reset_after']: must be a number > 0"),
        ({"backoff": {"jitter": 1}}, "['backoff']: unknown key(s) 'jitter'; known keys: factor"),
    ],
)
def test_bad_values_name_where_and_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse(raw)
    assert str(info.value).startswith(WHERE + message), str(info.value)


def test_unknown_keys_list_the_known_keys() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse({"intensty": 3, "children": []})
    assert str(info.value) == (
        f"{WHERE}: unknown key(s) 'intensty'; known keys: backoff, children, intensity, "
        "max_consecutive_crashes, on_limit, parent, period, strategy"
    )


@pytest.mark.parametrize("name", ["", "a:b", "has space", "ünï", 3])
def test_bad_supervisor_names(name: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"^supervise_supervisors\['billing'\]: a supe"):
        parse_supervisor_spec(name, {}, where=WHERE)


def test_spec_must_be_a_mapping() -> None:
    with pytest.raises(ConfigurationError, match=r"a supervisor spec must be a dict, got \[\]"):
        parse_supervisor_spec("billing", [], where=WHERE)  # type: ignore[arg-type]  # on purpose


def test_actor_child_helpers() -> None:
    assert is_actor_child("billing.account:acct:1")
    assert not is_actor_child("billing")
    assert split_actor_child("billing.account:acct:1") == ("billing.account", "acct:1")
    with pytest.raises(ConfigurationError, match="not an actor child"):
        split_actor_child("billing")


# -- the tree ---------------------------------------------------------------------------------


def tree(**raw: dict[str, Any]) -> SupervisorTree:
    return build_tree(raw)


def test_default_root_and_accessors() -> None:
    t = tree(
        billing={"children": ["acct:a", "ledger", "acct:b"], "strategy": "one_for_all"},
        ledger={},
        zeta={"parent": "billing"},
        alpha={"parent": "billing"},
        ops={},
    )
    assert t.names() == ("root", "billing", "ledger", "alpha", "zeta", "ops")
    assert t.parent("root") is None
    assert t.parent("ledger") == "billing"  # implicit parent: the supervisor listing it
    assert t.parent("ops") == "root"
    assert t.static_children("billing") == ("acct:a", "ledger", "acct:b", "alpha", "zeta")
    assert t.static_children("root") == ("billing", "ops")
    assert t.child_supervisors("billing") == ("ledger", "alpha", "zeta")
    assert t.subtree("billing") == ("billing", "ledger", "alpha", "zeta")
    assert t.subtree("ops") == ("ops",)
    assert t.spec("ledger").parent == "billing"
    assert "billing" in t and "nope" not in t
    assert t.supervisor_of_actor("acct:a", "root") == "billing"
    assert t.supervisor_of_actor("acct:zzz", "ops") == "ops"


def test_empty_tree_is_just_root() -> None:
    t = SupervisorTree({})
    assert t.names() == ("root",)
    assert t.spec("root") == SupervisorSpec(name="root", parent=None)


def test_explicit_root_spec_is_used() -> None:
    t = tree(root={"strategy": "one_for_all", "on_limit": "escalate"})
    assert t.spec("root").strategy == "one_for_all"


def test_unknown_lookups() -> None:
    t = tree(billing={})
    with pytest.raises(ConfigurationError, match=r"unknown supervisor 'nope' \(known: root, bil"):
        t.spec("nope")
    for call in (t.parent, t.static_children, t.child_supervisors, t.subtree):
        with pytest.raises(ConfigurationError, match="unknown supervisor 'nope'"):
            call("nope")
    with pytest.raises(ConfigurationError, match="unknown supervisor 'nope'"):
        t.supervisor_of_actor("acct:1", "nope")
    with pytest.raises(ConfigurationError, match="not an actor child"):
        t.supervisor_of_actor("billing", "root")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"billing": {"parent": "nope"}}, "supervisor 'billing' has parent 'nope', which is not"),
        ({"billing": {"children": ["ghost"]}}, "supervisor 'billing' lists child supervisor 'gh"),
        ({"billing": {"children": ["root"]}}, "supervisor 'billing' lists 'root' as a child"),
        ({"a": {"parent": "b"}, "b": {"parent": "a"}}, "supervisor cycle: 'a' -> 'b' -> 'a'"),
        ({"a": {"parent": "a"}}, "supervisor cycle: 'a' -> 'a'"),
        ({"a": {"children": ["a"]}}, "supervisor cycle: 'a' -> 'a'"),
        ({"a": {"children": ["b"]}, "b": {"children": ["a"]}}, "supervisor cycle: 'a' -> 'b'"),
        (
            {"a": {"children": ["c"]}, "b": {"children": ["c"]}, "c": {}},
            "supervisor 'c' is listed as a child by both 'a' and 'b'",
        ),
        (
            {"a": {"children": ["c"]}, "b": {}, "c": {"parent": "b"}},
            "supervisor 'c' has parent 'b' but is listed in the children of 'a'",
        ),
        (
            {"a": {"children": ["c"]}, "c": {"parent": "root"}},
            "supervisor 'c' has parent 'root' but is listed in the children of 'a'",
        ),
        (
            {"a": {"children": ["t:1"]}, "root": {"children": ["t:1"]}},
            "actor 't:1' is listed as a child by both 'a' and 'root'",
        ),
    ],
)
def test_tree_errors_name_the_supervisors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build_tree(raw)
    assert message in str(info.value), str(info.value)


def test_explicit_parent_agreeing_with_the_list_is_fine() -> None:
    t = tree(a={"children": ["c"]}, c={"parent": "a"})
    assert t.parent("c") == "a"


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ({"root": SupervisorSpec("root", parent="x")}, "supervisor 'root' has no parent"),
        ({"a": SupervisorSpec("a", parent=None)}, "supervisor 'a': only 'root' may have no"),
        ({"a": SupervisorSpec("b", parent="root")}, "supervisor 'a': its spec is named 'b'"),
        (
            {"a": SupervisorSpec("a", parent="root", children=("t:1", "t:1"))},
            "supervisor 'a' lists 't:1' twice",
        ),
    ],
)
def test_tree_checks_specs_built_in_code(specs: dict[str, SupervisorSpec], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SupervisorTree(specs)


def test_build_tree_errors() -> None:
    with pytest.raises(ConfigurationError, match=r"^supervise_supervisors: must be a dict"):
        build_tree([])  # type: ignore[arg-type]  # on purpose
    with pytest.raises(ConfigurationError, match=r"^supervise_supervisors\[3\]: a supervisor"):
        build_tree({3: {}})  # type: ignore[dict-item]  # on purpose
    with pytest.raises(ConfigurationError, match=r"^CELERY\['x'\]\['period'\]"):
        build_tree({"x": {"period": 0}}, where_prefix="CELERY")


def test_with_spec_returns_a_new_validated_tree() -> None:
    t = tree(billing={"children": ["acct:a"]})
    t2 = t.with_spec(parse_supervisor_spec("ops", {"parent": "billing"}, where="supervisor('ops')"))
    assert t2.names() == ("root", "billing", "ops")
    assert t.names() == ("root", "billing")
    t3 = t2.with_spec(parse_supervisor_spec("billing", {"intensity": 9}, where="s"))
    assert t3.spec("billing").intensity == 9
    assert t3.static_children("billing") == ("ops",)
    with pytest.raises(ConfigurationError, match="supervisor cycle"):
        t2.with_spec(parse_supervisor_spec("billing", {"parent": "ops"}, where="s"))
    with pytest.raises(ConfigurationError, match="actor 'acct:a' is listed as a child by both"):
        t.with_spec(parse_supervisor_spec("ops", {"children": ["acct:a"]}, where="s"))
