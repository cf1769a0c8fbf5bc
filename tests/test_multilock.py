"""Several locks at once: LockSet (one hash tag, all or none in one call) and MultiLock (any slots,
one global order). Behaviour, a model of lock.acquire_all against real Redis, real processes
taking random overlapping sets (no deadlock, no overlap, bounded wait), SIGKILLed holders and 1 ms
leases, asyncio, and the raw FCALL contract."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing as mp
import os
import random
import signal
import threading
import time
from typing import Any

import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import pyredislua
from pyredislua import LockSet, MultiLock
from pyredislua.engine.header import key_type_at
from pyredislua.lock import (
    Lock,
    LockKeys,
    acquire_all_call,
    acquire_call,
    extend_all_call,
    release_call,
)
from tests.conftest import snapshot

pytestmark = pytest.mark.lock

NAMES = ["{t}:a", "{t}:b", "{t}:c"]


def _owner(r: redis.Redis, name: str) -> bytes | None:
    owner: bytes | None = r.hget(LockKeys(name).lock, "owner")
    return owner


# -- LockSet: all or none --------------------------------------------------------------------------


def test_the_header_declares_one_key_group_per_lock() -> None:
    header = pyredislua.render_library().operation("lock.acquire_all").header
    assert header.keyset == "lock" and header.repeated and header.variadic_keys
    assert [key_type_at(header, i) for i in range(1, 9)] == [
        "hash", "string", "list", "zset"] * 2


def test_all_or_none_in_one_call(client: pyredislua.Client, r: redis.Redis) -> None:
    blocker = Lock(client, "{t}:c", ttl=30, auto_renew=False)
    assert blocker.acquire(blocking=False)
    before = snapshot(r)
    locks = LockSet(client, NAMES, ttl=30, auto_renew=False)
    assert not locks.acquire(blocking=False)
    assert snapshot(r) == before, "a refused acquire_all must write nothing"
    assert not locks.held and locks.fence_by_name == {}
    blocker.release()
    assert locks.acquire(blocking=False)
    assert locks.held
    assert all(_owner(r, n) == locks.token.encode() for n in NAMES)
    # each lock has its own fence: {t}:c was taken once before
    assert locks.fence_by_name == {"{t}:a": 1, "{t}:b": 1, "{t}:c": 2}
    locks.release()
    assert all(_owner(r, n) is None for n in NAMES)
    again = LockSet(client, reversed(NAMES), ttl=30, auto_renew=False)
    assert again.acquire(blocking=False)
    assert again.fence_by_name == {"{t}:a": 2, "{t}:b": 2, "{t}:c": 3}
    again.release()


def test_names_must_share_one_hash_tag(client: pyredislua.Client) -> None:
    with pytest.raises(ValueError, match="one hash tag"):
        LockSet(client, ["a", "b"])
    with pytest.raises(ValueError, match=r"1\.\.64"):
        LockSet(client, [])
    with pytest.raises(ValueError, match=r"1\.\.64"):
        LockSet(client, [f"{{t}}:{i}" for i in range(65)])
    assert LockSet(client, ["{t}:a", "{t}:a", "{t}:b"]).names == ("{t}:a", "{t}:b")


def test_acquire_all_is_idempotent_for_its_token(client: pyredislua.Client) -> None:
    keys = [LockKeys(n) for n in NAMES]
    first = client.run(acquire_all_call(keys, "me", 30_000))
    again = client.run(acquire_all_call(keys, "me", 60_000))  # a re-sent call after a lost reply
    assert first.acquired and again.acquired and first.fences == again.fences == (1, 1, 1)
    assert client.run(acquire_all_call(keys, "other", 30_000)).busy == 0


def test_a_lock_twice_in_one_call_is_refused(client: pyredislua.Client, r: redis.Redis) -> None:
    k = LockKeys("{t}:a")
    with pytest.raises(pyredislua.BadArgumentError, match="twice"):
        client.run(pyredislua.Call("lock.acquire_all", k.all + k.all, ("me", 1000)))
    with pytest.raises(pyredislua.BadArgumentError, match="groups of 4"):
        client.run(pyredislua.Call("lock.acquire_all", k.all[:3], ("me", 1000)))
    assert r.dbsize() == 0


def test_extend_all_is_all_or_none(client: pyredislua.Client, r: redis.Redis) -> None:
    keys = [LockKeys(n) for n in NAMES]
    assert client.run(acquire_all_call(keys, "me", 10_000)).acquired
    assert client.run(extend_all_call(keys, "me", 60_000))
    assert all(r.pttl(k.lock) > 50_000 for k in keys)
    r.delete(keys[1].lock)  # one lease ran out
    before = [r.pexpiretime(k.lock) for k in keys]
    assert not client.run(extend_all_call(keys, "me", 90_000))
    assert [r.pexpiretime(k.lock) for k in keys] == before
    assert r.exists(keys[1].lock) == 0, "extend never resurrects"


def test_blocking_set_is_woken_by_the_release_of_the_busy_lock(client: pyredislua.Client) -> None:
    holder = Lock(client, "{t}:b", ttl=30, auto_renew=False)
    assert holder.acquire()
    locks = LockSet(client, NAMES, ttl=30, auto_renew=False)

    def release_soon() -> None:
        time.sleep(0.3)
        holder.release()

    threading.Thread(target=release_soon).start()
    start = time.monotonic()
    assert locks.acquire(timeout=10)
    waited = time.monotonic() - start
    assert 0.25 < waited < 2.0, f"woken by the release (30 s lease), waited {waited:.2f}s"
    assert locks.fence_by_name["{t}:b"] == 2  # the grant's fence: a lock held by nobody between
    locks.release()


def test_a_grant_is_given_back_when_another_lock_turned_busy(
        client: pyredislua.Client, r: redis.Redis) -> None:
    """The set waits on {t}:a; a is granted to it, but {t}:b was taken meanwhile: the set gives a
    back at once (to a's next waiter) instead of holding it while it waits for b."""
    a, b = LockKeys("{t}:a"), LockKeys("{t}:b")
    assert client.run(acquire_call(a, "h1", 30_000)).acquired
    locks = LockSet(client, ["{t}:a", "{t}:b"], ttl=30, auto_renew=False)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(locks.acquire(timeout=1.5)))
    waiter.start()
    deadline = time.monotonic() + 5
    while r.zscore(a.waiters, locks.token) is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert client.run(acquire_call(b, "h2", 30_000)).acquired
    assert client.run(acquire_call(a, "next", 30_000, 30_000)).pttl_ms > 0  # a waiter behind
    assert client.run(release_call(a, "h1", 30_000)) == 2  # granted to the set's token
    waiter.join(10)
    assert result == [False]
    # a went to "next" (given back: granted again), never held by the set while it waited
    owner = r.hget(a.lock, "owner")
    assert owner is not None and owner.startswith(b"grant:")
    assert r.zscore(a.waiters, locks.token) is None and r.zscore(b.waiters, locks.token) is None


