"""The counting semaphore: permits under leases, FIFO hand-off without polling, fencing, expiry,
the concurrency limiter sharing its state, raw FCALL, asyncio, SIGKILLed holders in real
processes, and a stateful model against real Redis with several clients."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import re
import signal
import threading
import time
from typing import Any

import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pyredislua
from pyredislua import Permit, Semaphore
from pyredislua.engine.render import lua_root
from pyredislua.errors import (
    BadArgumentError,
    PermitLostError,
    SemaphoreTimeoutError,
)
from pyredislua.ratelimit import ConcurrencyLimiter
from pyredislua.semaphore import (
    SemaphoreKeys,
    acquire_call,
    forward_call,
    inbox,
    parse_grant,
    release_call,
    renew_call,
)

pytestmark = pytest.mark.semaphore

LUA = lua_root()


def _server_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _until(predicate: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.002)


def _in_use(r: redis.Redis, keys: SemaphoreKeys) -> int:
    return int(r.zcount(keys.semaphore, f"({_server_ms(r)}", "+inf"))


# -- the basics ---------------------------------------------------------------------------------


def test_permits_are_counted_and_fenced(client: pyredislua.Client, r: redis.Redis) -> None:
    sem = Semaphore(client, "basic", 5, ttl=30, auto_renew=False)
    a = sem.acquire(2)
    b = sem.acquire(3, blocking=False)
    assert a is not None and b is not None
    assert (a.count, b.count) == (2, 3)
    assert b.fence > a.fence > 0
    assert _in_use(r, sem.keys) == 5
    state = sem.inspect()
    assert (state.in_use, state.queued, state.fence) == (5, 0, b.fence)
    assert sem.acquire(1, blocking=False) is None
    assert sem.release(a) is True
    assert sem.release(a) is False  # a re-sent release changes nothing more
    c = sem.acquire(2, blocking=False)
    assert c is not None and c.fence > b.fence
    assert _in_use(r, sem.keys) == 5
    sem.release(b)
    sem.release(c)
    # only the durable fence counter is left
    assert r.keys("*") == [sem.keys.fence.encode()]


def test_a_repeat_of_the_lease_renews_it_with_the_same_fence(client: pyredislua.Client,
                                                             r: redis.Redis) -> None:
    keys = SemaphoreKeys("repeat")
    first = client.run(acquire_call(keys, "L", 4, 3, 1_000))
    again = client.run(acquire_call(keys, "L", 4, 3, 60_000))
    assert first.acquired and again.acquired and again.fence == first.fence
    assert again.in_use == 3  # not 6: a repeat never takes more permits
    assert r.pttl(keys.semaphore) > 50_000
    with pytest.raises(BadArgumentError, match="holds 3 permits"):
        client.run(acquire_call(keys, "L", 4, 2, 60_000))


@pytest.mark.parametrize(("lease", "permits", "count", "message"), [
    ("a#b", 3, 1, "must not contain '#'"),
    ("x", 3, 4, "count must be at most permits"),
])
def test_bad_requests_change_nothing(client: pyredislua.Client, r: redis.Redis, lease: str,
                                     permits: int, count: int, message: str) -> None:
    keys = SemaphoreKeys("bad")
    with pytest.raises(BadArgumentError, match=message):
        client.run(acquire_call(keys, lease, permits, count, 1_000))
    assert r.keys("*") == []
    sem = Semaphore(client, "bad", 3)
    with pytest.raises(ValueError):
        sem.acquire(4)
    with pytest.raises(ValueError):
        Semaphore(client, "bad", 0)


def test_renew_extends_and_an_ended_lease_is_lost(client: pyredislua.Client,
                                                  r: redis.Redis) -> None:
    sem = Semaphore(client, "renew", 2, ttl=0.2, auto_renew=False)
    permit = sem.acquire(2)
    assert permit is not None
    assert sem.renew(permit, ttl=30) is True
    assert permit.held and permit.valid_until is not None
    assert permit.valid_until > time.monotonic() + 20
    assert r.pttl(sem.keys.semaphore) > 20_000
    short = Semaphore(client, "renew-short", 2, ttl=0.001, auto_renew=False)
    gone = short.acquire(1)
    assert gone is not None
    _until(lambda: _in_use(r, short.keys) == 0)
    assert short.renew(gone) is False  # extend never resurrects
    assert gone.lost


def test_expired_leases_give_their_permits_back(client: pyredislua.Client,
                                                r: redis.Redis) -> None:
    """1 ms leases of a crashed holder: the next call prunes them (one ZREMRANGEBYSCORE) and
    their lease entries."""
    keys = SemaphoreKeys("expiry")
    assert client.run(acquire_call(keys, "keeper", 4, 1, 60_000)).acquired
    for i in range(3):
        assert client.run(acquire_call(keys, f"dead{i}", 4, 1, 1)).acquired
    _until(lambda: _in_use(r, keys) == 1)
    assert r.hget(keys.leases, "dead2") is not None  # (earlier ones may be pruned already)
    reply = client.run(acquire_call(keys, "alive", 4, 3, 60_000))
    assert reply.acquired and reply.in_use == 4
    assert sorted(r.hkeys(keys.leases)) == [b"alive", b"keeper"]
    assert r.zcard(keys.semaphore) == 5  # four permits and the marker


def test_callers_disagreeing_on_n_each_decide_with_their_own(client: pyredislua.Client) -> None:
    """The documented rule: permits is not stored; every call decides with the N it passes, and
    leases already held are never revoked."""
    keys = SemaphoreKeys("disagree")
    assert client.run(acquire_call(keys, "a", 3, 3, 60_000)).acquired
    assert not client.run(acquire_call(keys, "b", 2, 1, 60_000)).acquired
    assert not client.run(acquire_call(keys, "c", 3, 1, 60_000)).acquired
    more = client.run(acquire_call(keys, "d", 4, 1, 60_000))
    assert more.acquired and more.in_use == 4
    assert client.run(renew_call(keys, "a", 60_000))  # smaller N revokes nothing
    assert client.run(release_call(keys, "d", 2)).released


# -- FIFO hand-off --------------------------------------------------------------------------------


def _queued(r: redis.Redis, keys: SemaphoreKeys) -> int:
    return int(r.zcard(keys.waiters))


def test_a_big_request_is_not_starved_by_small_ones(client: pyredislua.Client,
                                                    r: redis.Redis) -> None:
    sem = Semaphore(client, "starve", 3, ttl=30, auto_renew=False)
    holder = sem.acquire(1)
    assert holder is not None
    got: list[Permit | None] = []
    waiter = threading.Thread(target=lambda: got.append(sem.acquire(3, timeout=10)))
    waiter.start()
    _until(lambda: _queued(r, sem.keys) == 1)
    # two permits are free, but the earlier waiter needs three: a later request takes nothing
    for _ in range(5):
        assert sem.acquire(1, blocking=False) is None
    started = time.monotonic()
    sem.release(holder)
    waiter.join(10)
    assert got and got[0] is not None and got[0].count == 3
    assert time.monotonic() - started < 0.5  # handed over, not found by polling
    sem.release(got[0])


def test_waiters_are_granted_in_arrival_order(client: pyredislua.Client, r: redis.Redis) -> None:
    sem = Semaphore(client, "order", 2, ttl=30, auto_renew=False)
    full = sem.acquire(2)
    assert full is not None
    order: list[int] = []
    lock = threading.Lock()

    def wait(i: int, count: int) -> None:
        permit = sem.acquire(count, timeout=10)
        assert permit is not None
        with lock:
            order.append(i)
        time.sleep(0.01)
        sem.release(permit)

    threads = []
    for i, count in enumerate([2, 1, 2, 1, 1]):
        t = threading.Thread(target=wait, args=(i, count))
        t.start()
        threads.append(t)
        _until(lambda n=i + 1: _queued(r, sem.keys) == n)
    sem.release(full)
    for t in threads:
        t.join(15)
    assert order[:3] == [0, 1, 2]
    assert sorted(order) == [0, 1, 2, 3, 4]
    assert _queued(r, sem.keys) == 0
    # the queue, its entries, the grants and the permits are gone with the last of them
    assert r.keys("*") == [sem.keys.fence.encode()]


def test_a_waiter_that_times_out_leaves_the_queue(client: pyredislua.Client,
                                                  r: redis.Redis) -> None:
    sem = Semaphore(client, "timeout", 1, ttl=30, auto_renew=False)
    holder = sem.acquire(1)
    assert holder is not None
    started = time.monotonic()
    assert sem.acquire(1, timeout=0.3) is None
    assert 0.29 <= time.monotonic() - started < 1.0
    assert _queued(r, sem.keys) == 0 and r.hlen(sem.keys.waiting) == 0
    with pytest.raises(SemaphoreTimeoutError), sem.hold(1, timeout=0.05):
        pass
    sem.release(holder)


def test_a_waiter_wakes_when_a_lease_ends_on_its_own(client: pyredislua.Client) -> None:
    """No release: the waiter's BLPOP is bounded by when the holder's lease ends."""
    sem = Semaphore(client, "ends", 1, ttl=0.3, auto_renew=False)
    assert sem.acquire(1) is not None
    started = time.monotonic()
    permit = Semaphore(client, "ends", 1, ttl=30, auto_renew=False).acquire(1, timeout=5)
    assert permit is not None
    assert time.monotonic() - started < 1.5


def test_a_grant_to_a_vanished_waiter_comes_back(client: pyredislua.Client,
                                                 r: redis.Redis) -> None:
    keys = SemaphoreKeys("vanished")
    assert client.run(acquire_call(keys, "holder", 2, 2, 60_000)).acquired
    assert not client.run(acquire_call(keys, "ghost", 2, 2, 60_000, 300)).acquired
    release = client.run(release_call(keys, "holder", 2))
    assert release.granted == 1 and release.in_use == 2
    assert r.lrange(keys.signal, 0, -1) == [b"grant:2:ghost"]
    # nobody claims it: its permits come back when the grant window (its registration) ends
    assert not client.run(acquire_call(keys, "next", 2, 1, 60_000)).acquired
    _until(lambda: client.run(acquire_call(keys, "next", 2, 1, 60_000)).acquired, timeout=3)
    assert r.hget(keys.leases, "ghost") is None
    # its entry goes with the prune, or with the hash's TTL (the window) when the whole permits
    # key expired first
    _until(lambda: r.hget(keys.waiting, "ghost") is None, timeout=1)


def test_a_grant_popped_by_the_wrong_waiter_is_forwarded(client: pyredislua.Client,
                                                         r: redis.Redis) -> None:
    keys = SemaphoreKeys("forward")
    assert client.run(acquire_call(keys, "holder", 2, 2, 60_000)).acquired
    assert not client.run(acquire_call(keys, "first", 2, 2, 60_000, 60_000)).acquired
    assert not client.run(acquire_call(keys, "second", 2, 1, 60_000, 60_000)).acquired
    assert client.run(release_call(keys, "holder", 2)).granted == 1
    popped = r.lpop(keys.signal)
    assert popped == b"grant:2:first"
    grant = parse_grant(popped)
    with pytest.raises(BadArgumentError, match="inbox"):
        client.run(forward_call(SemaphoreKeys("forward"), grant._replace(lease="second")))
    # "second" popped it: it forwards it to "first"'s inbox
    assert client.run(forward_call(keys, grant)) is True
    assert r.lrange(inbox(keys, "first"), 0, -1) == [popped]
    assert 0 < r.pttl(inbox(keys, "first")) <= 60_000  # it ends with the grant window
    claimed = client.run(acquire_call(keys, "first", 2, 2, 60_000, 60_000))
    assert claimed.acquired and claimed.fence == 2
    assert r.hget(keys.waiting, "first") is None
    # a claimed grant is not forwarded again
    assert client.run(forward_call(keys, grant)) is False
    assert not client.run(acquire_call(keys, "second", 2, 1, 60_000)).acquired


def test_blocking_waiters_hand_a_mispopped_grant_on(client: pyredislua.Client,
                                                    r: redis.Redis) -> None:
    """A queued waiter that is not blocked when its grant comes: a blocked later waiter pops it
    and forwards it to the first one's inbox, where the first one finds it."""
    keys = SemaphoreKeys("handon")
    sem = Semaphore(client, "handon", 2, ttl=30, auto_renew=False)
    assert client.run(acquire_call(keys, "holder", 2, 2, 60_000)).acquired
    assert not client.run(acquire_call(keys, "first", 2, 2, 60_000, 60_000)).acquired
    got: list[Permit | None] = []
    t = threading.Thread(target=lambda: got.append(sem.acquire(1, timeout=5)))
    t.start()
    _until(lambda: _queued(r, keys) == 2)
    # the thread blocks on the signal list (its BLPOP shows in CLIENT LIST)
    _until(lambda: b"cmd=blpop" in r.execute_command("CLIENT", "LIST"))
    client.run(release_call(keys, "holder", 2))
    _until(lambda: r.llen(inbox(keys, "first")) == 1)
    assert r.llen(keys.signal) == 0
    assert r.blpop([keys.signal, inbox(keys, "first")], 1) == (
        inbox(keys, "first").encode(), b"grant:2:first")
    claimed = client.run(acquire_call(keys, "first", 2, 2, 60_000, 60_000))
    assert claimed.acquired and claimed.fence == 2
    client.run(release_call(keys, "first", 2))
    t.join(5)
    assert got and got[0] is not None and got[0].fence == 3


