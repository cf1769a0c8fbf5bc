"""Cluster conformance: every operation of every area runs on the 3-primary cluster with the
outcome it has on a standalone server — in function and script mode, sync and asyncio, one call
at a time and through pipelines spanning every primary.

The cases come from the contract headers (every operation, called with its declared keys under
its own hash tag and the smallest valid value of each required argument: new operations are
covered without touching this file) and from the edge scenarios in ``tests/edges/`` (states
that lead an operation down its real paths). An outcome is compared by kind: the type of the
parsed reply, or the error code. What must never appear is a routing or loading error (CROSSSLOT,
MOVED, "Missing key", "Function not found", NOSCRIPT): those only exist on a cluster.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.asyncio

import pyredislua
import tests.edges
from pyredislua.engine.header import ArgSpec, Header
from pyredislua.engine.protocol import Call
from pyredislua.lock import Lock
from pyredislua.queue import Queue
from pyredislua.semaphore import Semaphore
from pyredislua.topology import LocalCluster
from tests.clusterkit import slot_of

pytestmark = pytest.mark.cluster
LIBRARY = pyredislua.render_library()


@dataclass(frozen=True)
class Case:
    id: str
    op: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]
    setup: Callable[[pyredislua.Client], None] | None = None

    def call(self) -> Call[Any]:
        return Call(self.op, self.keys, self.args)  # the raw reply: compared by type


def _smallest(arg: ArgSpec) -> Any:
    if arg.type == "int":
        assert arg.lo is not None and arg.hi is not None
        return max(arg.lo, min(arg.hi, 1000))
    if arg.type == "str":
        return "x" * max(arg.lo or 0, 1)
    return arg.choices[0]


def _from_header(header: Header) -> Case:
    tag = f"conf:{header.name}"
    keys = tuple(f"prl:conf:{{{tag}}}:{k.name}" for k in header.keys)
    args = tuple(_smallest(a) for a in header.argv if not a.optional and a.type != "rest")
    return Case(f"{header.name}[header]", header.name, keys, args)


def _cases() -> list[Case]:
    cases = [_from_header(op.header) for op in LIBRARY.operations.values()]
    for info in pkgutil.iter_modules(tests.edges.__path__):
        module = importlib.import_module(f"tests.edges.{info.name}")
        for s in module.SCENARIOS:
            cases.append(Case(f"{s.op}[{s.path}]", s.op, s.keys, s.args, s.setup))
    return cases


CASES = _cases()


def _kind(outcome: Any) -> str:
    if isinstance(outcome, pyredislua.OperationError):
        return f"error {outcome.code}"
    if isinstance(outcome, BaseException):
        return f"raised {type(outcome).__name__}: {outcome}"
    return f"ok {type(outcome).__name__}"


def _prepare(client: pyredislua.Client, conn: Any, case: Case) -> None:
    conn.delete(*case.keys)  # one slot per case: a multi-key DEL is fine on a cluster
    if case.setup is not None:
        case.setup(client)


def _single(client: pyredislua.Client, conn: Any) -> dict[str, str]:
    out = {}
    for case in CASES:
        _prepare(client, conn, case)
        try:
            out[case.id] = _kind(client.run(case.call()))
        except (redis.RedisError, pyredislua.PyRedisLuaError) as error:
            out[case.id] = _kind(error)
    return out


@pytest.fixture(scope="module", params=["function", "script"])
def reference(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str]]]:
    """The outcome of every case on a standalone server, per mode."""
    from pyredislua.server import RedisServer

    mode = request.param
    with RedisServer() as server, redis.Redis(port=server.port) as conn:
        yield mode, _single(pyredislua.Client(conn, mode=mode), conn)


def _compare(cluster_out: dict[str, str], reference: dict[str, str]) -> None:
    problems = [f"{case}: cluster {got!r}, standalone {reference[case]!r}"
                for case, got in cluster_out.items() if got != reference[case]]
    assert not problems, "\n".join(problems)
    assert not any(k.startswith("raised") for k in cluster_out.values())


def test_the_cases_cover_every_operation_and_every_primary(cluster: LocalCluster) -> None:
    assert {c.op for c in CASES} == set(LIBRARY.operations)
    owners = {cluster.owner_of(slot_of(c.keys[0].split("{")[1].split("}")[0])) for c in CASES}
    assert owners == set(cluster.primaries())


def test_sync_one_call_at_a_time(reference: tuple[str, dict[str, str]],
                                 rc: redis.RedisCluster) -> None:
    mode, expected = reference
    _compare(_single(pyredislua.Client(rc, mode=mode), rc), expected)  # type: ignore[arg-type]


async def test_asyncio_one_call_at_a_time(reference: tuple[str, dict[str, str]],
                                          rc: redis.RedisCluster,
                                          arc: redis.asyncio.RedisCluster) -> None:
    mode, expected = reference
    setup = pyredislua.Client(rc, mode=mode)  # type: ignore[arg-type]
    client = pyredislua.AsyncClient(arc, mode=mode)  # type: ignore[arg-type]
    out = {}
    for case in CASES:
        _prepare(setup, rc, case)
        try:
            out[case.id] = _kind(await client.run(case.call()))
        except (redis.RedisError, pyredislua.PyRedisLuaError) as error:
            out[case.id] = _kind(error)
    _compare(out, expected)


def _independent() -> list[Case]:
    """Cases that can share one pipeline: no setup, keys of their own."""
    return [c for c in CASES if c.setup is None]


def test_sync_pipelines(reference: tuple[str, dict[str, str]], rc: redis.RedisCluster) -> None:
    mode, expected = reference
    client = pyredislua.Client(rc, mode=mode)  # type: ignore[arg-type]
    cases = _independent()
    with client.pipeline() as p:  # one pipeline across every primary
        for case in cases:
            p.add(case.call())
        out = {c.id: _kind(r) for c, r in zip(cases, p.execute(raise_on_error=False))}
    for case in CASES:  # a pipeline of one for each scenario (they share a hash tag)
        if case.setup is not None:
            _prepare(client, rc, case)
            out[case.id] = _kind(client.run_many([case.call()], raise_on_error=False)[0])
    _compare(out, expected)


async def test_asyncio_pipelines(reference: tuple[str, dict[str, str]], rc: redis.RedisCluster,
                                 arc: redis.asyncio.RedisCluster) -> None:
    mode, expected = reference
    setup = pyredislua.Client(rc, mode=mode)  # type: ignore[arg-type]
    client = pyredislua.AsyncClient(arc, mode=mode)  # type: ignore[arg-type]
    cases = _independent()
    async with client.pipeline() as p:
        for case in cases:
            p.add(case.call())
        out = {c.id: _kind(r) for c, r in zip(cases, await p.execute(raise_on_error=False))}
    for case in CASES:
        if case.setup is not None:
            _prepare(setup, rc, case)
            out[case.id] = _kind((await client.run_many([case.call()],
                                                        raise_on_error=False))[0])
    _compare(out, expected)


# -- the areas' own workflows, end to end on the cluster ---------------------------------------


def _workflows(client: pyredislua.Client, n: int) -> None:
    """Each area's main path, on names spread over the primaries (suffix ``n``)."""
    from pyredislua.cache import Cache
    from pyredislua.queue import StreamQueue
    from pyredislua.ratelimit import (
        GCRA,
        ConcurrencyLimiter,
        FixedWindow,
        SlidingLog,
        SlidingWindow,
        TokenBucket,
        hit_all,
    )
    from pyredislua.writebehind import WriteBehind
    from pyredislua.writebehind.sinks.sqlite import SQLiteSink

    for i in range(3):
        name = f"wf{n}-{i}"
        lock = Lock(client, name, ttl=10)
        assert lock.acquire(blocking=False)
        lock.release()

        q = Queue(client, name)
        q.enqueue(b"a", priority=1)
        q.enqueue_many([q.job(b"b"), q.job(b"c", priority=2)])
        jobs = q.dequeue(count=3, timeout=0)
        assert [j.payload for j in jobs] == [b"b", b"a", b"c"]
        for job in jobs:
            q.ack(job)
        assert q.stats().ready == 0

        sq = StreamQueue(client, name, group="g", consumer="c1")
        sq.produce([b"e1", b"e2"])
        entries = sq.consume(10, timeout=0)
        assert [e.payload for e in entries] == [b"e1", b"e2"]
        sq.ack(entries)

        for cls in (GCRA, TokenBucket, SlidingLog, SlidingWindow, FixedWindow):
            assert cls(client, f"{cls.__name__}-{name}", "5/s").hit(name).allowed
        user, tenant = GCRA(client, "u", "10/s"), FixedWindow(client, "t", "100/minute")
        assert hit_all(client, [(user, name), (tenant, "acme")], tag=name).allowed
        slots = ConcurrencyLimiter(client, f"c-{name}", 2, ttl=10)
        slot = slots.acquire(name)
        assert slot.acquired
        slots.release(slot)

        sem = Semaphore(client, name, 3, ttl=10, auto_renew=False)
        permit = sem.acquire(2)
        assert permit is not None and permit.fence >= 1
        assert sem.acquire(2, timeout=0.05) is None  # queues, BLPOPs its signal list, gives up
        assert sem.release(permit)

        store = WriteBehind(client, name)
        store.set("k1", b"v1")
        store.set("k2", b"v2")
        sink = SQLiteSink()
        store.flush(sink)
        assert {k: r.value for k, r in sink.rows().items()} == {"k1": b"v1", "k2": b"v2"}

        cache = Cache(client, name)
        assert cache.get_or_compute("x", lambda: {"v": 1}) == {"v": 1}
        cache.set("y", 2, tags=["t"])
        cache.invalidate_tag("t")
        assert cache.get_or_compute("y", lambda: 3) == 3


