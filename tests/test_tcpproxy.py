"""The fault-injecting TCP proxy (tests/tcpproxy.py) does what the Redlock tests rely on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.tcpproxy import TcpProxy


@pytest.fixture
def proxy(redis_url: str) -> Iterator[TcpProxy]:
    with TcpProxy(urlparse(redis_url).port or 6379) as p:
        yield p


def _through(proxy: TcpProxy, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis(port=proxy.port, socket_timeout=timeout,
                       retry=Retry(NoBackoff(), 0))


def test_passes_commands_through(proxy: TcpProxy) -> None:
    r = _through(proxy)
    r.set("proxy:k", "v")
    assert r.get("proxy:k") == b"v"
    assert proxy.connections == 1


def test_delay_slows_every_reply(proxy: TcpProxy) -> None:
    r = _through(proxy)
    r.ping()
    proxy.delay = 0.1
    started = time.monotonic()
    r.ping()
    assert time.monotonic() - started >= 0.2  # request and reply both held back


def test_blackhole_hangs_until_the_client_times_out_and_heal_recovers(proxy: TcpProxy) -> None:
    r = _through(proxy, timeout=0.2)
    r.ping()
    proxy.blackhole = True
    with pytest.raises(redis.TimeoutError):
        r.ping()
    proxy.heal()
    assert r.ping()


def test_dropped_and_refused_connections_fail_fast(proxy: TcpProxy) -> None:
    r = _through(proxy)
    r.ping()
    proxy.refuse = True
    proxy.drop_all()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        r.ping()
    assert time.monotonic() - started < 1.0
    proxy.heal()
    assert r.ping()
