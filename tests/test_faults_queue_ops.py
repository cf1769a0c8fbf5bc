"""The queue's and the Streams queue's operations under faults (issue 14 §2 and §5), each call
on its own, without a Worker (the Worker's own fault suite covers it):

* **Re-sent calls.** redis-py re-sends a command whose reply it lost (here: a server paused past
  the client's socket timeout, the way it happens in production). Every writing operation runs
  once however often it is re-sent: the re-sent call finds the request record of its first run
  and replies the same (one job, the caller sees its id; one lease; an ack that succeeded is not
  reported as a lost lease).
* **maxmemory** (``noeviction``, memory full): producers are refused before writing, and
  consumers drain the queue: dequeue, ack, nack, extend, reap, purge, consume and the Streams
  ack/nack/extend all run (``allow-oom``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio
from redis.backoff import ConstantBackoff
from redis.retry import Retry

import pyredislua
from pyredislua.errors import StaleTokenError
from pyredislua.queue import Entry, Queue, StreamQueue
from pyredislua.queue import ops as qops
from pyredislua.stream import ops as sops
from tests.faultkit import FaultOutcome, FaultReport, FaultServer, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.queue]
T = TypeVar("T")
QUEUE = "queue (Lua operations)"
STREAMS = "Streams queue (Lua operations)"


@pytest.fixture
def slow(fault_server: FaultServer) -> Iterator[redis.Redis]:
    """Times out after 0.2 s and re-sends (up to 3 times, 0.3 s apart), like redis-py's
    default policy with a short socket timeout."""
    conn = redis.Redis(port=fault_server.port, socket_timeout=0.2,
                       retry=Retry(ConstantBackoff(0.3), 3))
    yield conn
    conn.close()


def _fcalls(server: FaultServer) -> int:
    with server.admin() as admin:
        stats = admin.info("commandstats")
        return int(stats.get("cmdstat_fcall", {}).get("calls", 0))


def _resent(server: FaultServer, run: Callable[[], T]) -> T:
    """Run one call while the server is paused past the socket timeout: redis-py sends it
    again (at least once); returns what the caller got, once every copy has run."""
    with server.admin() as admin:
        admin.config_resetstat()
    resume = server.pause_for(0.8)
    try:
        got = run()
    finally:
        resume.join()
    wait_for(lambda: _fcalls(server) >= 2, what="the call and its re-send to run")
    return got


def _queue(slow: redis.Redis, **options: Any) -> Queue:
    client = pyredislua.Client(slow, mode="function")
    client.load()
    return Queue(client, "resend", **options)


def test_a_resent_enqueue_adds_one_job(fault_server: FaultServer, slow: redis.Redis,
                                       fault_report: FaultReport) -> None:
    q = _queue(slow)
    got = _resent(fault_server, lambda: q.enqueue("once"))
    s = q.stats()
    assert (s.ready, s.counters["seq"]) == (1, 1) and got.created
    assert [j.id for j in q.peek()] == [got.id]
    batch = _resent(fault_server, lambda: q.enqueue_many(["a", "b", "c"]))
    assert q.stats().ready == 4 and [e.created for e in batch] == [True] * 3
    fault_report.record(FaultOutcome(
        QUEUE, "enqueue re-sent after a timeout (server paused)", True, None, "none", 0, 0,
        "a request record per call: one job, the caller sees its id (enqueue_many alike)"))


def test_without_a_request_record_a_resent_enqueue_runs_twice(
        fault_server: FaultServer, slow: redis.Redis) -> None:
    """What the request record prevents: the ten-key call of the 1.0 contract, re-sent."""
    q = _queue(slow)
    _resent(fault_server, lambda: q.client.run(
        qops.enqueue_call(q.keys, qops.JobSpec("twice"), request_id=False)))
    assert q.stats().ready >= 2


def test_a_resent_dequeue_leases_one_job(fault_server: FaultServer, slow: redis.Redis,
                                         fault_report: FaultReport) -> None:
    q = _queue(slow)
    q.enqueue_many(["a", "b", "c"])
    got = _resent(fault_server, lambda: q.dequeue(1))
    s = q.stats()
    assert (s.ready, s.active, len(got)) == (2, 1, 1)
    q.extend(got[0], 30)  # the caller holds the live lease
    q.ack(got[0])
    fault_report.record(FaultOutcome(
        QUEUE, "dequeue re-sent after a timeout (server paused)", True, None, "none", 0, 0,
        "one job leased, to the caller (the re-send replies the first run's jobs)"))


def test_resent_settling_calls_reply_as_their_first_run(
        fault_server: FaultServer, slow: redis.Redis, fault_report: FaultReport) -> None:
    q = _queue(slow, backoff=0)
    q.enqueue_many([q.job(str(i), max_attempts=1) for i in range(6)])
    a, b, c, *others = q.dequeue(6)
    assert _resent(fault_server, lambda: q.ack_many([a])) == 1  # not StaleTokenError
    settled = _resent(fault_server, lambda: q.nack(b, "boom", action="dead"))
    assert settled.outcome == "dead"
    assert _resent(fault_server, lambda: q.nack(c, "later", action="release")).outcome == "ready"
    s = q.stats()
    assert (s.ready, s.active, s.dead, s.counters["acked"]) == (1, 3, 1, 1)
    for job in [*others, *q.dequeue(5)]:
        q.nack(job, "bad", action="dead")
    assert q.dead()[0] == 5
    assert len(_resent(fault_server, lambda: q.requeue(limit=2))) == 2
    assert _resent(fault_server, lambda: q.purge(limit=2)) == 2
    assert (q.stats().ready, q.dead()[0]) == (2, 1)
    fault_report.record(FaultOutcome(
        QUEUE, "ack, nack, requeue, purge re-sent after a timeout", True, None, "none", 0, 0,
        "each ran once and replied as its first run (no STALE for an ack that succeeded)"))


def test_a_resent_async_enqueue_adds_one_job(fault_server: FaultServer) -> None:
    async def main() -> None:
        conn = redis.asyncio.Redis(port=fault_server.port, socket_timeout=0.2,
                                   retry=redis.asyncio.retry.Retry(ConstantBackoff(0.3), 3))
        q = Queue(pyredislua.AsyncClient(conn, mode="function"), "aresend")
        await q.client.load()
        with fault_server.admin() as admin:
            admin.config_resetstat()
        resume = fault_server.pause_for(0.8)
        enqueued = await q.enqueue("once")
        resume.join()
        wait_for(lambda: _fcalls(fault_server) >= 2, what="the call and its re-send")
        assert (await q.stats()).ready == 1 and [j.id for j in await q.peek()] == [enqueued.id]
        await conn.aclose()
    asyncio.run(main())


def _streams(slow: redis.Redis) -> StreamQueue:
    client = pyredislua.Client(slow, mode="function")
    client.load()
    return StreamQueue(client, "sresend", consumer="c", max_deliveries=5)


def test_resent_stream_calls_run_once(fault_server: FaultServer, slow: redis.Redis,
                                      fault_report: FaultReport) -> None:
    sq = _streams(slow)
    [entry_id] = _resent(fault_server, lambda: sq.produce(["once"]))
    assert sq.stats().length == 1
    sq.produce(["b", "c"])
    got = _resent(fault_server, lambda: sq.consume(1))
    assert [e.id for e in got] == [entry_id] and sq.stats().pending == 1
    assert _resent(fault_server, lambda: sq.ack(got)) == 1  # not StaleTokenError
    b, c = sq.consume(2)
    assert _resent(fault_server, lambda: sq.nack(b, "bad", action="dead")) == "dead"
    assert _resent(fault_server, lambda: sq.nack(c, "later")) == "retry"
    s = sq.stats()
    assert (s.length, s.pending, s.dead) == (1, 1, 1)
    fault_report.record(FaultOutcome(
        STREAMS, "produce, consume, ack, nack re-sent after a timeout", True, None, "none", 0,
        0, "each ran once: one entry per produce, one delivery per consume, replies as the "
           "first run's"))


# -- maxmemory ---------------------------------------------------------------------------------


def test_consumers_drain_a_queue_at_maxmemory(fault_server: FaultServer,
                                              fault_report: FaultReport) -> None:
    conn = redis.Redis(port=fault_server.port)
    client = pyredislua.Client(conn, mode="function")
    q = Queue(client, "oom", backoff=0)
    q.enqueue_many([q.job(str(i), max_attempts=3) for i in range(40)])
    [dead] = q.dequeue(1)
    q.nack(dead, "bad", action="dead")
    assert len(q.dequeue(1, lease=0.001)) == 1
    wait_for(lambda: q.stats().expired_leases == 1, what="a lease to run out")
    with fault_server.out_of_memory():
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            q.enqueue("more")
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            q.enqueue_many(["more"])
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            q.requeue()  # puts work back: not needed to drain, refused
        assert [s.outcome for s in q.reap()] == ["ready"]
        assert q.purge() == 1
        done, retried = 0, False
        while jobs := q.dequeue(5):
            q.extend(jobs[0], 30)
            if not retried:
                q.nack(jobs[0], "again", delay=0)
                retried = True
                jobs = jobs[1:]
            done += q.ack_many(jobs)
        s = q.stats()
        assert (s.ready, s.delayed, s.active, s.dead) == (0, 0, 0, 0) and done == 39
    q.enqueue("after")  # memory is back: producers again
    fault_report.record(FaultOutcome(
        QUEUE, "maxmemory (noeviction), memory full", True, None,
        "OutOfMemoryError to enqueue and requeue only", 0, 0,
        "consumers drained 40 jobs: dequeue, ack, nack, extend, reap and purge run (allow-oom)"))


def test_consumers_drain_a_stream_queue_at_maxmemory(fault_server: FaultServer,
                                                     fault_report: FaultReport) -> None:
    conn = redis.Redis(port=fault_server.port)
    client = pyredislua.Client(conn, mode="function")
    sq = StreamQueue(client, "oom", consumer="a", max_deliveries=2)
    sq.produce([str(i) for i in range(20)])
    with fault_server.out_of_memory():
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            sq.produce(["more"])
        first = sq.consume(2)
        sq.extend(first[0])
        assert sq.nack(first[0], "bad", action="dead") == "dead"
        assert sq.nack(first[1], "later") == "retry"
        acked = 0
        while got := sq.consume(5):
            acked += sq.ack(got)
        s = sq.stats()
        assert (s.length, s.pending, s.dead, acked) == (0, 0, 1, 19)
    sq.produce(["after"])
    fault_report.record(FaultOutcome(
        STREAMS, "maxmemory (noeviction), memory full", True, None,
        "OutOfMemoryError to produce only", 0, 0,
        "consumers drained 20 entries: consume, ack, nack, extend run (allow-oom)"))


def test_every_queue_and_stream_operation_is_safe_to_resend() -> None:
    """By construction (extend, reap, the reads) or by a request record (the others): none is
    `resend: once`, and the Python call specs of the latter carry one by default."""
    lib = pyredislua.render_library()
    ops = {n: op.header for n, op in lib.operations.items()
           if op.header.area in ("queue", "stream")}
    assert all(h.resend == "safe" for h in ops.values())
    recorded = {n for n, h in ops.items() if any(k.name == "request" for k in h.keys)}
    assert recorded == {"queue.enqueue", "queue.enqueue_batch", "queue.enqueue_jobs",
                        "queue.dequeue", "queue.ack",
                        "queue.nack", "queue.requeue", "queue.purge", "stream.produce",
                        "stream.consume", "stream.ack", "stream.nack"}
    k = qops.QueueKeys("q")
    calls = [qops.enqueue_call(k, qops.JobSpec("x")), *qops.enqueue_batch_calls(
        k, [qops.JobSpec("x")]), qops.dequeue_call(k, 1, 1000), *qops.ack_calls(k, [("1", "1")]),
        qops.nack_call(k, "1", "1"), qops.requeue_call(k), qops.purge_call(k)]
    sk = sops.StreamKeys("s")
    entry = Entry("1-0", 1, b"", "c")
    calls += [*sops.produce_calls(sk, "g", ["x"]), sops.consume_call(sk, "g", "c", 1, 1, 1, 1),
              *sops.ack_calls(sk, "g", [entry]), sops.nack_call(sk, "g", entry, "", "retry")]
    for call in calls:
        assert call.op in recorded and ":req:" in call.keys[-1], call
    assert len({c.keys[-1] for c in calls}) == len(calls)  # one record per call


def test_a_lease_from_before_a_restart_without_persistence_settles_nothing(
        fault_server: FaultServer, fault_report: FaultReport) -> None:
    """Job ids and delivery counts start again once Redis lost its data. A worker still holding
    a lease from before (its job is gone) must not settle the new job that got the same id:
    lease tokens carry the server time of their lease, so the old token is stale."""
    conn = redis.Redis(port=fault_server.port)
    q = Queue(pyredislua.Client(conn, mode="function"), "wiped")
    q.enqueue("before")
    [old] = q.dequeue(1)
    fault_server.crash_restart()  # no persistence: the job and the queue's counters are gone
    wait_for(lambda: conn.ping(), what="the restarted server")
    q.enqueue("after")
    [new] = q.dequeue(1)
    assert new.id == old.id  # the same id, a different job
    for settle in (lambda: q.ack(old), lambda: q.nack(old, "stale", action="dead"),
                   lambda: q.extend(old, 30)):
        with pytest.raises(StaleTokenError):
            settle()
    s = q.stats()
    assert (s.active, s.dead) == (1, 0)  # the new job is still leased, to its own worker
    q.ack(new)
    assert q.stats().active == 0
    fault_report.record(FaultOutcome(
        QUEUE, "a lease held across a restart without persistence", True, None, "none", 0, 0,
        "the old lease's ack, nack and extend are STALE: the new job with the same id stays "
        "leased to its own worker"))
