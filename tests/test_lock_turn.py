"""Issue 10 §3: bounded barging (``Lock(turn=...)``).

Within its turn, a looping holder's release keeps the lock for its own next acquire (the lock is
*carried*); past the turn the longest-blocked waiter gets it by a grant. What each test pins:

* a carried lock is taken again with the next fence, and nobody else takes it meanwhile;
* a turn ends: a waiter gets the lock while the holder keeps looping;
* a carry that is not taken again is passed on (timer thread, asyncio timer, interpreter exit),
  and a carrier killed outright holds waiters up for its carry's lease, not for its own TTL;
* a late pass-on never releases a new hold of the carrier;
* mutual exclusion under threads looping in turns (exact counter, one fence per hold).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis

import pyredislua
from pyredislua.lock import Lock, LockKeys, inspect_call
from pyredislua.lock.ops import pass_on_call
from tests.faultkit import wait_for

pytestmark = pytest.mark.lock


def _waiting(r: redis.Redis, name: str, count: int = 1) -> bool:
    return int(r.zcard(LockKeys(name).waiters)) > count  # the lease floor '' is a member too


def _blocking_in_thread(lock: Lock[pyredislua.Client], timeout: float = 10.0
                        ) -> tuple[threading.Thread, dict[str, float | bool]]:
    got: dict[str, float | bool] = {}

    def run() -> None:
        got["acquired"] = lock.acquire(timeout=timeout)
        got["at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got


def _held_with_a_waiter(client: pyredislua.Client, r: redis.Redis, name: str, turn: float
                        ) -> tuple[Lock[pyredislua.Client], Lock[pyredislua.Client],
                                   threading.Thread, dict[str, float | bool]]:
    """A looping holder (it carries from its first release) and a registered waiter, blocked
    in a thread."""
    holder = Lock(client, name, ttl=30, auto_renew=False, turn=turn, requeue=True)
    waiter = Lock(client, name, ttl=30, auto_renew=False, turn=turn)
    assert holder.acquire(blocking=False)
    thread, got = _blocking_in_thread(waiter)
    wait_for(lambda: _waiting(r, name), what="the waiter registered")
    return holder, waiter, thread, got


def test_a_carried_lock_is_taken_again_with_the_next_fence(client: pyredislua.Client,
                                                           r: redis.Redis) -> None:
    looping, waiter, thread, got = _held_with_a_waiter(client, r, "turned", 60)
    first = looping.fence
    assert first is not None
    fences = [first]
    for _ in range(20):
        looping.release()
        assert r.hget(LockKeys("turned").lock, "owner") == f"carry:{looping.token}".encode()
        # nobody else takes a carried lock, the waiter least of all
        assert not Lock(client, "turned", ttl=30).acquire(blocking=False)
        assert looping.acquire(blocking=False)
        fences.append(looping.fence)
    assert fences == list(range(first, first + 21))  # every hold its own, next fence
    assert "acquired" not in got
    looping.release()
    looping._carried = None  # hand it over at once: the waiter gets it through a pass-on grant
    assert client.run(pass_on_call(looping.keys, looping.token, looping.ttl_ms)) == 2
    thread.join(10)
    assert got["acquired"] and waiter.fence == first + 21
    assert waiter.owner_token.startswith("grant:")
    waiter.release()


def test_a_turn_ends_and_the_longest_blocked_waiter_gets_the_lock(client: pyredislua.Client,
                                                                   r: redis.Redis) -> None:
    turn = 0.05
    looping = Lock(client, "turns", ttl=30, auto_renew=False, turn=turn, requeue=True)
    waiter = Lock(client, "turns", ttl=30, auto_renew=False, turn=turn)
    assert looping.acquire(blocking=False)
    looping.release()
    assert looping.acquire(blocking=False)
    thread, got = _blocking_in_thread(waiter)
    wait_for(lambda: _waiting(r, "turns"), what="the waiter registered")
    holds = 0
    while "acquired" not in got:
        looping.release()
        # the carry is taken while the turn lasts; past it the waiter's grant is not
        if looping.acquire(blocking=False):
            holds += 1
        else:
            break
    thread.join(10)
    assert got["acquired"]
    assert waiter.owner_token.startswith("grant:")  # by the release that ended the turn
    assert holds >= 1  # it did keep the lock for a while: the turn was used
    state = client.run(inspect_call(waiter.keys))
    assert state.owner == waiter.owner_token
    waiter.release()


def test_a_carry_not_taken_again_is_passed_on_by_the_timer(client: pyredislua.Client,
                                                            r: redis.Redis) -> None:
    holder, waiter, thread, got = _held_with_a_waiter(client, r, "timer", 0.05)
    holder.release()
    assert r.hget(LockKeys("timer").lock, "owner") == f"carry:{holder.token}".encode()
    thread.join(10)
    # a grant, pushed by the pass-on: not a free lock taken after the carry's lease ran out
    assert got["acquired"] and waiter.owner_token.startswith("grant:")
    waiter.release()


def test_a_late_pass_on_never_releases_a_new_hold(client: pyredislua.Client,
                                                  r: redis.Redis) -> None:
    holder = Lock(client, "late", ttl=30, auto_renew=False, turn=60, requeue=True)
    assert holder.acquire(blocking=False)
    assert not Lock(client, "late", ttl=30).acquire(timeout=0.05)  # a registered waiter
    holder.release()  # carried
    assert holder.acquire(blocking=False)
    assert client.run(pass_on_call(holder.keys, holder.token, holder.ttl_ms)) == 0
    assert client.run(inspect_call(holder.keys)).owner == holder.token
    assert holder._carried is None  # the acquire took the carry: the timer has nothing to do
    holder.release()


async def test_an_asyncio_carry_is_passed_on_by_a_loop_timer(aclient: pyredislua.AsyncClient
                                                              ) -> None:
    holder = Lock(aclient, "atimer", ttl=30, auto_renew=False, turn=0.05, requeue=True)
    waiter = Lock(aclient, "atimer", ttl=30, auto_renew=False, turn=0.05)
    assert await holder.acquire(blocking=False)
    waiting = asyncio.ensure_future(waiter.acquire(timeout=10))
    r = aclient.redis
    while int(await r.zcard(LockKeys("atimer").waiters)) < 2:
        await asyncio.sleep(0.005)
    await holder.release()
    assert await r.hget(LockKeys("atimer").lock, "owner") == f"carry:{holder.token}".encode()
    assert await waiting
    assert waiter.owner_token.startswith("grant:")
    await waiter.release()


_CARRIER = textwrap.dedent("""
    import os, signal, sys, redis, pyredislua
    from pyredislua.lock import Lock
    client = pyredislua.Client(redis.Redis.from_url(sys.argv[1]))
    lock = Lock(client, "carrier", ttl=30, auto_renew=False, turn=float(sys.argv[2]),
                requeue=True)
    assert lock.acquire(blocking=False)
    print("held", flush=True)
    sys.stdin.readline()  # the waiter is registered
    lock.release()
    assert client.redis.hget(lock.keys.lock, "owner") == ("carry:" + lock.token).encode()
    if sys.argv[3] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    # else: a normal exit, well within the turn
