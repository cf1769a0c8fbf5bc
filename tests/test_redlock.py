"""Redlock on five real redis-server processes: the rules, sync and asyncio, nodes down, slow and
dropping nodes behind a fault-injecting proxy, a holder paused past its lease (SIGSTOP), nodes
restarted with and without AOF, fences that stay monotonic when the nodes' counters diverge."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

import pyredislua
from pyredislua.errors import LockLostError
from pyredislua.lock import LockKeys
from pyredislua.redlock import (
    Redlock,
    drift_ms,
    fence_of,
    quorum,
    release_all,
    retry_delay,
    valid_until,
)
from pyredislua.redlock.redlock import SyncNodes, _executor
from tests.faultkit import FaultServer
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.lock

N = 5
NODE_TIMEOUT = 0.1
KEYS = LockKeys("res")


@pytest.fixture(scope="module")
def five() -> Iterator[list[FaultServer]]:
    servers = [FaultServer() for _ in range(N)]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.close()


@pytest.fixture
def nodes(five: list[FaultServer]) -> list[FaultServer]:
    """The five servers, all up, empty (a test may have killed or paused some)."""
    for server in five:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        if not server.alive:
            server.process = None
            server.start()
        with server.admin() as admin:
            admin.flushall()
            admin.function_flush()
    return five


def sync_clients(ports: list[int]) -> list[pyredislua.Client]:
    return [pyredislua.Client(redis.Redis(port=p)) for p in ports]


def ports_of(servers: list[FaultServer]) -> list[int]:
    return [s.port for s in servers]


def owners(servers: list[FaultServer], keys: LockKeys = KEYS) -> list[str | None]:
    out: list[str | None] = []
    for server in servers:
        if not server.alive:
            out.append(None)
            continue
        with server.admin() as admin:
            owner = admin.hget(keys.lock, "owner")
        out.append(None if owner is None else owner.decode())
    return out


def free_again(servers: list[FaultServer], within: float = 1.0) -> None:
    """Wait until no node holds the lock: a call slower than the majority may land after the
    fan-out returned (a late acquire then holds its node until its lease ends)."""
    deadline = time.monotonic() + within
    while any(owners(servers)):
        assert time.monotonic() < deadline, owners(servers)
        time.sleep(0.005)


def counters(servers: list[FaultServer], keys: LockKeys = KEYS) -> list[int]:
    out = []
    for server in servers:
        with server.admin() as admin:
            out.append(int(admin.get(keys.fence) or 0))
    return out


# -- the rules (pure) ---------------------------------------------------------------------------


def test_rules() -> None:
    assert [quorum(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]
    assert drift_ms(10_000) == 102 and drift_ms(1) == 2
    assert valid_until(100.0, 10_000) == pytest.approx(100.0 + 9.898)
    assert retry_delay(0.0, 0.2, 10) == pytest.approx(0.1)
    assert retry_delay(0.999, 0.2, 10) == pytest.approx(0.2998)
    assert retry_delay(0.5, 0.2, 0.05) == pytest.approx(0.05)
    assert retry_delay(0.5, 0.2, 0.0) is None
    # counters in step: no raise; one node far ahead: the others are raised to it
    assert fence_of({0: 4, 1: 4, 2: 4}, 5) == (4, [])
    assert fence_of({0: 4, 1: 4, 2: 4, 3: 2}, 5) == (4, [])
    assert fence_of({0: 9, 1: 4, 2: 4}, 5) == (9, [1, 2])
    assert fence_of({0: 9, 1: 9, 2: 4, 4: 3}, 5) == (9, [2, 4])


# -- sync and asyncio ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["function", "script"])
def test_excludes_and_fences_increase(nodes: list[FaultServer], mode: str) -> None:
    clients = [pyredislua.Client(redis.Redis(port=p), mode=mode)  # type: ignore[arg-type]
               for p in ports_of(nodes)]
    a = Redlock(clients, "res", ttl=5, node_timeout=NODE_TIMEOUT, auto_renew=False)
    b = Redlock(clients, "res", ttl=5, node_timeout=NODE_TIMEOUT, auto_renew=False,
                retry_delay=0.05)
    assert a.acquire(blocking=False)
    assert a.held and a.fence == 1 and a.valid_until is not None
    assert owners(nodes) == [a.owner_token] * N
    assert not b.acquire(blocking=False)
    assert b.last_attempt is not None and "5 busy" in b.last_attempt.reason
    started = time.monotonic()
    assert not b.acquire(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 0.3 + 2 * NODE_TIMEOUT + 0.2
    assert owners(nodes) == [a.owner_token] * N  # b's failed attempts touched nothing of a's
    a.extend()
    a.release()
    assert owners(nodes) == [None] * N
    assert b.acquire(timeout=1)
    assert b.fence is not None and b.fence > 1
    b.release()
    # what a release leaves on each node: the fence counter (durable), nothing else
    for server in nodes:
        with server.admin() as admin:
            assert sorted(admin.keys("*")) == [KEYS.fence.encode()]
            assert admin.pttl(KEYS.fence) == -1
    with pytest.raises(pyredislua.LockNotOwnedError):
        b.release()


def test_context_manager_and_watchdog_sync(nodes: list[FaultServer]) -> None:
    clients = sync_clients(ports_of(nodes))
    lost: list[Any] = []
    with Redlock(clients, "res", ttl=0.6, node_timeout=NODE_TIMEOUT, on_lost=lost.append) as a:
        first = a.valid_until
        assert first is not None
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # three lease lengths: renewed, never lost
            assert a.held
            time.sleep(0.05)
        assert a.valid_until is not None and a.valid_until > first + 0.5
        assert owners(nodes) == [a.owner_token] * N
    assert not lost and owners(nodes) == [None] * N


async def test_asyncio(nodes: list[FaultServer]) -> None:
    conns = [redis.asyncio.Redis(port=p) for p in ports_of(nodes)]
    clients = [pyredislua.AsyncClient(c) for c in conns]
    try:
        async with Redlock(clients, "res", ttl=0.6, node_timeout=NODE_TIMEOUT) as a:
            first = a.valid_until
            other = Redlock(clients, "res", ttl=0.6, node_timeout=NODE_TIMEOUT)
            assert not await other.acquire(blocking=False)
            await asyncio.sleep(1.2)  # two lease lengths: the renewal task keeps it
            assert a.held and a.valid_until is not None and first is not None
            assert a.valid_until > first + 0.5
            await a.extend(1.0)
            fence = a.fence
        assert owners(nodes) == [None] * N
        assert await other.acquire(timeout=1)
        assert other.fence is not None and fence is not None and other.fence > fence
        await other.release()
    finally:
        for conn in conns:
            await conn.aclose()


def test_constructor_checks(nodes: list[FaultServer]) -> None:
    clients = sync_clients(ports_of(nodes))
    aclient = pyredislua.AsyncClient(redis.asyncio.Redis(port=nodes[0].port))
    with pytest.raises(TypeError):
        Redlock([*clients, aclient], "res")  # type: ignore[list-item]
    with pytest.raises(ValueError):
        Redlock(clients, "res", ttl=0.05, node_timeout=0.1)
    with pytest.raises(ValueError):
        Redlock([], "res")


# -- nodes down, slow, dropping -----------------------------------------------------------------


@pytest.mark.faults
@pytest.mark.parametrize("down", [1, 2])
def test_minority_down_still_acquires(nodes: list[FaultServer], down: int) -> None:
    clients = sync_clients(ports_of(nodes))
    for server in nodes[:down]:
        server.kill()
    lock = Redlock(clients, "res", ttl=2, node_timeout=NODE_TIMEOUT, auto_renew=False)
    started = time.monotonic()
    assert lock.acquire(timeout=1)
    assert time.monotonic() - started < NODE_TIMEOUT + 0.2
    assert lock.fence == 1
    assert owners(nodes)[down:] == [lock.owner_token] * (N - down)
    lock.extend()
    assert lock.held
    lock.release()
    assert owners(nodes) == [None] * N


@pytest.mark.faults
def test_majority_down_fails_cleanly_within_timeout(nodes: list[FaultServer]) -> None:
    clients = sync_clients(ports_of(nodes))
    for server in nodes[:3]:
        server.kill()
    lock = Redlock(clients, "res", ttl=2, node_timeout=NODE_TIMEOUT, retry_delay=0.05)
    assert not lock.acquire(blocking=False)
    started = time.monotonic()
    assert not lock.acquire(timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 0.5 + 2 * NODE_TIMEOUT + 0.2, elapsed
    assert lock.last_attempt is not None and "3 unreachable" in lock.last_attempt.reason
    # the two nodes that granted were released: free well before the 2 s leases end (a release
    # the client stopped waiting for after node_timeout, on a loaded machine, still lands)
    free_again(nodes, within=1.0)
    with pytest.raises(pyredislua.LockTimeoutError, match="unreachable"), \
            Redlock(clients, "res", ttl=2, node_timeout=NODE_TIMEOUT, blocking_timeout=0.2):
        pass


def test_a_release_held_back_behind_its_nodes_previous_call_is_still_sent(
        nodes: list[FaultServer]) -> None:
    """A driver sends a node's call only once its previous call to the node is over (so a
    release never overtakes the acquire it undoes). A release held back longer than the node
    timeout must still be sent when its turn comes: it was timed from its round, was never sent,
    and the grant it undid stayed held until its lease ended (a failed attempt whose acquire
    replies came late left its grants so; CI once showed a failed attempt's two grants still
    held a second later, in test_majority_down_fails_cleanly_within_timeout)."""
    clients = sync_clients(ports_of(nodes))
    lock = Redlock(clients, "res", ttl=30, node_timeout=NODE_TIMEOUT, auto_renew=False)
    assert lock.acquire(blocking=False), lock.last_attempt
    driver = lock._driver
    assert isinstance(driver, SyncNodes)
    busy = threading.Event()
    # node 0's previous call still runs, 3 node timeouts long (an acquire whose reply is late)
    driver._lanes[0] = _executor().submit(busy.wait, 3 * NODE_TIMEOUT)
    votes = driver.drive(release_all(lock._engines, KEYS, lock._hold_token, {0, 1, 2, 3, 4},
                                     NODE_TIMEOUT))
    assert 0 not in votes.yes and len(votes.yes) == 4  # the driver stopped waiting for node 0
    free_again(nodes, within=1.0)  # ... and its release went out when its lane was free


@pytest.mark.faults
def test_slow_and_blackholed_nodes(nodes: list[FaultServer]) -> None:
    with contextlib.ExitStack() as stack:
        proxies = [stack.enter_context(TcpProxy(s.port)) for s in nodes]
        clients = sync_clients([p.port for p in proxies])
        lock = Redlock(clients, "res", ttl=2, node_timeout=NODE_TIMEOUT, auto_renew=False)
        assert lock.acquire(blocking=False), lock.last_attempt  # connections open
        lock.release()
        free_again(nodes)
        proxies[0].delay = 0.3  # slower than the node timeout
        proxies[1].blackhole = True  # never answers
        # (a release in flight to node 1 got lost: it stays busy until the lease ends)
        assert lock.acquire(timeout=1), (lock.last_attempt, owners(nodes))
        lock.release()
        started = time.monotonic()
        assert lock.acquire(blocking=False), lock.last_attempt
        # a majority answered: the slow node and the black hole cost nothing
        assert time.monotonic() - started < NODE_TIMEOUT / 2
        lock.release()
        proxies[2].delay = 0.3  # three of five too slow: no majority
        started = time.monotonic()
        assert not lock.acquire(timeout=0.4)
        assert time.monotonic() - started < 0.4 + 2 * NODE_TIMEOUT + 0.2
        assert lock.last_attempt is not None and "3 unreachable" in lock.last_attempt.reason
        for proxy in proxies:
            proxy.heal()
        # the slow nodes may have granted late; their leases run out by themselves
        assert lock.acquire(timeout=3)
        lock.release()


@pytest.mark.faults
def test_dropped_connections_keep_the_hold(nodes: list[FaultServer]) -> None:
    with contextlib.ExitStack() as stack:
        proxies = [stack.enter_context(TcpProxy(s.port)) for s in nodes]
        clients = sync_clients([p.port for p in proxies])
        lost: list[Any] = []
        lock = Redlock(clients, "res", ttl=0.6, node_timeout=NODE_TIMEOUT, on_lost=lost.append)
        assert lock.acquire(timeout=1)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for proxy in proxies[:2]:  # two nodes keep losing their connections
                proxy.drop_all()
            proxies[0].refuse = not proxies[0].refuse
            time.sleep(0.05)
            assert lock.held
        assert not lost
        proxies[0].heal()
        lock.release()
        assert owners(nodes) == [None] * N


@pytest.mark.faults
def test_majority_blackholed_loses_the_hold(nodes: list[FaultServer]) -> None:
    with contextlib.ExitStack() as stack:
        proxies = [stack.enter_context(TcpProxy(s.port)) for s in nodes]
        clients = sync_clients([p.port for p in proxies])
        lost: list[Any] = []
        holder = Redlock(clients, "res", ttl=0.6, node_timeout=NODE_TIMEOUT,
                         on_lost=lost.append)
        assert holder.acquire(timeout=1)
        fence = holder.fence
        for proxy in proxies[:3]:
            proxy.blackhole = True
        ends = holder.valid_until
        assert ends is not None
        deadline = ends + 3  # on_lost: at the deadline, or soon after under load
        while not lost and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lost == [holder] and holder.lost and not holder.held
        assert time.monotonic() >= ends  # not before its validity ran out
        with pytest.raises(LockLostError):
            holder.extend()
        # directly (no proxy) another client gets it once the leases ran out, with a higher fence
        other = Redlock(sync_clients(ports_of(nodes)), "res", ttl=2, node_timeout=NODE_TIMEOUT,
                        retry_delay=0.05)
        assert other.acquire(timeout=2)
        assert other.fence is not None and fence is not None and other.fence > fence
        other.release()


# -- a holder paused past its lease -------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, redis, pyredislua
    from pyredislua import Redlock
    ports = [int(p) for p in sys.argv[1:]]
    clients = [pyredislua.Client(redis.Redis(port=p)) for p in ports]
    lock = Redlock(clients, "res", ttl=0.5, node_timeout=0.1)
    assert lock.acquire(timeout=2)
    print(lock.fence, flush=True)
    sys.stdin.readline()
    lost_now = lock.lost
    try:
        lock.extend()
        extended = "extended"
    except Exception as error:
        extended = type(error).__name__
    print(lost_now, extended, lock.lost_reason, flush=True)
""")


