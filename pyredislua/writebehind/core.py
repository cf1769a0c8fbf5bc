"""The flush logic, sans-IO: plans (:mod:`pyredislua.engine.protocol`) that the sync and the
asyncio clients drive alike.

One flush: claim up to ``batch_size`` due records (oldest first, under a lease), write them to
the sink in one batch (a ``Do`` step, ``thread=True``: a blocking sink runs in a worker thread
under asyncio), ack the ones written (only if unchanged since the claim), report the failures.
A batch the sink rejects is split in halves until the records that fail on their own are
isolated: they are retried with backoff and dead-lettered after ``max_attempts``, the rest are
written. :class:`~pyredislua.writebehind.sinks.SinkUnavailableError` gives the whole batch back
without counting an attempt.

The background loop (:func:`flusher_plan`) flushes when ``batch_size`` records are due or the
oldest has waited ``max_delay``, whichever comes first (the claim decides atomically on the
server), and waits on the store's signal list in between (:mod:`pyredislua.engine.waiting`;
writers push to it when the dirty count reaches ``batch_size`` or stops being zero). On stop it
drains every due record before returning.

Faults: every claim carries a request id, so a claim re-sent after a timeout (by redis-py, or by
the loop after a connection error) returns the records the first send claimed instead of
claiming more; ack, fail and release are safe to repeat and are retried until they go through
(a record whose settle never went through returns when its lease ends, counting an attempt).
Connection errors, timeouts, a read-only replica and out-of-memory replies are reported
(``on_error``), backed off and retried.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, TryAgainError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..engine.protocol import Command, Do, Engine, Plan, Sleep
from ..engine.waiting import wait_for_signal
from ..kit import ms
from ..observe import tracing
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
from .sinks.base import Sink, SinkUnavailableError

# Errors after which the same call may succeed: Redis unreachable, restarting, paused, read-only
# during a failover, out of memory. Anything else is a bug or bad state and is not retried.
TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, ReadOnlyError, OutOfMemoryError, TryAgainError,
    OSError)


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
        # each duration is checked (and refused) by its conversion to milliseconds
        _ = (self.max_delay_ms, self.lease_ms, self.backoff_ms, self.max_backoff_ms,
             self.unavailable_delay_ms)

    @property
    def max_delay_ms(self) -> int:
        return ms(self.max_delay, "max_delay", allow_zero=True)

    @property
    def lease_ms(self) -> int:
        return ms(self.lease, "lease")

    @property
    def backoff_ms(self) -> int:
        return ms(self.backoff, "backoff", allow_zero=True)

    @property
    def max_backoff_ms(self) -> int:
        return ms(self.max_backoff, "max_backoff", allow_zero=True)

    @property
    def unavailable_delay_ms(self) -> int:
        return ms(self.unavailable_delay, "unavailable_delay", allow_zero=True)


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


# -- one batch --------------------------------------------------------------------------------


def write_isolating(sink: Sink, records: Sequence[Record]
                    ) -> Plan[tuple[list[Record], list[tuple[Record, str]], list[Record]]]:
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


def settle_plan(engine: Engine, calls: Sequence[Any], control: LoopControl,
                on_error: Callable[[BaseException], None]) -> Plan[list[Any]]:
    """Run the ack / fail / release calls of a flushed batch (one round trip), again and again
    while Redis is unreachable: they are safe to repeat, and a batch written to the sink but not
    acked would be written again (and counted as an attempt) when its lease ends."""
    backoff = 0.05
    while True:
        try:
            return (yield from engine.run(calls))
        except TRANSIENT as error:
            with contextlib.suppress(Exception):
                on_error(error)
            if control.given_up():
                raise
            yield Sleep(backoff)
            backoff = min(backoff * 2, 1.0)


def flush_claim_plan(engine: Engine, keys: StoreKeys, sink: Sink, claim: Claim,
                     config: FlushConfig, clock: Callable[[], float] = time.time,
                     control: LoopControl | None = None,
                     on_error: Callable[[BaseException], None] | None = None
                     ) -> Plan[FlushEvent]:
    """Write one claimed batch to the sink, then ack / fail / release its records in one round
    trip (retried while Redis is unreachable, until ``control`` gives up); in a
    ``writebehind.flush`` span while tracing (:mod:`pyredislua.observe.tracing`)."""
    traced = tracing.active()
    if traced is None:
        return (yield from _flush_claim_plan(engine, keys, sink, claim, config, clock, control,
                                             on_error))
    span = traced.flush(keys.name)
    try:
        with traced.current(span):
            event = yield from _flush_claim_plan(engine, keys, sink, claim, config, clock,
                                                 control, on_error)
    except BaseException as error:
        traced.end(span, error)
        raise
    traced.flushed(span, event)
    return event


def _flush_claim_plan(engine: Engine, keys: StoreKeys, sink: Sink, claim: Claim,
                      config: FlushConfig, clock: Callable[[], float],
                      control: LoopControl | None,
                      on_error: Callable[[BaseException], None] | None) -> Plan[FlushEvent]:
    started = time.perf_counter()
    written, failed, unavailable = yield from write_isolating(sink, claim.records)
    sink_seconds = time.perf_counter() - started
    calls: list[Any] = []
    if written:
        calls.append(ack_call(keys, claim.token, written))
    if failed:
        calls.append(fail_call(keys, claim.token, failed, max_attempts=config.max_attempts,
                               backoff_ms=config.backoff_ms,
                               max_backoff_ms=config.max_backoff_ms))
    if unavailable:
        calls.append(release_call(keys, claim.token, [r.key for r in unavailable],
                                  config.unavailable_delay_ms))
    results: list[Any] = []
    if calls:
        results = yield from settle_plan(engine, calls, control or LoopControl(),
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


# -- loops ------------------------------------------------------------------------------------


def flusher_plan(engine: Engine, keys: StoreKeys, sink: Sink, config: FlushConfig,
                 control: LoopControl, max_block: float,
                 emit: Callable[[FlushEvent], None],
                 on_error: Callable[[BaseException], None]) -> Plan[None]:
    """The background loop: flush on batch size or max delay, drain on stop."""
    request_id = 0  # the id of a claim whose reply never came: sent again as is
    backoff = 0.05
    while True:
        stopping = control.stopping
        try:
            if not request_id:
                request_id = new_request_id()
            claim = yield from engine.run_one(claim_call(
                keys, config.batch_size, config.lease_ms,
                min_count=0 if stopping else config.batch_size,
                max_age_ms=0 if stopping else config.max_delay_ms,
                max_attempts=config.max_attempts, request_id=request_id))
            request_id = 0
            backoff = 0.05
            if claim.records:
                control.idle = False
                control.add_unsettled(len(claim.records))
                event = yield from flush_claim_plan(engine, keys, sink, claim, config,
                                                    control=control, on_error=on_error)
                control.add_unsettled(-len(claim.records))
                with contextlib.suppress(Exception):
                    emit(event)
                if event.released and not stopping:
                    yield from wait_for_signal((keys.signal,), config.unavailable_delay,
                                               max_block=max_block)
                continue
            control.idle = True
            if stopping:
                return
            wait = claim.wait_ms / 1000 if claim.wait_ms >= 0 else max_block
            yield from wait_for_signal((keys.signal,), wait, max_block=max_block)
        except Exception as error:  # Redis unreachable and the like: report, back off, go on
            with contextlib.suppress(Exception):
                on_error(error)
            # a stopping loop still owns a claim whose reply was lost (it may have claimed):
            # it keeps trying until the stop's deadline
            if control.stopping and (not request_id or control.given_up()):
                return
            yield Sleep(backoff)
            backoff = min(backoff * 2, 1.0)


def drain_plan(engine: Engine, keys: StoreKeys, sink: Sink, config: FlushConfig,
               max_batches: int | None = None) -> Plan[list[FlushEvent]]:
    """Flush every due record now, batch after batch (no waiting for size or age)."""
    events: list[FlushEvent] = []
    # a foreground flush gives up on Redis errors at once (its caller sees them)
    control = LoopControl(stopping=True, deadline=0.0)
    while max_batches is None or len(events) < max_batches:
        claim = yield from engine.run_one(claim_call(
            keys, config.batch_size, config.lease_ms, max_attempts=config.max_attempts))
        if not claim.records:
            break
        event = yield from flush_claim_plan(engine, keys, sink, claim, config, control=control)
        events.append(event)
        if event.released:
            break
    return events


def wake_plan(keys: StoreKeys, n: int) -> Plan[None]:
    """Wake ``n`` idle loops now (stop); the wake-ups expire like the writers' do."""
    yield [Command(("RPUSH", keys.signal, *["stop"] * n)),
           Command(("PEXPIRE", keys.signal, 2_000))]


