"""The flush logic, written once as flows (see ``effects``), and the two background drivers:
:class:`Flusher` (a thread) and :class:`AsyncFlusher` (an asyncio task).

One flush: claim up to ``batch_size`` due records (oldest first, under a lease), write them to
the sink in one batch, ack the ones written (only if unchanged since the claim), report the
failures. A batch the sink rejects is split in halves until the records that fail on their own
are isolated: they are retried with backoff and dead-lettered after ``max_attempts``, the rest
are written. :class:`~pyredislua.sinks.SinkUnavailableError` gives the whole batch back without
counting an attempt.

The loop flushes when ``batch_size`` records are due or the oldest has waited ``max_delay``,
whichever comes first (the claim decides atomically on the server), and blocks on the store's
signal list in between (writers push to it when the dirty count reaches ``batch_size`` or stops
being zero). On stop it drains every due record before returning.

Faults: every claim carries a request id, so a claim re-sent after a timeout (by redis-py, or by
the loop after a connection error) returns the records the first send claimed instead of
claiming more; ack, fail and release are safe to repeat and are retried until they go through
(a record whose settle never went through returns when its lease ends, counting an attempt).
Connection errors, timeouts, a read-only replica and out-of-memory replies are reported
(``on_error``), backed off and retried; ``stop()`` returns a :class:`StopReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, TryAgainError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..engine.protocol import Command, Engine, Plan, Sleep
from ..sinks.base import Sink, SinkUnavailableError
from .effects import Do, Flow, Redis, drive_async, drive_sync
from .ops import (
    MAX_BATCH,
    Claim,
    Record,
    StoreKeys,
    StoreStats,
    ack_call,
    claim_call,
    fail_call,
    new_request_id,
    release_call,
    stats_call,
)

if TYPE_CHECKING:
    from .store import AsyncWriteBehind, WriteBehind

TIMER_GRAIN = 0.11  # BLPOP timeouts resolve on Redis' cron tick; shorter waits sleep locally
# Errors after which the same call may succeed: Redis unreachable, restarting, paused, read-only
# during a failover, out of memory. Anything else is a bug or bad state and is not retried.
TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, ReadOnlyError, OutOfMemoryError, TryAgainError,
    OSError)


def ms(seconds: float, name: str, *, allow_zero: bool = True) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(
            seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                         f"number of seconds, got {seconds!r}")
    return max(0 if seconds == 0 else 1, math.ceil(seconds * 1000 - 1e-9))


@dataclass(frozen=True)
class FlushConfig:
    """How records are flushed. Durations in seconds."""

    batch_size: int = 100  # flush when this many are due (and the most per sink batch)
    max_delay: float = 1.0  # ...or when the oldest has been dirty this long
    lease: float = 30.0  # a claim not acked within this returns to dirty
    max_attempts: int = 5  # failed attempts (sink rejections, expired claims) before a record
    # is dead-lettered
    backoff: float = 1.0  # first retry delay, doubling per attempt
    max_backoff: float = 60.0
    unavailable_delay: float = 1.0  # retry delay of a batch the sink could not take at all

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH}, got {self.batch_size!r}")
        if not isinstance(self.max_attempts, int) or not 1 <= self.max_attempts <= 1000:
            raise ValueError(f"max_attempts must be 1..1000, got {self.max_attempts!r}")
        ms(self.max_delay, "max_delay")
        ms(self.lease, "lease", allow_zero=False)
        ms(self.backoff, "backoff")
        ms(self.max_backoff, "max_backoff")
        ms(self.unavailable_delay, "unavailable_delay")


@dataclass(frozen=True)
class FlushEvent:
    """What one flushed batch did: handed to the ``on_flush`` metrics callback."""

    claimed: int
    acked: int  # records now clean (in the sink at their latest version)
    changed: int  # written to the sink, but rewritten since the claim: flushed again later
    failed: int  # rejected by the sink, retry scheduled
    dead: int  # rejected max_attempts times: dead-lettered
    released: int  # given back without an attempt (sink unavailable)
    reaped: int  # expired claims returned to dirty by this claim
    lag_ms: int  # age of the batch's oldest record when the batch was acked
    sink_seconds: float  # time spent in sink writes
    errors: tuple[str, ...] = ()


@dataclass
class FlusherTotals:
    batches: int = 0
    records: int = 0
    acked: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    max_lag_ms: int = 0
    errors: int = 0  # loop-level errors (Redis unreachable, ...)
    batch_sizes: list[int] = field(default_factory=list)

    def add(self, event: FlushEvent) -> None:
        self.batches += 1
        self.records += event.claimed
        self.acked += event.acked
        self.failed += event.failed
        self.dead += event.dead
        self.released += event.released
        self.max_lag_ms = max(self.max_lag_ms, event.lag_ms)
        if len(self.batch_sizes) < 100_000:
            self.batch_sizes.append(event.claimed)


def write_isolating(sink: Sink, records: Sequence[Record]
                    ) -> Flow[tuple[list[Record], list[tuple[Record, str]], list[Record]]]:
    """Write records to the sink; split a rejected batch to isolate the records that fail alone.

    Returns (written, failed with their error, given back because the sink is unavailable).
    """
    try:
        yield Do(sink.write, (list(records),), thread=True)
        return list(records), [], []
    except SinkUnavailableError:
        return [], [], list(records)
    except Exception as error:
        if len(records) == 1:
            return [], [(records[0], f"{type(error).__name__}: {error}")], []
        mid = len(records) // 2
        w1, f1, u1 = yield from write_isolating(sink, records[:mid])
        if u1:  # the sink went away meanwhile: give the rest back untouched
            return w1, f1, u1 + list(records[mid:])
        w2, f2, u2 = yield from write_isolating(sink, records[mid:])
        return w1 + w2, f1 + f2, u2


@dataclass
class LoopControl:
    """Shared between running loops and whoever stops them."""

    stopping: bool = False
    idle: bool = False  # the last claim found nothing due
    deadline: float | None = None  # time.monotonic() past which a stopping loop gives up
    unsettled: int = 0  # records claimed by these loops and not yet acked, failed or released
    guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def given_up(self) -> bool:
        return self.stopping and self.deadline is not None and time.monotonic() >= self.deadline

    def add_unsettled(self, n: int) -> None:
        with self.guard:
            self.unsettled += n


def settle_flow(engine: Engine, calls: Sequence[Any], control: LoopControl,
                on_error: Callable[[BaseException], None]) -> Flow[list[Any]]:
    """Run the ack / fail / release calls of a flushed batch (one round trip), again and again
    while Redis is unreachable: they are safe to repeat, and a batch written to the sink but not
    acked would be written again (and counted as an attempt) when its lease ends."""
    backoff = 0.05
    while True:
        try:
            results: list[Any] = yield Redis(engine.run(calls))
            return results
        except TRANSIENT as error:
            with contextlib.suppress(Exception):
                on_error(error)
            if control.given_up():
                raise
            yield Redis(_sleep(backoff))
            backoff = min(backoff * 2, 1.0)


def flush_claim_flow(engine: Engine, keys: StoreKeys, sink: Sink, claim: Claim,
                     config: FlushConfig, clock: Callable[[], float] = time.time,
                     control: LoopControl | None = None,
                     on_error: Callable[[BaseException], None] | None = None
                     ) -> Flow[FlushEvent]:
    """Write one claimed batch to the sink, then ack / fail / release its records in one round
    trip (retried while Redis is unreachable, until ``control`` gives up)."""
    started = time.perf_counter()
    written, failed, unavailable = yield from write_isolating(sink, claim.records)
    sink_seconds = time.perf_counter() - started
    calls: list[Any] = []
    if written:
        calls.append(ack_call(keys, claim.token, written))
    if failed:
        calls.append(fail_call(
            keys, claim.token, failed,
            max_attempts=config.max_attempts, backoff_ms=ms(config.backoff, "backoff"),
            max_backoff_ms=ms(config.max_backoff, "max_backoff")))
    if unavailable:
        calls.append(release_call(keys, claim.token, [r.key for r in unavailable],
                                  ms(config.unavailable_delay, "unavailable_delay")))
    results: list[Any] = []
    if calls:
        results = yield from settle_flow(engine, calls, control or LoopControl(),
                                         on_error or _ignore)
    acked = changed = dead = n_failed = released = 0
    it = iter(results)
    if written:
        statuses = next(it)
        # 2 (already clean): a repeat of an ack whose reply was lost, or acked by a flusher
        # whose claim expired meanwhile; either way the sink has the version
        acked = sum(1 for s in statuses if s in (1, 2))
        changed = sum(1 for s in statuses if s == 0)
    if failed:
        outcomes = next(it)
        n_failed = sum(1 for o in outcomes if o in (1, 2))
        dead = sum(1 for o in outcomes if o == 2)
    if unavailable:
        released = int(next(it))
    lag = max(0, int(clock() * 1000) - (claim.oldest_dirty_since_ms or claim.now_ms))
    errors = tuple(err for _, err in failed)
    if unavailable and not errors:
        errors = ("sink unavailable",)
    return FlushEvent(len(claim.records), acked, changed, n_failed, dead, released,
                      claim.reaped, lag, sink_seconds, errors)


def _ignore(error: BaseException) -> None:
    pass


def wait_plan(keys: StoreKeys, seconds: float, max_block: float) -> Plan[None]:
    """Wait for a writer's wake-up on the signal list, at most ``seconds``."""
    seconds = min(seconds, max_block)
    if seconds <= TIMER_GRAIN + 0.01:
        yield Sleep(max(seconds, 0.0))
        return
    [reply] = yield [Command(("BLPOP", keys.signal, round(seconds - TIMER_GRAIN, 3)))]
    if isinstance(reply, BaseException):
        raise reply