@pytest.mark.faults
def test_paused_holder_loses_and_is_told(nodes: list[FaultServer]) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, ports_of(nodes))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=os.getcwd())
    try:
        assert holder.stdout is not None and holder.stdin is not None
        first_fence = int(holder.stdout.readline())
        holder.send_signal(signal.SIGSTOP)  # the holder and its watchdog thread freeze
        other = Redlock(sync_clients(ports_of(nodes)), "res", ttl=5, node_timeout=NODE_TIMEOUT,
                        retry_delay=0.05)
        assert other.acquire(timeout=3)  # once the paused holder's leases ran out
        assert other.fence is not None and other.fence > first_fence
        # a majority holds (a node that answered after the majority may not be among them)
        held_by_other = owners(nodes)
        assert held_by_other.count(other.owner_token) > N // 2
        holder.send_signal(signal.SIGCONT)
        holder.stdin.write("check\n")
        holder.stdin.flush()
        lost_now, extended, *_ = holder.stdout.readline().split()
        assert lost_now == "True"  # it knows, from its own clock, without asking
        assert extended == "LockLostError"
        assert holder.wait(10) == 0
        # the woken holder's clean-up released nothing of the new holder's (what the paused
        # holder still held itself, a node the new holder did not get, may have ended meanwhile:
        # its lease ran out, or its own clean-up released it)
        now = owners(nodes)
        assert other.held
        assert [t for t in now if t == other.owner_token] == [
            t for t in held_by_other if t == other.owner_token]
        assert all(now[i] == other.owner_token
                   for i, t in enumerate(held_by_other) if t == other.owner_token)
        other.release()
    finally:
        holder.kill()
        holder.wait()


