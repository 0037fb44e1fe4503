"""The state-versions example of docs/long-lived.md upgrades a stored version-1 state."""

from __future__ import annotations

import pytest

from celery_supervise import StateRejected


def test_the_docs_versions_example_upgrades_a_version_1_state() -> None:
    from docs.examples import versions

    spec = versions.wallet
    assert (spec.state_version, sorted(spec.migrate)) == (2, [1])
    assert spec.upgrade({"balance": 3, "log": ["a"]}, 1) == {"cents": 300, "log": ["a"]}
    with pytest.raises(StateRejected, match=r"migration_failed|fails validate"):
        spec.upgrade({"balance": -1, "log": []}, 1)  # the upgraded state fails validate