def test_timeout_and_watchdog(client: pyredislua.Client, r: redis.Redis) -> None:
    holder = Lock(client, "{t}:a", ttl=30, auto_renew=False)
    assert holder.acquire()
    locks = LockSet(client, NAMES, ttl=0.5)
    start = time.monotonic()
    assert not locks.acquire(timeout=0.3)
    assert 0.29 < time.monotonic() - start < 1.0
    assert r.zscore(LockKeys("{t}:a").waiters, locks.token) is None, "gave up its registration"
    holder.release()
    lost: list[Any] = []
    locks = LockSet(client, NAMES, ttl=0.5, on_lost=lost.append)
    assert locks.acquire(timeout=1)
    time.sleep(1.2)  # the watchdog renews every lease together
    assert locks.held and all(r.pttl(LockKeys(n).lock) > 0 for n in NAMES)
    r.delete(LockKeys("{t}:b").lock)  # one lease is lost: the whole set is
    deadline = time.monotonic() + 3
    while not lost:
        assert time.monotonic() < deadline, "the watchdog must report the lost lease"
        time.sleep(0.01)
    assert locks.lost
    with pytest.raises(pyredislua.LockNotOwnedError, match="b"):
        locks.release()
    assert all(_owner(r, n) is None for n in NAMES)