# -- fences ---------------------------------------------------------------------------------------


def test_fence_stays_monotonic_when_counters_diverge(nodes: list[FaultServer]) -> None:
    """Node 0's counter is far ahead (it granted attempts the others did not). The highest
    fence alone would go back once node 0 is out of the majority; the raise prevents that."""
    for server, count in zip(nodes, [10, 7, 1, 1, 1]):
        with server.admin() as admin:
            admin.set(KEYS.fence, count)
    clients = sync_clients(ports_of(nodes))
    for server in nodes[3:]:  # the majority is 0, 1, 2: fences 11, 8, 2
        server.kill()
    a = Redlock(clients, "res", ttl=2, node_timeout=NODE_TIMEOUT, auto_renew=False)
    assert a.acquire(blocking=False)
    assert a.fence == 11
    assert counters(nodes[:3]) == [11, 11, 11]  # 1 and 2 were raised, while a held them
    a.release()
    for server in nodes[3:]:
        server.start()  # back, empty (counter 0): nodes 3 and 4 know nothing of a
    for server in nodes[:2]:  # the nodes that gave the high fences are out of later majorities
        server.kill()
    b = Redlock(clients, "res", ttl=2, node_timeout=NODE_TIMEOUT, auto_renew=False)
    assert b.acquire(timeout=1)
    assert b.fence == 12  # without the raise: 3
    b.release()


