"""OpenTelemetry spans (pyredislua.observe.tracing), exported to the SDK's in-memory exporter,
against real Redis: the producer's context travels inside the job and the consumer's span links
to it (retries too), lock wait and hold spans, write-behind flush spans; and a process that
never instruments imports no opentelemetry at all."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk import trace as trace_sdk
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import pyredislua
from pyredislua.errors import LockNotOwnedError
from pyredislua.lock import Lock, LockSet
from pyredislua.observe import tracing
from pyredislua.queue import Job, Queue
from pyredislua.queue.worker import AsyncWorker, Worker
from pyredislua.writebehind import Record, WriteBehind

pytestmark = pytest.mark.queue


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace_sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        tracing.uninstrument()
        provider.shutdown()


def wait_for(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def named(exporter: InMemorySpanExporter, prefix: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def traceparent(span: Any) -> str:
    c = span.context
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}"


def run_worker(worker: Worker, until: Callable[[], bool]) -> None:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(until)
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


# -- queue ------------------------------------------------------------------------------------


def test_consumer_span_links_to_producer(client: pyredislua.Client,
                                         spans: InMemorySpanExporter) -> None:
    q = Queue(client, "tr")
    got = q.enqueue(b"hello", priority=3)
    [send] = named(spans, "send tr")
    assert send.kind == SpanKind.PRODUCER
    assert send.attributes["messaging.system"] == "pyredislua"
    assert send.attributes["messaging.destination.name"] == "tr"
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.message.id"] == got.id
    assert "messaging.batch.message_count" not in send.attributes
    seen: list[Job] = []
    current: list[Any] = []

    def handle(job: Job) -> None:
        seen.append(job)
        current.append(trace.get_current_span().get_span_context())  # the handler's parent

    run_worker(Worker(q, handle, reap_every=0.05), lambda: len(named(spans, "process")) == 1)
    [job] = seen
    assert job.trace_context.startswith(f"00-{send.context.trace_id:032x}-")
    [proc] = named(spans, "process tr")
    assert proc.kind == SpanKind.CONSUMER
    assert proc.parent is None  # linked, not parented
    assert proc.context.trace_id != send.context.trace_id
    assert current == [proc.context]
    [link] = proc.links
    assert (link.context.trace_id, link.context.span_id) == (send.context.trace_id,
                                                            send.context.span_id)
    assert proc.attributes["messaging.operation.type"] == "process"
    assert proc.attributes["messaging.message.id"] == got.id
    assert proc.attributes["pyredislua.job.attempts"] == 1
    assert proc.attributes["pyredislua.job.priority"] == 3
    assert proc.status.status_code != StatusCode.ERROR
    assert q.stats().unfinished == 0


def test_failed_attempt_errors_and_retry_links_to_same_producer(
        client: pyredislua.Client, spans: InMemorySpanExporter) -> None:
    q = Queue(client, "retry", backoff=0)
    q.enqueue(b"flaky")
    [send] = named(spans, "send retry")
    attempts: list[int] = []

    def handle(job: Job) -> None:
        attempts.append(job.attempts)
        if job.attempts == 1:
            raise RuntimeError("first attempt fails")

    run_worker(Worker(q, handle, reap_every=0.05), lambda: len(named(spans, "process")) == 2)
    assert attempts == [1, 2]
    first, second = sorted(named(spans, "process retry"),
                           key=lambda s: s.attributes["pyredislua.job.attempts"])
    assert first.status.status_code == StatusCode.ERROR
    assert "first attempt fails" in (first.status.description or "")
    assert any(e.name == "exception" for e in first.events)
    assert second.status.status_code != StatusCode.ERROR
    for span in (first, second):
        assert span.parent is None
        assert [(lk.context.trace_id, lk.context.span_id) for lk in span.links] == [
            (send.context.trace_id, send.context.span_id)]
    assert first.context.trace_id != second.context.trace_id  # a retry is not re-parented


def test_enqueue_many_one_span_per_call(client: pyredislua.Client,
                                        spans: InMemorySpanExporter) -> None:
    q = Queue(client, "batch")
    q.enqueue_many([b"a", b"b", b"c"])
    [send] = named(spans, "send batch")
    assert send.kind == SpanKind.PRODUCER
    assert send.attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in send.attributes
    jobs = q.dequeue(3)
    want = traceparent(send)
    assert [j.trace_context for j in jobs] == [want] * 3


@pytest.mark.parametrize("count", [1, 6, 7, 21, 22, 1002])
def test_enqueue_many_every_job_carries_context(client: pyredislua.Client,
                                                spans: InMemorySpanExporter, count: int) -> None:
    """Field widths 8 (trace context) split into chunks the script reads right, also mixed
    with max run times."""
    q = Queue(client, f"carry{count}")
    specs = [q.job(str(i), max_run=1 if i % 2 else None) for i in range(count)]
    got = q.enqueue_many(specs)
    assert len(got) == count
    [send] = named(spans, f"send carry{count}")
    jobs = q.dequeue(1000)
    jobs += q.dequeue(1000)
    assert sorted(j.text for j in jobs) == sorted(str(i) for i in range(count))
    want = traceparent(send)
    assert {j.trace_context for j in jobs} == {want}
    assert {j.max_run_ms for j in jobs if int(j.text) % 2} <= {1000}
    assert all(j.max_run_ms == 0 for j in jobs if not int(j.text) % 2)


def test_untraced_producer_gives_consumer_span_without_link(
        client: pyredislua.Client, spans: InMemorySpanExporter) -> None:
    q = Queue(client, "plain")
    tracing.uninstrument()
    q.enqueue(b"x")
    provider = trace_sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.instrument(tracer_provider=provider)
    seen: list[Job] = []
    run_worker(Worker(q, seen.append, reap_every=0.05), lambda: bool(named(spans, "process")))
    assert seen[0].trace_context == ""
    [proc] = named(spans, "process plain")
    assert proc.links == () or list(proc.links) == []
    assert proc.attributes["pyredislua.job.attempts"] == 1


async def test_async_worker_links_to_producer(aclient: pyredislua.AsyncClient,
                                              spans: InMemorySpanExporter) -> None:
    q = Queue(aclient, "atr", backoff=0)
    await q.enqueue(b"one")
    [send] = named(spans, "send atr")

    async def handle(job: Job) -> None:
        await asyncio.sleep(0)
        if job.attempts == 1:
            raise ValueError("async failure")

    worker = AsyncWorker(q, handle, reap_every=0.05)
    task = asyncio.ensure_future(worker.run())
    deadline = time.monotonic() + 10
    while len(named(spans, "process")) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    worker.stop()
    await asyncio.wait_for(task, 10)
    first, second = sorted(named(spans, "process atr"),
                           key=lambda s: s.attributes["pyredislua.job.attempts"])
    assert first.status.status_code == StatusCode.ERROR
    assert second.status.status_code != StatusCode.ERROR
    for span in (first, second):
        assert span.kind == SpanKind.CONSUMER and span.parent is None
        assert [(lk.context.trace_id, lk.context.span_id) for lk in span.links] == [
            (send.context.trace_id, send.context.span_id)]
    await q.enqueue_many([b"x", b"y"])
    [batch] = named(spans, "send atr")[1:]
    assert batch.attributes["messaging.batch.message_count"] == 2


# -- lock -------------------------------------------------------------------------------------


def test_lock_wait_and_hold_spans(client: pyredislua.Client,
                                  spans: InMemorySpanExporter) -> None:
    lock = Lock(client, "tl", ttl=5)
    other = Lock(client, "tl", ttl=5)
    assert lock.acquire(timeout=1)
    fence = lock.fence
    assert not other.acquire(blocking=False)
    assert not other.acquire(timeout=0.05)
    lock.release()
    waits = named(spans, "lock.wait tl")
    assert [(w.attributes["pyredislua.lock.acquired"], w.attributes["pyredislua.lock.blocking"])
            for w in waits] == [(True, True), (False, False), (False, True)]
    assert waits[0].attributes["pyredislua.lock.fence"] == fence
    assert "pyredislua.lock.fence" not in waits[1].attributes
    [hold] = named(spans, "lock.hold tl")
    assert hold.attributes["pyredislua.lock.fence"] == fence
    assert hold.attributes["pyredislua.lock.lost"] is False
    assert hold.start_time >= waits[0].start_time and hold.end_time >= waits[2].end_time
    assert other.acquire(blocking=False)
    other.release()
    holds = named(spans, "lock.hold tl")
    assert [h.attributes["pyredislua.lock.fence"] for h in holds] == [fence, fence + 1]


def test_lock_hold_span_records_lost_lease(client: pyredislua.Client, r: redis.Redis,
                                           spans: InMemorySpanExporter) -> None:
    lock = Lock(client, "lost", ttl=0.3)
    assert lock.acquire(blocking=False)
    assert not named(spans, "lock.hold")  # still open while held
    r.delete(lock.keys.lock)  # taken from under the holder: the watchdog's renewal finds out
    wait_for(lambda: lock.lost_reason is not None, 5)
    with pytest.raises(LockNotOwnedError):
        lock.release()
    [hold] = named(spans, "lock.hold lost")
    assert hold.attributes["pyredislua.lock.lost"] is True
    [event] = [e for e in hold.events if e.name == "lost"]
    assert event.attributes["pyredislua.lock.reason"] == lock.lost_reason


def test_lock_set_hold_span_ends_at_release(client: pyredislua.Client,
                                            spans: InMemorySpanExporter) -> None:
    locks = LockSet(client, ["{ls}:a", "{ls}:b"], ttl=5)
    with locks:
        assert not named(spans, "lock.hold")
    [hold] = named(spans, "lock.hold ")
    assert hold.name == f"lock.hold {locks.name}"
    assert hold.attributes["pyredislua.lock.lost"] is False


# -- write-behind -----------------------------------------------------------------------------


class ListSink:
    def __init__(self) -> None:
        self.rows: dict[str, bytes | None] = {}

    def write(self, records: Sequence[Record]) -> None:
        if any(r.key.startswith("poison") for r in records):
            raise ValueError("poison")
        for rec in records:
            self.rows[rec.key] = rec.value


def test_flush_span_per_batch(client: pyredislua.Client, spans: InMemorySpanExporter) -> None:
    store = WriteBehind(client, "twb", batch_size=4, max_delay=60, max_attempts=1, backoff=0)
    store.write_many([(f"k{i}", str(i)) for i in range(6)])
    sink = ListSink()
    events = store.flush(sink)
    assert [e.claimed for e in events] == [4, 2]
    flushes = named(spans, "writebehind.flush twb")
    assert [f.attributes["pyredislua.writebehind.records"] for f in flushes] == [4, 2]
    assert [f.attributes["pyredislua.writebehind.acked"] for f in flushes] == [4, 2]
    assert all(f.status.status_code != StatusCode.ERROR for f in flushes)
    store.set("poison-1", "x")
    store.set("fine", "y")
    store.flush(sink)
    last = named(spans, "writebehind.flush twb")[2:]
    assert sum(f.attributes["pyredislua.writebehind.dead"] for f in last) == 1
    assert any(f.status.status_code == StatusCode.ERROR for f in last)
    assert sink.rows["fine"] == b"y" and "poison-1" not in sink.rows


def test_background_flusher_spans(client: pyredislua.Client,
                                  spans: InMemorySpanExporter) -> None:
    store = WriteBehind(client, "bgt", batch_size=10, max_delay=0.02)
    sink = ListSink()
    with store.flusher(sink):
        store.write_many([(f"k{i}", "v") for i in range(25)])
        wait_for(lambda: len(sink.rows) == 25)
    flushes = named(spans, "writebehind.flush bgt")
    assert sum(f.attributes["pyredislua.writebehind.records"] for f in flushes) == 25


# -- without tracing --------------------------------------------------------------------------

UNTRACED = r"""
import importlib.abc, sys, traceback
ours = []
class Absent(importlib.abc.MetaPathFinder):
    # opentelemetry as if it were not installed; who asked for it from pyredislua is recorded
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] != "opentelemetry":
            return None
        frames = [f.filename for f in traceback.extract_stack()
                  if "importlib" not in f.filename and not f.filename.startswith("<")]
        if frames and "/pyredislua/" in frames[-2 if len(frames) > 1 else -1]:
            ours.append(name)
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
import redis, pyredislua
from pyredislua.lock import Lock, LockSet
from pyredislua.observe import tracing
from pyredislua.queue import Queue
from pyredislua.queue.worker import Worker
from pyredislua.writebehind import WriteBehind
client = pyredislua.Client(redis.Redis.from_url(sys.argv[1]))
q = Queue(client, "untraced")
q.enqueue(b"x"); q.enqueue_many([b"y"])
jobs = q.dequeue(2)
assert [j.trace_context for j in jobs] == ["", ""]
q.ack_many(jobs)
lock = Lock(client, "untraced")
assert lock.acquire(blocking=False); lock.release()
store = WriteBehind(client, "untraced")
store.set("k", "v")
class Sink:
    def write(self, records): pass
store.flush(Sink())
assert tracing.active() is None
assert not ours, ours
assert not [m for m in sys.modules if m.split(".")[0] == "opentelemetry"]
try:
    tracing.instrument()
except ImportError:
    print("ok")
"""


def test_untraced_process_imports_no_opentelemetry(redis_url: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", UNTRACED, redis_url], env=env,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "ok"
