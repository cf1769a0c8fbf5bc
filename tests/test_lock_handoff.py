"""Issue 8 §2: the hand-off of a lock from a releasing holder to a waiter, at the level of the Lua
contract (raw calls, as any client makes them) and of the Python ``Lock``.

Each test pins one guarantee:

* a grant never outlives the lock it grants (both expire at the same instant);
* a waiter's believed lease is a lower bound of the server's, even for a grant made before the
  waiter's own call, and with the watchdog renewing a 100 ms lease (the case as reported);
* a grant carries at most the lease its popper asked for, so a crashed popper holds the lock for
  its own TTL at most;
* the waiters set stays bounded while waits are abandoned continuously;
* the documented redis-cli recipe (register, BLPOP, release with the popped grant token and no
  other argument) leaves no stray grant and wastes no fence.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import redis

import pyredislua
from pyredislua.lock import Lock, LockKeys, acquire_call, inspect_call, release_call
from tests.faultkit import wait_for

pytestmark = pytest.mark.lock


def _pexpiretimes(r: redis.Redis, keys: LockKeys) -> tuple[int, int]:
    pipe = r.pipeline(transaction=False)
    pipe.pexpiretime(keys.lock)
    pipe.pexpiretime(keys.signal)
    lock_at, signal_at = pipe.execute()
    return int(lock_at), int(signal_at)


def test_a_grant_expires_with_its_lock_never_after(client: pyredislua.Client,
                                                   r: redis.Redis) -> None:
    """Two PEXPIREs read the clock separately: the signal list could outlive the lock by a
    millisecond, and a waiter blocking in that millisecond after a fresh acquire popped a grant
    of a lock someone else now held. The grant and its lock must expire at the same instant."""
    keys = LockKeys("res")
    for i in range(1500):
        assert client.run(acquire_call(keys, f"holder-{i}", 30_000)).acquired
        assert not client.run(acquire_call(keys, f"waiter-{i}", 30_000, 60_000)).acquired
        assert client.run(release_call(keys, f"holder-{i}")) == 2
        lock_at, signal_at = _pexpiretimes(r, keys)
        assert lock_at > 0 and signal_at == lock_at, (i, lock_at, signal_at)
        r.delete(keys.lock, keys.signal, keys.waiters)


def test_a_grant_made_before_the_waiters_call_is_not_counted_from_its_call(
        client: pyredislua.Client, r: redis.Redis) -> None:
    """A grant reserved for a waiter that never came (it died between calls) used to be popped by
    the next blocking acquire, which counted the lease from its own, later, send time."""
    keys = LockKeys("res")
    # the grant stays reserved for registered waiters for 2 s (handoff)
    holder = Lock(client, "res", ttl=2, auto_renew=False, handoff=2)
    assert holder.acquire(blocking=False)
    assert not client.run(acquire_call(keys, "ghost", 2_000, 10_000)).acquired  # then dies
    holder.release()
    assert (client.run(inspect_call(keys)).owner or "").startswith("grant:")
    wait_for(lambda: 0 < r.pttl(keys.lock) <= 1_700, what="the unpopped grant to age")
    waiter = Lock(client, "res", ttl=2, auto_renew=False)
    assert waiter.acquire(timeout=1)
    server_left_ms = r.pttl(keys.lock)
    after = time.monotonic()
    lease = waiter._lease
    assert lease is not None and server_left_ms > 0
    # the server's lease ends no earlier than `before + server_left_ms`; the waiter must not
    # believe it lasts longer (1 ms for Redis' millisecond rounding)
    assert lease.valid_until <= after + (server_left_ms + 1) / 1000, (
        lease.valid_until - after, server_left_ms)
    waiter.release()


def test_a_watched_holder_of_an_aged_grant_never_overlaps_the_next_holder(
        client: pyredislua.Client, r: redis.Redis) -> None:
    """The case as reported: with the watchdog and ttl=0.1, a waiter that met a grant made well
    before its own call believed it held while a third client acquired (3 of 3 times). Now the
    registering call takes the aged grant over with a lease of its own; whenever another client
    gets the lock, the watched holder's belief has ended before (its renewals may fail under
    load: then it must know)."""
    keys = LockKeys("res")
    aged = 0
    for attempt in range(30):
        if aged == 3:
            break
        r.delete(keys.lock, keys.signal, keys.waiters)
        holder = Lock(client, "res", ttl=0.1, auto_renew=False, handoff=1)
        assert holder.acquire(blocking=False)
        # a waiter registers asking for the same 100 ms lease, then dies between calls
        assert not client.run(acquire_call(keys, f"ghost-{attempt}", 100, 10_000)).acquired
        holder.release()
        wait_for(lambda: r.pttl(keys.lock) <= 20, what="the unpopped grant to age",
                 interval=0.0005)
        if r.pttl(keys.lock) <= 0:
            continue  # a stall outlasted the grant (a loaded machine): set it up again
        aged += 1
        watched = Lock(client, "res", ttl=0.1, auto_renew=True)
        assert watched.acquire(timeout=1)
        try:
            end = time.monotonic() + 0.4
            while time.monotonic() < end:
                third = client.run(acquire_call(keys, f"third-{attempt}", 1_000))
                got = time.monotonic()
                lease = watched._lease
                believed = lease.valid_until if lease is not None and watched.held else None
                if third.acquired:
                    assert believed is None or believed <= got, (
                        f"attempt {attempt}: a third client holds while the watched holder "
                        f"believes {1000 * (believed - got):.1f} ms remain")
                    break
        finally:
            with contextlib.suppress(pyredislua.LockError):
                watched.release()
        r.delete(keys.lock)
    assert aged == 3, "the grant expired before it could be met, every time"


def test_a_grant_carries_no_longer_lease_than_its_popper_asked_for(
        client: pyredislua.Client, r: redis.Redis) -> None:
    """The grant's lease came from the last registered waiter: a popper that asked for 5 s got
    an hour, and had it crashed right after popping, the lock would have stayed held an hour."""
    keys = LockKeys("res")
    assert client.run(acquire_call(keys, "holder", 30_000)).acquired
    assert not client.run(acquire_call(keys, "popper", 5_000, 10_000)).acquired
    assert not client.run(acquire_call(keys, "other", 3_600_000, 10_000)).acquired
    assert client.run(release_call(keys, "holder", 30_000)) == 2
    popped = r.blpop([keys.signal], 1)  # the popper pops ... and crashes before anything else
    assert popped is not None
    lease_ms = int(popped[1].decode().split(":")[2])
    assert lease_ms <= 5_000
    assert 0 < r.pttl(keys.lock) <= 5_001  # the lease and the server's 1 ms slack


def test_the_waiters_set_stays_bounded_under_abandoned_waits(
        client: pyredislua.Client, r: redis.Redis) -> None:
    """Blocking acquires that time out and never come back stay registered until their wait
    ends. Cleanup must keep pace with registration: expired entries may not pile up while new
    waiters keep registering (the key's TTL never lapses under continuous contention)."""
    keys = LockKeys("res")
    assert client.run(acquire_call(keys, "holder", 600_000)).acquired
    worst = 0
    for i in range(3000):
        assert not client.run(acquire_call(keys, f"abandoned-{i}", 30_000, 1)).acquired
        if i % 100 == 99:
            pipe = r.pipeline(transaction=False)
            pipe.zcard(keys.waiters)
            pipe.zcount(keys.waiters, "(" + str(int(r.time()[0]) * 1000 + 5_000), "+inf")
            total, _ = pipe.execute()
            worst = max(worst, int(total))
    # everything above was abandoned: once its 1 ms is over, at most a handful may remain
    assert worst <= 64, f"the waiters set grew to {worst} entries"


def test_the_redis_cli_recipe_leaves_no_stray_grant(client: pyredislua.Client,
                                                    r: redis.Redis) -> None:
    """README recipe: acquire with a wait, BLPOP the signal list, hold with the popped grant,
    release with the grant token and no other argument."""
    keys = LockKeys("res")
    assert client.run(acquire_call(keys, "holder", 30_000)).acquired
    assert not client.run(acquire_call(keys, "operator", 30_000, 10_000)).acquired
    assert client.run(release_call(keys, "holder")) == 2
    popped = r.blpop([keys.signal], 1)
    assert popped is not None
    grant = popped[1].decode()
    assert client.run(release_call(keys, grant)) == 1, "released to a stray waiter (itself)"
    state = client.run(inspect_call(keys))
    assert not state.held and r.llen(keys.signal) == 0
    assert state.fence == 2 and state.waiters == 0  # two holds, two fences, nobody waiting
    newcomer = client.run(acquire_call(keys, "newcomer", 30_000))
    assert newcomer.acquired and newcomer.fence == 3


def test_python_waiters_hold_their_own_lease_and_leave_no_stray(client: pyredislua.Client,
                                                                r: redis.Redis) -> None:
    """Through the Python API: a hand-off chain of waiters with different TTLs; every grant is
    used, every lease is the holder's own, and the lock ends free with one fence per hold."""
    holder = Lock(client, "res", ttl=30, auto_renew=False, requeue=False)
    assert holder.acquire(blocking=False)
    leases: list[int] = []
    done = threading.Barrier(4)

    def wait(ttl: float) -> None:
        lock = Lock(client, "res", ttl=ttl, auto_renew=False, requeue=False)
        assert lock.acquire(timeout=10)
        leases.append(lock.inspect().pttl_ms)
        lock.release()
        done.wait(10)

    threads = [threading.Thread(target=wait, args=(ttl,)) for ttl in (5, 60, 7)]
    for i, t in enumerate(threads):
        t.start()
        wait_for(lambda n=i + 1: holder.inspect().waiters >= n, what="the waiter to register")
    holder.release()
    done.wait(10)
    for t in threads:
        t.join(10)
    assert len(leases) == 3
    state = holder.inspect()
    assert not state.held and state.fence == 4 and r.llen(holder.keys.signal) == 0
