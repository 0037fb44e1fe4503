"""Code blocks of the pages are copies of named regions of tested files, kept in step here.

In a page, a copied block is a fenced block right after a comment naming its source::

    <!-- example: docs/examples/proj.py#app -->
    ```python
    ...
    ```

The path is relative to the repository's root; ``#app`` names the region that the file marks
with ``# --8<-- [start:app]`` and ``# --8<-- [end:app]`` (markers of regions nested inside are
left out, and the region is dedented). ``#L8-19`` names lines 8 to 19 instead, for files that
carry no markers (the example project's own modules). ``tests/docs/test_docs.py`` fails when
a copy differs from its region; ``python tests/docs/inlined.py`` rewrites every copy.
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: A marker comment, then the fenced block it names.
COPIED = re.compile(
    r"<!-- example: (?P<path>[^#\s]+)#(?P<region>[\w-]+) -->\n"
    r"(?P<fence>```[a-z]*\n)(?P<code>.*?)(?P<close>^```)",
    re.S | re.M,
)
REGION_MARK = re.compile(r"^\s*# --8<-- \[(start|end):[\w-]+\]\s*$")


@dataclass(frozen=True)
class Copy:
    page: Path
    path: str
    region: str
    code: str


def region(path: str, name: str) -> str:
    """The text of region ``name`` of ``path`` (repository-relative), as a page shows it."""
    lines = (ROOT / path).read_text().splitlines()
    span = re.fullmatch(r"L(\d+)-(\d+)", name)
    if span:
        first, last = int(span[1]), int(span[2])
        if not 1 <= first <= last <= len(lines):
            raise LookupError(f"{path}: no lines {first}-{last}")
        return textwrap.dedent("\n".join(lines[first - 1 : last])).strip("\n") + "\n"
    start = f"# --8<-- [start:{name}]"
    end = f"# --8<-- [end:{name}]"
    begin = [i for i, line in enumerate(lines) if line.strip() == start]
    finish = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(begin) != 1 or len(finish) != 1 or finish[0] < begin[0]:
        raise LookupError(f"{path}: no single region {name!r}")
    body = [line for line in lines[begin[0] + 1 : finish[0]] if not REGION_MARK.match(line)]
    return textwrap.dedent("\n".join(body)).strip("\n") + "\n"


def copies(page: Path) -> list[Copy]:
    return [
        Copy(page, m["path"], m["region"], m["code"]) for m in COPIED.finditer(page.read_text())
    ]


def sync(page: Path) -> bool:
    """Rewrite every copy in ``page`` from its region; True if anything changed."""
    text = page.read_text()
    new = COPIED.sub(
        lambda m: (
            f"<!-- example: {m['path']}#{m['region']} -->\n"
            f"{m['fence']}{region(m['path'], m['region'])}{m['close']}"
        ),
        text,
    )
    if new != text:
        page.write_text(new)
    return new != text


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


if __name__ == "__main__":
    changed = [p.relative_to(ROOT) for p in pages() if sync(p)]
    print("rewrote:", *changed) if changed else print("every copy matches its region")
    sys.exit(0)