def wake_plan(keys: StoreKeys, n: int) -> Plan[None]:
    """Wake ``n`` idle loops now (stop); the wake-ups expire like the writers' do."""
    yield [Command(("RPUSH", keys.signal, *["stop"] * n)),
           Command(("PEXPIRE", keys.signal, 2_000))]


def flusher_flow(engine: Engine, keys: StoreKeys, sink: Sink, config: FlushConfig,
                 control: LoopControl, max_block: float,
                 emit: Callable[[FlushEvent], None],
                 on_error: Callable[[BaseException], None]) -> Flow[None]:
    """The background loop: flush on batch size or max delay, drain on stop."""
    lease_ms = ms(config.lease, "lease", allow_zero=False)
    max_delay_ms = ms(config.max_delay, "max_delay")
    request_id = 0  # the id of a claim whose reply never came: sent again as is
    backoff = 0.05
    while True:
        stopping = control.stopping
        try:
            if not request_id:
                request_id = new_request_id()
            claim: Claim = yield Redis(engine.run_one(claim_call(
                keys, config.batch_size, lease_ms,
                min_count=0 if stopping else config.batch_size,
                max_age_ms=0 if stopping else max_delay_ms,
                max_attempts=config.max_attempts, request_id=request_id)))
            request_id = 0
            backoff = 0.05
            if claim.records:
                control.idle = False
                control.add_unsettled(len(claim.records))
                event = yield from flush_claim_flow(engine, keys, sink, claim, config,
                                                    control=control, on_error=on_error)
                control.add_unsettled(-len(claim.records))
                with contextlib.suppress(Exception):
                    emit(event)
                if event.released and not stopping:
                    yield Redis(wait_plan(keys, config.unavailable_delay, max_block))
                continue
            control.idle = True
            if stopping:
                return
            wait = claim.wait_ms / 1000 if claim.wait_ms >= 0 else max_block
            yield Redis(wait_plan(keys, wait, max_block))
        except Exception as error:  # Redis unreachable and the like: report, back off, go on
            with contextlib.suppress(Exception):
                on_error(error)
            # a stopping loop still owns a claim whose reply was lost (it may have claimed):
            # it keeps trying until the stop's deadline
            if control.stopping and (not request_id or control.given_up()):
                return
            yield Redis(_sleep(backoff))
            backoff = min(backoff * 2, 1.0)


