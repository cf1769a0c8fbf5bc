"""Re-sending: redis-py re-sends a command whose reply it lost (timeout, dropped connection).
An operation whose header says ``resend: once`` is never re-sent by the drivers: the caller gets
the error instead of a silent second run. Shown on a paused server with a short socket timeout,
the way it happens in production."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from redis.backoff import ConstantBackoff
from redis.retry import Retry

import pyredislua
from pyredislua.engine.protocol import Call
from pyredislua.engine.render import lua_root, render_library
from tests.faultkit import FaultServer, wait_for

pytestmark = pytest.mark.engine

COUNTER = """--[[
name: probe.{name}
version: 1.0.0
summary: Count calls (a test probe).
flags: none
resend: {resend}
keys:
  counter: string; the count
returns:
  the count
]]
return rcall('INCR', counter_key)
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> pyredislua.Library:
    root = tmp_path_factory.mktemp("lua") / "lua"
    shutil.copytree(lua_root(), root)
    (root / "probe").mkdir()
    for name, resend in (("count_once", "once"), ("count_safe", "safe")):
        (root / "probe" / f"{name}.lua").write_text(COUNTER.format(name=name, resend=resend))
    lib = render_library(Path(root))
    assert lib.operation("probe.count_once").header.send_once
    assert not lib.operation("probe.count_safe").header.send_once
    return lib


@pytest.fixture
def slow_client(fault_server: FaultServer) -> Iterator[redis.Redis]:
    """Times out after 0.2 s and re-sends (up to 3 times, 0.3 s apart), like redis-py's default
    policy with a short socket timeout."""
    conn = redis.Redis(port=fault_server.port, socket_timeout=0.2,
                       retry=Retry(ConstantBackoff(0.3), 3))
    yield conn
    conn.close()


def _count(server: FaultServer) -> int:
    with server.admin() as admin:
        return int(admin.get("{p}:n") or 0)


@pytest.mark.parametrize("mode", ["function", "script"])
@pytest.mark.parametrize("batch", [False, True], ids=["run", "pipeline"])
def test_send_once_operations_are_not_resent_after_a_timeout(
        fault_server: FaultServer, slow_client: redis.Redis, library: pyredislua.Library,
        mode: str, batch: bool) -> None:
    client = pyredislua.Client(slow_client, mode=mode, library=library)  # type: ignore[arg-type]
    client.load()
    once = Call("probe.count_once", ("{p}:n",), (), int)
    resume = fault_server.pause_for(0.8)
    with pytest.raises(redis.TimeoutError):
        client.run_many([once]) if batch else client.run(once)
    resume.join()
    wait_for(lambda: _count(fault_server) == 1, what="the one call sent to run")
    assert client.run(once) == 2  # ran exactly once before this one


def test_safe_operations_are_resent_as_redis_py_does(
        fault_server: FaultServer, slow_client: redis.Redis, library: pyredislua.Library) -> None:
    """The contrast that makes the test above meaningful: the same pause makes redis-py run a
    re-sendable call twice (harmless for an operation that is really safe to re-send)."""
    client = pyredislua.Client(slow_client, mode="function", library=library)
    client.load()
    resume = fault_server.pause_for(0.8)
    assert client.run(Call("probe.count_safe", ("{p}:n",), (), int)) in (1, 2)
    resume.join()
    wait_for(lambda: _count(fault_server) == 2, what="the original and the re-sent call")


async def test_send_once_on_asyncio(fault_server: FaultServer,
                                    library: pyredislua.Library) -> None:
    conn = redis.asyncio.Redis(port=fault_server.port, socket_timeout=0.2,
                               retry=redis.asyncio.retry.Retry(ConstantBackoff(0.3), 3))
    client = pyredislua.AsyncClient(conn, mode="function", library=library)
    await client.load()
    once = Call("probe.count_once", ("{p}:n",), (), int)
    resume = fault_server.pause_for(0.8)
    with pytest.raises(redis.TimeoutError):
        await client.run(once)
    resume.join()
    wait_for(lambda: _count(fault_server) == 1, what="the one call sent to run")
    assert await client.run(once) == 2
    await conn.aclose()


def test_send_once_connects_again_when_nothing_was_sent(
        fault_server: FaultServer, library: pyredislua.Library) -> None:
    """A connection the server dropped is replaced before the command is written: no error."""
    conn = redis.Redis(port=fault_server.port)
    client = pyredislua.Client(conn, mode="function", library=library)
    once = Call("probe.count_once", ("{p}:n",), (), int)
    assert client.run(once) == 1
    fault_server.kill_clients()
    assert client.run(once) == 2
    conn.close()


def test_the_reference_says_which_operations_are_safe_to_resend() -> None:
    from pyredislua.engine.reference import render_reference

    text = render_reference(render_library())
    assert "safe to re-send" in text
