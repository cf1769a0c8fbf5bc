"""The command line, and the library driven by the real redis-cli."""

from __future__ import annotations

import shutil
import subprocess
import sys
from urllib.parse import urlparse

import pytest
import redis

import pyredislua

pytestmark = pytest.mark.cli


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyredislua", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def _redis_cli(url: str, *args: str, stdin: str | None = None) -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        pytest.skip("redis-cli is not installed")
    port = str(urlparse(url).port)
    done = subprocess.run([binary, "-p", port, *args], input=stdin, capture_output=True,
                          text=True, timeout=30, check=True)
    return done.stdout.strip()


def test_render_loads_with_redis_cli_and_runs_with_fcall(redis_url: str, r: redis.Redis) -> None:
    rendered = _cli("render")
    assert rendered.returncode == 0, rendered.stderr
    assert _redis_cli(redis_url, "-x", "FUNCTION", "LOAD", "REPLACE",
                      stdin=rendered.stdout) == "pyredislua_v1"
    keys = ["prl:lock:{cli}", "prl:lock:{cli}:fence", "prl:lock:{cli}:signal",
            "prl:lock:{cli}:waiters"]
    granted = _redis_cli(redis_url, "FCALL", "pyredislua_v1_lock_acquire", "4", *keys,
                         "operator-1", "30000").split()
    assert granted == ["1", "1", "30000"]  # acquired, fence 1, lease 30000 ms
    busy = _redis_cli(redis_url, "FCALL", "pyredislua_v1_lock_acquire", "4", *keys,
                      "operator-2", "30000").split()
    assert busy[0] == "0"
    state = _redis_cli(redis_url, "FCALL_RO", "pyredislua_v1_lock_inspect", "3",
                       keys[0], keys[1], keys[3]).split()
    assert state[:2] == ["1", "operator-1"]
    assert _redis_cli(redis_url, "FCALL", "pyredislua_v1_lock_release", "4", *keys,
                      "operator-1") == "1"
    # the Python side sees the same lock
    lock = pyredislua.Lock(pyredislua.Client(r), "cli")
    assert lock.acquire(blocking=False) and lock.fence == 2
    lock.release()
    bad = _redis_cli(redis_url, "FCALL", "pyredislua_v1_lock_acquire", "4", *keys, "x", "-5")
    assert bad.startswith("PYREDISLUA:BADARG ttl_ms")


def test_render_single_script_runs_with_eval(redis_url: str, r: redis.Redis) -> None:
    rendered = _cli("render", "--script", "lock.acquire")
    assert rendered.returncode == 0
    reply = r.eval(rendered.stdout, 4, "prl:lock:{e}", "prl:lock:{e}:fence", "prl:lock:{e}:signal",
                   "prl:lock:{e}:waiters", "tok", "1000")
    assert reply == [1, 1, 1000]


def test_load_and_list(redis_url: str, r: redis.Redis) -> None:
    listed = _cli("list", "--url", redis_url)
    assert listed.returncode == 0, listed.stderr
    assert "missing" in listed.stdout and "pyredislua_v1_lock_acquire" in listed.stdout
    loaded = _cli("load", "--url", redis_url)
    assert loaded.returncode == 0 and "loaded" in loaded.stdout
    assert "present" in _cli("load", "--url", redis_url).stdout
    listed = _cli("list", "--url", redis_url)
    assert "missing" not in listed.stdout and "same" in listed.stdout


def test_errors_are_one_line() -> None:
    failed = _cli("list", "--url", "redis://127.0.0.1:1/0")
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("pyredislua: error:")
    assert "Traceback" not in failed.stderr


@pytest.mark.parametrize("args", [[], ["render"], ["load"], ["list"], ["demo"], ["bench"],
                                  ["bench", "lock"]])
def test_help(args: list[str]) -> None:
    shown = _cli(*args, "--help")
    assert shown.returncode == 0 and "usage:" in shown.stdout


def test_demo_runs_on_a_throwaway_server() -> None:
    shown = _cli("demo")
    assert shown.returncode == 0, shown.stderr
    assert "fence" in shown.stdout
    # section titles are whole sentences, never cut at the docstring's line break
    titles = [line for line in shown.stdout.splitlines() if line.startswith("== ")]
    assert len(titles) >= 4
    for title in titles:
        assert not title.rstrip().endswith((" into", ";", ",")), title
    # each area's title is the whole first paragraph of its demo module's docstring, however
    # many lines it spans (it was cut at the first line break)
    from pyredislua.areas import area_modules

    for module in area_modules("demo"):
        paragraph = " ".join((module.__doc__ or "").strip().split("\n\n", 1)[0].split())
        assert f"== {paragraph}" in titles, (module.__name__, paragraph)
