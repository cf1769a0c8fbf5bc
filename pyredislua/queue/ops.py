"""Call specs of the queue's Lua operations (``lua/queue/*.lua``): pure descriptions, no I/O.

Durations are seconds (floats) in the Python API and whole milliseconds on the wire.

Re-sending: the calls that would do something twice when re-sent (enqueue, enqueue_batch,
dequeue, ack, nack, requeue, purge) carry a request record key, ``prl:q:{name}:req:<id>``, with a
new random id per call by default (``request_id=None``): redis-py re-sends the same command after
a lost reply, the script finds the record of the first run and replies the same, changing
nothing. ``request_id=False`` leaves the record out (the ten-key call of the FCALL contract).

Metrics: keys built with ``QueueKeys(name, metrics=True)`` make enqueue, enqueue_batch, dequeue,
ack, nack and reap pass the metrics key last (after a request record, always present then); read
them with :func:`metrics_call` (or :func:`pyredislua.observe.series.series_call`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..engine.keysets import RecordedKeySet, RequestId
from ..engine.protocol import Call
from ..kit import as_payload, as_text
from ..kit import ms as kit_ms
from ..observe.series import MinuteSeries, parse_series

State = Literal["ready", "delayed", "active", "dead"]
Action = Literal["retry", "dead", "release"]
STATES: tuple[State, ...] = ("ready", "delayed", "active", "dead")

MAX_BATCH = 1000  # jobs per Lua call; bigger batches are split and pipelined
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1
REQUEST_TTL = 120.0  # seconds a request record lives (QUEUE_REQUEST_TTL_MS in the Lua)


def ms(seconds: float, *, name: str = "duration", allow_zero: bool = True) -> int:
    """:func:`pyredislua.kit.ms` with 0 allowed unless said otherwise (most queue durations may
    be 0: no delay, no backoff)."""
    return kit_ms(seconds, name, allow_zero=allow_zero)


class QueueKeys(RecordedKeySet, keyset="queue"):
    """The ten keys of one queue, all under one hash tag (one cluster slot), from
    ``lua/keysets/queue.keys``; the per-call request record is :meth:`request`."""

    ready: str
    delayed: str
    active: str
    dead: str
    jobs: str
    payloads: str
    idem: str
    prio: str
    stats: str
    marker: str


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """One job to enqueue. ``delay`` and ``backoff`` in seconds; ``key``: idempotency key;
    ``max_run``: longest a worker may run it per attempt, in seconds (None: the worker's limit)."""

    payload: bytes | str
    priority: int = 0
    delay: float = 0.0
    max_attempts: int = 3
    backoff: float = 1.0
    key: str | None = None
    max_run: float | None = None
    trace_context: str = ""  # W3C traceparent [+ " " + tracestate] (set by tracing)

    def wire(self) -> tuple[bytes, int, int, int, int, str]:
        return (as_payload(self.payload), int(self.priority), ms(self.delay, name="delay"),
                int(self.max_attempts), ms(self.backoff, name="backoff"), self.key or "")

    @property
    def max_run_ms(self) -> int:
        """The job's max run time on the wire (0: none of its own)."""
        if self.max_run is None:
            return 0
        return ms(self.max_run, name="max_run", allow_zero=False)


@dataclass(frozen=True)
class Enqueued:
    id: str
    created: bool  # False: the idempotency key named an unfinished job, whose id this is


@dataclass(frozen=True)
class Job:
    """A leased job. Keep ``id`` and ``token`` to ack, nack or extend it."""

    id: str
    token: str
    payload: bytes
    priority: int
    attempts: int  # deliveries so far, this one included
    max_attempts: int
    deadline_ms: int  # lease deadline, server time
    enqueued_at_ms: int
    leased_at_ms: int  # server time of the dequeue
    max_run_ms: int = 0  # the job's own max run time per attempt (0: none set at enqueue)
    trace_context: str = ""  # the producer's W3C trace context, when it was traced

    @property
    def text(self) -> str:
        return self.payload.decode()


@dataclass(frozen=True)
class Dequeued:
    now_ms: int
    wait_ms: int  # 0 when jobs came back; else ms until the next delayed job is due, -1 none
    jobs: list[Job]


@dataclass(frozen=True)
class Settled:
    """Where a nacked or reaped job went: ``ready``, ``delayed`` (until ``at_ms``) or ``dead``."""

    id: str
    outcome: str
    at_ms: int
    attempts: int


@dataclass(frozen=True)
class JobInfo:
    id: str
    state: str
    score: int  # priority (ready), due time (delayed), deadline (active), death time (dead)
    priority: int
    attempts: int
    max_attempts: int
    reason: str | None
    payload: bytes
    backoff_ms: int | None = None
    key: str | None = None
    enqueued_at_ms: int | None = None


@dataclass(frozen=True)
class PriorityCount:
    priority: int
    unfinished: int
    ready: int


@dataclass(frozen=True)
class QueueStats:
    ready: int
    delayed: int
    active: int
    expired_leases: int  # active jobs whose lease ran out, waiting for a reap
    dead: int
    counters: dict[str, int]
    priorities: list[PriorityCount] | None  # None: too many distinct priorities to list

    @property
    def unfinished(self) -> int:
        return self.ready + self.delayed + self.active

    def as_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready, "delayed": self.delayed, "active": self.active,
            "expired_leases": self.expired_leases, "dead": self.dead, "counters": self.counters,
            "priorities": None if self.priorities is None else [
                {"priority": p.priority, "unfinished": p.unfinished, "ready": p.ready}
                for p in self.priorities],
        }


