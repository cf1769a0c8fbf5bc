"""Fixtures: throwaway redis-server processes on free loopback ports.

Set PYREDISLUA_TEST_REDIS_URL (or pass --redis-url) to use an external server instead; it must be
disposable, the tests flush it. Tests that restart the server always get their own process.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, settings

import pyredislua
from pyredislua.server import RedisServer
from tests import faultkit

settings.register_profile(
    "default", max_examples=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough", max_examples=400, deadline=None, stateful_step_count=80,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("PYREDISLUA_HYPOTHESIS_PROFILE", "default"))

MODES = ("function", "script")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--redis-url", default=os.environ.get("PYREDISLUA_TEST_REDIS_URL"),
                     help="use this (disposable!) Redis instead of a throwaway redis-server")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    external = request.config.getoption("--redis-url")
    if external:
        yield external
        return
    with RedisServer() as server:
        yield server.url


def _reset(r: redis.Redis) -> None:
    r.flushall()
    r.function_flush()
    r.script_flush()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    _reset(conn)
    yield conn
    conn.close()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
def client(r: redis.Redis, mode: str) -> pyredislua.Client:
    return pyredislua.Client(r, mode=mode)  # type: ignore[arg-type]


@pytest.fixture
async def aclient(
    redis_url: str, r: redis.Redis, mode: str
) -> AsyncIterator[pyredislua.AsyncClient]:
    conn = redis.asyncio.Redis.from_url(redis_url)
    yield pyredislua.AsyncClient(conn, mode=mode)  # type: ignore[arg-type]
    await conn.aclose()


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that restart or reconfigure it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def fault_server() -> Iterator[faultkit.FaultServer]:
    """A redis-server to inject faults into; nothing persisted (a restart loses everything)."""
    with faultkit.FaultServer() as server:
        yield server


@pytest.fixture
def aof_server() -> Iterator[faultkit.FaultServer]:
    """A redis-server to inject faults into, persisting every write (appendfsync always)."""
    with faultkit.FaultServer(aof=True) as server:
        yield server


@pytest.fixture
def fault_report() -> faultkit.FaultReport:
    """Where a fault test records its outcome for the README's fault table."""
    return faultkit.REPORT


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    faultkit.write_report()


def snapshot(r: redis.Redis) -> dict[bytes, tuple[bytes | None, bool]]:
    """Every key's serialized value and whether it has a TTL: equal snapshots, unchanged data."""
    state: dict[bytes, tuple[bytes | None, bool]] = {}
    for key in r.scan_iter(count=1000):
        state[key] = (r.dump(key), r.pttl(key) >= 0)
    return state
