"""docs/testing.md: a suite built on Celery's own pytest fixtures drives actors, and the
celery_supervise plugin loads beside pytest-celery 1.x. Each suite runs as a user runs it,
``pytest`` in a subprocess with its own ``pytest.ini`` (this repository's addopts turn
Celery's plugins off), on the session's Redis named by ``CELERY_SUPERVISE_TEST_REDIS_URL``.
No Docker here: pytest-celery's container fixtures are only shown to fail at setup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "celery_fixtures"

BOTH_PLUGINS = '''
def test_both_plugins_are_loaded(request):
    manager = request.config.pluginmanager
    assert manager.has_plugin("celery"), "pytest-celery's plugin (entry point 'celery')"
    assert manager.has_plugin("celery_supervise")
    assert manager.get_plugin("celery").__name__ == "pytest_celery.plugin"


def test_their_fixtures_without_docker(celery_app, celery_config, celery_setup_name,
                                       default_worker_tasks, supervise_redis_url):
    assert celery_app.conf.broker_url == "memory://"  # Celery's in-memory test app
    assert celery_config == {}
    assert isinstance(celery_setup_name, str) and default_worker_tasks  # pytest-celery's
    import redis
    assert redis.Redis.from_url(supervise_redis_url).ping()  # ours


def test_celery_worker_is_the_docker_one(celery_worker):
    pass
'''


def _pytest(path: Path, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(path), "-p", "no:cacheprovider",
         "--rootdir", str(path), *args],
        cwd=path, capture_output=True, text=True, timeout=180,
        env={**os.environ, "CELERY_SUPERVISE_TEST_REDIS_URL": redis_url,
             "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_the_example_suite_on_celerys_fixtures_passes(supervise_redis_url: str) -> None:
    proc = _pytest(EXAMPLE, supervise_redis_url, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout, proc.stdout


def test_the_example_suite_passes_with_pytest_celery_loaded(supervise_redis_url: str) -> None:
    """Without its ini's ``-p no:celery``: pytest-celery's plugin loads (Celery's fixtures
    with it) and the conftest's import keeps ``celery_worker`` the in-thread worker."""
    proc = _pytest(EXAMPLE, supervise_redis_url, "-o", "addopts=", "-v",
                   "-k", "runs_the_steps or marker")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "celery-1." in proc.stdout and "celery_supervise-" in proc.stdout, proc.stdout
    assert "2 passed" in proc.stdout, proc.stdout


def test_both_plugins_load_together(supervise_redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_plugins.py").write_text(BOTH_PLUGINS)
    proc = _pytest(tmp_path, supervise_redis_url, "-q")
    out = proc.stdout
    assert "2 passed" in out, out + proc.stderr
    # Without a conftest override `celery_worker` is pytest-celery's container worker: on
    # a machine without Docker it errors at setup, naming Docker.
    assert "error" in out.splitlines()[-1] and "docker.errors.DockerException" in out, out


def test_each_plugin_turns_off_by_its_name(supervise_redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_off.py").write_text(
        "def test_off(request):\n"
        "    manager = request.config.pluginmanager\n"
        "    assert not manager.has_plugin('celery')\n"
        "    assert not manager.has_plugin('celery_supervise')\n"
    )
    proc = _pytest(tmp_path, supervise_redis_url, "-q", "-p", "no:celery",
                   "-p", "no:celery_supervise")  # fmt: skip
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr


def test_celerys_fixtures_loaded_twice_break_the_fixtures_listing(
    supervise_redis_url: str, tmp_path: Path
) -> None:
    """Why the docs say not to add ``-p celery.contrib.pytest`` while pytest-celery loads."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    proc = _pytest(tmp_path, supervise_redis_url, "-p", "celery.contrib.pytest", "--fixtures")
    assert "INTERNALERROR" in proc.stdout, proc.stdout  # (pytest exits 0 even so)
    alone = _pytest(tmp_path, supervise_redis_url, "-p", "no:celery",
                    "-p", "celery.contrib.pytest", "--fixtures")  # fmt: skip
    assert "INTERNALERROR" not in alone.stdout and "celery_worker" in alone.stdout, alone.stdout