def test_hold_and_the_watchdog(client: pyredislua.Client, r: redis.Redis) -> None:
    sem = Semaphore(client, "ctx", 2, ttl=0.3)
    with sem.hold(2) as permit:
        time.sleep(0.5)  # longer than the lease: the watchdog renews it
        assert permit.held
        assert _in_use(r, sem.keys) == 2
    assert not permit.held and _in_use(r, sem.keys) == 0
    lost: list[Permit] = []
    sem2 = Semaphore(client, "ctx2", 1, ttl=0.2, on_lost=lost.append)
    with pytest.raises(PermitLostError), sem2.hold(1) as p:
        r.delete(sem2.keys.semaphore)  # the lease vanishes under the holder
        _until(lambda: p.lost, timeout=2)
    assert lost == [p]


# -- the concurrency limiter shares the permit state ----------------------------------------------


def test_the_limiter_and_the_semaphore_share_one_permit_layout(client: pyredislua.Client,
                                                                r: redis.Redis) -> None:
    mark = re.compile(r"=\s*'(~pyredislua:concurrency:~+)'")
    sem_mark = mark.findall((LUA / "includes" / "semaphore.lua").read_text())
    rl_mark = mark.findall((LUA / "includes" / "ratelimit.lua").read_text())
    assert sem_mark and sem_mark == rl_mark
    for op in ("acquire", "release", "renew"):
        assert "includes: semaphore" in (LUA / "ratelimit" / f"{op}.lua").read_text()
    limiter = ConcurrencyLimiter(client, "shared", 2, ttl=30)
    slot = limiter.acquire("u")
    assert slot.acquired
    key = limiter.key("u")
    members = {m for m, _ in r.zrange(key, 0, -1, withscores=True)}
    assert members == {slot.lease.encode(), sem_mark[0].encode()}
    limiter.release(slot)