""")


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_a_carrier_that_exits_or_dies_does_not_hold_waiters_up(r: redis.Redis, redis_url: str,
                                                                how: str) -> None:
    client = pyredislua.Client(redis.Redis.from_url(redis_url))
    client.load()
    turn = 30.0 if how == "exit" else 0.1  # exit: the timer never fires, exit passes it on
    proc = subprocess.Popen([sys.executable, "-c", _CARRIER, redis_url, str(turn), how],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "held"
        waiter = Lock(client, "carrier", ttl=30, auto_renew=False, turn=turn)
        thread, got = _blocking_in_thread(waiter, timeout=20)
        wait_for(lambda: _waiting(r, "carrier"), what="the waiter registered")
        started = time.monotonic()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        thread.join(20)
        waited = float(got["at"]) - started
        assert got["acquired"]
        if how == "exit":
            # passed on at exit: a grant, long before the 30 s turn or its lease
            assert waiter.owner_token.startswith("grant:")
            assert waited < 10
        else:
            # nobody passed it on: the carry's lease (turn + 250 ms) ran out, and the waiter
            # looked again within turn + 0.3 s (plus Redis' 100 ms timer grain), instead of
            # at the end of a 2 s BLPOP or of the 30 s lease
            assert waited < 1.5, waited
        waiter.release()
    finally:
        proc.wait(10)
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == (-signal.SIGKILL if how == "kill" else 0)


def test_threads_looping_in_turns_exclude_each_other(client: pyredislua.Client,
                                                      r: redis.Redis) -> None:
    counter = "turn:{c}:counter"
    fences: list[int] = []
    holders = 0
    overlap = threading.Lock()
    errors: list[str] = []

    def loop() -> None:
        nonlocal holders
        lock = Lock(client, "shared", ttl=30, auto_renew=False, turn=0.005)
        for _ in range(60):
            assert lock.acquire(timeout=30)
            with overlap:
                holders += 1
                if holders != 1:
                    errors.append("two holders at once")
            assert lock.fence is not None
            fences.append(lock.fence)
            value = int(r.get(counter) or 0)
            r.set(counter, value + 1)
            with overlap:
                holders -= 1
            lock.release()

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert int(r.get(counter) or 0) == 240
    assert sorted(fences) == list(range(min(fences), min(fences) + 240))  # one fence per hold
    # the last carry is passed on; what is left is free, or a grant to a loop that ended (its
    # requeue registration still stood), which anyone takes over after `handoff`
    wait_for(lambda: not (client.run(inspect_call(LockKeys("shared"))).owner or "")
             .startswith("carry:"), timeout=2, what="the last carry passed on")
    assert Lock(client, "shared", ttl=30).acquire(timeout=5)


def test_a_carry_gone_before_the_acquire_falls_back_to_waiting(client: pyredislua.Client,
                                                               r: redis.Redis) -> None:
    """The acquire after a carry tries the carry in one call; if it was passed on meanwhile,
    the acquire waits its turn like any other."""
    holder, other, thread, got = _held_with_a_waiter(client, r, "gone", 60)
    holder.release()
    assert holder._carried is not None
    assert client.run(pass_on_call(holder.keys, holder.token, holder.ttl_ms)) == 2
    thread.join(10)
    assert got["acquired"]
    released: list[bool] = []

    def release_soon() -> None:
        wait_for(lambda: _waiting(r, "gone"), what="the holder waiting again")
        other.release()
        released.append(True)

    helper = threading.Thread(target=release_soon, daemon=True)
    helper.start()
    assert holder.acquire(timeout=10)  # the carry is gone: it waited, then got a grant
    helper.join(10)
    assert released and holder.owner_token.startswith("grant:")
    assert client.run(inspect_call(holder.keys)).owner == holder.owner_token
    holder.release()


async def test_an_asyncio_loop_takes_its_carries(aclient: pyredislua.AsyncClient) -> None:
    holder = Lock(aclient, "aloop", ttl=30, auto_renew=False, turn=60, requeue=True)
    waiter = Lock(aclient, "aloop", ttl=30, auto_renew=False, turn=60)
    assert await holder.acquire()
    first = holder.fence
    assert first is not None
    waiting = asyncio.ensure_future(waiter.acquire(timeout=10))
    while int(await aclient.redis.zcard(LockKeys("aloop").waiters)) < 2:
        await asyncio.sleep(0.005)
    for i in range(5):
        await holder.release()
        assert await holder.acquire(timeout=5)
        assert holder.fence == first + i + 1
    assert not waiting.done()
    await holder.release()
    holder._carried = None
    await aclient.run(pass_on_call(holder.keys, holder.token, holder.ttl_ms))
    assert await waiting and waiter.fence == first + 6
    await waiter.release()


async def test_asyncio_tasks_looping_in_turns_exclude_each_other(
        aclient: pyredislua.AsyncClient) -> None:
    r = aclient.redis
    counter = "turn:{ac}:counter"
    fences: list[int] = []
    holders = overlaps = carries = 0

    async def loop() -> None:
        nonlocal holders, overlaps, carries
        lock = Lock(aclient, "ashared", ttl=30, auto_renew=False, turn=0.005)
        for _ in range(40):
            assert await lock.acquire(timeout=30)
            holders += 1
            overlaps += holders != 1
            assert lock.fence is not None
            fences.append(lock.fence)
            value = int(await r.get(counter) or 0)
            await r.set(counter, value + 1)
            holders -= 1
            await lock.release()
            carries += lock._carried is not None

    await asyncio.gather(*(loop() for _ in range(4)))
    assert overlaps == 0 and carries > 0
    assert int(await r.get(counter) or 0) == 160
    assert sorted(fences) == list(range(min(fences), min(fences) + 160))
    deadline = time.monotonic() + 2
    while ((await aclient.run(inspect_call(LockKeys("ashared")))).owner or "").startswith("carry:"):
        assert time.monotonic() < deadline, "the last carry was never passed on"
        await asyncio.sleep(0.005)
    assert await Lock(aclient, "ashared", ttl=30).acquire(timeout=5)
