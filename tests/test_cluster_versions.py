"""The server's version is checked once, when the code is first loaded, with a clear error on a
server older than 7.0 instead of a Lua compile error. Only Redis 7.0 can be installed on the
development machines: the old-server replies are fed to the sans-IO plans (what redis-py would
hand them from a Redis 6.2), the real 7.0 passes through the real drivers."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.exceptions import NoScriptError, ResponseError

import pyredislua
from pyredislua.engine.compat import MIN_VERSION, check_version, server_version
from pyredislua.engine.protocol import Engine
from pyredislua.lock import LockKeys, acquire_call

pytestmark = pytest.mark.cluster
LIBRARY = pyredislua.render_library()
OLD_INFO = {"redis_version": "6.2.14", "redis_mode": "standalone"}
UNKNOWN_FCALL = ResponseError("unknown command 'FCALL', with args beginning with: ...")
UNKNOWN_FCALL_RO = ResponseError("unknown command 'FCALL_RO', with args beginning with: ...")


def _first_batch_replies(batch: list[Any], node: str = "10.0.0.1:6379") -> list[Any]:
    """What a Redis 6.2 answers to a batch: INFO says 6.2.14, Functions do not exist."""
    out: list[Any] = []
    for cmd in batch:
        if cmd.args[:2] == ("INFO", "server"):
            reply: Any = OLD_INFO
        elif cmd.args[0] in ("FCALL", "FCALL_RO"):
            reply = UNKNOWN_FCALL_RO if cmd.args[0] == "FCALL_RO" else UNKNOWN_FCALL
        elif cmd.args[0] == "EVALSHA":
            reply = NoScriptError("NOSCRIPT No matching script.")
        else:
            reply = ResponseError("ERR Error compiling script (new function): user_script:1: "
                                  "unexpected symbol near '#'")
        out.append({node: reply} if cmd.all_primaries else reply)
    return out


def _drive(plan: Any) -> Any:
    batch = next(plan)
    while True:
        batch = plan.send(_first_batch_replies(batch))


@pytest.mark.parametrize("mode", ["function", "script", "auto"])
def test_an_old_server_gets_a_clear_error_not_a_compile_error(mode: str) -> None:
    engine = Engine(LIBRARY, mode)  # type: ignore[arg-type]
    call = acquire_call(LockKeys("x"), "t", 1000)
    first = _first_batch_replies([engine.command(call)])[0]
    with pytest.raises(pyredislua.RedisVersionError,
                       match=r"pyredislua needs Redis 7\.0 or newer; this server is 6\.2\.14"):
        _drive(engine.run_one(call, first, replied=True))


@pytest.mark.parametrize("mode", ["function", "script"])
def test_loading_on_an_old_server_gets_the_same_error(mode: str) -> None:
    with pytest.raises(pyredislua.RedisVersionError, match=r"6\.2\.14"):
        _drive(Engine(LIBRARY, mode).load())  # type: ignore[arg-type]


def test_version_parsing() -> None:
    assert server_version({"redis_version": "7.0.15"}) == "7.0.15"
    assert server_version(b"# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone") == "6.2.14"
    assert server_version({}) is None  # a proxy hiding it: nothing claimed
    assert check_version({"redis_version": "7.0.0"}) == "7.0.0"
    assert check_version({"redis_version": "7.4.1-rc2"}) == "7.4.1-rc2"
    with pytest.raises(pyredislua.RedisVersionError, match=r"this server \(a:1\) is 6\.0\.9"):
        check_version({"redis_version": "6.0.9"}, "a:1")
    assert MIN_VERSION == (7, 0, 0)


def test_the_real_server_is_checked_once(r: redis.Redis) -> None:
    client = pyredislua.Client(r, mode="function")
    assert not client.engine.version_checked
    client.run(acquire_call(LockKeys("v"), "t", 1000))  # the first call loads: checked then
    assert client.engine.version_checked
    r.config_resetstat()
    r.function_flush()
    client.run(acquire_call(LockKeys("w"), "t", 1000))  # reloads, without asking again
    assert "cmdstat_info" not in r.info("commandstats")


def test_doctor_uses_the_same_minimum() -> None:
    """`pyredislua doctor` flags an old server from the same MIN_VERSION (engine/compat.py)."""
    from pyredislua.observe.doctor import NodeFacts, diagnose

    def version_finding(version: str) -> tuple[str, str]:
        facts = NodeFacts("10.0.0.1:6379", "primary", info={"redis_version": version})
        [found] = [f for f in diagnose(facts, LIBRARY) if f.check == "version"]
        return found.level, found.fix

    level, fix = version_finding("6.2.14")
    assert level == "unsafe" and "Redis 7.0 or later" in fix
    assert version_finding("7.0.0")[0] == "ok"
    assert version_finding("7.4.1-rc2")[0] == "ok"