def test_area_workflows_sync(cluster: LocalCluster, rc: redis.RedisCluster, mode: str) -> None:
    _workflows(pyredislua.Client(rc, mode=mode), 1)  # type: ignore[arg-type]


async def test_area_workflows_asyncio(cluster: LocalCluster, arc: redis.asyncio.RedisCluster,
                                      mode: str) -> None:
    from pyredislua.ratelimit import GCRA, SlidingLog

    client = pyredislua.AsyncClient(arc, mode=mode)  # type: ignore[arg-type]
    for i in range(3):
        name = f"awf-{i}"
        async with Lock(client, name, ttl=10) as lock:
            assert lock.fence >= 1
        q = Queue(client, name)
        await q.enqueue(b"a")
        [job] = await q.dequeue(count=1, timeout=0)
        await q.ack(job)
        assert (await GCRA(client, "api", "5/s").hit(name)).allowed
        assert (await SlidingLog(client, "s", "5/s").hit(name)).allowed
        sem = Semaphore(client, name, 2, ttl=10)
        async with sem.hold(2) as permit:
            assert permit.fence >= 1
            assert await sem.acquire(1, timeout=0.05) is None


def _spread_tags(cluster: LocalCluster) -> list[str]:
    """One hash tag per primary."""
    from tests.clusterkit import tags_by_primary

    return [tags[0] for tags in tags_by_primary(cluster, prefix="lk").values()]


