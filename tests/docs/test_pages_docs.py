"""The operations page's section on the admin pages says what the code does: its numbers,
names and labels are the code's, and every screenshot it shows is there (a PNG that
tests/workers/test_pages_chromium.py wrote)."""

from __future__ import annotations

import re
from pathlib import Path

from celery_supervise.contrib import pages

DOCS = Path(__file__).resolve().parents[2] / "docs"
SECTION = (DOCS / "operations.md").read_text().split("## In a browser", 1)[1].split("\n## ", 1)[0]


def test_page_sizes_are_the_codes() -> None:
    assert f"a page at a time ({pages.PAGE_SIZE} unless" in SECTION
    assert f"up to {pages.MAX_PAGE_SIZE} with `limit`" in SECTION


def test_actions_and_their_buttons_are_the_codes() -> None:
    named = re.search(r"the action's name \(([^)]*)\)", SECTION)
    assert named
    assert re.findall(r"`(\w+)`", named.group(1)) == list(pages.ACTIONS)
    flat = " ".join(SECTION.split())
    buttons = re.search(r"\*\*the actions\*\*, buttons.*?\. Each is", flat)
    assert buttons
    assert re.findall(r"\*\*([A-Z][\w ]+)\*\*", buttons.group(0)) == list(pages.ACTIONS.values())


def test_the_django_permission_and_setting_are_the_codes() -> None:
    import ast

    models = (Path(pages.__file__).parent / "django" / "models.py").read_text()
    assert 'CHANGE_PERMISSION = "celery_supervise.change_actor"' in models
    (codename, description), = ast.literal_eval(
        re.search(r"permissions = (\(\n.*?\n        \))", models, re.S).group(1)  # type: ignore[union-attr]
    )
    assert f"`celery_supervise.{codename}` (\"{description}\")" in " ".join(SECTION.split())
    admin = (Path(pages.__file__).parent / "django" / "admin.py").read_text()
    assert '"SUPERVISION_ADMIN_CELERY_APP"' in admin and "SUPERVISION_ADMIN_CELERY_APP" in SECTION


def test_every_screenshot_shown_is_a_png_in_docs_img() -> None:
    shown = re.findall(r"!\[[^\]]*\]\((img/[\w.-]+)\)", SECTION)
    assert len(shown) == 3
    for name in shown:
        data = (DOCS / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), name
