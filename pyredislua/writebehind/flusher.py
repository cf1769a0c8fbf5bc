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

from ..engine.protocol import Command, Engine, Plan, Sleep
from ..sinks.base import Sink, SinkUnavailableError
from .effects import Do, Flow, Redis, drive_async, drive_sync
from .ops import (
    MAX_BATCH,
    Claim,
    Record,
    StoreKeys,
    ack_call,
    claim_call,
    fail_call,
    release_call,
)

if TYPE_CHECKING:
    from .store import AsyncWriteBehind, WriteBehind

TIMER_GRAIN = 0.11  # BLPOP timeouts resolve on Redis' cron tick; shorter waits sleep locally


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
    max_attempts: int = 5  # failed sink writes before dead-lettering a record
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


def flush_claim_flow(engine: Engine, keys: StoreKeys, sink: Sink, claim: Claim,
                     config: FlushConfig, clock: Callable[[], float] = time.time
                     ) -> Flow[FlushEvent]:
    """Write one claimed batch to the sink, then ack / fail / release its records in one round
    trip."""
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
    results = (yield Redis(engine.run(calls))) if calls else []
    acked = changed = dead = n_failed = released = 0
    it = iter(results)
    if written:
        statuses = next(it)
        acked = sum(1 for s in statuses if s == 1)
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


def wait_plan(keys: StoreKeys, seconds: float, max_block: float) -> Plan[None]:
    """Wait for a writer's wake-up on the signal list, at most ``seconds``."""
    seconds = min(seconds, max_block)
    if seconds <= TIMER_GRAIN + 0.01:
        yield Sleep(max(seconds, 0.0))
        return
    [reply] = yield [Command(("BLPOP", keys.signal, round(seconds - TIMER_GRAIN, 3)))]
    if isinstance(reply, BaseException):
        raise reply


@dataclass
class LoopControl:
    """Shared between a running loop and whoever stops it."""

    stopping: bool = False
    idle: bool = False  # the last claim found nothing due


def flusher_flow(engine: Engine, keys: StoreKeys, sink: Sink, config: FlushConfig,
                 control: LoopControl, max_block: float,
                 emit: Callable[[FlushEvent], None],
                 on_error: Callable[[BaseException], None]) -> Flow[None]:
    """The background loop: flush on batch size or max delay, drain on stop."""
    lease_ms = ms(config.lease, "lease", allow_zero=False)
    max_delay_ms = ms(config.max_delay, "max_delay")
    while True:
        stopping = control.stopping
        try:
            claim: Claim = yield Redis(engine.run_one(claim_call(
                keys, config.batch_size, lease_ms,
                min_count=0 if stopping else config.batch_size,
                max_age_ms=0 if stopping else max_delay_ms)))
            if claim.records:
                control.idle = False
                event = yield from flush_claim_flow(engine, keys, sink, claim, config)
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
            if control.stopping:
                return
            yield Redis(_sleep(0.5))


def _sleep(seconds: float) -> Plan[None]:
    yield Sleep(seconds)


def drain_flow(engine: Engine, keys: StoreKeys, sink: Sink, config: FlushConfig,
               max_batches: int | None = None) -> Flow[list[FlushEvent]]:
    """Flush every due record now, batch after batch (no waiting for size or age)."""
    lease_ms = ms(config.lease, "lease", allow_zero=False)
    events: list[FlushEvent] = []
    while max_batches is None or len(events) < max_batches:
        claim: Claim = yield Redis(engine.run_one(claim_call(
            keys, config.batch_size, lease_ms)))
        if not claim.records:
            break
        event = yield from flush_claim_flow(engine, keys, sink, claim, config)
        events.append(event)
        if event.released:
            break
    return events


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


class Flusher(_FlusherBase):
    """A background thread flushing a :class:`WriteBehind` store into a sink.

    ``with store.flusher(SQLiteSink("app.db"), on_flush=print): ...`` — leaving the block (or
    ``stop()``) drains every due record before the threads end. ``workers``: loops running in
    parallel (each claims its own batches; the sink must take concurrent writes, as
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

    def stop(self, timeout: float | None = 30.0) -> None:
        """Drain due records and stop; returns when the threads ended (or ``timeout`` passed)."""
        self.control.stopping = True
        if not self._threads:
            return
        with contextlib.suppress(Exception):
            self.store.client.redis.rpush(self.store.keys.signal,
                                          *["stop"] * len(self._threads))
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

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

    async def stop(self, timeout: float | None = 30.0) -> None:
        self.control.stopping = True
        if not self._tasks:
            return
        with contextlib.suppress(Exception):
            await self.store.client.redis.rpush(self.store.keys.signal,
                                                *["stop"] * len(self._tasks))
        await asyncio.wait_for(asyncio.shield(asyncio.gather(*self._tasks)), timeout)

    async def __aenter__(self) -> AsyncFlusher:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