def _wait_registered(conn: redis.RedisCluster, waiters: str, token: str) -> None:
    """Until ``token`` is registered as a waiter (it blocks on the signal list)."""
    import time

    deadline = time.monotonic() + 5
    while conn.zscore(waiters, token) is None:
        assert time.monotonic() < deadline, f"{token} never registered in {waiters}"
        time.sleep(0.002)


async def _await_registered(conn: redis.asyncio.RedisCluster, waiters: str, token: str) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + 5
    while await conn.zscore(waiters, token) is None:
        assert time.monotonic() < deadline, f"{token} never registered in {waiters}"
        await asyncio.sleep(0.002)


def test_lock_turns_on_every_primary(cluster: LocalCluster, rc: redis.RedisCluster,
                                     mode: str) -> None:
    """Bounded barging (``Lock(turn=...)``) on each primary: a looping holder takes its carries
    with the next fence each, and a waiter gets the lock when the holder stops (the timer
    passes the last carry on, through a grant on the lock's node)."""
    import threading

    from pyredislua.lock import LockKeys

    client = pyredislua.Client(rc, mode=mode)  # type: ignore[arg-type]
    for tag in _spread_tags(cluster):
        name = f"{{{tag}}}turn"
        holder = Lock(client, name, ttl=10, auto_renew=False, turn=0.05, requeue=True)
        waiter = Lock(client, name, ttl=10, auto_renew=False, turn=0.05)
        assert holder.acquire(blocking=False)
        first = holder.fence
        assert first is not None
        got: list[bool] = []
        thread = threading.Thread(target=lambda w=waiter, g=got: g.append(w.acquire(timeout=5)))
        thread.start()
        _wait_registered(rc, LockKeys(name).waiters, waiter.token)
        holder.release()
        assert rc.hget(LockKeys(name).lock, "owner") == f"carry:{holder.token}".encode()
        assert holder.acquire(blocking=False) and holder.fence == first + 1
        holder.release()  # the last carry: passed on by the timer
        thread.join(10)
        assert got == [True] and waiter.owner_token.startswith("grant:")
        assert waiter.fence == first + 2
        waiter.release()