# -- parsers ------------------------------------------------------------------------------------


def _opt_text(value: Any) -> str | None:
    return None if value is None else as_text(value)


def _parse_enqueue(reply: Any) -> Enqueued:
    return Enqueued(as_text(reply[0]), int(reply[1]) == 1)


def _parse_batch(reply: Any) -> list[Enqueued]:
    return [Enqueued(as_text(reply[i]), int(reply[i + 1]) == 1) for i in range(0, len(reply), 2)]


def _parse_dequeue(reply: Any) -> Dequeued:
    now = int(reply[0])
    jobs = [Job(as_text(j[0]), as_text(j[1]), as_payload(j[6]), int(j[5]), int(j[3]), int(j[4]),
                int(j[2]), int(j[7]), now, int(j[8]) if len(j) > 8 else 0,
                as_text(j[9]) if len(j) > 9 else "") for j in reply[2]]
    return Dequeued(now, int(reply[1]), jobs)


def _parse_settled(job_id: str) -> Any:
    def parse(reply: Any) -> Settled:
        return Settled(job_id, as_text(reply[0]), int(reply[1]), int(reply[2]))
    return parse


def _parse_reap(reply: Any) -> list[Settled]:
    return [Settled(as_text(r[0]), as_text(r[1]), int(r[2]), int(r[3])) for r in reply[1]]


def _row(r: Any) -> JobInfo:
    extra: dict[str, Any] = {}
    if len(r) > 8:
        extra = {"backoff_ms": int(r[8]), "key": _opt_text(r[9]), "enqueued_at_ms": int(r[10])}
    return JobInfo(as_text(r[0]), as_text(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]),
                   _opt_text(r[6]), as_payload(r[7]), **extra)


def _parse_stats(reply: Any) -> QueueStats:
    flat = reply[5]
    counters = {as_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
    per = None if reply[6] is None else sorted(
        (PriorityCount(int(p[0]), int(p[1]), int(p[2])) for p in reply[6]),
        key=lambda p: p.priority)
    return QueueStats(int(reply[0]), int(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]),
                      counters, per)


def _parse_dead(reply: Any) -> tuple[int, list[JobInfo]]:
    return int(reply[0]), [_row(r) for r in reply[1]]


# -- call specs ---------------------------------------------------------------------------------


def _nth(request_id: RequestId, index: int) -> RequestId:
    """The request id of the ``index``-th call of a split call."""
    if not request_id or index == 0:
        return request_id
    return f"{request_id}.{index}"


def enqueue_call(keys: QueueKeys, job: JobSpec, request_id: RequestId = None
                 ) -> Call[Enqueued]:
    args: tuple[str | int | bytes, ...] = job.wire()
    if job.trace_context:
        args = (*args, job.max_run_ms, job.trace_context)
    elif job.max_run_ms:
        args = (*args, job.max_run_ms)
    return Call("queue.enqueue", keys.with_request(request_id), args, _parse_enqueue)