def test_an_acquire_while_held_is_refused(nodes: list[FaultServer]) -> None:
    clients = sync_clients(ports_of(nodes))
    a = Redlock(clients, "res", ttl=2, node_timeout=NODE_TIMEOUT, auto_renew=False)
    assert a.acquire(blocking=False)
    with pytest.raises(pyredislua.LockError, match="extend"):
        a.acquire(blocking=False)
    assert a.held and a.fence == 1
    a.release()


@pytest.mark.faults
def test_restart_with_aof_keeps_counters_and_leases() -> None:
    servers = [FaultServer(aof=True) for _ in range(N)]
    try:
        for server in servers:
            server.start()
        clients = sync_clients(ports_of(servers))
        a = Redlock(clients, "res", ttl=5, node_timeout=NODE_TIMEOUT, auto_renew=False)
        for _ in range(3):
            assert a.acquire(blocking=False)
            a.release()
        assert a.acquire(blocking=False) and a.fence == 4
        before = counters(servers)
        for server in servers[:3]:  # a majority crashes and comes back from its AOF
            server.crash_restart()
        assert counters(servers) == before and sorted(before)[2] >= 4
        b = Redlock(clients, "res", ttl=5, node_timeout=NODE_TIMEOUT, auto_renew=False)
        assert not b.acquire(blocking=False)  # a's leases survived
        a.release()
        assert b.acquire(timeout=1) and b.fence == 5
        b.release()
    finally:
        for server in servers:
            server.close()


