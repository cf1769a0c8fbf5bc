"""The background flushers: thin drivers of the one flush loop (:func:`.core.flusher_plan`).

This is the write-behind twin that stays, on purpose: threads and tasks really differ in how
workers start, how a stop wakes and waits for them, and what can be done with a worker that
does not end in time (a thread cannot be killed; a task is cancelled). Everything else — the
loop, flushing a batch, settling it, waiting on the signal list, what a stop reports — is the
shared sans-IO core in :mod:`.core` and :class:`_FlusherBase`.

* :class:`Flusher`: ``workers`` threads, each driving the loop on a sync client;
* :class:`AsyncFlusher`: ``workers`` asyncio tasks on an asyncio client; a blocking sink's
  ``write`` runs in a worker thread, an ``async def write`` is awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ..client import AsyncClient, Client
from ..engine.protocol import Plan
from ..kit import within
from .core import (
    FlushConfig,
    FlusherTotals,
    FlushEvent,
    LoopControl,
    StopReport,
    flusher_plan,
    leftovers_plan,
    stop_report,
    wake_plan,
)
from .ops import StoreKeys, StoreStats
from .sinks.base import Sink

C = TypeVar("C", Client, AsyncClient)
C_co = TypeVar("C_co", Client, AsyncClient, covariant=True)


class Store(Protocol[C_co]):
    """What a flusher needs of its store (:class:`~pyredislua.writebehind.WriteBehind`)."""

    @property
    def client(self) -> C_co: ...
    @property
    def keys(self) -> StoreKeys: ...
    @property
    def config(self) -> FlushConfig: ...


class _FlusherBase(Generic[C]):
    """What both drivers share: callbacks, totals, the loop plan, the stop's bookkeeping."""

    def __init__(self, store: Store[C], sink: Sink, *,
                 on_flush: Callable[[FlushEvent], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 workers: int = 1) -> None:
        if not isinstance(workers, int) or not 1 <= workers <= 64:
            raise ValueError(f"workers must be 1..64, got {workers!r}")
        self.workers = workers
        self.store: Store[C] = store
        self.client: C = store.client
        self.keys = store.keys
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

    def _loop(self) -> Plan[None]:
        return flusher_plan(self.client.engine, self.keys, self.sink, self.config,
                            self.control, min(self.client.max_block, 1.0), self._emit,
                            self._error)

    def _leftovers(self) -> Plan[tuple[StoreStats, int | None]]:
        return leftovers_plan(self.client.engine, self.keys)

    def _stopping(self, timeout: float | None) -> None:
        self.control.deadline = None if timeout is None else time.monotonic() + timeout
        self.control.stopping = True

    def _remaining(self) -> float | None:
        """Time left before the stop's deadline, with a little grace for a last read."""
        deadline = self.control.deadline
        return None if deadline is None else max(0.2, deadline - time.monotonic())

    def _report(self, workers_left: int,
                leftovers: tuple[StoreStats, int | None] | None) -> StopReport:
        self.stop_report = stop_report(workers_left, self.control, leftovers)
        return self.stop_report


class Flusher(_FlusherBase[Client]):
    """Background threads flushing a :class:`~pyredislua.writebehind.WriteBehind` store of a
    sync client into a sink.

    ``with store.flusher(SQLiteSink("app.db"), on_flush=print): ...`` — leaving the block (or
    ``stop()``) drains every due record before the threads end; ``stop()`` returns a
    :class:`StopReport` (records in backoff, anything it could not settle in time).
    ``workers``: loops running in parallel (each claims its own batches; the sink must take
    concurrent writes, as
    :class:`~pyredislua.writebehind.sinks.postgres.PostgresSink` does with a connection per
    thread).
    """

    def __init__(self, store: Store[Client], sink: Sink, *,
                 on_flush: Callable[[FlushEvent], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 workers: int = 1) -> None:
        super().__init__(store, sink, on_flush=on_flush, on_error=on_error, workers=workers)
        self._threads: list[threading.Thread] = []

    def start(self) -> Flusher:
        if self._threads:
            raise RuntimeError("this flusher was already started")
        for i in range(self.workers):
            thread = threading.Thread(target=self.client.drive, args=(self._loop(),),
                                      name=f"pyredislua-flusher-{self.keys.name}-{i}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float | None = 30.0) -> StopReport:
        """Drain due records and stop; returns when the threads ended (or ``timeout`` passed)
        with a :class:`StopReport`: what is left in backoff, and anything not drained."""
        self._stopping(timeout)
        if not self._threads:
            return self._report(0, None)
        client = self.client

        def wake() -> None:  # on its own thread: a paused Redis must not hold stop() up
            with contextlib.suppress(Exception):
                client.drive(wake_plan(self.keys, len(self._threads)))

        threading.Thread(target=wake, daemon=True).start()
        deadline = self.control.deadline
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        left = sum(1 for t in self._threads if t.is_alive())
        found: list[tuple[StoreStats, int | None]] = []

        def read() -> None:  # what is left in the store, if Redis answers in time
            with contextlib.suppress(Exception):
                found.append(client.drive(self._leftovers()))

        if not left:
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            reader.join(self._remaining())
        return self._report(left, found[0] if found else None)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> Flusher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsyncFlusher(_FlusherBase[AsyncClient]):
    """Asyncio tasks flushing a :class:`~pyredislua.writebehind.WriteBehind` store of an
    asyncio client; see :class:`Flusher`. A blocking sink's ``write`` runs in a worker thread;
    an ``async def write`` is awaited."""

    def __init__(self, store: Store[AsyncClient], sink: Sink, *,
                 on_flush: Callable[[FlushEvent], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 workers: int = 1) -> None:
        super().__init__(store, sink, on_flush=on_flush, on_error=on_error, workers=workers)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> AsyncFlusher:
        if self._tasks:
            raise RuntimeError("this flusher was already started")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.client.drive(self._loop()))
                       for _ in range(self.workers)]
        return self

    async def stop(self, timeout: float | None = 30.0) -> StopReport:
        """See :meth:`Flusher.stop`; workers still running at the timeout are cancelled (a
        blocking sink write in its worker thread cannot be, and finishes on its own)."""
        self._stopping(timeout)
        if not self._tasks:
            return self._report(0, None)
        wake = asyncio.ensure_future(self.client.drive(wake_plan(self.keys, len(self._tasks))))
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        if not wake.done():
            wake.cancel()
        with contextlib.suppress(BaseException):
            await wake
        leftovers = None
        if not pending:  # what is left in the store, if Redis answers in time
            with contextlib.suppress(Exception):
                leftovers = await within(self.client.drive(self._leftovers()), self._remaining())
        return self._report(len(pending), leftovers)

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    async def __aenter__(self) -> AsyncFlusher:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