# -- stopping ---------------------------------------------------------------------------------


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


def next_retry_plan(keys: StoreKeys) -> Plan[int | None]:
    """Milliseconds until the first record in backoff is due (None: none in backoff)."""
    first, now = yield [Command(("ZRANGE", keys.retry, 0, 0, "WITHSCORES")), Command(("TIME",))]
    if isinstance(first, BaseException) or isinstance(now, BaseException) or not first:
        return None
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    return max(0, int(float(first[0][1])) - now_ms)


def leftovers_plan(engine: Engine, keys: StoreKeys) -> Plan[tuple[StoreStats, int | None]]:
    """What a stop left in the store: its stats, and the milliseconds until the first record in
    backoff is due (None: none, or Redis did not say)."""
    stats = yield from engine.run_one(stats_call(keys))
    try:
        next_retry = yield from next_retry_plan(keys)
    except Exception:
        next_retry = None
    return stats, next_retry


def stop_report(workers_left: int, control: LoopControl,
                leftovers: tuple[StoreStats, int | None] | None) -> StopReport:
    if leftovers is None:
        return StopReport(workers_left, control.unsettled, None, None, None, None)
    stats, next_retry_ms = leftovers
    return StopReport(workers_left, control.unsettled, stats.dirty, stats.retry, stats.claimed,
                      stats.dead, next_retry_ms)
