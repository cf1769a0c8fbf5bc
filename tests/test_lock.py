"""The lock through the Python API: fencing, ownership, waiting, watchdog, asyncio."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis

import pyredislua
import pyredislua.lock
from pyredislua.engine.protocol import Call
from pyredislua.lock import Lock, LockKeys, acquire_call, release_call

pytestmark = pytest.mark.lock


def test_fences_increase_across_release_and_expiry(
    client: pyredislua.Client, r: redis.Redis
) -> None:
    a = Lock(client, "res", ttl=10, auto_renew=False)
    b = Lock(client, "res", ttl=10, auto_renew=False)
    assert a.acquire(blocking=False)
    first = a.fence
    a.release()
    assert b.acquire(blocking=False)
    assert b.fence is not None and first is not None and b.fence > first
    r.delete(b.keys.lock)  # the lease is gone, as after expiry
    assert a.acquire(blocking=False)
    assert a.fence is not None and a.fence > b.fence


def test_only_the_owner_extends_or_releases(client: pyredislua.Client) -> None:
    holder = Lock(client, "res", ttl=10, auto_renew=False)
    other = Lock(client, "res", ttl=10, auto_renew=False)
    assert holder.acquire(blocking=False)
    assert not other.acquire(blocking=False)
    with pytest.raises(pyredislua.LockNotOwnedError):
        other.release()
    with pytest.raises(pyredislua.LockNotOwnedError):
        other.extend()
    assert holder.owned() and other.locked() and not other.owned()
    state = holder.inspect()
    assert state.held and state.owner == holder.token and state.fence == holder.fence
    holder.release()
    assert not holder.inspect().held


def test_extend_never_resurrects(client: pyredislua.Client, r: redis.Redis) -> None:
    lock = Lock(client, "res", ttl=10, auto_renew=False)
    assert lock.acquire(blocking=False)
    r.delete(lock.keys.lock)
    with pytest.raises(pyredislua.LockNotOwnedError):
        lock.extend()
    assert r.exists(lock.keys.lock) == 0


def test_retried_acquire_is_idempotent(client: pyredislua.Client) -> None:
    keys = LockKeys("res")
    first = client.run(acquire_call(keys, "tok", 10_000))
    again = client.run(acquire_call(keys, "tok", 10_000))
    assert first.acquired and again.acquired and first.fence == again.fence
    assert client.run(release_call(keys, "tok"))
    assert not client.run(release_call(keys, "tok"))  # one hold, released once


def test_blocking_timeout_is_honoured_to_the_millisecond(client: pyredislua.Client) -> None:
    holder = Lock(client, "res", ttl=30, auto_renew=False)
    waiter = Lock(client, "res", ttl=30, auto_renew=False)
    assert holder.acquire(blocking=False)
    for timeout in (0.005, 0.05, 0.25):
        start = time.monotonic()
        assert not waiter.acquire(timeout=timeout)
        took = time.monotonic() - start
        assert timeout <= took < timeout + 0.05, (timeout, took)


def test_release_wakes_a_blocked_waiter(client: pyredislua.Client) -> None:
    holder = Lock(client, "res", ttl=30, auto_renew=False)
    waiter = Lock(client, "res", ttl=30, auto_renew=False)
    assert holder.acquire(blocking=False)
    blocked = threading.Event()
    got: list[float] = []

    def wait() -> None:
        blocked.set()
        if waiter.acquire(timeout=20):
            got.append(time.monotonic())

    t = threading.Thread(target=wait)
    t.start()
    blocked.wait()
    # wait until the waiter has registered, then release: the hand-off wakes it at once
    while holder.inspect().waiters == 0:
        time.sleep(0.001)
    released_at = time.monotonic()
    holder.release()
    t.join(10)
    assert got and got[0] - released_at < 0.5  # woken by the release, not by a 2 s poll
    assert waiter.fence is not None and holder.fence is not None
    assert waiter.fence > holder.fence


def test_releaser_cannot_barge_ahead_of_a_waiter(client: pyredislua.Client) -> None:
    holder = Lock(client, "res", ttl=30, auto_renew=False, handoff=10)
    waiter_keys = LockKeys("res")
    assert holder.acquire(blocking=False)
    # a waiter registers (as a blocking acquire does) but has not popped its ticket yet
    assert not client.run(acquire_call(waiter_keys, "waiter", 30_000, wait_ms=10_000)).acquired
    holder.release()
    assert not holder.acquire(blocking=False)  # reserved for the registered waiter
    assert client.run(acquire_call(waiter_keys, "waiter", 30_000)).acquired


def test_context_manager_raises_on_timeout(client: pyredislua.Client) -> None:
    holder = Lock(client, "res", ttl=30, auto_renew=False)
    assert holder.acquire(blocking=False)
    with pytest.raises(pyredislua.LockTimeoutError), Lock(client, "res", blocking_timeout=0.01):
        pass


def test_watchdog_keeps_a_short_lease_alive(client: pyredislua.Client) -> None:
    lock = Lock(client, "res", ttl=0.5)  # short, with room for a loaded 2-core CI machine
    with lock:
        end = time.monotonic() + 1.5  # three leases long
        while time.monotonic() < end:
            assert lock.owned()
            time.sleep(0.02)
        assert not lock.lost
    assert not lock.inspect().held


def test_watchdog_reports_a_lost_lease(client: pyredislua.Client, r: redis.Redis) -> None:
    lost = threading.Event()
    lock = Lock(client, "res", ttl=0.3, on_lost=lambda _lock: lost.set())
    with pytest.raises(pyredislua.LockLostError), lock:
        r.delete(lock.keys.lock)  # the lease vanished (expired during a pause, or failover)
        assert lost.wait(5)
        assert lock.lost and "renewed" in (lock.lost_reason or "")


def test_max_hold_caps_renewal(client: pyredislua.Client) -> None:
    lost = threading.Event()
    lock = Lock(client, "res", ttl=1.0, max_hold=1.2, on_lost=lambda _lock: lost.set())
    started = time.monotonic()
    with pytest.raises(pyredislua.LockLostError, match="max_hold"), lock:
        assert lost.wait(5)
    held_for = time.monotonic() - started
    assert 1.19 <= held_for < 2.5  # the local estimate of the lease end rounds down
    assert not lock.inspect().held


def test_lease_outliving_work_without_watchdog_is_reported(
    client: pyredislua.Client, r: redis.Redis
) -> None:
    lock = Lock(client, "res", ttl=10, auto_renew=False)
    with pytest.raises(pyredislua.LockLostError), lock:
        r.delete(lock.keys.lock)


def test_tokens_belong_to_lock_objects_not_threads(client: pyredislua.Client) -> None:
    lock = Lock(client, "res", ttl=10, auto_renew=False)
    assert lock.acquire(blocking=False)
    t = threading.Thread(target=lock.release)  # another thread may release this object's hold
    t.start()
    t.join()
    assert not lock.inspect().held


async def test_async_lock(aclient: pyredislua.AsyncClient) -> None:
    async with Lock(aclient, "res", ttl=0.2) as lock:
        first = lock.fence
        end = time.monotonic() + 0.7
        while time.monotonic() < end:  # the watchdog task renews across several leases
            assert await lock.owned()
            await asyncio.sleep(0.02)
    assert not (await lock.inspect()).held
    other = Lock(aclient, "res")
    assert await other.acquire(blocking=False)
    assert other.fence is not None and first is not None and other.fence > first
    await other.release()


async def test_async_waiters_are_served_in_order(aclient: pyredislua.AsyncClient) -> None:
    holder = Lock(aclient, "res", auto_renew=False)
    assert await holder.acquire(blocking=False)
    order: list[int] = []

    async def wait(i: int) -> None:
        lock = Lock(aclient, "res", auto_renew=False)
        assert await lock.acquire(timeout=10)
        order.append(i)
        await lock.release()

    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(wait(i)))
        while (await holder.inspect()).waiters < i + 1:
            await asyncio.sleep(0.001)
    await holder.release()
    await asyncio.gather(*tasks)
    assert sorted(order) == [0, 1, 2]


async def test_cancelled_release_still_releases(aclient: pyredislua.AsyncClient) -> None:
    lock = Lock(aclient, "res")
    assert await lock.acquire(blocking=False)
    task = asyncio.create_task(lock.release())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    probe = Lock(aclient, "res")
    assert await probe.acquire(timeout=2)  # the shielded release went through
    await probe.release()


def test_unclaimed_grant_is_freed_after_the_handoff_window(
    client: pyredislua.Client, r: redis.Redis
) -> None:
    keys = LockKeys("res")
    assert client.run(acquire_call(keys, "holder", 30_000)).acquired
    # a waiter registers, then dies before it blocks: nobody will pop the grant
    assert not client.run(acquire_call(keys, "dead-waiter", 30_000, wait_ms=30_000)).acquired
    assert client.run(release_call(keys, "holder", 30_000, handoff_ms=50))
    granted = client.run(pyredislua.lock.inspect_call(keys))
    assert granted.held and (granted.owner or "").startswith("grant:")
    assert not client.run(acquire_call(keys, "newcomer", 30_000)).acquired  # reserved for now
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:  # the hand-off window is 50 ms of server time
        time.sleep(0.005)
    taken = client.run(acquire_call(keys, "newcomer", 30_000))
    # nobody ever held with the unpopped grant's fence: the newcomer takes it over, fence and all
    assert taken.acquired and taken.fence == granted.fence
    assert r.llen(keys.signal) == 0  # the stale grant can never be popped afterwards


async def test_async_watchdog_reports_a_lost_lease(
    aclient: pyredislua.AsyncClient, r: redis.Redis
) -> None:
    lost = asyncio.Event()
    lock = Lock(aclient, "res", ttl=0.3, on_lost=lambda _lock: lost.set())
    with pytest.raises(pyredislua.LockLostError):
        async with lock:
            r.delete(lock.keys.lock)
            await asyncio.wait_for(lost.wait(), 5)
    assert lock.lost


async def test_async_blocking_acquire_is_woken_by_release(aclient: pyredislua.AsyncClient) -> None:
    holder = Lock(aclient, "res", auto_renew=False)
    waiter = Lock(aclient, "res", auto_renew=False)
    assert await holder.acquire(blocking=False)
    task = asyncio.create_task(waiter.acquire(timeout=10))
    while (await holder.inspect()).waiters == 0:
        await asyncio.sleep(0.001)
    released_at = time.monotonic()
    await holder.release()
    assert await task
    assert time.monotonic() - released_at < 0.5
    assert waiter.fence is not None and holder.fence is not None and waiter.fence > holder.fence
    await waiter.release()


def test_works_with_decoded_responses(redis_url: str, r: redis.Redis, mode: str) -> None:
    conn = redis.Redis.from_url(redis_url, decode_responses=True)
    client = pyredislua.Client(conn, mode=mode)  # type: ignore[arg-type]
    holder = Lock(client, "res", auto_renew=False)
    waiter = Lock(client, "res", auto_renew=False)
    assert holder.acquire(blocking=False)
    state = holder.inspect()
    assert state.owner == holder.token and state.fence == holder.fence
    done = threading.Thread(target=lambda: waiter.acquire(timeout=10))
    done.start()
    while holder.inspect().waiters == 0:
        time.sleep(0.001)
    holder.release()
    done.join()
    assert waiter.owned()
    waiter.release()
    conn.close()


def test_a_grant_takes_the_waiters_own_lease(client: pyredislua.Client) -> None:
    holder = Lock(client, "res", ttl=30, auto_renew=False)
    waiter = Lock(client, "res", ttl=5, auto_renew=False)
    assert holder.acquire(blocking=False)
    t = threading.Thread(target=lambda: waiter.acquire(timeout=10))
    t.start()
    while holder.inspect().waiters == 0:
        time.sleep(0.001)
    # another waiter with a longer lease registers last: the grant carries its lease length
    assert not client.run(acquire_call(holder.keys, "other", 20_000, wait_ms=10_000)).acquired
    holder.release()
    t.join(10)
    state = waiter.inspect()
    assert state.owner == waiter.owner_token and state.owner.startswith("grant:")
    assert 0 < state.pttl_ms <= 5_001  # set to the waiter's 5 s (and 1 ms slack), not the 20 s
    waiter.release()


async def test_one_class_refuses_the_other_clients_with(client: pyredislua.Client,
                                                        aclient: pyredislua.AsyncClient) -> None:
    """``with`` on a Lock over an AsyncClient (or ``async with`` over a Client) would never
    await its acquire: it is refused before anything is sent."""
    with pytest.raises(TypeError, match="async with"), Lock(aclient, "res"):  # type: ignore[misc]
        pass
    with pytest.raises(TypeError, match="'with'"):
        async with Lock(client, "res"):  # type: ignore[misc]
            pass
    assert not await Lock(aclient, "res").locked()


async def test_async_watchdog_starts_again_after_a_lost_lease(
    aclient: pyredislua.AsyncClient, r: redis.Redis
) -> None:
    lost = asyncio.Event()
    lock = Lock(aclient, "res", ttl=0.3, on_lost=lambda _lock: lost.set())
    assert await lock.acquire(blocking=False)
    r.delete(lock.keys.lock)
    await asyncio.wait_for(lost.wait(), 5)  # the renewal task found the lease gone and ended
    assert await lock.acquire(blocking=False)  # a new hold: a new renewal task
    end = time.monotonic() + 0.9  # three leases long
    while time.monotonic() < end:
        assert await lock.owned()
        await asyncio.sleep(0.02)
    assert lock.held
    await lock.release()


def test_integer_arguments_with_leading_zeros_mean_their_numbers(client: pyredislua.Client,
                                                                 r: redis.Redis) -> None:
    """The Lua passes canonical integer arguments on to Redis as given (no number formatting);
    non-canonical ones ("030000", accepted as 30000) must still reach Redis as their numbers."""
    keys = LockKeys("res")

    def raw(op: str, *args: str | int) -> Any:
        return client.run(Call(op, keys.all if op != "lock.extend" else (keys.lock,), args))

    assert raw("lock.acquire", "tok", "030000", "-1", "03600000")[0] == 1
    assert 29_000 < r.pttl(keys.lock) <= 30_001  # a lease outlives its ttl by 1 ms on the server
    assert 3_500_000 < r.pttl(keys.fence) <= 3_600_000
    assert raw("lock.extend", "tok", "060000") == 1
    assert 59_000 < r.pttl(keys.lock) <= 60_001
    assert raw("lock.acquire", "w", "05000", "02250")[0] == 0  # registers
    assert r.zscore(keys.waiters, "") == -5000
    assert 2_000 < r.pttl(keys.waiters) <= 2_250
    assert raw("lock.release", "tok", "030000", "0100", "", "01000") == 2  # grants, requeues
    assert r.zscore(keys.waiters, "tok") is not None
    assert r.zscore(keys.waiters, "") == -5000  # the shortest lease asked for stays the floor


def test_renewer_thread_ends_when_nothing_is_held_and_comes_back(
        client: pyredislua.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """One renewer thread per client, ended once nothing is held (it leaked per client before)."""
    from pyredislua.lock import watchdog

    monkeypatch.setattr(watchdog, "IDLE_END", 0.05)
    renewer_threads = lambda: {t for t in threading.enumerate()  # noqa: E731
                               if t.name == "pyredislua-renewer" and t.is_alive()}
    before = renewer_threads()
    lock = Lock(client, "idle", ttl=0.3)
    assert lock.acquire(blocking=False)
    lock.release()
    deadline = time.monotonic() + 5
    while renewer_threads() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not renewer_threads() - before
    assert lock.acquire(blocking=False)  # a new hold starts a thread again, which renews it
    end = time.monotonic() + 0.9  # three leases
    while time.monotonic() < end:
        assert lock.owned()
        time.sleep(0.02)
    lock.release()