# -- raw FCALL ------------------------------------------------------------------------------------


def test_fcall_by_name(r: redis.Redis) -> None:
    client = pyredislua.Client(r, mode="function")
    client.load()
    lib = client.library
    keys = SemaphoreKeys("cli")
    acquire = lib.operation("semaphore.acquire").function
    release = lib.operation("semaphore.release").function
    renew = lib.operation("semaphore.renew").function
    reply = r.execute_command("FCALL", acquire, 6, *keys.all, "job-1", 3, 2, 30000)
    assert reply[0] == 1 and reply[1] == 1 and reply[2] == 2
    busy = r.execute_command("FCALL", acquire, 6, *keys.all, "job-2", 3, 2, 30000)
    assert busy[0] == 0 and busy[4] > 0
    queued = r.execute_command("FCALL", acquire, 6, *keys.all, "job-2", 3, 2, 30000, 10000)
    assert queued[0] == 0 and queued[3] == 1
    assert r.execute_command("FCALL", renew, 6, *keys.all, "job-1", 60000)[0] == 1
    released = r.execute_command("FCALL", release, 6, *keys.all, "job-1", 3)
    assert released[:4] == [1, 2, 0, 1]
    assert r.blpop([keys.signal], 1) == (keys.signal.encode(), b"grant:2:job-2")
    claimed = r.execute_command("FCALL", acquire, 6, *keys.all, "job-2", 3, 2, 30000)
    assert claimed[:2] == [1, 2]
    inspect = lib.operation("semaphore.inspect").function
    state = r.execute_command("FCALL_RO", inspect, 3, keys.semaphore, keys.fence, keys.waiters)
    assert state[:3] == [2, 0, 2]
    with pytest.raises(redis.ResponseError, match="PYREDISLUA:BADARG"):
        r.execute_command("FCALL", acquire, 6, *keys.all, "job-3", 3, 4, 30000)


