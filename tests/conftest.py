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
from pyredislua.topology import LocalCluster, LocalSentinel
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


# -- clusters and Sentinel (marker `cluster`) ---------------------------------------------------
# Starting a cluster costs seconds: each set-up is started once per session, on first use, and
# shared; the function-scoped fixtures bring it back to full strength (a test may have killed
# or added nodes) and flush data, functions and scripts before each test.


def _needs_redis_cli() -> None:
    import shutil

    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed (redis-cli --cluster create builds the cluster)")


@pytest.fixture(scope="session")
def cluster_servers() -> Iterator[LocalCluster]:
    """3 primaries, each with one replica (real redis-server --cluster-enabled processes)."""
    _needs_redis_cli()
    with LocalCluster(primaries=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def one_primary_servers() -> Iterator[LocalCluster]:
    """A cluster of one primary (all 16384 slots) and no replica."""
    with LocalCluster(primaries=1, replicas=0) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sentinel_servers() -> Iterator[LocalSentinel]:
    """A primary with one replica behind three Sentinels."""
    with LocalSentinel(replicas=1, sentinels=3) as sentinel:
        yield sentinel


@pytest.fixture
def cluster(cluster_servers: LocalCluster) -> LocalCluster:
    cluster_servers.restore()
    cluster_servers.flush()
    return cluster_servers


@pytest.fixture
def one_primary(one_primary_servers: LocalCluster) -> LocalCluster:
    one_primary_servers.restore()
    one_primary_servers.flush()
    return one_primary_servers


@pytest.fixture
def sentinel(sentinel_servers: LocalSentinel) -> LocalSentinel:
    sentinel_servers.restore()
    with redis.Redis(port=sentinel_servers.primary()) as primary:
        _reset(primary)
    return sentinel_servers


@pytest.fixture
def rc(cluster: LocalCluster) -> Iterator[redis.RedisCluster]:
    conn = redis.RedisCluster.from_url(cluster.url)
    yield conn
    conn.close()


@pytest.fixture
async def arc(cluster: LocalCluster) -> AsyncIterator[redis.asyncio.RedisCluster]:
    conn = redis.asyncio.RedisCluster.from_url(cluster.url)
    yield conn
    await conn.aclose()


@pytest.fixture
def cluster_client(rc: redis.RedisCluster, mode: str) -> pyredislua.Client:
    return pyredislua.Client(rc, mode=mode)  # type: ignore[arg-type]


@pytest.fixture
def cluster_aclient(arc: redis.asyncio.RedisCluster, mode: str) -> pyredislua.AsyncClient:
    return pyredislua.AsyncClient(arc, mode=mode)  # type: ignore[arg-type]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    faultkit.write_report()


def snapshot(r: redis.Redis) -> dict[bytes, tuple[bytes | None, bool]]:
    """Every key's serialized value and whether it has a TTL: equal snapshots, unchanged data."""
    state: dict[bytes, tuple[bytes | None, bool]] = {}
    for key in r.scan_iter(count=1000):
        state[key] = (r.dump(key), r.pttl(key) >= 0)
    return state