def test_context_manager_and_one_millisecond_leases(client: pyredislua.Client) -> None:
    with LockSet(client, NAMES, ttl=5) as locks:
        assert locks.held
    short = LockSet(client, NAMES, ttl=0.001, auto_renew=False)
    assert short.acquire(blocking=False)
    fences = short.fence_by_name
    # a 1 ms lease: another set gets every lock once it ran out, with higher fences
    other = LockSet(client, NAMES, ttl=5, auto_renew=False)
    assert other.acquire(timeout=2)
    assert all(other.fence_by_name[n] > fences[n] for n in NAMES)
    assert short.lost
    other.release()


def test_raw_fcall(r: redis.Redis) -> None:
    """Any client can FCALL it: KEYS are the lock key set once per lock, under one hash tag."""
    client = pyredislua.Client(r, mode="function")
    client.load()
    lib = client.library.name
    a, b = LockKeys("{t}:a"), LockKeys("{t}:b")
    keys = [*a.all, *b.all]
    assert r.execute_command("FCALL", f"{lib}_lock_acquire_all", 8, *keys, "me", 10_000) == [
        1, 10_000, 1, 1]
    busy = r.execute_command("FCALL", f"{lib}_lock_acquire_all", 8, *keys, "you", 10_000)
    after = r.pttl(a.lock)  # read a moment later: the same lease, a millisecond or so less
    assert busy[:2] == [0, 1] and after <= busy[2] <= after + 50
    assert r.execute_command("FCALL", f"{lib}_lock_extend_all", 2, a.lock, b.lock, "me",
                             20_000) == 1
    assert r.execute_command("FCALL", f"{lib}_lock_release", 4, *a.all, "me") == 1
    assert r.execute_command("FCALL", f"{lib}_lock_release", 4, *b.all, "me") == 1


async def test_async_lockset(aclient: pyredislua.AsyncClient, r: redis.Redis) -> None:
    first = LockSet(aclient, NAMES, ttl=5)
    async with first:
        second = LockSet(aclient, list(reversed(NAMES)), ttl=5)
        assert not await second.acquire(blocking=False)
        task = asyncio.ensure_future(second.acquire(timeout=5))
        await asyncio.sleep(0.1)
        assert not task.done()
    assert await task
    assert second.fence_by_name == {n: 2 for n in NAMES}
    await second.release()
    assert all(_owner(r, n) is None for n in NAMES)


# -- MultiLock: one global order -------------------------------------------------------------------


def test_multilock_takes_in_key_order_and_releases_on_failure(
        client: pyredislua.Client, r: redis.Redis) -> None:
    ml = MultiLock(client, ["z", "a", "m"], ttl=30, auto_renew=False)
    assert ml.names == ("a", "m", "z")
    blocker = Lock(client, "z", ttl=30, auto_renew=False)
    assert blocker.acquire()
    assert not ml.acquire(timeout=0.2)
    assert _owner(r, "a") is None and _owner(r, "m") is None, "released what it took"
    blocker.release()
    assert ml.acquire(timeout=1)
    assert ml.held and set(ml.fence_by_name) == {"a", "m", "z"}
    ml.release()
    assert all(_owner(r, n) is None for n in ("a", "m", "z"))


