"""``docs/guarantees.md`` cannot cite what does not exist: every test or benchmark it names is
there, and every "SPEC 6.N" / "SPEC 4.N" the code cites has an entry on the page.

Collected by reading the source (``ast``), not by importing or running anything: a test is a
module-level ``def test_*`` or a method ``test_*`` of a module-level ``class Test*``; a
benchmark is any module-level function. Parametrized ids are not checked.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "guarantees.md"

#: `tests/pure/test_x.py::test_name`, `tests/x.py::TestClass::test_name`, `benchmarks/x.py::f`
REFERENCE = re.compile(r"`((?:tests|benchmarks)/[\w/]+\.py)((?:::\w+)+)(?:\[[^\]`]*\])?`")
#: any `tests/...py` or `benchmarks/...py` in backticks, with or without a name
ANY_FILE = re.compile(r"`((?:tests|benchmarks)/[\w/]+\.py)[^`]*`")
#: "SPEC 6.7", "SPEC 6.1-6.3", "SPEC 4.8, 6.3", "SPEC section 6" and bare "SPEC 4"
CITATION = re.compile(r"SPEC (?:section )?(\d+(?:\.\d+)?(?:\s*(?:-|\u2013|,|and)\s*\d+\.\d+)*)")
#: the entries the page must have per section, as heading anchors
ANCHORS = {"6": "g{n}", "4": "spec-4-{n}"}


@cache
def _tree(relative: str) -> ast.Module | None:
    path = ROOT / relative
    return ast.parse(path.read_text(), str(path)) if path.is_file() else None


def _names(relative: str) -> set[str]:
    """``test_x`` and ``TestX::test_y`` for tests; every module-level function otherwise."""
    tree = _tree(relative)
    assert tree is not None
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    if relative.startswith("benchmarks/"):
        return {node.name for node in tree.body if isinstance(node, functions)}
    names = {node.name for node in tree.body
             if isinstance(node, functions) and node.name.startswith("test_")}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {f"{node.name}::{item.name}" for item in node.body
                      if isinstance(item, functions) and item.name.startswith("test_")}
    return names


def missing_references(text: str) -> list[str]:
    """Every reference in ``text`` whose file or function does not exist, as written."""
    problems = []
    for match in ANY_FILE.finditer(text):
        if _tree(match.group(1)) is None:
            problems.append(f"{match.group(0)}: no file {match.group(1)}")
    for match in REFERENCE.finditer(text):
        relative, name = match.group(1), match.group(2).removeprefix("::")
        if _tree(relative) is not None and name not in _names(relative):
            kind = "function" if relative.startswith("benchmarks/") else "test"
            problems.append(f"{match.group(0)}: no {kind} {name!r} in {relative}")
    return problems


def cited_numbers(text: str) -> set[str]:
    """"6.7", "6.1", "6.2", "6.3", "4", ... for every SPEC citation in ``text``."""
    numbers: set[str] = set()
    for match in CITATION.finditer(text):
        for part in re.split(r"\s*,\s*|\s+and\s+", match.group(1)):
            ends = re.split(r"\s*[-\u2013]\s*", part)
            if len(ends) == 2 and "." in ends[0] and "." in ends[1]:
                section, first = ends[0].split(".")
                last = ends[1].split(".")[1]
                numbers |= {f"{section}.{n}" for n in range(int(first), int(last) + 1)}
            else:
                numbers.add(ends[0])
    return numbers


def _anchors(text: str) -> set[str]:
    return set(re.findall(r"^#+ .*\{#([\w-]+)\}\s*$", text, re.M))


def _sources() -> list[Path]:
    return sorted((ROOT / "celery_supervise").rglob("*.py")) + sorted(
        p for p in (ROOT / "tests").rglob("*.py") if p.resolve() != Path(__file__).resolve()
    )


def test_every_named_test_and_benchmark_exists() -> None:
    text = PAGE.read_text()
    assert len(REFERENCE.findall(text)) > 50, "the page names (almost) no tests"
    problems = missing_references(text)
    assert not problems, "docs/guarantees.md names what does not exist:\n" + "\n".join(problems)


def test_every_spec_number_cited_in_the_code_has_an_entry() -> None:
    text = PAGE.read_text()
    anchors = _anchors(text)
    problems = []
    for path in _sources():
        for number in sorted(cited_numbers(path.read_text())):
            section, _, n = number.partition(".")
            if section not in ANCHORS:
                continue
            where = path.relative_to(ROOT)
            if not n:  # a whole section: the page must say so in a heading
                if not re.search(rf"^## .*\(SPEC {section}\)", text, re.M):
                    problems.append(f"{where} cites SPEC {section}: no section for it")
                continue
            anchor = ANCHORS[section].format(n=n)
            if anchor not in anchors or f"SPEC {number}" not in text:
                problems.append(f"{where} cites SPEC {number}: no entry #{anchor}")
    assert not problems, "docs/guarantees.md lacks entries:\n" + "\n".join(problems)


def test_each_spec_6_guarantee_has_its_entry_and_backing_tests() -> None:
    text = PAGE.read_text()
    for n in range(1, 8):
        entry = re.search(rf"^### G{n}\. .*\(SPEC 6\.{n}\) \{{#g{n}\}}$(.*?)(?=^#)", text,
                          re.M | re.S)
        assert entry, f"no entry G{n} (SPEC 6.{n}) with anchor #g{n}"
        assert REFERENCE.search(entry.group(1)), f"G{n} names no backing test"


def test_the_checks_catch_a_wrong_name() -> None:
    """The checker itself: a misspelt test, a missing file or benchmark function is named."""
    wrong = (
        "`tests/workers/test_guarantees.py::test_same_message_id_is_applied_twice` "
        "`tests/redis/test_nowhere.py::test_x` "
        "`benchmarks/recovery.py::bench_recoveryy` "
        "`tests/pure/test_decisions.py::test_should_restart[permanent-crash-True]` "
        "`tests/pure/test_decisions.py::TestNothing::test_should_restart`"
    )
    problems = missing_references(wrong)
    assert len(problems) == 4, problems
    assert "test_same_message_id_is_applied_twice" in problems[1]
    assert "no file tests/redis/test_nowhere.py" in problems[0]
    assert "bench_recoveryy" in problems[2]
    assert "TestNothing::test_should_restart" in problems[3]
    assert cited_numbers("(SPEC 6.1-6.3, 6.7) SPEC 4.8, 6.3 and SPEC section 6") == {
        "6.1", "6.2", "6.3", "6.7", "4.8", "6"}