# -- asyncio --------------------------------------------------------------------------------------


async def test_async_semaphore(aclient: pyredislua.AsyncClient, r: redis.Redis) -> None:
    sem = Semaphore(aclient, "async", 3, ttl=0.3)
    async with sem.hold(2) as permit:
        await asyncio.sleep(0.45)  # the renewal task keeps it
        assert permit.held
        assert await sem.acquire(2, blocking=False) is None
    order: list[int] = []
    full = await sem.acquire(3)
    assert full is not None

    async def wait(i: int, count: int) -> None:
        got = await sem.acquire(count, timeout=5)
        assert got is not None
        order.append(i)
        await asyncio.sleep(0.01)
        await sem.release(got)

    tasks = []
    for i, count in enumerate([3, 1, 2]):
        tasks.append(asyncio.create_task(wait(i, count)))
        while _queued(r, sem.keys) < i + 1:
            await asyncio.sleep(0.002)
    await sem.release(full)
    await asyncio.gather(*tasks)
    assert order[0] == 0
    assert sorted(order) == [0, 1, 2]
    assert _in_use(r, sem.keys) == 0


async def test_async_waiter_that_times_out_leaves_the_queue(
        aclient: pyredislua.AsyncClient, r: redis.Redis) -> None:
    sem = Semaphore(aclient, "async-cancel", 1, ttl=30, auto_renew=False)
    holder = await sem.acquire(1)
    assert holder is not None
    assert await sem.acquire(1, timeout=0.2) is None
    assert _queued(r, sem.keys) == 0
    await sem.release(holder)