def test_opposite_orders_never_deadlock(client: pyredislua.Client) -> None:
    """Two threads asking for {A, B} and {B, A} in a loop: both always finish."""
    done = [0, 0]

    def loop(i: int, names: list[str]) -> None:
        for _ in range(30):
            with MultiLock(client, names, ttl=10, auto_renew=False, blocking_timeout=5):
                done[i] += 1

    threads = [threading.Thread(target=loop, args=(0, ["A", "B"])),
               threading.Thread(target=loop, args=(1, ["B", "A"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert done == [30, 30]


async def test_async_multilock(aclient: pyredislua.AsyncClient) -> None:
    async def loop(names: list[str]) -> int:
        n = 0
        for _ in range(20):
            async with MultiLock(aclient, names, ttl=10, blocking_timeout=5):
                n += 1
                await asyncio.sleep(0)
        return n

    assert await asyncio.gather(loop(["A", "B", "C"]), loop(["C", "B", "A"]),
                                loop(["B", "C"])) == [20, 20, 20]


def test_multilock_on_a_cluster(cluster_client: pyredislua.Client) -> None:
    names = ["orders", "stock", "users", "audit"]  # four slots, spread over the primaries
    first = MultiLock(cluster_client, names, ttl=5, auto_renew=False)
    assert first.acquire(timeout=2)
    second = MultiLock(cluster_client, list(reversed(names)), ttl=5, auto_renew=False)
    assert not second.acquire(timeout=0.2)
    first.release()
    assert second.acquire(timeout=2)
    assert all(f == 2 for f in second.fence_by_name.values())
    second.release()


# -- a model of lock.acquire_all against real Redis ----------------------------------------------

TOKENS = ["t0", "t1", "t2"]
MODEL_NAMES = ["{m}:a", "{m}:b", "{m}:c", "{m}:d"]


class AcquireAllMachine(RuleBasedStateMachine):
    url: str = ""
    mode: str = "function"

    @initialize()
    def setup(self) -> None:
        self.r = redis.Redis.from_url(self.url)
        self.r.flushall()
        self.client = pyredislua.Client(self.r, mode=self.mode)  # type: ignore[arg-type]
        self.owner: dict[str, str | None] = dict.fromkeys(MODEL_NAMES)
        self.fence: dict[str, int] = dict.fromkeys(MODEL_NAMES, 0)  # last issued
        self.held_fence: dict[str, int] = {}

    def teardown(self) -> None:
        if hasattr(self, "r"):
            self.r.close()

    @rule(token=st.sampled_from(TOKENS),
          names=st.lists(st.sampled_from(MODEL_NAMES), min_size=1, max_size=4, unique=True))
    def acquire_all(self, token: str, names: list[str]) -> None:
        before = snapshot(self.r)
        result = self.client.run(acquire_all_call([LockKeys(n) for n in names], token, 600_000))
        busy = [i for i, n in enumerate(names) if self.owner[n] not in (None, token)]
        if busy:
            assert not result.acquired and result.busy == busy[0]
            assert snapshot(self.r) == before, "a refused acquire_all writes nothing"
            return
        assert result.acquired
        for n, fence in zip(names, result.fences):
            if self.owner[n] is None:
                self.fence[n] += 1
                self.owner[n], self.held_fence[n] = token, self.fence[n]
            assert fence == self.held_fence[n]

    @rule(token=st.sampled_from(TOKENS), name=st.sampled_from(MODEL_NAMES))
    def release(self, token: str, name: str) -> None:
        released = self.client.run(release_call(LockKeys(name), token))
        assert released == (1 if self.owner[name] == token else 0)
        if released:
            self.owner[name] = None

    @rule(token=st.sampled_from(TOKENS),
          names=st.lists(st.sampled_from(MODEL_NAMES), min_size=1, max_size=4, unique=True))
    def extend_all(self, token: str, names: list[str]) -> None:
        renewed = self.client.run(extend_all_call([LockKeys(n) for n in names], token, 600_000))
        assert renewed == all(self.owner[n] == token for n in names)

    @rule(name=st.sampled_from(MODEL_NAMES))
    def expire(self, name: str) -> None:
        key = LockKeys(name).lock
        self.r.pexpire(key, 1)
        while self.r.exists(key):
            time.sleep(0.001)
        self.owner[name] = None

    @invariant()
    def server_agrees(self) -> None:
        if not hasattr(self, "r"):
            return
        for n in MODEL_NAMES:
            owner = self.r.hget(LockKeys(n).lock, "owner")
            assert (owner.decode() if owner else None) == self.owner[n]
            assert int(self.r.get(LockKeys(n).fence) or 0) == self.fence[n]


@pytest.mark.parametrize("mode", ["function", "script"])
def test_acquire_all_state_machine(redis_url: str, mode: str) -> None:
    machine = type(f"AcquireAll_{mode}", (AcquireAllMachine,), {"url": redis_url, "mode": mode})
    machine.TestCase().runTest()


# -- real processes: random overlapping sets, no deadlock, no overlap, bounded wait -------------

# seconds each process keeps taking sets (10 s under the thorough hypothesis profile)
RUN_FOR = 10.0 if os.environ.get("PYREDISLUA_HYPOTHESIS_PROFILE") == "thorough" else 3.0
PROCS = 6
BOUND = 5.0  # every acquisition completes within this (its timeout is twice as long)
POOL = ["p", "q", "r", "s", "u"]  # untagged: every lock in its own slot
TAGGED = ["{pool}:p", "{pool}:q", "{pool}:r", "{pool}:s", "{pool}:u"]


def _taker(url: str, kind: str, seed: int, barrier: Any, out: Any) -> None:
    rng = random.Random(seed)
    conn = redis.Redis.from_url(url)
    client = pyredislua.Client(conn)
    holds, waits, failures = [], [], 0
    barrier.wait()
    end = time.monotonic() + RUN_FOR
    while time.monotonic() < end:
        names = rng.sample(TAGGED if kind in ("set", "tagged-single") else POOL,
                           rng.randint(1, 3))
        rng.shuffle(names)
        locks: LockSet[Any] | MultiLock[Any] | Lock[Any]
        if kind == "set":
            locks = LockSet(client, names, ttl=10, auto_renew=False)
        elif kind in ("single", "tagged-single"):
            names = names[:1]
            locks = Lock(client, names[0], ttl=10, auto_renew=False)
        else:
            locks = MultiLock(client, names, ttl=10, auto_renew=False)
        asked = time.monotonic()
        if not locks.acquire(timeout=2 * BOUND):
            failures += 1
            continue
        start = time.monotonic()
        waits.append(start - asked)
        fences = (locks.fence_by_name if not isinstance(locks, Lock)
                  else {names[0]: locks.fence})
        time.sleep(rng.uniform(0, 0.004))
        stop = time.monotonic()
        locks.release()
        holds.extend((n, fences[n], start, stop) for n in names)
    out.put((holds, waits, failures))
    conn.close()


def _check_holds(per_process: list[tuple[list[Any], list[float], int]]) -> None:
    holds = [h for hs, _, _ in per_process for h in hs]
    waits = [w for _, ws, _ in per_process for w in ws]
    assert sum(f for _, _, f in per_process) == 0, "an acquisition timed out: a deadlock?"
    assert len(holds) > 50
    assert max(waits) < BOUND, f"an acquisition waited {max(waits):.2f}s"
    by_name: dict[str, list[tuple[int, float, float]]] = {}
    for name, fence, start, stop in holds:
        by_name.setdefault(name, []).append((fence, start, stop))
    for name, spans in by_name.items():
        spans.sort(key=lambda s: s[1])
        for (fa, _, end_a), (fb, start_b, _) in itertools.pairwise(spans):
            assert end_a < start_b, f"two holders of {name} overlap"
            assert fa < fb, f"fences of {name} must increase in hold order"


@pytest.mark.perf
@pytest.mark.parametrize("kinds", [("multi", "single"), ("set", "set", "tagged-single")],
                         ids=["multilock", "lockset"])
def test_processes_take_random_overlapping_sets(redis_url: str, r: redis.Redis,
                                                kinds: tuple[str, ...]) -> None:
    pyredislua.Client(r).load()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCS)
    out = ctx.Queue()
    procs = [ctx.Process(target=_taker, args=(redis_url, kinds[i % len(kinds)], i, barrier, out))
             for i in range(PROCS)]
    for p in procs:
        p.start()
    per_process = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    _check_holds(per_process)


def _hold_and_wait(url: str, kind: str, ready: Any) -> None:
    client = pyredislua.Client(redis.Redis.from_url(url))
    names = TAGGED[:3] if kind == "set" else POOL[:3]
    locks: Any = (LockSet(client, names, ttl=0.6) if kind == "set"
                  else MultiLock(client, names, ttl=0.6))
    assert locks.acquire(timeout=5)
    ready.set()
    time.sleep(60)  # renewed by its watchdog until it is killed


@pytest.mark.perf
@pytest.mark.parametrize("kind", ["set", "multi"])
def test_a_sigkilled_holder_frees_every_lock_within_its_lease(
        redis_url: str, r: redis.Redis, kind: str) -> None:
    client = pyredislua.Client(r)
    client.load()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_and_wait, args=(redis_url, kind, ready))
    proc.start()
    assert ready.wait(30)
    names = TAGGED[:3] if kind == "set" else POOL[:3]
    time.sleep(0.8)  # longer than the lease: the watchdog keeps it
    locks: Any = (LockSet(client, names, ttl=5, auto_renew=False) if kind == "set"
                  else MultiLock(client, names, ttl=5, auto_renew=False))
    assert not locks.acquire(blocking=False)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    start = time.monotonic()
    assert locks.acquire(timeout=3)
    assert time.monotonic() - start < 0.6 + 0.3, "freed within the lease"
    assert all(f == 2 for f in locks.fence_by_name.values())
    locks.release()


def test_only_fence_counters_stay(client: pyredislua.Client, r: redis.Redis) -> None:
    """Sets taken, waited for, given back and released: every key but the fence counters has a
    TTL, and once those ran out only the fence counters are left."""
    first = LockSet(client, NAMES, ttl=5, auto_renew=False)
    assert first.acquire()
    sets = [LockSet(client, NAMES[i:], ttl=5, auto_renew=False) for i in range(3)]
    threads = [threading.Thread(target=lambda s=s: s.acquire(timeout=2) and s.release())
               for s in sets]
    for t in threads:
        t.start()
    time.sleep(0.2)
    first.release()
    for t in threads:
        t.join(10)
    short = LockSet(client, NAMES, ttl=0.05, auto_renew=False)
    assert short.acquire(timeout=5)
    fences = {LockKeys(n).fence.encode() for n in NAMES}
    left = {key: r.pttl(key) for key in r.scan_iter()}
    assert all(ttl > 0 for key, ttl in left.items() if key not in fences), left
    deadline = time.monotonic() + 8
    while set(r.scan_iter()) != fences:
        assert time.monotonic() < deadline, set(r.scan_iter())
        time.sleep(0.05)


async def test_a_cancelled_holder_still_releases(aclient: pyredislua.AsyncClient,
                                                 r: redis.Redis) -> None:
    locks = LockSet(aclient, NAMES, ttl=5)
    multi = MultiLock(aclient, ["x", "y"], ttl=5)

    async def hold() -> None:
        async with locks, multi:
            await asyncio.sleep(30)

    task = asyncio.ensure_future(hold())
    deadline = time.monotonic() + 5
    while not (locks.held and multi.held):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert all(_owner(r, n) is None for n in [*NAMES, "x", "y"])
