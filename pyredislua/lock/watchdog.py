"""The lock's watchdog: renewing held leases in the background. The one place where the lock is
written twice, because threads and asyncio tasks really differ here; both drivers are thin and
run the same sans-IO renewal step (:meth:`Hold._renew_plan <.hold.Hold._renew_plan>`).

* :class:`ThreadWatchdog` (a :class:`~pyredislua.Client`): one daemon thread per client renews
  every held lock of that client, earliest first. A renewal and a release or extend of the same
  lock must not interleave (a renewal after release would report a spurious lost lease), so the
  thread and the caller serialise on a per-lock mutex.
* :class:`TaskWatchdog` (an :class:`~pyredislua.AsyncClient`): one task per held lock. Tasks
  cannot block each other on a mutex without stalling the loop; instead release cancels the task
  first, and is shielded from cancellation, so a cancelled caller never leaves the lock held
  until it expires.

Each also says how a release and an extend run against its renewals (``exclusive``,
``release``): that is the only other difference between a sync and an asyncio lock.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import heapq
import itertools
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from .lease import Lease

T = TypeVar("T")


class SyncDriver(Protocol):
    """What runs a lock's plans on the caller's thread: a :class:`~pyredislua.Client`, or
    Redlock's driver over several."""

    def drive(self, plan: Generator[Any, Any, T]) -> T: ...


class AsyncDriver(Protocol):
    """The same on asyncio: an :class:`~pyredislua.AsyncClient`, or Redlock's driver."""

    def drive(self, plan: Generator[Any, Any, T]) -> Awaitable[T]: ...


class Renewable(Protocol):
    """What a watchdog needs of a hold: a :class:`~.hold.Hold`, a Redlock's, or a semaphore's
    :class:`~pyredislua.semaphore.Permit`."""

    ttl_ms: int
    lost_reason: str | None
    _lease: Lease | None

    def _mark_lost(self, reason: str) -> None: ...

    def _renew_plan(self, now: float, cap: float | None = None
                    ) -> Generator[Any, Any, float | None]: ...


class Carrier(Protocol):
    """What a carry timer needs of a lock that may carry (a :class:`~.hold.Hold`)."""

    _carried: float | None  # until when a carry is this lock's to take (None: no carry)

    def _pass_on_plan(self, now: float) -> Generator[Any, Any, float | None]: ...


class ThreadWatchdog:
    """Renews one lock held through a sync client, from the client's renewer thread."""

    __slots__ = ("_carry", "_client", "_hold", "_mutex", "_scheduled")

    def __init__(self, client: SyncDriver, hold: Renewable) -> None:
        self._client = client
        self._hold = hold
        # Serialises the lock's calls with its renewals: a renewal never runs after release.
        self._mutex = threading.Lock()
        self._scheduled = False
        self._carry: _CarryTimer | None = None

    def carry(self, hold: Carrier, until: float) -> None:
        """A release carried the lock: pass it on at ``until`` unless acquired again by then
        (one timer entry per lock at a time: a later carry moves it on, no thread wake-up per
        release), or when the interpreter exits first."""
        if self._carry is None:
            self._carry = _CarryTimer(self._client, hold)
            _carried_at_exit.add(self._carry)  # for the life of the lock: due() checks
        _renewer_for(self._client).schedule(self._carry, until)

    def due(self, cap: float | None) -> float | None:
        """The renewer's turn for this lock: renew it, if still held."""
        hold = self._hold
        if hold._lease is None or hold.lost_reason is not None:
            return None
        try:
            return self.renew(cap)
        except Exception as error:
            hold._mark_lost(f"renewal failed: {error!r}")
            return None

    def lease_end(self) -> float | None:
        lease = self._hold._lease
        return None if lease is None else lease.valid_until

    def start(self) -> None:
        """A hold began: renew it a third of a lease from now."""
        _renewer_for(self._client).schedule(self, time.monotonic() + self._hold.ttl_ms / 3000)

    def exclusive(self, plan: Generator[Any, Any, T]) -> T:
        """Run a plan of the lock (extend) with no renewal of it under way."""
        with self._mutex:
            return self._client.drive(plan)

    # the release plan drops the lease first, so no renewal follows it
    release = exclusive

    def renew(self, cap: float | None) -> float | None:
        """One renewal step; when to run the next (None: stop)."""
        with self._mutex:
            return self._client.drive(self._hold._renew_plan(time.monotonic(), cap))


class _CarryTimer:
    """Passes on a lock carried for its releaser's next acquire that did not come (renewer
    thread, or at exit)."""

    __slots__ = ("__weakref__", "_client", "_hold", "_scheduled")

    def __init__(self, client: SyncDriver, hold: Carrier) -> None:
        self._client, self._hold, self._scheduled = client, hold, False

    def due(self, cap: float | None, now: float | None = None) -> float | None:
        if self._hold._carried is None:
            return None  # acquired again (or passed on)
        try:
            return self._client.drive(self._hold._pass_on_plan(
                time.monotonic() if now is None else now))
        except Exception:  # the carry's own lease ends it on the server
            return None

    def lease_end(self) -> float | None:
        return None