# -- real processes, SIGKILL ----------------------------------------------------------------------


def _holder(url: str, count: int, ttl: float, ready: Any) -> None:
    client = pyredislua.Client(redis.Redis.from_url(url), mode="function")
    sem = Semaphore(client, "killed", 3, ttl=ttl)  # auto-renewed until killed
    permit = sem.acquire(count, timeout=10)
    assert permit is not None
    ready.put(permit.fence)
    time.sleep(60)


def _hammer(url: str, seconds: float, out: Any) -> None:
    conn = redis.Redis.from_url(url)
    client = pyredislua.Client(conn, mode="function")
    sem = Semaphore(client, "hammer", 3, ttl=5, auto_renew=False)
    violations, holds, fences = 0, 0, []
    end = time.monotonic() + seconds
    pid = os.getpid()
    while time.monotonic() < end:
        count = 1 + (holds + pid) % 2
        permit = sem.acquire(count, timeout=5)
        if permit is None:
            continue
        if conn.incrby("inuse", count) > 3:
            violations += 1
        fences.append(permit.fence)
        conn.decrby("inuse", count)
        sem.release(permit)
        holds += 1
    out.put((violations, holds, fences))


def test_sigkilled_holders_permits_come_back(redis_url: str, r: redis.Redis) -> None:
    pyredislua.Client(r, mode="function").load()
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    procs = [ctx.Process(target=_holder, args=(redis_url, count, 0.3, ready))
             for count in (1, 2)]
    for p in procs:
        p.start()
    fences = sorted(ready.get(timeout=30) for _ in procs)
    assert fences == [1, 2]
    client = pyredislua.Client(r, mode="function")
    sem = Semaphore(client, "killed", 3, ttl=30, auto_renew=False)
    time.sleep(0.5)  # longer than the lease: the watchdogs keep the permits held
    assert sem.acquire(1, blocking=False) is None
    for p in procs:
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(5)
    started = time.monotonic()
    permit = sem.acquire(3, timeout=5)  # a waiter, woken when the dead leases end
    assert permit is not None and permit.fence == 3
    assert time.monotonic() - started < 1.5