def test_reentrant_and_lockset_workflows_sync(cluster: LocalCluster, rc: redis.RedisCluster,
                                              mode: str) -> None:
    """The newer lock primitives' own paths on every primary: a reentrant lock nested and
    waited for (the waiter registered, then woken through its signal list on the lock's
    node), a LockSet all or none and waited for."""
    import threading

    from pyredislua import LockSet, ReentrantLock
    from pyredislua.lock import LockKeys

    client = pyredislua.Client(rc, mode=mode)  # type: ignore[arg-type]
    for tag in _spread_tags(cluster):
        a = ReentrantLock(client, f"{{{tag}}}r", owner="a", ttl=10, auto_renew=False)
        assert a.acquire() and a.acquire()
        assert a.holds == 2
        b = ReentrantLock(client, f"{{{tag}}}r", owner="b", ttl=10, auto_renew=False)
        assert not b.acquire(blocking=False)
        got: list[bool] = []
        waiter = threading.Thread(target=lambda b=b, got=got: got.append(b.acquire(timeout=5)))
        waiter.start()
        _wait_registered(rc, b.rkeys.waiters, "b")
        a.release()
        c = ReentrantLock(client, f"{{{tag}}}r", owner="c", ttl=10, auto_renew=False)
        assert not c.acquire(blocking=False)  # still held once by a
        a.release()  # the last hold: wakes the waiter
        waiter.join(6)
        assert got == [True] and b.fence > a.fence
        b.release()

        names = [f"{{{tag}}}x", f"{{{tag}}}y"]
        first = LockSet(client, names, ttl=10, auto_renew=False)
        assert first.acquire(blocking=False)
        fences = dict(first.fence_by_name)
        second = LockSet(client, list(reversed(names)), ttl=10, auto_renew=False)
        assert not second.acquire(blocking=False)
        waited: list[bool] = []
        waiter = threading.Thread(
            target=lambda s=second, w=waited: w.append(s.acquire(timeout=5)))
        waiter.start()
        _wait_registered(rc, LockKeys(names[0]).waiters, second.token)
        first.release()
        waiter.join(6)
        assert waited == [True]
        assert all(second.fence_by_name[n] > fences[n] for n in names)  # may skip one
        second.release()


async def test_reentrant_and_lockset_workflows_asyncio(cluster: LocalCluster,
                                                       rc: redis.RedisCluster,
                                                       arc: redis.asyncio.RedisCluster,
                                                       mode: str) -> None:
    import asyncio

    from pyredislua import LockSet, ReentrantLock
    from pyredislua.lock import LockKeys

    client = pyredislua.AsyncClient(arc, mode=mode)  # type: ignore[arg-type]
    for tag in _spread_tags(cluster):
        a = ReentrantLock(client, f"{{{tag}}}ar", owner="a", ttl=10)
        async with a:
            async with ReentrantLock(client, f"{{{tag}}}ar", owner="a", ttl=10) as inner:
                assert inner.fence == a.fence and inner.holds == 2
            b = ReentrantLock(client, f"{{{tag}}}ar", owner="b", ttl=10)
            waiting = asyncio.ensure_future(b.acquire(timeout=5))
            await _await_registered(arc, b.rkeys.waiters, "b")
        assert await waiting and b.fence > a.fence
        await b.release()
        names = [f"{{{tag}}}ax", f"{{{tag}}}ay"]
        async with LockSet(client, names, ttl=10) as first:
            fences = dict(first.fence_by_name)
            second = LockSet(client, names, ttl=10)
            waiting = asyncio.ensure_future(second.acquire(timeout=5))
            await _await_registered(arc, LockKeys(names[0]).waiters, second.token)
        assert await waiting
        assert all(second.fence_by_name[n] > fences[n] for n in names)  # may skip one
        await second.release()