# Carries not yet passed on when the interpreter exits are passed on then (a loop's last
# release need not hold its waiters up until the carry's lease ends).
_carried_at_exit: weakref.WeakSet[_CarryTimer] = weakref.WeakSet()


@atexit.register
def _pass_on_at_exit() -> None:
    for timer in list(_carried_at_exit):
        timer.due(None, math.inf)


class _Timed(Protocol):
    """An entry of the renewer's queue."""

    _scheduled: bool

    def due(self, cap: float | None) -> float | None: ...

    def lease_end(self) -> float | None: ...


# A renewer thread with no lock to renew ends after this many seconds (the next hold starts one).
IDLE_END = 5.0


class _Renewer:
    """One watchdog thread per client renews every held lock of that client.

    A lock has at most one entry in the queue; an entry that outlived its lease (the lock was
    released and taken again) only renews early, which is harmless. A renewal waits for its
    reply no longer than until the first lease in the queue runs out, so a hanging call never
    delays another lock's lost-lease report.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Timed]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._running = False  # a thread serves the queue; it ends after IDLE_END with none

    def schedule(self, watch: _Timed, when: float) -> None:
        with self._cond:
            if watch._scheduled:
                return
            watch._scheduled = True
            heapq.heappush(self._heap, (when, next(self._seq), watch))
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="pyredislua-renewer", daemon=True).start()
            elif self._heap[0][2] is watch:
                self._cond.notify()

    def _earliest_end(self) -> float | None:
        ends = [end for _, _, w in self._heap if (end := w.lease_end()) is not None]
        return min(ends) if ends else None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    if not self._heap:
                        # nothing held: end the thread rather than keep one per client forever
                        if not self._cond.wait(IDLE_END) and not self._heap:
                            self._running = False
                            return
                        continue
                    self._cond.wait(self._heap[0][0] - time.monotonic())
                _, _, watch = heapq.heappop(self._heap)
                watch._scheduled = False
                cap = self._earliest_end()
            nxt = watch.due(cap)
            if nxt is not None:
                self.schedule(watch, nxt)


_renewers_guard = threading.Lock()


def _renewer_for(client: SyncDriver) -> _Renewer:
    with _renewers_guard:
        renewer: _Renewer | None = getattr(client, "_renewer", None)
        if renewer is None:
            renewer = _Renewer()
            client._renewer = renewer  # type: ignore[attr-defined]
        return renewer


class TaskWatchdog:
    """Renews one lock held through an asyncio client, from a task of its own."""

    __slots__ = ("_carry", "_client", "_hold", "_passing", "_task")

    def __init__(self, client: AsyncDriver, hold: Renewable) -> None:
        self._client = client
        self._hold = hold
        self._task: asyncio.Task[None] | None = None
        self._carry: asyncio.TimerHandle | None = None
        self._passing: asyncio.Task[Any] | None = None

    def carry(self, hold: Carrier, until: float) -> None:
        """A release carried the lock: pass it on at ``until`` unless acquired again by then
        (a timer on the loop, no task per release)."""
        if self._carry is not None:
            self._carry.cancel()
        loop = asyncio.get_running_loop()
        self._carry = loop.call_later(max(0.0, until - time.monotonic()), self._pass_on, hold)

    def _pass_on(self, hold: Carrier) -> None:
        self._carry = None
        if hold._carried is None:
            return  # acquired again
        plan = hold._pass_on_plan(time.monotonic())
        self._passing = asyncio.ensure_future(self._quietly(plan))

    async def _quietly(self, plan: Generator[Any, Any, float | None]) -> None:
        with contextlib.suppress(Exception):  # the carry's own lease ends it on the server
            await self._client.drive(plan)

    def start(self) -> None:
        """A hold began: start the renewal task (one per lock; it ends with the hold)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        hold = self._hold
        me = asyncio.current_task()
        nxt: float | None = time.monotonic() + hold.ttl_ms / 3000
        # A task no longer this lock's own (release took it) ends even if its cancellation was
        # lost in a library's timeout helper: it must never renew a lock being released.
        while nxt is not None and self._task is me:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            if self._task is not me:
                return
            try:
                nxt = await self._client.drive(hold._renew_plan(time.monotonic()))
            except Exception as error:
                hold._mark_lost(f"renewal failed: {error!r}")
                return

    def exclusive(self, plan: Generator[Any, Any, T]) -> Awaitable[T]:
        """Run a plan of the lock (extend); a renewal may run beside it on the loop."""
        return self._client.drive(plan)

    def release(self, plan: Generator[Any, Any, T]) -> Awaitable[T]:
        """Run the release plan after stopping the renewal task, shielded from cancellation."""
        return self._shielded(plan)

    async def _shielded(self, plan: Generator[Any, Any, T]) -> T:
        return await asyncio.shield(self._stop_then(plan))

    async def _stop_then(self, plan: Generator[Any, Any, T]) -> T:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return await self._client.drive(plan)
