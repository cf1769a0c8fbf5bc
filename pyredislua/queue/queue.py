"""The reliable priority queue: one class, on a sync or an asyncio client, a thin driver of plans.

Guarantee: **at-least-once**. A job leaves the queue only when a consumer acks it with its live
lease token, or when it is dead-lettered after ``max_attempts`` deliveries. A consumer that dies
mid-job loses nothing: its lease runs out and a reap returns the job to the queue (with backoff),
so the job may run twice; make handlers idempotent. On a single primary every operation is atomic;
Redis replication is asynchronous, so a failover can lose the last writes (see the README).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Generic, TypeVar, overload

from ..client import AsyncClient, Client
from ..compression import Compressor
from ..engine.protocol import Call, Engine, Plan
from ..engine.waiting import run_by, until_signalled
from ..kit import as_payload
from ..observe import tracing
from ..observe.series import MinuteSeries
from . import ops
from .ops import (
    Action,
    Enqueued,
    Job,
    JobInfo,
    JobSpec,
    QueueKeys,
    QueueStats,
    Settled,
    State,
    ms,
)

C = TypeVar("C", Client, AsyncClient)
T = TypeVar("T")
U = TypeVar("U")
J = TypeVar("J", Job, JobInfo)
JobRef = Job | tuple[str, str]


def _ref(job: JobRef) -> tuple[str, str]:
    if isinstance(job, Job):
        return job.id, job.token
    return job[0], job[1]


def _spec(item: JobSpec | bytes | str) -> JobSpec:
    return item if isinstance(item, JobSpec) else JobSpec(item)


def dequeue_plan(
    engine: Engine, keys: QueueKeys, count: int, lease_ms: int, timeout: float | None,
    max_block: float, clock: Callable[[], float] = time.monotonic,
) -> Plan[list[Job]]:
    """Lease up to ``count`` jobs; when there are none, wait on the enqueue marker (BLPOP,
    :func:`~pyredislua.engine.waiting.until_signalled`) until one arrives, a delayed job falls
    due, or ``timeout`` passes (None: forever; 0: no wait).

    A timeout above 0 is kept while Redis is paused or restarting (each dequeue is re-sent
    with its request record until the deadline: :func:`~pyredislua.engine.waiting.run_by`):
    nothing when no reply came by then, although the server may still lease jobs to that
    dequeue when it wakes (they return when their lease ends, an attempt counted)."""
    got = yield from until_signalled(
        lambda deadline: run_by(engine, ops.dequeue_call(keys, count, lease_ms), deadline,
                                clock),
        lambda got: bool(got.jobs),
        lambda got: None if got.wait_ms < 0 else got.wait_ms / 1000,
        (keys.marker,), timeout=timeout, max_block=max_block, clock=clock)
    return [] if got is None else got.jobs


def _mapped(call: Call[T], then: Callable[[T], U]) -> Call[U]:
    """``call`` with ``then`` applied to what its parser returns."""
    parse = call.parse
    return Call(call.op, call.keys, call.args, lambda reply: then(parse(reply)))


def _discard(plan: Plan[Any]) -> Plan[None]:
    yield from plan


class Queue(Generic[C]):
    """A reliable priority queue, on a sync :class:`~pyredislua.Client` or an asyncio
    :class:`~pyredislua.AsyncClient`::

        q = Queue(client, "emails"); q.enqueue(b"...", priority=1)       # Client: values
        for job in q.dequeue(count=10, timeout=5): ...; q.ack(job)
        aq = Queue(aclient, "emails"); await aq.enqueue(b"...")         # AsyncClient: awaitables

    name: the queue (its keys live under ``prl:q:{name}:``). lease: default lease in seconds.
    Defaults for enqueue: priority 0 (lower first), max_attempts 3, backoff 1 s (exponential with
    jitter, capped at one hour). ``metrics=True``: enqueue, dequeue, ack, nack and reap record
    per-minute counts and wait/run histograms in ``prl:q:{name}:metrics`` (read them with
    :meth:`metrics`; see docs/design/metrics-in-redis.md). ``compress=Compressor()`` stores
    payloads compressed (see :mod:`pyredislua.compression`): every producer and consumer of the
    queue must then use one (a worker retries, then dead-letters, a payload no Compressor wrote).

    Every method is one call or one plan (:mod:`.ops`), returned as the client makes it: a value
    on a ``Client``, an awaitable on an ``AsyncClient``.
    """

    def __init__(self, client: C, name: str, *, prefix: str = "prl", lease: float = 30.0,
                 max_attempts: int = 3, backoff: float = 1.0,
                 compress: Compressor | None = None, metrics: bool = False) -> None:
        self.name = name
        self.compress = compress
        self.keys = QueueKeys(name, prefix, metrics=metrics)
        self.lease_ms = ms(lease, name="lease", allow_zero=False)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._engine: Engine = client.engine
        self._client: C = client

    @property
    def client(self) -> C:
        return self._client

    def job(self, payload: bytes | str, *, priority: int = 0, delay: float = 0.0,
            max_attempts: int | None = None, backoff: float | None = None,
            key: str | None = None, max_run: float | None = None) -> JobSpec:
        """A job spec carrying this queue's defaults (for ``enqueue_many``). ``max_run``: the
        longest a worker may run it per attempt, in seconds (see :class:`Worker`)."""
        return JobSpec(payload, priority, delay,
                       self.max_attempts if max_attempts is None else max_attempts,
                       self.backoff if backoff is None else backoff, key, max_run)

    def _specs(self, items: Iterable[JobSpec | bytes | str]) -> list[JobSpec]:
        return [self._wire(i if isinstance(i, JobSpec) else self.job(i)) for i in items]

    def _wire(self, spec: JobSpec) -> JobSpec:
        """The spec as sent: its payload compressed when the queue compresses."""
        if self.compress is None:
            return spec
        return replace(spec, payload=self.compress.compress(as_payload(spec.payload)))

    def open(self, job: J) -> J:
        """A dequeued job (or a job's info) with its payload as enqueued: decompressed when the
        queue compresses (``ValueError`` for a payload no Compressor wrote)."""
        if self.compress is None:
            return job
        return replace(job, payload=self.compress.decompress(job.payload))

    def _shown(self, info: JobInfo) -> JobInfo:
        """For inspection (peek, get, dead): decompressed when it can be, else as stored."""
        try:
            return self.open(info)
        except (ValueError, zlib.error):
            return info

    def _enqueue_many_plan(self, items: Iterable[JobSpec | bytes | str]) -> Plan[list[Enqueued]]:
        specs = self._specs(items)
        traced = tracing.active()
        if not specs or traced is None:
            calls = ops.enqueue_batch_calls(self.keys, specs)
            if not calls:
                return []
            results = yield from self._engine.run(calls)
            return [e for chunk in results for e in chunk]
        span = traced.send(self.name, len(specs))
        try:
            carried = traced.carried(span)  # every job of the call carries the call's span
            specs = [s if s.trace_context else replace(s, trace_context=carried) for s in specs]
            results = yield from self._engine.run(ops.enqueue_batch_calls(self.keys, specs))
        except BaseException as error:
            traced.end(span, error)
            raise
        got = [e for chunk in results for e in chunk]
        traced.sent(span, [e.id for e in got])
        return got

    def _traced_enqueue_plan(self, traced: tracing.Tracing, spec: JobSpec) -> Plan[Enqueued]:
        """``enqueue`` in a PRODUCER span whose context the job carries."""
        span = traced.send(self.name, 1)
        try:
            spec = replace(spec, trace_context=traced.carried(span))
            got = yield from self._engine.run_one(ops.enqueue_call(self.keys, self._wire(spec)))
        except BaseException as error:
            traced.end(span, error)
            raise
        traced.sent(span, [got.id])
        return got

    def _dequeue_plan(self, count: int, lease: float | None, timeout: float | None,
                      max_block: float) -> Plan[list[Job]]:
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
        lease_ms = self.lease_ms if lease is None else ms(lease, name="lease", allow_zero=False)
        jobs = yield from dequeue_plan(self._engine, self.keys, count, lease_ms, timeout,
                                       max_block)
        return [self.open(job) for job in jobs]

    def _ack_plan(self, jobs: Iterable[JobRef]) -> Plan[int]:
        calls = ops.ack_calls(self.keys, [_ref(j) for j in jobs])
        if not calls:
            return 0
        results = yield from self._engine.run(calls)
        return sum(results)

    def _nack_call(self, job: JobRef, reason: str, action: Action, delay: float | None
                   ) -> Call[Settled]:
        job_id, token = _ref(job)
        delay_ms = -1 if delay is None else ms(delay, name="delay")
        return ops.nack_call(self.keys, job_id, token, reason, action, delay_ms)

    def _extend_call(self, job: JobRef, lease: float | None) -> Call[int]:
        job_id, token = _ref(job)
        lease_ms = self.lease_ms if lease is None else ms(lease, name="lease", allow_zero=False)
        return ops.extend_call(self.keys, job_id, token, lease_ms)

    @overload
    def enqueue(self: Queue[Client], payload: bytes | str, *, priority: int = 0,
                delay: float = 0.0, max_attempts: int | None = None,
                backoff: float | None = None, key: str | None = None,
                max_run: float | None = None) -> Enqueued: ...
    @overload
    def enqueue(self: Queue[AsyncClient], payload: bytes | str, *, priority: int = 0,
                delay: float = 0.0, max_attempts: int | None = None,
                backoff: float | None = None, key: str | None = None,
                max_run: float | None = None) -> Awaitable[Enqueued]: ...
    def enqueue(self, payload: bytes | str, *, priority: int = 0, delay: float = 0.0,
                max_attempts: int | None = None, backoff: float | None = None,
                key: str | None = None, max_run: float | None = None
                ) -> Enqueued | Awaitable[Enqueued]:
        """Add a job; with ``key``, a second enqueue while the first job is unfinished returns
        the first job's id (``created`` False) and changes nothing. ``max_run``: the longest a
        worker may run it per attempt, in seconds (default: the worker's ``max_run``)."""
        spec = self.job(payload, priority=priority, delay=delay, max_attempts=max_attempts,
                        backoff=backoff, key=key, max_run=max_run)
        traced = tracing.active()
        if traced is not None:
            return self._client.drive(self._traced_enqueue_plan(traced, spec))
        return self._client.run(ops.enqueue_call(self.keys, self._wire(spec)))

    @overload
    def enqueue_many(self: Queue[Client], items: Iterable[JobSpec | bytes | str]
                     ) -> list[Enqueued]: ...
    @overload
    def enqueue_many(self: Queue[AsyncClient], items: Iterable[JobSpec | bytes | str]
                     ) -> Awaitable[list[Enqueued]]: ...
    def enqueue_many(self, items: Iterable[JobSpec | bytes | str]
                     ) -> list[Enqueued] | Awaitable[list[Enqueued]]:
        """Add many jobs in one round trip (1000 per Lua call; each call all-or-nothing)."""
        return self._client.drive(self._enqueue_many_plan(items))

    @overload
    def dequeue(self: Queue[Client], count: int = 1, *, lease: float | None = None,
                timeout: float | None = 0.0) -> list[Job]: ...
    @overload
    def dequeue(self: Queue[AsyncClient], count: int = 1, *, lease: float | None = None,
                timeout: float | None = 0.0) -> Awaitable[list[Job]]: ...
    def dequeue(self, count: int = 1, *, lease: float | None = None,
                timeout: float | None = 0.0) -> list[Job] | Awaitable[list[Job]]:
        """Lease up to ``count`` ready jobs, lowest (priority, enqueue order) first.
        ``timeout``: seconds to wait for one (0: do not wait; None: forever)."""
        return self._client.drive(
            self._dequeue_plan(count, lease, timeout, self._client.max_block))

    @overload
    def ack(self: Queue[Client], job: JobRef) -> None: ...
    @overload
    def ack(self: Queue[AsyncClient], job: JobRef) -> Awaitable[None]: ...
    def ack(self, job: JobRef) -> Awaitable[None] | None:
        """Finish a job; raises StaleTokenError (changing nothing) if its lease is not live."""
        return self._client.drive(_discard(self._ack_plan([job])))

    @overload
    def ack_many(self: Queue[Client], jobs: Iterable[JobRef]) -> int: ...
    @overload
    def ack_many(self: Queue[AsyncClient], jobs: Iterable[JobRef]) -> Awaitable[int]: ...
    def ack_many(self, jobs: Iterable[JobRef]) -> int | Awaitable[int]:
        """Finish jobs in one round trip; a stale token fails its whole chunk of 1000."""
        return self._client.drive(self._ack_plan(jobs))

    @overload
    def nack(self: Queue[Client], job: JobRef, reason: str = "", *, action: Action = "retry",
             delay: float | None = None) -> Settled: ...
    @overload
    def nack(self: Queue[AsyncClient], job: JobRef, reason: str = "", *,
             action: Action = "retry", delay: float | None = None) -> Awaitable[Settled]: ...
    def nack(self, job: JobRef, reason: str = "", *, action: Action = "retry",
             delay: float | None = None) -> Settled | Awaitable[Settled]:
        """Give a job back: ``retry`` (after ``delay``, default exponential backoff), ``dead``
        (dead-letter now) or ``release`` (back at once, the attempt not counted)."""
        return self._client.run(self._nack_call(job, reason, action, delay))

    @overload
    def extend(self: Queue[Client], job: JobRef, lease: float | None = None) -> int: ...
    @overload
    def extend(self: Queue[AsyncClient], job: JobRef, lease: float | None = None
               ) -> Awaitable[int]: ...
    def extend(self, job: JobRef, lease: float | None = None) -> int | Awaitable[int]:
        """Extend a live lease to ``lease`` seconds from now; returns the new deadline (ms)."""
        return self._client.run(self._extend_call(job, lease))

    @overload
    def reap(self: Queue[Client], limit: int = 100) -> list[Settled]: ...
    @overload
    def reap(self: Queue[AsyncClient], limit: int = 100) -> Awaitable[list[Settled]]: ...
    def reap(self, limit: int = 100) -> list[Settled] | Awaitable[list[Settled]]:
        """Return up to ``limit`` jobs whose lease ran out to the queue (or dead letters)."""
        return self._client.run(ops.reap_call(self.keys, limit))

    @overload
    def stats(self: Queue[Client]) -> QueueStats: ...
    @overload
    def stats(self: Queue[AsyncClient]) -> Awaitable[QueueStats]: ...
    def stats(self) -> QueueStats | Awaitable[QueueStats]:
        return self._client.run(ops.stats_call(self.keys))

    @overload
    def metrics(self: Queue[Client]) -> MinuteSeries: ...
    @overload
    def metrics(self: Queue[AsyncClient]) -> Awaitable[MinuteSeries]: ...
    def metrics(self) -> MinuteSeries | Awaitable[MinuteSeries]:
        """What the operations recorded (with ``metrics=True``, by any client): counts per
        minute over the last hour, and the hour's wait and run histograms (read-only)."""
        return self._client.run(ops.metrics_call(self.keys))

    @overload
    def peek(self: Queue[Client], state: State = "ready", count: int = 10) -> list[JobInfo]: ...
    @overload
    def peek(self: Queue[AsyncClient], state: State = "ready", count: int = 10
             ) -> Awaitable[list[JobInfo]]: ...
    def peek(self, state: State = "ready", count: int = 10
             ) -> list[JobInfo] | Awaitable[list[JobInfo]]:
        call = ops.peek_call(self.keys, state, count)
        if self.compress is not None:
            call = _mapped(call, lambda infos: [self._shown(i) for i in infos])
        return self._client.run(call)

    @overload
    def get(self: Queue[Client], job_id: str) -> JobInfo | None: ...
    @overload
    def get(self: Queue[AsyncClient], job_id: str) -> Awaitable[JobInfo | None]: ...
    def get(self, job_id: str) -> JobInfo | Awaitable[JobInfo | None] | None:
        call = ops.get_call(self.keys, job_id)
        if self.compress is not None:
            call = _mapped(call, lambda info: None if info is None else self._shown(info))
        return self._client.run(call)

    @overload
    def get_by_key(self: Queue[Client], idem_key: str) -> JobInfo | None: ...
    @overload
    def get_by_key(self: Queue[AsyncClient], idem_key: str) -> Awaitable[JobInfo | None]: ...
    def get_by_key(self, idem_key: str) -> JobInfo | Awaitable[JobInfo | None] | None:
        """The unfinished job holding the idempotency key ``idem_key`` (None: no unfinished
        job holds it; a key is released when its job finishes, dies or is purged)."""
        call = ops.get_by_key_call(self.keys, idem_key)
        if self.compress is not None:
            call = _mapped(call, lambda info: None if info is None else self._shown(info))
        return self._client.run(call)

    @overload
    def dead(self: Queue[Client], offset: int = 0, count: int = 100
             ) -> tuple[int, list[JobInfo]]: ...
    @overload
    def dead(self: Queue[AsyncClient], offset: int = 0, count: int = 100
             ) -> Awaitable[tuple[int, list[JobInfo]]]: ...
    def dead(self, offset: int = 0, count: int = 100
             ) -> tuple[int, list[JobInfo]] | Awaitable[tuple[int, list[JobInfo]]]:
        """(total, oldest dead letters from ``offset``)."""
        call = ops.dead_call(self.keys, offset, count)
        if self.compress is not None:
            call = _mapped(call, lambda got: (got[0], [self._shown(i) for i in got[1]]))
        return self._client.run(call)

    @overload
    def requeue(self: Queue[Client], ids: Sequence[str] = (), *, limit: int = 100
                ) -> list[str]: ...
    @overload
    def requeue(self: Queue[AsyncClient], ids: Sequence[str] = (), *, limit: int = 100
                ) -> Awaitable[list[str]]: ...
    def requeue(self, ids: Sequence[str] = (), *, limit: int = 100
                ) -> list[str] | Awaitable[list[str]]:
        """Dead letters back to ready with fresh attempts: ``ids``, else the oldest ``limit``."""
        return self._client.run(ops.requeue_call(self.keys, ids, limit))

    @overload
    def purge(self: Queue[Client], ids: Sequence[str] = (), *, limit: int = 100) -> int: ...
    @overload
    def purge(self: Queue[AsyncClient], ids: Sequence[str] = (), *, limit: int = 100
              ) -> Awaitable[int]: ...
    def purge(self, ids: Sequence[str] = (), *, limit: int = 100) -> int | Awaitable[int]:
        """Delete dead letters: ``ids``, else the oldest ``limit``."""
        return self._client.run(ops.purge_call(self.keys, ids, limit))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