def enqueue_batch_calls(keys: QueueKeys, jobs: Sequence[JobSpec], request_id: RequestId = None
                        ) -> list[Call[list[Enqueued]]]:
    """One ``queue.enqueue_jobs`` call per 1000 jobs (all of a call checked before the first is
    added), each with its own request record (``request_id``: None for new random ones, False
    for none). Fields per job, said in the call: 6; 7 when a job of the chunk has a max run
    time; 8 when one carries a trace context."""
    calls = []
    for index, start in enumerate(range(0, len(jobs), MAX_BATCH)):
        chunk = jobs[start:start + MAX_BATCH]
        width = (8 if any(job.trace_context for job in chunk)
                 else 7 if any(job.max_run_ms for job in chunk) else 6)
        args: list[str | int | bytes] = [width]
        for job in chunk:
            args.extend(job.wire())
            if width >= 7:
                args.append(job.max_run_ms)
            if width == 8:
                args.append(job.trace_context)
        calls.append(Call("queue.enqueue_jobs", keys.with_request(_nth(request_id, index)),
                          tuple(args), _parse_batch))
    return calls


def dequeue_call(keys: QueueKeys, count: int, lease_ms: int, request_id: RequestId = None
                 ) -> Call[Dequeued]:
    return Call("queue.dequeue", keys.with_request(request_id), (count, lease_ms),
                _parse_dequeue)


def ack_calls(keys: QueueKeys, jobs: Iterable[tuple[str, str]], request_id: RequestId = None
              ) -> list[Call[int]]:
    """One call per 1000 jobs, each with its own request record (see enqueue_batch_calls)."""
    pairs = list(jobs)
    calls = []
    for start in range(0, len(pairs), MAX_BATCH):
        args: list[str | int | bytes] = []
        for job_id, token in pairs[start:start + MAX_BATCH]:
            args.extend((job_id, token))
        calls.append(Call("queue.ack", keys.with_request(_nth(request_id, start // MAX_BATCH)),
                          tuple(args), int))
    return calls


def nack_call(keys: QueueKeys, job_id: str, token: str, reason: str = "",
              action: Action = "retry", delay_ms: int = -1, request_id: RequestId = None
              ) -> Call[Settled]:
    return Call("queue.nack", keys.with_request(request_id),
                (job_id, token, reason, action, delay_ms), _parse_settled(job_id))


def extend_call(keys: QueueKeys, job_id: str, token: str, lease_ms: int) -> Call[int]:
    return Call("queue.extend", keys.all, (job_id, token, lease_ms), int)


def reap_call(keys: QueueKeys, limit: int = 100) -> Call[list[Settled]]:
    return Call("queue.reap", keys.with_metrics(), (limit,), _parse_reap)


def stats_call(keys: QueueKeys) -> Call[QueueStats]:
    return Call("queue.stats", keys.all, (), _parse_stats)


def metrics_call(keys: QueueKeys) -> Call[MinuteSeries]:
    """The queue's recorded metrics (``queue.metrics``, no writes; see
    :mod:`pyredislua.observe.series`)."""
    return Call("queue.metrics", (keys.metrics_key,), (), parse_series("queue", keys.name))


def peek_call(keys: QueueKeys, state: State = "ready", count: int = 10) -> Call[list[JobInfo]]:
    return Call("queue.peek", keys.all, (state, count), lambda r: [_row(x) for x in r])


def get_call(keys: QueueKeys, job_id: str) -> Call[JobInfo | None]:
    return Call("queue.get", keys.all, (job_id,), lambda r: None if r is None else _row(r))


def get_by_key_call(keys: QueueKeys, idem_key: str) -> Call[JobInfo | None]:
    """The unfinished job holding idempotency key ``idem_key`` (None: no unfinished job does)."""
    return Call("queue.get_by_key", keys.all, (idem_key,),
                lambda r: None if r is None else _row(r))


def dead_call(keys: QueueKeys, offset: int = 0, count: int = 100
              ) -> Call[tuple[int, list[JobInfo]]]:
    return Call("queue.dead", keys.all, (offset, count), _parse_dead)


def requeue_call(keys: QueueKeys, ids: Sequence[str] = (), limit: int = 100,
                 request_id: RequestId = None) -> Call[list[str]]:
    return Call("queue.requeue", keys.with_request(request_id, metrics=False), (limit, *ids),
                lambda r: [as_text(x) for x in r])


def purge_call(keys: QueueKeys, ids: Sequence[str] = (), limit: int = 100,
               request_id: RequestId = None) -> Call[int]:
    return Call("queue.purge", keys.with_request(request_id, metrics=False), (limit, *ids), int)