@pytest.mark.faults
def test_restart_without_persistence_is_the_documented_limit(nodes: list[FaultServer]) -> None:
    """Measured, not wished away: nodes restarted without their data forget the lease and the
    counter. Two of five: still safe (the holder keeps a majority). A third: a second holder
    gets a majority while the first still holds, with a lower fence (README, Redlock)."""
    clients = sync_clients(ports_of(nodes))
    a = Redlock(clients, "res", ttl=10, node_timeout=NODE_TIMEOUT, auto_renew=False)
    for _ in range(2):
        assert a.acquire(blocking=False)
        a.release()
    assert a.acquire(blocking=False) and a.fence == 3
    b = Redlock(clients, "res", ttl=10, node_timeout=NODE_TIMEOUT, auto_renew=False)
    for server in nodes[:2]:
        server.crash_restart()
    assert not b.acquire(blocking=False)  # 2 of 5 granted: a still holds 3
    nodes[2].crash_restart()
    # the limit: both "hold" (the first call to a restarted node may fail: a retry follows)
    assert b.acquire(timeout=1), b.last_attempt
    assert a.held and b.held
    assert b.fence is not None and b.fence < 3  # and the fence went back
    b.release()
    a.release()


@pytest.mark.faults
async def test_asyncio_under_faults(nodes: list[FaultServer]) -> None:
    with contextlib.ExitStack() as stack:
        proxies = [stack.enter_context(TcpProxy(s.port)) for s in nodes]
        conns = [redis.asyncio.Redis(port=p.port) for p in proxies]
        clients = [pyredislua.AsyncClient(c) for c in conns]
        try:
            lost: list[Any] = []
            lock = Redlock(clients, "res", ttl=0.6, node_timeout=NODE_TIMEOUT,
                           retry_delay=0.05, on_lost=lost.append)
            assert await lock.acquire(timeout=1)  # connections open
            await lock.release()
            nodes[0].kill()
            proxies[1].blackhole = True
            assert await lock.acquire(timeout=1)
            await lock.release()
            started = time.monotonic()
            assert await lock.acquire(blocking=False), lock.last_attempt
            assert time.monotonic() - started < NODE_TIMEOUT / 2  # no wait for 0 and 1
            fence = lock.fence
            proxies[2].blackhole = True  # now no majority can renew: lost by its validity
            ends = lock.valid_until
            assert ends is not None
            while not lost and time.monotonic() < ends + 3:  # on_lost may trail under load
                await asyncio.sleep(0.01)
            assert lost == [lock] and time.monotonic() >= ends
            with pytest.raises(LockLostError):
                await lock.extend()
            started = time.monotonic()
            assert not await lock.acquire(timeout=0.3)
            assert time.monotonic() - started < 0.3 + 2 * NODE_TIMEOUT + 0.2
            for proxy in proxies[1:]:
                proxy.heal()
            assert await lock.acquire(timeout=2)
            assert lock.fence is not None and fence is not None and lock.fence > fence
            await lock.release()
        finally:
            for conn in conns:
                await conn.aclose()
