"""Worker loops for the priority queue: :class:`Worker` (threads), :class:`AsyncWorker` (asyncio).

Both drive one sans-IO core (:class:`WorkerCore`): each *cycle* is one round trip carrying the
acks and nacks of finished jobs, lease extensions that are due, an occasional reap, and a dequeue
for the free slots. With nothing to do the loop blocks on the queue's enqueue marker and on a
private wake list (BLPOP on both), which a finishing handler pushes to: no polling.

Handlers take a :class:`~pyredislua.queue.Job`. Returning acks it; raising nacks it for a retry
with backoff (``DeadLetter`` dead-letters it at once). Long jobs keep their lease: it is extended
when half of it has run. ``stop()`` stops leasing, waits up to ``grace`` seconds for running jobs,
then gives the rest back to the queue (attempt not counted); an asyncio worker cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue as stdqueue
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from ..engine.protocol import Call, Command, Plan
from ..errors import StaleTokenError
from . import ops
from .ops import Job, Settled

if TYPE_CHECKING:
    from .queue import AsyncQueue, Queue, _QueueBase

EventCallback = Callable[[str, Job | None, dict[str, Any]], None]
# Connection trouble a worker rides out (with a growing pause) instead of dying.
RETRYABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


class DeadLetter(Exception):
    """Raise from a handler to dead-letter the job now instead of retrying it."""


class _Release(Exception):
    """A buffered job that never started: given back on shutdown, its attempt not counted."""


@dataclass
class _Running:
    job: Job
    started: float
    renew_at: float
    lease_ms: int
    abandoned: bool = False


@dataclass
class _Work:
    calls: list[Call[Any]] = field(default_factory=list)
    acks: list[_Running] = field(default_factory=list)
    ack_batched: bool = True
    nacks: list[tuple[_Running, str, str]] = field(default_factory=list)  # run, reason, action
    extends: list[_Running] = field(default_factory=list)
    reap: bool = False
    dequeue: int = 0


@dataclass
class WorkerMetrics:
    leased: int = 0
    acked: int = 0
    failed: int = 0  # handler raised (retried or dead-lettered)
    dead: int = 0
    lost: int = 0  # a lease ran out or was taken before ack/extend
    extended: int = 0
    released: int = 0  # given back on shutdown
    reaped: int = 0


class WorkerCore:
    """Bookkeeping of one worker, with no I/O: slots, finished jobs, lease timers, events.

    Not thread-safe on its own: the sync driver calls it under one lock (``guard``).
    """

    def __init__(self, queue: _QueueBase, *, concurrency: int, prefetch: int | None,
                 lease_ms: int,
                 reap_every: float, on_event: EventCallback | None,
                 guard: AbstractContextManager[Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.queue = queue
        self.keys = queue.keys
        self.engine = queue._engine
        if prefetch is not None and prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.max_prefetch = min(16 * concurrency, 512)
        self.job_seconds: float | None = None  # moving average of handler run time
        self.rtt_seconds = 0.001  # moving average of a cycle's round trip
        self.lease_ms = lease_ms
        self.reap_every = reap_every
        self.on_event = on_event
        self.guard = guard
        self.clock = clock
        self.wake_key = f"{queue.keys.base}:wake:{secrets.token_hex(6)}"
        self.running: dict[str, _Running] = {}
        self.done: list[tuple[_Running, str | None, str]] = []  # (run, error, action)
        self.single_acks: list[_Running] = []
        self.metrics = WorkerMetrics()
        self.stopping = False
        self.blocked = False  # the loop waits in BLPOP: a finishing job must push a wake
        self.wait_hint_ms = -1
        self.polled_empty = False  # the last cycle asked for jobs and got none
        self._next_reap = clock()

    # -- events -------------------------------------------------------------------------------

    def emit(self, event: str, job: Job | None, **info: Any) -> None:
        if self.on_event is not None:
            with contextlib.suppress(Exception):
                self.on_event(event, job, info)

    # -- called by drivers --------------------------------------------------------------------

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
        return 0 if self.stopping else self.capacity - len(self.running)

    def finished(self, job: Job, error: BaseException | None, seconds: float = 0.0) -> bool:
        """Record a handler's end. Returns True when the loop must be woken with a push."""
        if not isinstance(error, _Release):
            avg = self.job_seconds
            self.job_seconds = seconds if avg is None else 0.9 * avg + 0.1 * seconds
        run = self.running.get(job.id)
        if run is None or run.job.token != job.token or run.abandoned:
            return False
        if error is None:
            self.done.append((run, None, "ack"))
        elif isinstance(error, _Release):
            self.done.append((run, "worker shutdown", "release"))
        else:
            action = "dead" if isinstance(error, DeadLetter) else "retry"
            self.done.append((run, f"{type(error).__name__}: {error}"[:1000], action))
        wake, self.blocked = self.blocked, False
        return wake

    def has_work(self, now: float) -> bool:
        return bool(self.done or self.single_acks) or now >= self.next_timer()

    def next_timer(self) -> float:
        t = self._next_reap
        for run in self.running.values():
            if not run.abandoned and run.renew_at < t:
                t = run.renew_at
        return t

    def abandon(self) -> list[_Running]:
        """Shutdown after the grace period: the still-running jobs are given back."""
        left = [r for r in self.running.values() if not r.abandoned]
        for run in left:
            run.abandoned = True
            self.done.append((run, "worker shutdown", "release"))
        return left

    # -- one cycle ----------------------------------------------------------------------------

    def _prepare(self, now: float, want_jobs: bool) -> _Work:
        work = _Work()
        acks = [r for r, _, a in self.done if a == "ack"]
        work.nacks = [(r, e or "", a) for r, e, a in self.done if a != "ack"]
        self.done = []
        if self.single_acks:  # a batch failed on a stale token: ack one by one this time
            work.acks, work.ack_batched, self.single_acks = self.single_acks + acks, False, []
            for run in work.acks:
                work.calls.extend(ops.ack_calls(self.keys, [(run.job.id, run.job.token)]))
        elif acks:
            work.acks = acks
            work.calls.extend(ops.ack_calls(self.keys, [(r.job.id, r.job.token) for r in acks]))
        for run, reason, action in work.nacks:
            work.calls.append(ops.nack_call(self.keys, run.job.id, run.job.token, reason,
                                            action, -1))  # type: ignore[arg-type]
        for run in self.running.values():
            if not run.abandoned and run.renew_at <= now:
                work.extends.append(run)
                work.calls.append(ops.extend_call(self.keys, run.job.id, run.job.token,
                                                  run.lease_ms))
        if now >= self._next_reap:
            work.reap = True
            self._next_reap = now + self.reap_every
            work.calls.append(ops.reap_call(self.keys, 100))
        # Slots of jobs acked or nacked in this very round trip count as free: the calls run
        # in order, so the dequeue sees them finished.
        free = 0 if self.stopping else (
            self.capacity - len(self.running) + len(work.acks) + len(work.nacks))
        self.polled_empty = False
        if want_jobs and free > 0:
            work.dequeue = free
            work.calls.append(ops.dequeue_call(self.keys, work.dequeue, self.lease_ms))
        return work

    def _apply(self, work: _Work, results: list[Any], now: float) -> list[Job]:
        i = 0
        if work.ack_batched:
            n_calls = -(-len(work.acks) // ops.MAX_BATCH)
            chunks = results[i:i + n_calls]
            i += n_calls
            if any(isinstance(r, StaleTokenError) for r in chunks):
                self.single_acks.extend(work.acks)  # retried one by one next cycle
                work.acks = []
            elif any(isinstance(r, BaseException) for r in chunks):
                raise next(r for r in chunks if isinstance(r, BaseException))
            for run in work.acks:
                self._forget(run)
                self.metrics.acked += 1
                self.emit("acked", run.job, seconds=now - run.started)
        else:
            for run in work.acks:
                reply = results[i]
                i += 1
                self._forget(run)
                if isinstance(reply, StaleTokenError):
                    self.metrics.lost += 1
                    self.emit("lease_lost", run.job, error=str(reply))
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    self.metrics.acked += 1
                    self.emit("acked", run.job, seconds=now - run.started)
        for run, reason, action in work.nacks:
            reply = results[i]
            i += 1
            self._forget(run)
            if isinstance(reply, StaleTokenError):
                self.metrics.lost += 1
                self.emit("lease_lost", run.job, error=str(reply))
            elif isinstance(reply, BaseException):
                raise reply
            elif action == "release":
                self.metrics.released += 1
                self.emit("released", run.job)
            else:
                settled: Settled = reply
                self.metrics.failed += 1
                self.metrics.dead += settled.outcome == "dead"
                self.emit("failed", run.job, error=reason, outcome=settled.outcome,
                          at_ms=settled.at_ms)
        for run in work.extends:
            reply = results[i]
            i += 1
            if isinstance(reply, StaleTokenError):
                run.abandoned = True  # its ack would fail: the job belongs to someone else now
                self._forget(run)
                self.metrics.lost += 1
                self.emit("lease_lost", run.job, error=str(reply))
            elif isinstance(reply, BaseException):
                run.renew_at = now + min(1.0, run.lease_ms / 4000)  # try again soon
            else:
                run.renew_at = now + run.lease_ms / 2000
                self.metrics.extended += 1
                self.emit("lease_extended", run.job, deadline_ms=int(reply))
        if work.reap:
            reply = results[i]
            i += 1
            if not isinstance(reply, BaseException):
                self.metrics.reaped += len(reply)
                for s in reply:
                    self.emit("reaped", None, id=s.id, outcome=s.outcome, attempts=s.attempts)
        jobs: list[Job] = []
        if work.dequeue:
            reply = results[i]
            if isinstance(reply, BaseException):
                raise reply
            self.wait_hint_ms = reply.wait_ms
            self.polled_empty = not reply.jobs
            for job in reply.jobs:
                self.running[job.id] = _Running(job, now, now + self.lease_ms / 2000,
                                                self.lease_ms)
                self.metrics.leased += 1
                self.emit("leased", job)
            jobs = reply.jobs
        return jobs

    def _restore(self, work: _Work, now: float) -> None:
        """The round trip failed (connection trouble): keep its acks and nacks for the next one.
        A dequeue that did run on the server leased jobs nobody runs: they expire and are
        reaped (at-least-once still holds)."""
        if work.ack_batched:
            self.done = [(r, None, "ack") for r in work.acks] + self.done
        else:
            self.single_acks = work.acks + self.single_acks
        self.done = [(r, reason, action) for r, reason, action in work.nacks] + self.done
        if work.reap:
            self._next_reap = now

    def _forget(self, run: _Running) -> None:
        if self.running.get(run.job.id) is run:
            del self.running[run.job.id]

    def cycle_plan(self, want_jobs: bool = True) -> Plan[list[Job]]:
        """One round trip: flush results, extend leases, maybe reap, lease jobs for free slots."""
        with self.guard:
            now = self.clock()
            work = self._prepare(now, want_jobs)
        if not work.calls:
            return []
        try:
            results = yield from self.engine.run(work.calls, raise_on_error=False)
        except BaseException:
            with self.guard:
                self._restore(work, now)
            raise
        with self.guard:
            done = self.clock()
            self.rtt_seconds = 0.9 * self.rtt_seconds + 0.1 * (done - now)
            return self._apply(work, results, done)

    def block_plan(self, max_block: float) -> Plan[None]:
        """Wait for a new job (enqueue marker) or a finished handler (wake list)."""
        with self.guard:
            now = self.clock()
            if self.has_work(now):
                return
            wait = min(max_block, self.next_timer() - now)
            if self.wait_hint_ms >= 0:
                wait = min(wait, self.wait_hint_ms / 1000)
            if wait < 0.01:
                return
            keys = (self.keys.marker,) if self.free > 0 else ()
            self.blocked = True
        try:
            [reply] = yield [Command(("BLPOP", *keys, self.wake_key, round(wait, 3)))]
        finally:
            with self.guard:
                self.blocked = False
        if isinstance(reply, BaseException):
            raise reply

    def wake_plan(self) -> Plan[None]:
        yield [Command(("RPUSH", self.wake_key, "1")), Command(("PEXPIRE", self.wake_key, 60000))]

    def cleanup_plan(self) -> Plan[None]:
        yield [Command(("DEL", self.wake_key))]


def _reap_every(lease_ms: int, reap_every: float | None) -> float:
    return reap_every if reap_every is not None else max(0.05, min(5.0, lease_ms / 2000))


def _core(queue: _QueueBase, concurrency: int, prefetch: int | None, lease: float | None,
          reap_every: float | None, on_event: EventCallback | None,
          guard: AbstractContextManager[Any]) -> WorkerCore:
    lease_ms = queue.lease_ms if lease is None else ops.ms(lease, allow_zero=False)
    return WorkerCore(queue, concurrency=concurrency, prefetch=prefetch,
                      lease_ms=lease_ms, reap_every=_reap_every(lease_ms, reap_every),
                      on_event=on_event, guard=guard)


class Worker:
    """Run ``handler(job)`` on ``concurrency`` threads.

    ``Worker(queue, handler, concurrency=8).run()`` blocks until ``stop()`` (from another thread
    or a signal handler). Up to ``prefetch`` jobs are leased ahead into a local buffer, so one
    round trip fetches and acks several; their leases are extended like running ones, and a
    shutdown gives them back at once. By default the buffer adapts to about one round trip's
    worth of work (deep for tiny jobs, empty for long ones); ``prefetch=0`` turns it off.
    ``on_event(event, job, info)`` is called for leased, started, acked, failed,
    lease_extended, lease_lost, released and reaped.
    """

    def __init__(self, queue: Queue, handler: Callable[[Job], Any], *, concurrency: int = 1,
                 prefetch: int | None = None, lease: float | None = None, grace: float = 30.0,
                 reap_every: float | None = None, on_event: EventCallback | None = None) -> None:
        self.queue = queue
        self.handler = handler
        self.grace = grace
        self._cond = threading.Condition(threading.RLock())
        self.core = _core(queue, concurrency, prefetch, lease, reap_every, on_event, self._cond)
        self._buffer: stdqueue.SimpleQueue[Job | None] = stdqueue.SimpleQueue()
        self._stop_at: float | None = None

    @property
    def metrics(self) -> WorkerMetrics:
        return self.core.metrics

    def stop(self) -> None:
        """Ask the loop to stop (safe from any thread or a signal handler)."""
        with self._cond:
            if self._stop_at is None:
                self._stop_at = time.monotonic() + self.grace
                self.core.stopping = True
            self._cond.notify_all()
        with contextlib.suppress(Exception):
            self.queue.client.drive(self.core.wake_plan())

    def _finish(self, job: Job, error: BaseException | None, seconds: float = 0.0) -> None:
        with self._cond:
            wake = self.core.finished(job, error, seconds)
            self._cond.notify_all()
        if wake:
            with contextlib.suppress(Exception):
                self.queue.client.drive(self.core.wake_plan())

    def _slot(self) -> None:
        while True:
            job = self._buffer.get()
            if job is None:
                return
            if self.core.stopping:
                self._finish(job, _Release())
                continue
            self.core.emit("started", job)
            error: BaseException | None = None
            began = time.monotonic()
            try:
                self.handler(job)
            except BaseException as e:  # reported to the queue, never lost
                error = e
            self._finish(job, error, time.monotonic() - began)

    def run(self) -> WorkerMetrics:
        client = self.queue.client
        core = self.core
        slots = [threading.Thread(target=self._slot, name=f"pyredislua-worker-{i}", daemon=True)
                 for i in range(core.concurrency)]
        for t in slots:
            t.start()
        pause = 0.0
        try:
            client.drive(core.cleanup_plan())
            while True:
                with self._cond:
                    stopping = core.stopping
                    if stopping:
                        self._drain()
                        if self._stop_at is not None and time.monotonic() >= self._stop_at:
                            core.abandon()
                    if stopping and not core.running and not core.done and not core.single_acks:
                        break
                try:
                    jobs = client.drive(core.cycle_plan(want_jobs=not stopping))
                except RETRYABLE as error:
                    pause = self._trouble(error, pause)
                    with self._cond:
                        self._cond.wait(pause)
                    continue
                pause = 0.0
                for job in jobs:
                    self._buffer.put(job)
                if jobs:
                    continue
                with self._cond:
                    if core.free > 0 and not core.polled_empty and not core.stopping:
                        continue
                    if core.free == 0 or core.stopping:
                        now = time.monotonic()
                        if not core.has_work(now):
                            until = core.next_timer()
                            if self._stop_at is not None:
                                until = min(until, self._stop_at)
                            self._cond.wait(max(0.0, min(until - now, client.max_block)))
                        continue
                try:
                    client.drive(core.block_plan(client.max_block))
                except RETRYABLE as error:
                    pause = self._trouble(error, pause)
                    with self._cond:
                        self._cond.wait(pause)
        finally:
            for _ in slots:
                self._buffer.put(None)
            with contextlib.suppress(Exception):
                client.drive(core.cleanup_plan())
        return core.metrics

    def _trouble(self, error: BaseException, pause: float) -> float:
        self.core.emit("error", None, error=repr(error))
        return min(max(pause * 2, 0.05), 2.0)

    def _drain(self) -> None:
        """On shutdown: buffered jobs that never started go back at once."""
        while True:
            try:
                job = self._buffer.get_nowait()
            except stdqueue.Empty:
                return
            if job is None:  # pragma: no cover - only run() puts None, after the loop
                continue
            self.core.finished(job, _Release())


class AsyncWorker:
    """Run ``await handler(job)`` in ``concurrency`` tasks; see :class:`Worker`.

    ``await worker.run()``; ``worker.stop()`` (sync, callable from a signal handler) ends it.
    After ``grace`` seconds still-running handlers are cancelled and their jobs given back.
    """

    def __init__(self, queue: AsyncQueue, handler: Callable[[Job], Awaitable[Any]], *,
                 concurrency: int = 1, prefetch: int | None = None, lease: float | None = None,
                 grace: float = 30.0, reap_every: float | None = None,
                 on_event: EventCallback | None = None) -> None:
        self.queue = queue
        self.handler = handler
        self.grace = grace
        self.core = _core(queue, concurrency, prefetch, lease, reap_every, on_event,
                          contextlib.nullcontext())
        self._buffer: asyncio.Queue[Job] | None = None
        self._changed: asyncio.Event | None = None
        self._stop_at: float | None = None
        self._blocker: asyncio.Task[None] | None = None

    @property
    def metrics(self) -> WorkerMetrics:
        return self.core.metrics

    def stop(self) -> None:
        if self._stop_at is None:
            self._stop_at = time.monotonic() + self.grace
            self.core.stopping = True
        if self._changed is not None:
            self._changed.set()

    async def _slot(self) -> None:
        assert self._buffer is not None and self._changed is not None
        while True:
            job = await self._buffer.get()
            if self.core.stopping:
                self.core.finished(job, _Release())
                self._changed.set()
                continue
            self.core.emit("started", job)
            error: BaseException | None = None
            began = time.monotonic()
            try:
                await self.handler(job)
            except asyncio.CancelledError:
                raise  # cancelled on shutdown: the job was already given back
            except Exception as e:
                error = e
            self.core.finished(job, error, time.monotonic() - began)
            self._changed.set()

    def _drain(self) -> None:
        assert self._buffer is not None
        while not self._buffer.empty():
            self.core.finished(self._buffer.get_nowait(), _Release())

    async def run(self) -> WorkerMetrics:
        client = self.queue.client
        core = self.core
        self._changed = asyncio.Event()
        self._buffer = asyncio.Queue()
        slots = [asyncio.ensure_future(self._slot()) for _ in range(core.concurrency)]
        pause = 0.0
        try:
            await client.drive(core.cleanup_plan())
            while True:
                if core.stopping:
                    self._drain()
                    stop_at = self._stop_at
                    if stop_at is not None and time.monotonic() >= stop_at and core.abandon():
                        for task in slots:
                            task.cancel()
                if core.stopping and not core.running and not core.done and not core.single_acks:
                    break
                self._changed.clear()
                try:
                    jobs = await client.drive(core.cycle_plan(want_jobs=not core.stopping))
                except RETRYABLE as error:
                    core.emit("error", None, error=repr(error))
                    pause = min(max(pause * 2, 0.05), 2.0)
                    await asyncio.sleep(pause)
                    continue
                pause = 0.0
                for job in jobs:
                    self._buffer.put_nowait(job)
                if jobs or core.has_work(time.monotonic()):
                    await asyncio.sleep(0)  # let the slots start on what arrived
                    continue
                if core.free > 0 and not core.polled_empty and not core.stopping:
                    continue
                now = time.monotonic()
                until = core.next_timer()
                if self._stop_at is not None:
                    until = min(until, self._stop_at)
                wait = max(0.0, min(until - now, client.max_block))
                if core.free > 0 and not core.stopping:
                    await self._wait_marker_or_change(wait)
                else:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), wait)
        finally:
            if self._blocker is not None:
                self._blocker.cancel()
            for task in slots:
                task.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            with contextlib.suppress(Exception):
                await client.drive(core.cleanup_plan())
        return core.metrics

    async def _wait_marker_or_change(self, wait: float) -> None:
        """Wait for the enqueue marker (BLPOP on its own connection) or a local change."""
        assert self._changed is not None
        if self._blocker is None or self._blocker.done():
            hint = self.core.wait_hint_ms
            block = wait if hint < 0 else min(wait, hint / 1000)
            self._blocker = asyncio.ensure_future(self._blpop(block))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({self._blocker, changed}, timeout=wait + 1.0,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()

    async def _blpop(self, block: float) -> None:
        if block >= 0.01:
            with contextlib.suppress(Exception):
                await self.queue.client.redis.blpop([self.queue.keys.marker], round(block, 3))
        else:
            await asyncio.sleep(max(block, 0.001))