def _churn(url: str, seed: int) -> None:
    client = pyredislua.Client(redis.Redis.from_url(url), mode="function")
    sem = Semaphore(client, "churn", 3, ttl=0.001, auto_renew=False)  # 1 ms leases
    n = seed
    while True:
        n += 1
        permit = sem.acquire(1 + n % 3, timeout=1)
        if permit is not None and n % 2:
            sem.release(permit)  # every other one is left to end on its own


def test_sigkilled_processes_with_1ms_leases_leave_nothing_held(redis_url: str,
                                                               r: redis.Redis) -> None:
    pyredislua.Client(r, mode="function").load()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_churn, args=(redis_url, i)) for i in range(3)]
    for p in procs:
        p.start()
    keys = SemaphoreKeys("churn")
    _until(lambda: int(r.get(keys.fence) or 0) > 50, timeout=30)
    for p in procs:  # killed mid-call, mid-wait or while holding
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(5)
    client = pyredislua.Client(r, mode="function")
    started = time.monotonic()
    permit = Semaphore(client, "churn", 3, ttl=30, auto_renew=False).acquire(3, timeout=5)
    assert permit is not None
    waited = time.monotonic() - started
    print(f"acquire after the kills waited {waited:.3f} s")
    # at worst: dead waiters' registrations (2.25 s) and a grant window (250 ms) after them
    assert waited < 3.5
    assert permit.fence > 50


