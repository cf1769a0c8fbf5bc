"""The reentrant lock: the same owner takes it again and releases as many times; a hold per
request id keeps the count exact under re-sent calls. Behaviour, a model against real Redis,
real processes (mutual exclusion, SIGKILL), 1 ms leases, asyncio and the raw FCALL contract."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing as mp
import os
import signal
import threading
import time
from typing import Any

import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import pyredislua
from pyredislua import ReentrantLock
from pyredislua.lock import (
    ReentrantKeys,
    reentrant_acquire_call,
    reentrant_extend_call,
    reentrant_release_call,
)
from tests.conftest import snapshot

pytestmark = pytest.mark.lock

K = ReentrantKeys("acct")


def test_nested_holds_share_one_fence_and_release_as_many_times(
        client: pyredislua.Client, r: redis.Redis) -> None:
    outer = ReentrantLock(client, "acct", owner="me", ttl=10, auto_renew=False)
    assert outer.acquire() and outer.holds == 1 and outer.fence == 1
    assert outer.acquire() and outer.holds == 2 and outer.fence == 1 and outer.depth == 2
    inner = ReentrantLock(client, "acct", owner="me", ttl=10, auto_renew=False)
    with inner:
        assert inner.fence == 1 and inner.holds == 3
    other = ReentrantLock(client, "acct", owner="you", ttl=10, auto_renew=False)
    assert not other.acquire(blocking=False)
    outer.release()
    assert outer.holds == 1 and r.exists(K.lock)
    assert not other.acquire(blocking=False)
    outer.release()
    assert outer.holds == 0 and not r.exists(K.lock) and not outer.held
    assert other.acquire(blocking=False) and other.fence == 2  # a new owner, a new fence
    with pytest.raises(pyredislua.LockNotOwnedError):
        outer.release()  # this object holds nothing
    other.release()


def test_a_resent_acquire_is_the_same_hold(client: pyredislua.Client, r: redis.Redis) -> None:
    """The failure Redisson users hit (#7367): an acquire re-sent after a lost reply must not
    count twice, or the lock is never released."""
    first = client.run(reentrant_acquire_call(K, "me", "req-1", 10_000))
    again = client.run(reentrant_acquire_call(K, "me", "req-1", 10_000))
    assert first == again == (True, 1, 1, 0)
    nested = client.run(reentrant_acquire_call(K, "me", "req-2", 10_000))
    assert client.run(reentrant_acquire_call(K, "me", "req-2", 10_000)) == nested
    assert nested.holds == 2
    assert client.run(reentrant_release_call(K, "me", "req-2")) == (1, 1)
    before = snapshot(r)
    assert client.run(reentrant_release_call(K, "me", "req-2")) == (2, 1)  # a re-sent release
    assert snapshot(r) == before
    assert client.run(reentrant_release_call(K, "me", "req-1")) == (1, 0)
    assert not r.exists(K.lock), "released as many times as taken: free"
    assert client.run(reentrant_release_call(K, "me", "req-1")) == (0, 0)


def test_nested_acquires_and_renewals_never_shorten_the_lease(
        client: pyredislua.Client, r: redis.Redis) -> None:
    assert client.run(reentrant_acquire_call(K, "me", "long", 60_000)).acquired
    assert client.run(reentrant_acquire_call(K, "me", "short", 1_000)).acquired
    assert r.pttl(K.lock) > 50_000
    assert client.run(reentrant_extend_call(K, "me", 2_000))
    assert r.pttl(K.lock) > 50_000
    assert client.run(reentrant_extend_call(K, "me", 120_000))
    assert r.pttl(K.lock) > 110_000
    assert not client.run(reentrant_extend_call(K, "you", 120_000))


def test_depth_is_bounded(client: pyredislua.Client, r: redis.Redis) -> None:
    pipe = client.pipeline()
    for i in range(1000):
        pipe.add(reentrant_acquire_call(K, "me", f"r{i}", 60_000))
    pipe.execute()
    before = snapshot(r)
    with pytest.raises(pyredislua.BadArgumentError, match="1000 holds"):
        client.run(reentrant_acquire_call(K, "me", "one-more", 60_000))
    assert snapshot(r) == before


def test_a_blocked_owner_is_woken_by_the_last_release(client: pyredislua.Client) -> None:
    holder = ReentrantLock(client, "acct", owner="me", ttl=30, auto_renew=False)
    assert holder.acquire() and holder.acquire()

    def release_both() -> None:
        time.sleep(0.2)
        holder.release()
        time.sleep(0.2)
        holder.release()

    threading.Thread(target=release_both).start()
    waiter = ReentrantLock(client, "acct", owner="you", ttl=30, auto_renew=False)
    start = time.monotonic()
    assert waiter.acquire(timeout=10)
    waited = time.monotonic() - start
    assert 0.35 < waited < 2.0, f"woken by the last release (30 s lease), waited {waited:.2f}s"
    waiter.release()


def test_timeout_gives_up_its_registration(client: pyredislua.Client, r: redis.Redis) -> None:
    holder = ReentrantLock(client, "acct", owner="me", ttl=30, auto_renew=False)
    assert holder.acquire()
    waiter = ReentrantLock(client, "acct", owner="you", ttl=30)
    start = time.monotonic()
    assert not waiter.acquire(timeout=0.3)
    assert 0.29 < time.monotonic() - start < 1.0
    assert r.zscore(K.waiters, "you") is None
    with (pytest.raises(pyredislua.LockTimeoutError),
          ReentrantLock(client, "acct", owner="you", blocking_timeout=0.05)):
        pass
    holder.release()


def test_watchdog_keeps_every_hold_and_reports_a_lost_lease(
        client: pyredislua.Client, r: redis.Redis) -> None:
    lost: list[Any] = []
    lock = ReentrantLock(client, "acct", owner="me", ttl=0.5, on_lost=lost.append)
    assert lock.acquire() and lock.acquire()
    time.sleep(1.0)
    assert lock.held and r.pttl(K.lock) > 0
    lock.release()  # a nested release: renewal goes on
    time.sleep(0.8)
    assert lock.held and r.exists(K.lock)
    r.delete(K.lock)
    deadline = time.monotonic() + 3
    while not lost:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(pyredislua.LockNotOwnedError):
        lock.release()


def test_one_millisecond_leases(client: pyredislua.Client) -> None:
    short = ReentrantLock(client, "acct", owner="me", ttl=0.001, auto_renew=False)
    assert short.acquire(blocking=False)
    other = ReentrantLock(client, "acct", owner="you", ttl=5, auto_renew=False)
    assert other.acquire(timeout=2)
    assert other.fence is not None and short.fence is not None and other.fence > short.fence
    assert short.lost
    with pytest.raises(pyredislua.LockNotOwnedError):
        short.release()
    other.release()


def test_raw_fcall(r: redis.Redis) -> None:
    client = pyredislua.Client(r, mode="function")
    client.load()
    lib = client.library.name
    keys = K.all
    assert r.execute_command("FCALL", f"{lib}_lock_reentrant_acquire", 4, *keys, "me", "a",
                             5000) == [1, 1, 1]
    assert r.execute_command("FCALL", f"{lib}_lock_reentrant_acquire", 4, *keys, "me", "b",
                             5000) == [1, 1, 2]
    assert r.execute_command("FCALL", f"{lib}_lock_reentrant_release", 4, *keys, "me",
                             "b") == [1, 1]
    assert r.execute_command("FCALL", f"{lib}_lock_reentrant_extend", 1, keys[0], "me",
                             9000) == 1
    assert r.execute_command("FCALL", f"{lib}_lock_reentrant_release", 4, *keys, "me",
                             "a") == [1, 0]


async def test_async_owner_token_not_task(aclient: pyredislua.AsyncClient) -> None:
    """Tasks sharing an owner token share the lock (nesting across tasks), another owner waits
    until every hold is released."""

    holding = asyncio.Event()
    go_on = asyncio.Event()

    async def nested(owner: str, depth: int, out: list[tuple[str, int | None]],
                     first: bool = False) -> None:
        async with ReentrantLock(aclient, "acct", owner=owner, ttl=5) as lock:
            out.append((owner, lock.fence))
            if first:
                holding.set()
                await go_on.wait()  # the other tasks start while this one holds
            if depth > 1:
                await nested(owner, depth - 1, out)
            await asyncio.sleep(0.01)

    # "a" holds first. (Two tasks of one owner that both wait behind another owner are served
    # one after the other: a waiting task is not told that its owner got the lock through
    # another task; the README says so.)
    out: list[tuple[str, int | None]] = []
    first = asyncio.ensure_future(nested("a", 3, out, first=True))
    await holding.wait()
    rest = asyncio.gather(nested("a", 2, out), nested("b", 3, out))
    deadline = time.monotonic() + 5
    while sum(o == "a" for o, _ in out) < 2:  # the second "a" task joined the hold
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    go_on.set()
    await asyncio.gather(first, rest)
    fences = {owner: {f for o, f in out if o == owner} for owner in ("a", "b")}
    assert all(len(f) == 1 for f in fences.values()), "nested holds share the owner's fence"
    assert fences["a"] != fences["b"]
    # the "b" holds never interleave with the "a" holds
    owners = [o for o, _ in out]
    assert owners == ["a"] * 5 + ["b"] * 3


# -- a model against real Redis --------------------------------------------------------------------

OWNERS = ["o0", "o1"]


class ReentrantMachine(RuleBasedStateMachine):
    url: str = ""
    mode: str = "function"

    @initialize()
    def setup(self) -> None:
        self.r = redis.Redis.from_url(self.url)
        self.r.flushall()
        self.client = pyredislua.Client(self.r, mode=self.mode)  # type: ignore[arg-type]
        self.owner: str | None = None
        self.holds: set[str] = set()  # the owner's live request ids
        self.ended: list[tuple[str, str]] = []  # (owner, request) released or expired
        self.fence = 0
        self.seq = itertools.count()

    def teardown(self) -> None:
        if hasattr(self, "r"):
            self.r.close()

    def _acquire(self, owner: str, request: str) -> None:
        result = self.client.run(reentrant_acquire_call(K, owner, request, 600_000))
        if self.owner not in (None, owner):
            assert not result.acquired
            return
        assert result.acquired
        if self.owner is None:
            self.fence += 1
            self.owner = owner
        self.holds.add(request)
        assert result.fence == self.fence and result.holds == len(self.holds)

    @rule(owner=st.sampled_from(OWNERS))
    def acquire(self, owner: str) -> None:
        self._acquire(owner, f"r{next(self.seq)}")

    @rule(data=st.data())
    def resend_acquire(self, data: st.DataObject) -> None:
        """A re-sent acquire of a live hold: the same hold, never a second."""
        if not self.holds:
            return
        assert self.owner is not None
        request = data.draw(st.sampled_from(sorted(self.holds)))
        before = len(self.holds)
        self._acquire(self.owner, request)
        assert len(self.holds) == before

    @rule(data=st.data(), owner=st.sampled_from(OWNERS))
    def release(self, data: st.DataObject, owner: str) -> None:
        choices = sorted(self.holds) + [r for o, r in self.ended if o == owner] + ["never"]
        request = data.draw(st.sampled_from(choices))
        outcome, holds = self.client.run(reentrant_release_call(K, owner, request))
        if self.owner != owner:
            assert (outcome, holds) == (0, 0)
        elif request in self.holds:
            self.holds.discard(request)
            self.ended.append((owner, request))
            assert (outcome, holds) == (1, len(self.holds))
            if not self.holds:
                self.owner = None
        else:
            assert (outcome, holds) == (2, len(self.holds))

    @rule()
    def expire(self) -> None:
        if self.owner is None:
            return
        self.r.pexpire(K.lock, 1)
        while self.r.exists(K.lock):
            time.sleep(0.001)
        self.ended += [(self.owner, q) for q in self.holds]
        self.owner, self.holds = None, set()

    @invariant()
    def server_agrees(self) -> None:
        if not hasattr(self, "r"):
            return
        owner = self.r.hget(K.lock, "owner")
        assert (owner.decode() if owner else None) == self.owner
        assert int(self.r.get(K.fence) or 0) == self.fence
        if self.owner is not None:
            assert self.r.hlen(K.lock) == 2 + len(self.holds)


@pytest.mark.parametrize("mode", ["function", "script"])
def test_reentrant_state_machine(redis_url: str, mode: str) -> None:
    machine = type(f"Reentrant_{mode}", (ReentrantMachine,), {"url": redis_url, "mode": mode})
    machine.TestCase().runTest()


# -- real processes --------------------------------------------------------------------------------

PROCS = 6
ROUNDS = 25


def _nester(url: str, index: int, barrier: Any, out: Any) -> None:
    conn = redis.Redis.from_url(url)
    client = pyredislua.Client(conn)
    owner = f"proc-{index}"
    spans = []
    barrier.wait()
    for i in range(ROUNDS):
        depth = 1 + (index + i) % 3
        locks = [ReentrantLock(client, "shared", owner=owner, ttl=10, auto_renew=False)
                 for _ in range(depth)]
        assert locks[0].acquire(timeout=30)
        start = time.monotonic()
        fence = locks[0].fence
        for lk in locks[1:]:
            assert lk.acquire(blocking=False) and lk.fence == fence
        value = int(conn.get("counter") or 0)  # deliberately not atomic
        conn.set("counter", value + 1)
        for lk in reversed(locks[1:]):
            lk.release()
            assert conn.exists(ReentrantKeys("shared").lock), "an inner release freed the lock"
        stop = time.monotonic()
        locks[0].release()
        spans.append((fence, start, stop))
    out.put(spans)
    conn.close()


@pytest.mark.perf
def test_processes_nest_without_overlap(redis_url: str, r: redis.Redis) -> None:
    pyredislua.Client(r).load()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCS)
    out = ctx.Queue()
    procs = [ctx.Process(target=_nester, args=(redis_url, i, barrier, out)) for i in range(PROCS)]
    for p in procs:
        p.start()
    spans = sorted((s for _ in procs for s in out.get(timeout=60)), key=lambda s: s[1])
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert int(r.get("counter") or 0) == PROCS * ROUNDS, "a lost update: two owners overlapped"
    for (fa, _, end_a), (fb, start_b, _) in itertools.pairwise(spans):
        assert end_a < start_b and fa < fb


def _hold_nested(url: str, ready: Any) -> None:
    client = pyredislua.Client(redis.Redis.from_url(url))
    lock = ReentrantLock(client, "acct", owner="doomed", ttl=0.6)
    assert lock.acquire() and lock.acquire() and lock.acquire()
    ready.set()
    time.sleep(60)


@pytest.mark.perf
def test_a_sigkilled_owner_with_nested_holds_frees_the_lock_within_its_lease(
        redis_url: str, r: redis.Redis) -> None:
    client = pyredislua.Client(r)
    client.load()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_nested, args=(redis_url, ready))
    proc.start()
    assert ready.wait(30)
    time.sleep(0.8)  # renewed past its lease while alive
    waiter = ReentrantLock(client, "acct", owner="next", ttl=5, auto_renew=False)
    assert not waiter.acquire(blocking=False)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    start = time.monotonic()
    assert waiter.acquire(timeout=3)
    assert time.monotonic() - start < 0.6 + 0.3
    assert waiter.fence == 2 and waiter.holds == 1
    waiter.release()


def test_an_acquire_whose_reply_was_lost_is_resent_as_the_same_hold(r: redis.Redis) -> None:
    """The acquire runs on the server but its reply is lost (a response timeout); the blocking
    acquire retries with the same request id: one hold, released by one release."""
    client = pyredislua.Client(r, mode="function")
    client.load()
    lock = ReentrantLock(client, "acct", owner="me", ttl=10, auto_renew=False)
    plan = lock._plan(True, 5.0, client.max_block)
    batch = next(plan)
    assert isinstance(batch, list) and batch[0].args[0] == "FCALL"
    r.execute_command(*batch[0].args)  # it runs...
    step = plan.throw(redis.exceptions.TimeoutError("Timeout reading from socket"))
    while not isinstance(step, list):  # ...its reply is lost: back off, then re-send
        step = plan.send(None)
    assert step[0].args == batch[0].args, "re-sent with the same request id"
    with pytest.raises(StopIteration) as done:
        plan.send([r.execute_command(*step[0].args)])
    assert done.value.value is True
    assert lock.holds == 1 and r.hlen(K.lock) == 3  # owner, fence and one hold
    lock.release()
    assert not r.exists(K.lock), "one release frees it: no hold count of 2"


def test_only_the_fence_counter_stays(client: pyredislua.Client, r: redis.Redis) -> None:
    """Holders, waiters woken and timed out, a lease that ran out: every key but the fence
    counter has a TTL, and once it ran out only the fence counter is left."""
    holder = ReentrantLock(client, "acct", owner="me", ttl=5, auto_renew=False)
    assert holder.acquire() and holder.acquire()
    waiters = [ReentrantLock(client, "acct", owner=f"w{i}", ttl=5, auto_renew=False)
               for i in range(3)]
    results: list[bool] = []

    def take(w: ReentrantLock[pyredislua.Client]) -> None:
        ok = w.acquire(timeout=3)
        results.append(ok)
        if ok:
            w.release()

    threads = [threading.Thread(target=take, args=(w,)) for w in waiters]
    for t in threads:
        t.start()
    time.sleep(0.2)
    holder.release()
    holder.release()
    for t in threads:
        t.join(10)
    assert results == [True, True, True], "each release of the last hold woke the next waiter"
    short = ReentrantLock(client, "acct", owner="gone", ttl=0.05, auto_renew=False)
    assert short.acquire(timeout=5)
    left = {key: r.pttl(key) for key in r.scan_iter()}
    assert all(ttl > 0 for key, ttl in left.items() if key != K.fence.encode()), left
    deadline = time.monotonic() + 8
    while set(r.scan_iter()) != {K.fence.encode()}:
        assert time.monotonic() < deadline, set(r.scan_iter())
        time.sleep(0.05)


async def test_a_cancelled_holder_still_releases(aclient: pyredislua.AsyncClient,
                                                 r: redis.Redis) -> None:
    async def hold() -> None:
        async with ReentrantLock(aclient, "acct", owner="me", ttl=5), \
                ReentrantLock(aclient, "acct", owner="me", ttl=5):
            await asyncio.sleep(30)

    task = asyncio.ensure_future(hold())
    deadline = time.monotonic() + 5
    while r.hlen(K.lock) < 4:  # owner, fence and two holds
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not r.exists(K.lock)
