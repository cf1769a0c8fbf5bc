"""A call with a deadline stays bounded while its code is reloaded.

A node that lost its library (FUNCTION FLUSH, a restart without persistence, a failover to a
replica that never had it) answers the first call with "function not found"; the engine then
settles the library (FCALL_RO of its info function, FUNCTION LOAD) and re-runs the call. Those
commands carry the call's deadline, stretched to at least ``RELOAD_GRACE`` from the reload: a
node that stops answering in between (here: writes paused with CLIENT PAUSE, so the read-only
call and the info read answer, and FUNCTION LOAD hangs) must not hold a caller (a Redlock
fan-out, a blocking acquire, a renewal) for good.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from pyredislua import AsyncClient, Client
from pyredislua.engine.protocol import RELOAD_GRACE
from pyredislua.lock import LockKeys, inspect_call
from pyredislua.server import RedisServer

PAUSE_MS = 4000
DEADLINE = 0.3


@pytest.fixture
def paused_without_library(own_server: RedisServer) -> Iterator[RedisServer]:
    admin = redis.Redis(port=own_server.port)
    Client(admin, mode="function").load()
    admin.function_flush()
    admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    try:
        yield own_server
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()


def test_reloading_keeps_the_calls_deadline(paused_without_library: RedisServer) -> None:
    client = Client(redis.Redis(port=paused_without_library.port), mode="function")
    started = time.monotonic()
    with pytest.raises((redis.exceptions.TimeoutError, redis.exceptions.ConnectionError)):
        client.drive(client.engine.run_one(inspect_call(LockKeys("res")),
                                           deadline=started + DEADLINE))
    assert time.monotonic() - started < RELOAD_GRACE + 0.5  # not the pause's 4 s


async def test_reloading_keeps_the_calls_deadline_asyncio(
        paused_without_library: RedisServer) -> None:
    conn = redis.asyncio.Redis(port=paused_without_library.port)
    client = AsyncClient(conn, mode="function")
    started = time.monotonic()
    try:
        with pytest.raises((redis.exceptions.TimeoutError, redis.exceptions.ConnectionError)):
            await client.drive(client.engine.run_one(inspect_call(LockKeys("res")),
                                                     deadline=started + DEADLINE))
        assert time.monotonic() - started < RELOAD_GRACE + 0.5
    finally:
        await conn.aclose()


def test_without_a_deadline_the_reload_waits_for_the_server(
        paused_without_library: RedisServer) -> None:
    """The control: what the deadline cuts short is a real wait (the pause), and the call
    succeeds once the server answers."""
    client = Client(redis.Redis(port=paused_without_library.port), mode="function")
    started = time.monotonic()
    state = client.run(inspect_call(LockKeys("res")))
    assert not state.held
    assert time.monotonic() - started > RELOAD_GRACE + 0.5


def test_a_tight_deadline_still_loads_the_library(own_server: RedisServer) -> None:
    """A call whose deadline is shorter than loading takes (here: writes paused for 0.3 s, the
    deadline 0.1 s, as tight as a non-blocking acquire's) loads the library and runs: the reload
    gets ``RELOAD_GRACE``."""
    admin = redis.Redis(port=own_server.port)
    Client(admin, mode="function").load()
    admin.function_flush()
    client = Client(redis.Redis(port=own_server.port), mode="function")
    admin.execute_command("CLIENT", "PAUSE", 300, "WRITE")
    started = time.monotonic()
    state = client.drive(client.engine.run_one(inspect_call(LockKeys("res")),
                                               deadline=started + 0.1))
    assert not state.held
    assert 0.25 < time.monotonic() - started < RELOAD_GRACE
    admin.close()
