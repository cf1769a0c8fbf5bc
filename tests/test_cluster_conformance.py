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
