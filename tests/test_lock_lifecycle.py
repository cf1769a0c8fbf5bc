"""Issue 8 §3: every key the lock writes has a lifecycle. A full run (acquired, handed off to
waiters, released, a crashed holder's lease expired, abandoned waits, an unpopped grant) must end
with only the documented durable key left: the fence counter (README, "Keys a lock leaves"), and
with ephemeral fences not even that, once it expires."""

from __future__ import annotations

import threading

import pytest
import redis

import pyredislua
from pyredislua.cache import Cache
from pyredislua.lock import Lock, LockKeys, acquire_call, release_call
from tests.faultkit import wait_for

pytestmark = pytest.mark.lock


def _left(r: redis.Redis) -> dict[bytes, int]:
    """Every key and its TTL in ms (-1: none)."""
    return {key: int(r.pttl(key)) for key in r.scan_iter(count=1000)}


def _full_run(client: pyredislua.Client, fences: str) -> LockKeys:
    keys = LockKeys("life")
    holder = Lock(client, "life", ttl=5, fences=fences)  # with its watchdog
    assert holder.acquire(blocking=False)
    done = threading.Barrier(4)

    def wait() -> None:
        lock = Lock(client, "life", ttl=5, auto_renew=False, fences=fences)
        assert lock.acquire(timeout=10)
        lock.release()  # hands off to the next waiter
        done.wait(10)

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for i, t in enumerate(waiters):
        t.start()
        wait_for(lambda n=i + 1: holder.inspect().waiters >= n, what="waiters to register")
    fence_ttl = 0 if fences == "durable" else 3_600_000
    # a waiter that registers and is never heard of again
    assert not client.run(acquire_call(keys, "abandoned", 200, 300, fence_ttl)).acquired
    holder.release()
    done.wait(10)
    for t in waiters:
        t.join(10)
    # a grant nobody pops: its waiter registered and died
    crashed = Lock(client, "life", ttl=0.2, auto_renew=False, fences=fences)
    assert crashed.acquire(timeout=2)  # takes over a grant waiting for "abandoned", if any
    assert not client.run(acquire_call(keys, "dies", 200, 300, fence_ttl)).acquired
    assert client.run(release_call(keys, crashed.token, 200)) == 2
    # a holder that crashes: its lease runs out
    wait_for(lambda: not holder.locked(), what="the unpopped grant to expire")
    last = Lock(client, "life", ttl=0.2, auto_renew=False, fences=fences)
    assert last.acquire(timeout=2)
    return keys


def test_a_durable_lock_leaves_only_its_fence_counter(client: pyredislua.Client,
                                                      r: redis.Redis) -> None:
    keys = _full_run(client, "durable")
    # the last lease, the registrations (a second after the last requeue) and grants run out
    wait_for(lambda: set(_left(r)) == {keys.fence.encode()}, timeout=5,
             what="everything but the fence counter to expire")
    assert _left(r) == {keys.fence.encode(): -1}  # durable: no TTL, never goes backwards
    assert int(r.get(keys.fence) or 0) >= 6


def test_an_ephemeral_lock_leaves_nothing_without_a_ttl(client: pyredislua.Client,
                                                        r: redis.Redis) -> None:
    keys = _full_run(client, "ephemeral")
    wait_for(lambda: set(_left(r)) == {keys.fence.encode()}, timeout=5,
             what="everything but the fence counter to expire")
    ttl = _left(r)[keys.fence.encode()]
    assert 0 < ttl <= 3_600_000  # and then it goes too


def test_cache_single_flight_leaves_no_permanent_fence_keys(r: redis.Redis) -> None:
    """5,000 keys computed (each under its single-flight lock) and expired: no lock key without
    a TTL remains (before: one permanent fence counter per key ever computed)."""
    cache = Cache(pyredislua.Client(r, mode="function"), "life", ttl=0.2)
    for i in range(5000):
        assert cache.get_or_compute(f"k{i}", lambda i=i: i) == i
    assert cache.stats.computes == 5000
    wait_for(lambda: not any(k.startswith(b"prl:c:") or b":entry" in k for k in _left(r)
                             if b"lock" not in k), timeout=10, what="the entries to expire")
    permanent = [k for k, ttl in _left(r).items() if ttl == -1 and b":lock:" in k]
    assert not permanent, f"{len(permanent)} lock keys without a TTL, e.g. {permanent[:3]}"
    fences = [k for k in _left(r) if k.endswith(b":fence")]
    assert len(fences) == 5000  # one per key, each expiring an hour after its last use