def test_processes_never_hold_more_than_n(redis_url: str, r: redis.Redis) -> None:
    pyredislua.Client(r, mode="function").load()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(redis_url, 1.5, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert sum(v for v, _, _ in results) == 0, "more than N permits held at once"
    assert all(h > 0 for _, h, _ in results)
    for _, _, fences in results:
        assert fences == sorted(fences)
    everything = [f for _, _, fences in results for f in fences]
    assert len(everything) == len(set(everything)), "a fence was handed out twice"
    assert _in_use(r, SemaphoreKeys("hammer")) == 0


# -- a stateful model against real Redis ----------------------------------------------------------


N = 4
LONG = 60_000


class SemaphoreModel(RuleBasedStateMachine):
    """Two clients (function and script mode) on one server; leases and registrations long
    enough not to end during an example, except the 1 ms leases that end on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.r = redis.Redis.from_url(MODEL_URL[0])
        self.r.flushall()
        self.clients = [pyredislua.Client(self.r, mode="function"),
                        pyredislua.Client(self.r, mode="script")]
        self.keys = SemaphoreKeys("model")
        self.held: dict[str, int] = {}  # lease -> permits (live)
        self.queue: list[tuple[str, int]] = []  # FIFO waiters
        self.granted: dict[str, int] = {}  # granted, not claimed yet (also in held)
        self.forwarded: dict[str, str] = {}  # lease -> its grant, popped and forwarded to its inbox
        self.fence = 0
        self.seq = 0

    def _lease(self) -> str:
        self.seq += 1
        return f"l{self.seq}"

    def _grant(self) -> list[str]:
        """The grant pass every call makes: the queue's head, in order, while it fits."""
        grants = []
        while self.queue:
            lease, k = self.queue[0]
            if k > N - sum(self.held.values()):
                break
            self.queue.pop(0)
            self.fence += 1
            self.held[lease] = k
            self.granted[lease] = self.fence
            grants.append(f"grant:{self.fence}:{lease}")
        return grants

    @rule(c=st.integers(0, 1), k=st.integers(1, N), wait=st.booleans())
    def acquire(self, c: int, k: int, wait: bool) -> None:
        lease = self._lease()
        reply = self.clients[c].run(acquire_call(self.keys, lease, N, k, LONG,
                                                 LONG if wait else None))
        signalled = self._grant()
        expected = not self.queue and k <= N - sum(self.held.values())
        assert reply.acquired == expected
        if expected:
            self.fence += 1
            assert reply.fence == self.fence
            self.held[lease] = k
        elif wait:
            self.queue.append((lease, k))
        self._check_signal(signalled)

    @rule(c=st.integers(0, 1), k=st.integers(1, N))
    def acquire_short(self, c: int, k: int) -> None:
        """A holder that dies at once: a 1 ms lease, waited out by the server's clock."""
        lease = self._lease()
        reply = self.clients[c].run(acquire_call(self.keys, lease, N, k, 1))
        signalled = self._grant()
        expected = not self.queue and k <= N - sum(self.held.values())
        assert reply.acquired == expected
        if expected:
            self.fence += 1
            ends = reply.now_ms + 1
            _until(lambda: _server_ms(self.r) > ends)
        self._check_signal(signalled)

    @precondition(lambda self: bool(self.held))
    @rule(c=st.integers(0, 1), data=st.data())
    def release(self, c: int, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(sorted(self.held)))
        reply = self.clients[c].run(release_call(self.keys, lease, N))
        assert reply.released
        del self.held[lease]
        if lease in self.granted:
            del self.granted[lease]
        signalled = self._grant()
        assert reply.granted == len(signalled)
        self._check_signal(signalled)

    @precondition(lambda self: bool(self.granted))
    @rule(c=st.integers(0, 1), data=st.data())
    def claim(self, c: int, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(sorted(self.granted)))
        k = self.held[lease]
        reply = self.clients[c].run(acquire_call(self.keys, lease, N, k, LONG, LONG))
        signalled = self._grant()
        assert reply.acquired and reply.fence == self.granted.pop(lease)
        self._check_signal(signalled)

    @precondition(lambda self: bool(self.queue))
    @rule(c=st.integers(0, 1), data=st.data())
    def give_up(self, c: int, data: st.DataObject) -> None:
        lease, k = data.draw(st.sampled_from(self.queue))
        reply = self.clients[c].run(acquire_call(self.keys, lease, N, k, LONG, 0))
        self.queue.remove((lease, k))
        signalled = self._grant()
        expected = not self.queue and k <= N - sum(self.held.values())
        assert reply.acquired == expected
        if expected:
            self.fence += 1
            self.held[lease] = k
        self._check_signal(signalled)

    @precondition(lambda self: any(lease not in self.forwarded for lease in self.granted))
    @rule(c=st.integers(0, 1))
    def pop_and_forward(self, c: int) -> None:
        """Another waiter pops the oldest grant from the signal list and forwards it."""
        popped = self.r.lpop(self.keys.signal)
        assert popped is not None
        grant = parse_grant(popped)
        assert self.granted.get(grant.lease) == grant.fence
        assert self.clients[c].run(forward_call(self.keys, grant)) is True
        self.forwarded[grant.lease] = grant.raw

    def _check_signal(self, signalled: list[str]) -> None:
        for lease in list(self.forwarded):  # claimed or released: its inbox just expires
            if lease not in self.granted:
                del self.forwarded[lease]
        for lease, grant in self.forwarded.items():
            assert [x.decode() for x in self.r.lrange(inbox(self.keys, lease), 0, -1)] == [grant]
        expected = [f"grant:{fence}:{lease}" for lease, fence in
                    sorted(self.granted.items(), key=lambda item: item[1])
                    if lease not in self.forwarded]
        got = [x.decode() for x in self.r.lrange(self.keys.signal, 0, -1)]
        assert got == expected
        assert all(s in got for s in signalled)

    @invariant()
    def never_more_than_n(self) -> None:
        in_use = _in_use(self.r, self.keys)
        assert in_use <= N
        assert in_use == sum(self.held.values())
        queued = [m.decode() for m in self.r.zrange(self.keys.waiters, 0, -1)]
        assert queued == [lease for lease, _ in self.queue]

    def teardown(self) -> None:
        self.r.close()


MODEL_URL: list[str] = []


def test_stateful_model(redis_url: str, r: redis.Redis) -> None:
    for mode in ("function", "script"):
        pyredislua.Client(r, mode=mode).load()  # type: ignore[arg-type]
    MODEL_URL[:] = [redis_url]
    SemaphoreModel.TestCase().runTest()


def test_the_contention_benchmark_runs(redis_url: str, r: redis.Redis) -> None:
    import json
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "pyredislua", "bench", "semaphore", "--url", redis_url,
         "--seconds", "0.3", "--processes", "2", "--phases", "semaphore-mixed,limiter",
         "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr
    results = json.loads(shown.stdout)["results"]
    assert [x["phase"] for x in results] == ["semaphore-mixed", "limiter"]
    for x in results:
        assert x["holds_per_s"] > 0 and x["most_in_use"] <= x["permits"]


def test_the_command_line(redis_url: str, r: redis.Redis) -> None:
    import json
    import subprocess
    import sys

    client = pyredislua.Client(r)
    sem = Semaphore(client, "cli-sem", 3, ttl=30, auto_renew=False)
    permit = sem.acquire(2)
    assert permit is not None

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pyredislua", "semaphore", *args,
                               "--url", redis_url], capture_output=True, text=True,
                              timeout=60, check=False)

    shown = cli("inspect", "cli-sem", "--json")
    assert shown.returncode == 0, shown.stderr
    [row] = json.loads(shown.stdout)
    assert (row["in_use"], row["queued"], row["fence"]) == (2, 0, permit.fence)
    released = cli("release", "cli-sem", permit.lease, "--permits", "3")
    assert released.returncode == 0 and released.stdout.startswith("released")
    assert cli("release", "cli-sem", permit.lease, "--permits", "3").returncode == 2
    assert sem.inspect().in_use == 0


def test_a_lease_of_thousands_of_permits(client: pyredislua.Client, r: redis.Redis) -> None:
    """Permits are written in chunks (unpack's stack is bounded): 2,500 permits in one lease."""
    sem = Semaphore(client, "big", 5_000, ttl=30, auto_renew=False)
    permit = sem.acquire(2_500)
    assert permit is not None and sem.inspect().in_use == 2_500
    assert r.zcard(sem.keys.semaphore) == 2_501
    assert sem.acquire(2_501, blocking=False) is None
    assert sem.renew(permit, ttl=60)
    assert min(score for _, score in r.zrange(sem.keys.semaphore, 1, -1, withscores=True)) > \
        _server_ms(r) + 50_000
    assert sem.release(permit)
    assert sem.inspect().in_use == 0 and not r.exists(sem.keys.semaphore)
