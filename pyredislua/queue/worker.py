"""Worker loops for the priority queue: :class:`Worker` (threads), :class:`AsyncWorker` (asyncio).

Both run one sans-IO core (:class:`WorkerCore`): its :meth:`~WorkerCore.loop_plan` is the whole
loop, a plan that ``client.drive`` runs on either client. Each *cycle* is one round trip carrying
the acks and nacks of finished jobs, lease extensions that are due, an occasional reap, and a
dequeue for the free slots; every call in it is paired with the handler of its own reply. With
nothing to do the loop blocks on the queue's enqueue marker and on a private wake list
(``engine/waiting.py``), which a finishing handler pushes to: no polling. What differs between
threads and asyncio is only what the two thin drivers provide (:class:`_Host`): how a job is handed
to a slot, how the loop waits locally, and what "giving up on a handler" means — a thread cannot
be killed, so it is abandoned and replaced; a task is cancelled.

Handlers take a :class:`~pyredislua.queue.Job`. Returning acks it; raising nacks it for a retry
with backoff (``DeadLetter`` dead-letters it at once); whatever a handler raises is the job's
failure, never the worker's. Long jobs keep their lease: it is extended when half of it has run,
until the job's max run time (``max_run``), past which the attempt fails.

Faults: errors after which the same call can succeed (:func:`~pyredislua.errors.transient`:
connection loss, timeouts, out of memory, LOADING, READONLY, TRYAGAIN, BUSY, ...) are reported
(``error`` event, ``metrics.errors``) and ridden out with a growing pause (50 ms doubling to
2 s) during which leases are still extended; the first clean cycle reports ``recovered``. Any
other Redis error ends ``run()`` with it. Cycles are never re-sent behind the worker's back
(``once``): when a reply is lost, the worker knows which of its calls may have run, so its counts
stay exact (see :class:`WorkerMetrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue as stdqueue
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..engine.protocol import Call, Command, Do, NotSentError, NotSentTimeoutError, Plan
from ..engine.waiting import wait_for_signal
from ..errors import DurabilityError, StaleTokenError, transient
from ..kit import within
from ..observe import tracing
from . import ops
from .ops import Dequeued, Job, JobInfo, Settled

if TYPE_CHECKING:
    from ..client import AsyncClient, Client
    from .queue import Queue

EventCallback = Callable[[str, Job | None, dict[str, Any]], None]

# The longest one cycle (or one blocking wait, beyond its own timeout) waits for its reply. A
# paused or unreachable server costs the loop at most this before it reports and backs off.
CYCLE_TIMEOUT = 5.0
MAX_RUN_REASON = "max run time exceeded"
SHUTDOWN_REASON = "worker shutdown"
_MAX_REASON_BYTES = 1024  # queue.nack's limit on a reason


class DeadLetter(Exception):
    """Raise from a handler to dead-letter the job now instead of retrying it."""


@dataclass
class WorkerMetrics:
    """What a worker did, each job counted once. After ``run()`` returns,
    ``leased == acked + failed + lost + released + unsettled``.

    ``lost`` counts a lease only when the server answered STALE to its extend, ack or nack (it
    expired, was reaped, or is another consumer's) — not a call cut off by a connection error,
    and not the STALE answer to a re-send of this worker's own ack or nack whose first reply was
    lost (that one is counted as what it was: acked or failed)."""

    leased: int = 0  # jobs leased by this worker's dequeues
    acked: int = 0
    failed: int = 0  # attempts reported failed: the handler raised, or ran past max_run
    dead: int = 0  # of those, dead-lettered (DeadLetter, or attempts used up)
    timed_out: int = 0  # of those, past their max run time
    lost: int = 0  # leases the server declared stale before this worker settled them
    extended: int = 0
    released: int = 0  # given back on shutdown (attempt not counted)
    unsettled: int = 0  # still held when run() gave up (Redis unreachable): reaped later
    reaped: int = 0  # expired leases this worker's reaps returned to the queue
    abandoned: int = 0  # handlers given up on: threads left running, asyncio tasks cancelled
    errors: int = 0  # round trips that failed with a transient error (ridden out)


@dataclass(eq=False)
class _Run:
    """One leased job, from its dequeue until the server settled it (or it was lost)."""

    job: Job
    renew_at: float
    max_run: float | None  # seconds, counted from the handler's start; None: no limit
    started: float | None = None  # when its handler started (None: still buffered)
    settle: tuple[str, str] | None = None  # (ack | retry | dead | release, reason) once decided
    call: Call[Any] | None = None  # the settle call, kept to be re-sent as it was
    single: bool = False  # acked on its own: the batch it was in was refused as stale
    maybe: bool = False  # a settle call for it may have run while its reply was lost
    checking: bool = False  # a read of the job decides whether that call ran
    abandoned: bool = False  # the worker no longer waits for (or counts) its handler
    gone: bool = False  # accounted for: acked, failed, released, lost or unsettled
    span: Any = None  # its handler's CONSUMER span, while tracing (observe.tracing)


Handler = Callable[[Any, float], list[Job] | None]


def _may_have_run(error: BaseException) -> bool:
    """A transport error after the command may have reached the server."""
    return isinstance(error, (RedisConnectionError, RedisTimeoutError, OSError,
                              asyncio.TimeoutError)) and not isinstance(
        error, (NotSentError, NotSentTimeoutError, BusyLoadingError))


def _reason(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".encode()[:_MAX_REASON_BYTES]
    return text.decode(errors="ignore")


class _Host(Protocol):
    """What a driver provides the loop: the parts where threads and tasks differ."""

    def dispatch(self, jobs: list[Job]) -> None:
        """Hand leased jobs to the slots (a local buffer)."""

    def drain(self) -> list[Job]:
        """Take back the buffered jobs no slot has started (on shutdown)."""

    def abandon(self, job: Job) -> str | None:
        """Stop waiting for the handler running ``job``: how (``left running``, ``cancelled``),
        or None when no handler runs it. Its slot is freed."""

    def wait(self, seconds: float) -> Awaitable[None] | None:
        """Wait locally up to ``seconds``, returning early when a handler finished or stop()
        was called (a ``Do`` step: the asyncio driver returns an awaitable)."""

    def pass_turn(self) -> Awaitable[None] | None:
        """Let the slots start on what was just dispatched (asyncio: one turn of the loop)."""


class WorkerCore:
    """Bookkeeping and the loop of one worker, with no I/O: leases, slots, timers, events.

    Not thread-safe on its own: the sync driver calls it under one lock (``guard``).
    """

    def __init__(self, queue: Queue[Any], *, concurrency: int, prefetch: int | None,
                 lease_ms: int, reap_every: float, max_run: float | None,
                 grace: float, settle_timeout: float, on_event: EventCallback | None,
                 guard: AbstractContextManager[Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if prefetch is not None and prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        if max_run is not None:
            ops.ms(max_run, name="max_run", allow_zero=False)
        ops.ms(grace, name="grace")
        ops.ms(settle_timeout, name="settle_timeout")
        self.queue = queue
        self.keys = queue.keys
        self.engine = queue._engine
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.max_prefetch = min(16 * concurrency, 512)
        self.job_seconds: float | None = None  # moving average of handler run time
        self.rtt_seconds = 0.001  # moving average of a cycle's round trip
        self.lease_ms = lease_ms
        self.reap_every = reap_every
        self.max_run = max_run
        self.grace = grace
        self.settle_timeout = settle_timeout
        self.on_event = on_event
        self.guard = guard
        self.clock = clock
        self.wake_key = f"{queue.keys.base}:wake:{secrets.token_hex(6)}"
        self.runs: dict[str, _Run] = {}  # job id -> its lease
        self.settling: dict[str, _Run] = {}  # finished, not yet settled, in finishing order
        self.metrics = WorkerMetrics()
        self.stopping = False
        self.stop_at: float | None = None  # end of the grace period
        self.final_at: float | None = None  # past it, run() stops trying to settle
        self.grace_over = False
        self.blocked = False  # the loop waits on the signal lists: a finish must push a wake
        self.wait_hint_ms = -1
        self.polled_empty = False  # the last cycle asked for jobs and got none
        self.pause = 0.0  # the current backoff after transient errors
        self.pause_until = 0.0
        self.trouble_since: float | None = None
        self._errors: list[BaseException] = []  # transient errors of the current cycle
        self._acks_again: list[tuple[Call[Any], list[_Run]]] = []  # to re-send as they were
        self._dequeue_again: Call[Any] | None = None
        self._fatal: BaseException | None = None
        self._next_reap = clock()

    # -- events -------------------------------------------------------------------------------

    def emit(self, event: str, job: Job | None, **info: Any) -> None:
        if self.on_event is not None:
            with contextlib.suppress(Exception):  # the caller's callback: never the loop's end
                self.on_event(event, job, info)

    # -- capacity -----------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Jobs leased at once: running plus buffered. Without a fixed ``prefetch`` the buffer
        holds about one round trip's worth of work: deep for tiny jobs, none for long ones, so
        a worker never sits on jobs another could start."""
        if self.prefetch is not None:
            return self.concurrency + self.prefetch
        if self.job_seconds is None:
            return 2 * self.concurrency
        ahead = math.floor(self.concurrency * self.rtt_seconds / max(self.job_seconds, 1e-6))
        return self.concurrency + min(ahead, self.max_prefetch)

    @property
    def free(self) -> int:
        return 0 if self.stopping else self.capacity - len(self.runs)

    # -- called by the drivers' slots and stop() (under the guard) ------------------------------

    def request_stop(self) -> bool:
        """Stop leasing; the grace period starts now. Returns True when the loop waits on the
        signal lists and must be woken with a push."""
        if not self.stopping:
            self.stopping = True
            now = self.clock()
            self.stop_at = now + self.grace
            self.final_at = self.stop_at + self.settle_timeout
        wake, self.blocked = self.blocked, False
        return wake

    def start(self, job: Job) -> bool:
        """A slot is about to run ``job``: False when it must not (its lease was lost, or the
        worker is stopping: then the job is given back)."""
        run = self.runs.get(job.id)
        if run is None or run.job is not job or run.gone or run.settle is not None:
            return False
        if self.stopping:
            self._decide(run, "release", SHUTDOWN_REASON)
            return False
        run.started = self.clock()
        traced = tracing.active()
        if traced is not None:
            run.span = traced.process(self.queue.name, job.id, job.attempts, job.priority,
                                      job.trace_context)
        self.emit("started", job)
        return True

    def span(self, job: Job) -> Any:
        """The span of ``job``'s handler run (None: not tracing), made current around it."""
        run = self.runs.get(job.id)
        return None if run is None or run.job is not job else run.span

    @staticmethod
    def _end_span(run: _Run | None, error: BaseException | None) -> None:
        span = None if run is None else run.span
        traced = tracing.active()
        if span is not None and run is not None:
            run.span = None
            if traced is not None:
                traced.end(span, error)
            else:
                span.end()

    def finished(self, job: Job, error: BaseException | None, seconds: float = 0.0) -> bool:
        """Record a handler's end. Returns True when the loop must be woken with a push."""
        avg = self.job_seconds
        self.job_seconds = seconds if avg is None else 0.9 * avg + 0.1 * seconds
        run = self.runs.get(job.id)  # the very lease the slot was given, not a later one
        self._end_span(run if run is not None and run.job is job else None, error)
        if run is None or run.job is not job or run.abandoned or run.settle is not None:
            return False  # lost, timed out or given up on: a late result changes nothing
        if error is None:
            self._decide(run, "ack", "")
        else:
            self._decide(run, "dead" if isinstance(error, DeadLetter) else "retry",
                         _reason(error))
        wake, self.blocked = self.blocked, False
        return wake

    def fail(self, error: BaseException) -> None:
        """An error outside the loop (a wake push) that the loop must end with."""
        if self._fatal is None:
            self._fatal = error

    def give_back(self, jobs: Iterable[Job]) -> None:
        """Buffered jobs that never started: released at once (attempt not counted)."""
        for job in jobs:
            run = self.runs.get(job.id)
            if run is not None and run.job is job and not run.gone and run.settle is None:
                self._decide(run, "release", SHUTDOWN_REASON)

    def _decide(self, run: _Run, action: str, reason: str) -> None:
        run.settle = (action, reason)
        if action != "ack":
            run.call = ops.nack_call(self.keys, run.job.id, run.job.token, reason,
                                     action, -1)  # type: ignore[arg-type]
        self.settling[run.job.id] = run

    # -- timers -------------------------------------------------------------------------------

    @staticmethod
    def _renews(run: _Run) -> bool:
        """Whether its lease is kept alive: until its ack or nack lands, except a handler given
        up on before it finished, and a settle that may have run (extending would misread it)."""
        return not (run.maybe or run.checking) and (run.settle is not None or not run.abandoned)

    @staticmethod
    def _ends_at(run: _Run) -> float:
        """When a running handler is past its max run time (inf: no limit, or not running)."""
        if run.max_run is None or run.started is None or run.settle is not None \
                or run.abandoned:
            return math.inf
        return run.started + run.max_run

    def next_timer(self, paused: bool = False) -> float:
        """When a timer falls due: a lease to extend, a max run time, a reap (not while
        paused), the end of the grace period, the end of trying to settle."""
        t = math.inf if paused else self._next_reap
        renews, ends_at = self._renews, self._ends_at
        for run in self.runs.values():  # (hot: once per idle loop, over the held jobs)
            if run.renew_at < t and renews(run):
                t = run.renew_at
            if run.max_run is not None:
                t = min(t, ends_at(run))
        if self.stopping and not self.grace_over and self.stop_at is not None:
            t = min(t, self.stop_at)
        if self.final_at is not None:
            t = min(t, self.final_at)
        return t

    def overdue(self, now: float) -> list[_Run]:
        """Runs past their max run time: renewal stops and the attempt fails (nack, retry with
        backoff or dead letter when attempts are used up); the driver gives up on the handler."""
        late = []
        for run in self.runs.values():
            if run.max_run is not None and now >= self._ends_at(run):
                run.abandoned = True
                self._decide(run, "retry", MAX_RUN_REASON)
                self.metrics.timed_out += 1
                self.emit("timed_out", run.job, seconds=run.max_run)
                late.append(run)
        return late

    def shutdown(self) -> list[_Run]:
        """The grace period is over: running jobs are given back (attempt not counted) and
        their handlers given up on."""
        self.grace_over = True
        left = []
        for run in self.runs.values():
            if run.started is not None and run.settle is None and not run.abandoned:
                run.abandoned = True
                self._decide(run, "release", SHUTDOWN_REASON)
                left.append(run)
        return left

    def abandoned(self, run: _Run, how: str | None, why: str) -> None:
        self._end_span(run, TimeoutError(f"the handler was abandoned: {why}"))
        if how is not None:
            self.metrics.abandoned += 1
            self.emit("abandoned", run.job, how=how, reason=why)

    def give_up(self) -> None:
        """run() ends with Redis unreachable: what is still held returns when its lease ends."""
        for run in list(self.runs.values()):
            self._end_span(run, None)  # its handler's end is no longer waited for
            if not run.gone:
                run.gone = True
                self.metrics.unsettled += 1
                self.emit("unsettled", run.job, settle=run.settle[0] if run.settle else None)
        self.runs.clear()
        self.settling.clear()

    # -- one cycle: each call paired with the handler of its reply -----------------------------

    def _prepare(self, now: float) -> list[tuple[Call[Any], Handler]]:
        pairs: list[tuple[Call[Any], Handler]] = []
        paused = now < self.pause_until
        # Extensions first: a lease is kept alive until its ack or nack lands (one refused at
        # maxmemory is sent again), and an extension never follows its own job's ack.
        for run in self.runs.values():
            if run.renew_at <= now and self._renews(run):
                call = ops.extend_call(self.keys, run.job.id, run.job.token, self.lease_ms)
                pairs.append((call, self._extend_handler(run)))
        # A call that may have run is sent again as it was: with its request record, the
        # server replies as it did the first time.
        again, self._acks_again = self._acks_again, []
        for call, chunk in again:
            pairs.append((call, self._acks_handler(call, chunk)))
        resent = {id(r) for _, chunk in again for r in chunk}
        batch = [r for r in self.settling.values()
                 if r.settle is not None and r.settle[0] == "ack" and not r.single
                 and not r.checking and not (resent and id(r) in resent)]
        for start in range(0, len(batch), ops.MAX_BATCH):
            chunk = batch[start:start + ops.MAX_BATCH]
            [call] = ops.ack_calls(self.keys, [(r.job.id, r.job.token) for r in chunk])
            pairs.append((call, self._acks_handler(call, chunk)))
        settled_here = len(batch) + len(resent)
        for run in self.settling.values():
            if run.checking:
                pairs.append((ops.get_call(self.keys, run.job.id), self._check_handler(run)))
            elif run.settle is not None and (run.settle[0] != "ack" or run.single):
                if run.call is None:
                    [run.call] = ops.ack_calls(self.keys, [(run.job.id, run.job.token)])
                pairs.append((run.call, self._settle_handler(run)))
                settled_here += 1
        if not paused and now >= self._next_reap:
            self._next_reap = now + self.reap_every
            pairs.append((ops.reap_call(self.keys, 100), self._on_reap))
        # Slots of jobs settled in this very round trip count as free: the calls run in order,
        # so the dequeue sees them finished.
        self.polled_empty = False
        free = self.free + settled_here
        if not paused and self._dequeue_again is not None:
            pairs.append((self._dequeue_again, self._dequeue_handler(self._dequeue_again)))
        elif not paused and not self.stopping and free > 0:
            dequeue = ops.dequeue_call(self.keys, min(free, ops.MAX_BATCH), self.lease_ms)
            pairs.append((dequeue, self._dequeue_handler(dequeue)))
        return pairs

    def _apply(self, pairs: list[tuple[Call[Any], Handler]], replies: list[Any],
               now: float) -> list[Job]:
        jobs: list[Job] = []
        for (_call, handler), reply in zip(pairs, replies):
            if isinstance(reply, DurabilityError):
                reply = reply.result  # it ran; the shortfall is the client's to report
            got = handler(reply, now)
            if got:
                jobs.extend(got)
        return jobs

    def _error(self, reply: BaseException) -> None:
        """Sort an error reply: transient ones are ridden out, anything else ends the loop."""
        if transient(reply):
            self._errors.append(reply)
        elif self._fatal is None:
            self._fatal = reply

    def _forget(self, run: _Run) -> None:
        run.gone = True
        if self.runs.get(run.job.id) is run:
            del self.runs[run.job.id]
        if self.settling.get(run.job.id) is run:
            del self.settling[run.job.id]

    def _acked(self, run: _Run, now: float) -> None:
        if run.gone:
            return
        self._forget(run)
        self.metrics.acked += 1
        self.emit("acked", run.job, seconds=now - (run.started or now))

    def _settled(self, run: _Run, outcome: str, at_ms: int | None) -> None:
        if run.gone or run.settle is None:
            return
        self._forget(run)
        action, reason = run.settle
        if action == "release":
            self.metrics.released += 1
            self.emit("released", run.job)
            return
        self.metrics.failed += 1
        self.metrics.dead += outcome == "dead"
        self.emit("failed", run.job, error=reason, outcome=outcome, at_ms=at_ms)

    def _lost(self, run: _Run, error: object) -> None:
        if run.gone:
            return
        run.abandoned = True
        self._forget(run)
        self.metrics.lost += 1
        self.emit("lease_lost", run.job, error=str(error))

    def _stale(self, run: _Run, reply: StaleTokenError) -> None:
        """STALE for a settle call: the lease is lost, unless this is the echo of the worker's
        own earlier call whose reply was lost — a read of the job tells which."""
        if run.maybe:
            run.checking = True
        else:
            self._lost(run, reply)

    def _transport(self, runs: Iterable[_Run], reply: BaseException) -> None:
        self._error(reply)
        if _may_have_run(reply):
            for run in runs:
                run.maybe = True

    def _acks_handler(self, call: Call[Any], chunk: list[_Run]) -> Handler:
        def handle(reply: Any, now: float) -> None:
            if isinstance(reply, StaleTokenError):
                for run in chunk:  # all or nothing: ack them one by one to see which
                    run.single = True
            elif isinstance(reply, BaseException):
                self._transport(chunk, reply)
                if any(run.maybe for run in chunk):
                    self._acks_again.append((call, chunk))
            else:
                for run in chunk:
                    self._acked(run, now)
        return handle

    def _settle_handler(self, run: _Run) -> Handler:
        def handle(reply: Any, now: float) -> None:
            if isinstance(reply, StaleTokenError):
                self._stale(run, reply)
            elif isinstance(reply, BaseException):
                self._transport([run], reply)
            elif run.settle is not None and run.settle[0] == "ack":
                self._acked(run, now)
            else:
                settled: Settled = reply
                self._settled(run, settled.outcome, settled.at_ms)
        return handle

    def _check_handler(self, run: _Run) -> Handler:
        def handle(reply: Any, now: float) -> None:
            if isinstance(reply, BaseException):
                self._error(reply)
                return
            info: JobInfo | None = reply
            if run.settle is None or run.gone:
                return
            action, reason = run.settle
            if action == "ack":
                if info is None:  # the first ack ran: the job is gone
                    self._acked(run, now)
                else:
                    self._lost(run, "the lease was lost before the ack")
            elif info is not None and info.reason == reason:  # the first nack ran
                self._settled(run, info.state if info.state == "dead" else "retry", None)
            else:
                self._lost(run, f"the lease was lost before the {action}")
        return handle

    def _extend_handler(self, run: _Run) -> Handler:
        def handle(reply: Any, now: float) -> None:
            if run.gone:
                return
            if isinstance(reply, StaleTokenError):
                self._lost(run, reply)  # its handler's result will change nothing
            elif isinstance(reply, BaseException):
                self._error(reply)
                run.renew_at = now + min(1.0, self.lease_ms / 4000)  # try again soon
            else:
                run.renew_at = now + self.lease_ms / 2000
                self.metrics.extended += 1
                self.emit("lease_extended", run.job, deadline_ms=int(reply))
        return handle

    def _on_reap(self, reply: Any, now: float) -> None:
        if isinstance(reply, BaseException):
            self._error(reply)
            self._next_reap = now  # again with the next cycle
            return
        self.metrics.reaped += len(reply)
        for s in reply:
            self.emit("reaped", None, id=s.id, outcome=s.outcome, attempts=s.attempts)

    def _dequeue_handler(self, call: Call[Any]) -> Handler:
        def handle(reply: Any, now: float) -> list[Job]:
            if isinstance(reply, BaseException):
                self._error(reply)
                if _may_have_run(reply) or call is self._dequeue_again:
                    # sent again as it was: its request record returns the jobs it leased
                    # (a server without one leases others; those expire and are reaped)
                    self._dequeue_again = call
                return []
            self._dequeue_again = None
            return self._leased(reply, now)
        return handle

    def _leased(self, reply: Any, now: float) -> list[Job]:
        got: Dequeued = reply
        self.wait_hint_ms = got.wait_ms
        self.polled_empty = not got.jobs
        for job in got.jobs:
            old = self.runs.get(job.id)
            if old is not None:  # leased again: the server gave the old lease up
                self._lost(old, "the job was leased again")
            limit = job.max_run_ms / 1000 if job.max_run_ms else self.max_run
            self.runs[job.id] = _Run(job, now + self.lease_ms / 2000, limit)
            self.metrics.leased += 1
            self.emit("leased", job)
        return got.jobs

    def _take_errors(self) -> list[BaseException]:
        errors, self._errors = self._errors, []
        return errors

    # -- the loop -----------------------------------------------------------------------------

    def cycle_plan(self) -> Plan[list[Job]]:
        """One round trip: flush results, extend leases, maybe reap, lease jobs for free slots.
        Transient errors are kept for the loop to back off; any other is raised once every
        reply of the round trip has been applied."""
        with self.guard:
            now = self.clock()
            pairs = self._prepare(now)
        if not pairs:
            return []
        deadline = now + CYCLE_TIMEOUT
        if self.final_at is not None:
            deadline = min(deadline, max(self.final_at, now + 0.05))
        calls = [call for call, _ in pairs]
        try:
            replies = yield from self.engine.run(calls, raise_on_error=False, once=True,
                                                 deadline=deadline)
        except Exception as error:
            if not transient(error):
                raise
            replies = [error] * len(calls)  # cut off: each call may or may not have run
        with self.guard:
            done = self.clock()
            self.rtt_seconds = 0.9 * self.rtt_seconds + 0.1 * (done - now)
            jobs = self._apply(pairs, replies, done)
            fatal = self._fatal
        if fatal is not None:
            self._fatal = None
            raise fatal
        return jobs

    def _trouble(self, errors: list[BaseException], now: float) -> None:
        self.metrics.errors += 1
        self.pause = min(max(self.pause * 2, 0.05), 2.0)
        self.pause_until = now + self.pause
        if self.trouble_since is None:
            self.trouble_since = now
        self.emit("error", None, error=f"{type(errors[0]).__name__}: {errors[0]}",
                  errors=len(errors), pause=self.pause)

    def _clean(self, now: float) -> None:
        if self.trouble_since is not None:
            self.emit("recovered", None, after=now - self.trouble_since)
        self.trouble_since = None
        self.pause = self.pause_until = 0.0

    def loop_plan(self, host: _Host, max_block: float) -> Plan[WorkerMetrics]:
        """The worker's loop until stop(): cycles, waits, shutdown. See the module docstring."""
        try:
            while True:
                with self.guard:
                    if self._step(host):
                        break
                    fatal, self._fatal = self._fatal, None
                if fatal is not None:
                    raise fatal
                jobs = yield from self.cycle_plan()
                with self.guard:
                    now = self.clock()
                    errors = self._take_errors()
                    if errors:
                        self._trouble(errors, now)
                    elif now >= self.pause_until:
                        self._clean(now)
                    if jobs:
                        host.dispatch(jobs)
                if jobs:
                    yield Do(host.pass_turn)
                    continue
                yield from self._idle(host, max_block)
        except Exception:
            yield from self._cleanup()
            raise
        yield from self._cleanup()
        return self.metrics

    def _step(self, host: _Host) -> bool:
        """Shutdown and max run time, before a cycle; True when the loop is over."""
        now = self.clock()
        if self.stopping:
            self.give_back(host.drain())
            if not self.grace_over and self.stop_at is not None and now >= self.stop_at:
                for run in self.shutdown():
                    self.abandoned(run, host.abandon(run.job), SHUTDOWN_REASON)
            if not self.runs and self._dequeue_again is None:  # (its jobs are given back)
                return True
            if self.final_at is not None and now >= self.final_at:
                self.give_up()
                return True
        for run in self.overdue(now):
            self.abandoned(run, host.abandon(run.job), MAX_RUN_REASON)
        return False

    def _cleanup(self) -> Plan[None]:
        if self.metrics.unsettled:
            return  # Redis is out of reach: the wake list expires on its own
        try:  # best effort, as above
            yield [Command(("DEL", self.wake_key), deadline=self.clock() + 0.5)]
        except Exception:
            return

    def _idle(self, host: _Host, max_block: float) -> Plan[None]:
        """Between cycles: go on at once, wait locally, or block on the signal lists."""
        while True:
            with self.guard:
                now = self.clock()
                if now >= self.pause_until or self.stopping:
                    break
                # backing off: only a timer (a lease to extend, a max run time) or stop()
                # cuts the pause short; finished jobs wait for the next cycle
                until = min(self.next_timer(paused=True), self.pause_until)
                if now >= until:
                    return
            yield Do(host.wait, (min(until - now, max_block),))
        with self.guard:
            now = self.clock()
            due = self.next_timer()
            if self.settling or now >= due:
                return
            if self.free > 0 and not self.polled_empty:
                return
            wait = due - now
            if self.free == 0:  # all slots busy, or stopping: only a local change matters
                block = False
            else:
                block = True
                if self.wait_hint_ms >= 0:
                    wait = min(wait, self.wait_hint_ms / 1000)
                self.blocked = True
            wait = min(wait, max_block)
        if not block:
            yield Do(host.wait, (wait,))
            return
        try:
            yield from wait_for_signal((self.keys.marker, self.wake_key), wait,
                                       max_block=max_block, deadline=now + wait + CYCLE_TIMEOUT)
        except Exception as error:
            if not transient(error):
                raise
            with self.guard:
                self._trouble([error], self.clock())
        finally:
            with self.guard:
                self.blocked = False

    def wake_plan(self) -> Plan[None]:
        yield [Command(("RPUSH", self.wake_key, "1"), deadline=self.clock() + 1.0),
               Command(("PEXPIRE", self.wake_key, 60000), deadline=self.clock() + 1.0)]


def _reap_every(lease_ms: int, reap_every: float | None) -> float:
    return reap_every if reap_every is not None else max(0.05, min(5.0, lease_ms / 2000))


def _core(queue: Queue[Any], concurrency: int, prefetch: int | None, lease: float | None,
          reap_every: float | None, max_run: float | None, grace: float,
          settle_timeout: float, on_event: EventCallback | None,
          guard: AbstractContextManager[Any]) -> WorkerCore:
    lease_ms = queue.lease_ms if lease is None else ops.ms(lease, name="lease",
                                                           allow_zero=False)
    return WorkerCore(queue, concurrency=concurrency, prefetch=prefetch, lease_ms=lease_ms,
                      reap_every=_reap_every(lease_ms, reap_every), max_run=max_run,
                      grace=grace, settle_timeout=settle_timeout, on_event=on_event,
                      guard=guard)


def _wake_failed(core: WorkerCore, error: BaseException) -> None:
    """A wake push that failed: harmless when transient (the loop's wait times out within
    ``max_block`` and the next cycle carries the result); anything else ends the loop."""
    if not transient(error):
        core.fail(error)


class Worker:
    """Run ``handler(job)`` on ``concurrency`` threads.

    ``Worker(queue, handler, concurrency=8).run()`` blocks until ``stop()`` (from another thread
    or a signal handler). Up to ``prefetch`` jobs are leased ahead into a local buffer, so one
    round trip fetches and acks several; their leases are extended like running ones, and a
    shutdown gives them back at once. By default the buffer adapts to about one round trip's
    worth of work (deep for tiny jobs, empty for long ones); ``prefetch=0`` turns it off.

    ``max_run`` (seconds): the longest a handler may run one job (a job's own ``max_run``, set
    at enqueue, takes precedence). Past it the lease is no longer extended, the attempt fails
    (nack: retried with backoff, or dead-lettered when attempts are used up), and the handler's
    thread — which Python cannot stop — is abandoned: a new thread takes its slot, and whatever
    the old one returns later is ignored (``abandoned`` event and metric).

    ``stop()`` stops leasing, gives buffered jobs back at once, waits up to ``grace`` seconds for
    running handlers, then gives their jobs back (attempt not counted) and abandons them.
    ``run()`` returns once every job it held is settled, or ``settle_timeout`` seconds after
    the grace period when Redis cannot be reached (``unsettled``: those return when their
    lease ends). ``on_event(event, job, info)`` is called for leased, started, acked, failed,
    lease_extended, lease_lost, released, reaped, timed_out, abandoned, unsettled, error and
    recovered; counters in :attr:`metrics`.
    """

    def __init__(self, queue: Queue[Client], handler: Callable[[Job], Any], *,
                 concurrency: int = 1, prefetch: int | None = None, lease: float | None = None,
                 grace: float = 30.0, reap_every: float | None = None, max_run: float | None = None,
                 settle_timeout: float = 5.0, on_event: EventCallback | None = None) -> None:
        self.queue = queue
        self.handler = handler
        self.grace = grace
        self._cond = threading.Condition(threading.RLock())
        self.core = _core(queue, concurrency, prefetch, lease, reap_every, max_run, grace,
                          settle_timeout, on_event, self._cond)
        self._buffer: stdqueue.SimpleQueue[Job | None] = stdqueue.SimpleQueue()
        self._changed = False
        self._slots: set[threading.Thread] = set()
        self._current: dict[str, threading.Thread] = {}  # job id -> the slot running it
        self._retired: set[threading.Thread] = set()  # abandoned with their handler

    @property
    def metrics(self) -> WorkerMetrics:
        return self.core.metrics

    @property
    def abandoned_threads(self) -> list[threading.Thread]:
        """Threads still running a handler the worker gave up on (max run time, shutdown)."""
        return [t for t in self._retired if t.is_alive()]

    def stop(self) -> None:
        """Ask the loop to stop (safe from any thread or a signal handler)."""
        with self._cond:
            wake = self.core.request_stop()
            self._changed = True
            self._cond.notify_all()
        if wake:
            self._wake()

    def _wake(self) -> None:
        try:
            self.queue.client.drive(self.core.wake_plan())
        except Exception as error:
            with self._cond:
                _wake_failed(self.core, error)

    # -- the host ---------------------------------------------------------------------------

    def dispatch(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._buffer.put(job)

    def drain(self) -> list[Job]:
        jobs: list[Job] = []
        while True:
            try:
                job = self._buffer.get_nowait()
            except stdqueue.Empty:
                return jobs
            if job is not None:
                jobs.append(job)

    def abandon(self, job: Job) -> str | None:
        thread = self._current.pop(job.id, None)
        if thread is None:
            return None
        self._retired.add(thread)
        self._slots.discard(thread)
        if not self.core.stopping:
            self._start_slot()  # the slot goes on with the next job
        return "left running"

    def wait(self, seconds: float) -> None:
        with self._cond:
            if not self._changed and seconds > 0:
                self._cond.wait(seconds)
            self._changed = False

    def pass_turn(self) -> None:
        return None

    # -- slots ------------------------------------------------------------------------------

    def _start_slot(self) -> None:
        thread = threading.Thread(target=self._slot, daemon=True,
                                  name=f"pyredislua-worker-{len(self._slots)}")
        self._slots.add(thread)
        thread.start()

    def _slot(self) -> None:
        me = threading.current_thread()
        while True:
            job = self._buffer.get()
            if job is None:
                return
            with self._cond:
                run = self.core.start(job)
                span = self.core.span(job)
                if run:
                    self._current[job.id] = me
                if not run or job.max_run_ms or self.core.max_run is not None:
                    self._changed = True  # a given-back job to settle, or a max run timer
                    self._cond.notify_all()
            if not run:
                continue
            error: BaseException | None = None
            began = time.monotonic()
            try:
                with tracing.current(span):
                    self.handler(self.queue.open(job))
            except BaseException as e:  # the job's failure, reported to the queue
                error = e
            with self._cond:
                if self._current.get(job.id) is me:
                    del self._current[job.id]
                wake = self.core.finished(job, error, time.monotonic() - began)
                self._changed = True
                self._cond.notify_all()
                retired = me in self._retired
            if wake:
                self._wake()
            if retired:
                return  # another thread took this slot when the handler was abandoned

    def run(self) -> WorkerMetrics:
        client = self.queue.client
        with self._cond:
            for _ in range(self.core.concurrency):
                self._start_slot()
        try:
            return client.drive(self.core.loop_plan(self, client.max_block))
        finally:
            with self._cond:
                slots = list(self._slots)
            for _ in slots:
                self._buffer.put(None)
            until = time.monotonic() + 1.0  # idle slots end at once; busy ones are reported
            for thread in slots:
                thread.join(max(0.0, until - time.monotonic()))


class AsyncWorker:
    """Run ``await handler(job)`` in ``concurrency`` tasks; see :class:`Worker`.

    ``await worker.run()``; ``worker.stop()`` (sync, callable from a signal handler or another
    thread) ends it. A handler past its max run time, or still running after the grace period,
    is cancelled (``abandoned`` with how ``cancelled``) and a new task takes its slot.
    """

    def __init__(self, queue: Queue[AsyncClient],
                 handler: Callable[[Job], Awaitable[Any]], *,
                 concurrency: int = 1, prefetch: int | None = None, lease: float | None = None,
                 grace: float = 30.0, reap_every: float | None = None,
                 max_run: float | None = None, settle_timeout: float = 5.0,
                 on_event: EventCallback | None = None) -> None:
        self.queue = queue
        self.handler = handler
        self.grace = grace
        self.core = _core(queue, concurrency, prefetch, lease, reap_every, max_run, grace,
                          settle_timeout, on_event, contextlib.nullcontext())
        self._buffer: asyncio.Queue[Job] | None = None
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: set[asyncio.Task[None]] = set()
        self._current: dict[str, asyncio.Task[None]] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._closing = False
        self._wakes: set[asyncio.Task[None]] = set()
        self.left_running: list[asyncio.Task[None]] = []  # ignored cancellation at the end

    @property
    def metrics(self) -> WorkerMetrics:
        return self.core.metrics

    def stop(self) -> None:
        """Ask the loop to stop (safe from a signal handler or another thread)."""
        loop = self._loop
        if loop is None:
            self.core.request_stop()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._stop()
        else:
            loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        wake = self.core.request_stop()
        if self._changed is not None:
            self._changed.set()
        if wake:
            self._spawn_wake()

    def _spawn_wake(self) -> None:
        task = asyncio.ensure_future(self._wake())
        self._wakes.add(task)
        task.add_done_callback(self._wakes.discard)

    async def _wake(self) -> None:
        try:
            await self.queue.client.drive(self.core.wake_plan())
        except Exception as error:
            _wake_failed(self.core, error)
            assert self._changed is not None
            self._changed.set()

    # -- the host ---------------------------------------------------------------------------

    def dispatch(self, jobs: list[Job]) -> None:
        assert self._buffer is not None
        for job in jobs:
            self._buffer.put_nowait(job)

    def drain(self) -> list[Job]:
        assert self._buffer is not None
        jobs = []
        while not self._buffer.empty():
            jobs.append(self._buffer.get_nowait())
        return jobs

    def abandon(self, job: Job) -> str | None:
        task = self._current.pop(job.id, None)
        if task is None:
            return None
        self._retired.add(task)
        self._slots.discard(task)
        task.cancel()
        if not self.core.stopping:
            self._start_slot()
        return "cancelled"

    async def wait(self, seconds: float) -> None:
        assert self._changed is not None
        if not self._changed.is_set() and seconds > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await within(self._changed.wait(), seconds)
        self._changed.clear()

    async def pass_turn(self) -> None:
        await asyncio.sleep(0)

    # -- slots ------------------------------------------------------------------------------

    def _start_slot(self) -> None:
        task = asyncio.ensure_future(self._slot())
        self._slots.add(task)

    async def _slot(self) -> None:
        assert self._buffer is not None and self._changed is not None
        me = asyncio.current_task()
        assert me is not None
        while True:
            job = await self._buffer.get()
            if not self.core.start(job):
                self._changed.set()
                continue
            if job.max_run_ms or self.core.max_run is not None:
                self._changed.set()  # a max run timer to wait for
            self._current[job.id] = me
            error: BaseException | None = None
            began = time.monotonic()
            try:
                with tracing.current(self.core.span(job)):
                    await self.handler(self.queue.open(job))
            except asyncio.CancelledError:
                if me in self._retired or self._closing:
                    raise  # given up on: its job was settled without it
                error = asyncio.CancelledError("the handler was cancelled")
            except Exception as e:  # the job's failure, reported to the queue
                error = e
            if self._current.get(job.id) is me:
                del self._current[job.id]
            if self.core.finished(job, error, time.monotonic() - began):
                self._spawn_wake()
            self._changed.set()
            if me in self._retired:
                return

    async def run(self) -> WorkerMetrics:
        client = self.queue.client
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._buffer = asyncio.Queue()
        self._closing = False
        if self.core.stopping:
            self._changed.set()
        for _ in range(self.core.concurrency):
            self._start_slot()
        try:
            return await client.drive(self.core.loop_plan(self, client.max_block))
        finally:
            self._closing = True
            tasks = [*self._slots, *self._wakes]
            for task in tasks:
                task.cancel()
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=1.0)
                self.left_running = [t for t in pending if t in self._slots]