def _sleep(seconds: float) -> Plan[None]:
    yield Sleep(seconds)


def drain_flow(engine: Engine, keys: StoreKeys, sink: Sink, config: FlushConfig,
               max_batches: int | None = None) -> Flow[list[FlushEvent]]:
    """Flush every due record now, batch after batch (no waiting for size or age)."""
    lease_ms = ms(config.lease, "lease", allow_zero=False)
    events: list[FlushEvent] = []
    # a foreground flush gives up on Redis errors at once (its caller sees them)
    control = LoopControl(stopping=True, deadline=0.0)
    while max_batches is None or len(events) < max_batches:
        claim: Claim = yield Redis(engine.run_one(claim_call(
            keys, config.batch_size, lease_ms, max_attempts=config.max_attempts)))
        if not claim.records:
            break
        event = yield from flush_claim_flow(engine, keys, sink, claim, config, control=control)
        events.append(event)
        if event.released:
            break
    return events


@dataclass(frozen=True)
class StopReport:
    """What a flusher's ``stop()`` left behind.

    ``drained`` is true when every worker ended and every record the flusher claimed was acked,
    failed or released. Records waiting out a retry backoff (``in_backoff``) are not flushed by
    a stop: they are due later (the first in ``next_retry_ms``) and the next flusher takes them.
    The counts come from the store after the stop (None when Redis could not be read).
    """

    workers_left: int  # workers still running: stop timed out (a sink write hangs, Redis paused)
    unsettled: int  # records this flusher claimed whose ack/fail/release never went through
    dirty: int | None  # due records left (written after the drain, or the stop timed out)
    in_backoff: int | None  # records waiting out a retry backoff: flushed when due, later
    claimed: int | None  # records claimed by any flusher (others', or unsettled ones here)
    dead: int | None  # dead-lettered records (see ``store.dead()``)
    next_retry_ms: int | None = None  # ms until the first record in backoff is due

    @property
    def drained(self) -> bool:
        return self.workers_left == 0 and self.unsettled == 0


