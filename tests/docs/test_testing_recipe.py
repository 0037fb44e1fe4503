"""The testing recipe of docs/getting-started.md, run as a user runs it: ``pytest`` in a
subprocess (the plugin loads from its entry point; Django is set up once per process), on
the session's Redis named by ``CELERY_SUPERVISE_TEST_REDIS_URL``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "docs" / "examples" / "django_tests"

EARLY_IMPORT = '''
from example_project.django_site import celery_app   # settings read now: the wrong Redis
from celery_supervise import Supervision


def test_imports_the_app_too_early(supervise_runner):
    supervise_runner(Supervision(celery_app))
'''


def _pytest(path: Path, redis_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(path), "-q", "-p", "no:cacheprovider",
         "--rootdir", str(path.parent if path.is_file() else path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "CELERY_SUPERVISE_TEST_REDIS_URL": redis_url,
             "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip


def test_the_django_conftest_of_the_docs_works(supervise_redis_url: str) -> None:
    proc = _pytest(RECIPE, supervise_redis_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_importing_the_app_before_the_fixture_fails_clearly(
    supervise_redis_url: str, tmp_path: Path
) -> None:
    test = tmp_path / "test_early.py"
    test.write_text(EARLY_IMPORT)
    proc = _pytest(test, supervise_redis_url,
                   DJANGO_SETTINGS_MODULE="example_project.django_site.settings",
                   EXAMPLE_REDIS_URL="redis://127.0.0.1:1/0")  # a developer's Redis, say
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "uses Redis at redis://127.0.0.1:1/0, not this test session's server" in proc.stdout
    assert "supervise_use_test_redis" in proc.stdout
