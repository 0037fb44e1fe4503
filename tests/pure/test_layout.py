"""The layers drawn in docs/layout.md are the import graph: every module of the package is
drawn, each imports (at module level) only its own tier or those below, and nothing closes a
cycle -- not even through ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "celery_supervise"
LAYOUT = Path(__file__).resolve().parents[2] / "docs" / "layout.md"
#: Around the stack, not in it (docs/layout.md says why).
AROUND = {"__init__", "cli", "contrib", "testing"}


def _tiers() -> list[set[str]]:
    """The drawing's tiers, top first: modules named at the start of a line, tiers split by
    the lines holding only '|'."""
    drawing = LAYOUT.read_text().split("```text", 1)[1].split("```", 1)[0]
    tiers: list[set[str]] = [set()]
    for line in drawing.splitlines():
        if line.strip() == "|":
            tiers.append(set())
        elif line and not line.startswith(" "):
            head = line.split("  ", 1)[0]
            tiers[-1] |= set(re.findall(r"(\w+)\.py", head))
    return [t for t in tiers if t]


def _imports(module: str) -> set[str]:
    """Package modules ``module`` imports at module level (TYPE_CHECKING blocks included)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in tree.body:
        nodes = [node]
        if isinstance(node, ast.If):  # if TYPE_CHECKING: ...
            nodes = list(node.body)
        for item in nodes:
            if isinstance(item, ast.ImportFrom) and item.level == 1:
                if item.module:
                    found.add(item.module.split(".")[0])
                else:
                    found |= {alias.name for alias in item.names}
    return found - AROUND


def test_every_module_is_drawn_once() -> None:
    tiers = _tiers()
    drawn = [m for tier in tiers for m in tier]
    assert len(drawn) == len(set(drawn)), "a module is drawn twice"
    modules = {p.stem for p in PACKAGE.glob("*.py")} - AROUND
    assert modules == set(drawn), (modules - set(drawn), set(drawn) - modules)


def test_imports_run_downward_and_close_no_cycle() -> None:
    tiers = _tiers()
    tier_of = {m: i for i, tier in enumerate(tiers) for m in tier}
    graph = {m: _imports(m) for m in tier_of}
    for module, imported in graph.items():
        upward = {m for m in imported if tier_of[m] < tier_of[module]}
        assert not upward, f"{module} imports {upward}, drawn above it"
    seen: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in seen:
            return
        for imported in graph[module]:
            visit(imported, (*path, module))
        seen.add(module)

    for module in graph:
        visit(module, ())