def stop_report(workers_left: int, control: LoopControl, stats: StoreStats | None,
                next_retry_ms: int | None) -> StopReport:
    if stats is None:
        return StopReport(workers_left, control.unsettled, None, None, None, None)
    return StopReport(workers_left, control.unsettled, stats.dirty, stats.retry, stats.claimed,
                      stats.dead, next_retry_ms)


def next_retry_plan(keys: StoreKeys) -> Plan[int | None]:
    """Milliseconds until the first record in backoff is due (None: none in backoff)."""
    replies = yield [Command(("ZRANGE", keys.retry, 0, 0, "WITHSCORES")), Command(("TIME",))]
    first, now = replies
    if isinstance(first, BaseException) or isinstance(now, BaseException) or not first:
        return None
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    return max(0, int(float(first[0][1])) - now_ms)


class _FlusherBase:
    def __init__(self, store: WriteBehind | AsyncWriteBehind, sink: Sink, *,
                 on_flush: Callable[[FlushEvent], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 workers: int = 1) -> None:
        if not isinstance(workers, int) or not 1 <= workers <= 64:
            raise ValueError(f"workers must be 1..64, got {workers!r}")
        self.workers = workers
        self.store = store
        self.sink = sink
        self.config = store.config
        self.totals = FlusherTotals()
        self.control = LoopControl()
        self._on_flush = on_flush
        self._on_error = on_error
        self.last_error: BaseException | None = None
        self.stop_report: StopReport | None = None  # set by stop()
        self._totals_guard = threading.Lock()

    def _emit(self, event: FlushEvent) -> None:
        with self._totals_guard:
            self.totals.add(event)
        if self._on_flush is not None:
            self._on_flush(event)

    def _error(self, error: BaseException) -> None:
        with self._totals_guard:
            self.totals.errors += 1
        self.last_error = error
        if self._on_error is not None:
            self._on_error(error)

    def _flow(self, max_block: float) -> Flow[None]:
        return flusher_flow(self.store.engine, self.store.keys, self.sink, self.config,
                            self.control, max_block, self._emit, self._error)

    def _stopping(self, timeout: float | None) -> None:
        self.control.deadline = None if timeout is None else time.monotonic() + timeout
        self.control.stopping = True

    def _remaining(self) -> float | None:
        """Time left before the stop's deadline, with a little grace for a last read."""
        deadline = self.control.deadline
        return None if deadline is None else max(0.2, deadline - time.monotonic())

    def _report(self, workers_left: int, stats: StoreStats | None,
                next_retry_ms: int | None) -> StopReport:
        self.stop_report = stop_report(workers_left, self.control, stats, next_retry_ms)
        return self.stop_report


class Flusher(_FlusherBase):
    """A background thread flushing a :class:`WriteBehind` store into a sink.

    ``with store.flusher(SQLiteSink("app.db"), on_flush=print): ...`` — leaving the block (or
    ``stop()``) drains every due record before the threads end; ``stop()`` returns a
    :class:`StopReport` (records in backoff, anything it could not settle in time).
    ``workers``: loops running in parallel (each claims its own batches; the sink must take
    concurrent writes, as
    :class:`~pyredislua.sinks.postgres.PostgresSink` does with a connection per thread).
    """

    store: WriteBehind

    def __init__(self, store: WriteBehind, sink: Sink, **options: Any) -> None:
        super().__init__(store, sink, **options)
        self._threads: list[threading.Thread] = []

    def start(self) -> Flusher:
        if self._threads:
            raise RuntimeError("this flusher was already started")
        client = self.store.client
        for i in range(self.workers):
            thread = threading.Thread(
                target=drive_sync, args=(client, self._flow(min(client.max_block, 1.0))),
                name=f"pyredislua-flusher-{self.store.keys.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float | None = 30.0) -> StopReport:
        """Drain due records and stop; returns when the threads ended (or ``timeout`` passed)
        with a :class:`StopReport`: what is left in backoff, and anything not drained."""
        self._stopping(timeout)
        if not self._threads:
            return self._report(0, None, None)
        client = self.store.client

        def wake() -> None:  # on its own thread: a paused Redis must not hold stop() up
            with contextlib.suppress(Exception):
                client.drive(wake_plan(self.store.keys, len(self._threads)))

        threading.Thread(target=wake, daemon=True).start()
        deadline = self.control.deadline
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        left = sum(1 for t in self._threads if t.is_alive())
        found: list[Any] = []

        def read() -> None:  # what is left in the store, if Redis answers in time
            with contextlib.suppress(Exception):
                found.append(client.run(stats_call(self.store.keys)))
                found.append(client.drive(next_retry_plan(self.store.keys)))

        if not left:
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            reader.join(self._remaining())
        stats = found[0] if found else None
        return self._report(left, stats, found[1] if len(found) > 1 else None)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> Flusher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsyncFlusher(_FlusherBase):
    """An asyncio task flushing an :class:`AsyncWriteBehind` store; see :class:`Flusher`.
    A blocking sink's ``write`` runs in a worker thread; an ``async def write`` is awaited."""

    store: AsyncWriteBehind

    def __init__(self, store: AsyncWriteBehind, sink: Sink, **options: Any) -> None:
        super().__init__(store, sink, **options)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> AsyncFlusher:
        if self._tasks:
            raise RuntimeError("this flusher was already started")
        client = self.store.client
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(drive_async(client, self._flow(min(client.max_block,
                                                                             1.0))))
                       for _ in range(self.workers)]
        return self

    async def stop(self, timeout: float | None = 30.0) -> StopReport:
        """See :meth:`Flusher.stop`; workers still running at the timeout are cancelled (a
        blocking sink write in its worker thread cannot be, and finishes on its own)."""
        self._stopping(timeout)
        if not self._tasks:
            return self._report(0, None, None)
        client = self.store.client
        wake = asyncio.ensure_future(client.drive(wake_plan(self.store.keys, len(self._tasks))))
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        if not wake.done():
            wake.cancel()
        with contextlib.suppress(BaseException):
            await wake
        stats = next_retry = None
        if not pending:  # what is left in the store, if Redis answers in time
            with contextlib.suppress(Exception):
                stats = await asyncio.wait_for(client.run(stats_call(self.store.keys)),
                                               self._remaining())
                next_retry = await asyncio.wait_for(
                    client.drive(next_retry_plan(self.store.keys)), self._remaining())
        return self._report(len(pending), stats, next_retry)

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    async def __aenter__(self) -> AsyncFlusher:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
