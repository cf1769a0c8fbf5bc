"""The semaphore façade: one class, on a sync or an asyncio client, and the permits it hands out."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from ..client import AsyncClient, Client
from ..engine.protocol import Engine, Plan
from ..errors import PermitLostError, SemaphoreTimeoutError
from ..kit import ms
from ..lock.lease import Lease, LeaseHolder
from ..lock.plans import TRANSPORT_ERRORS
from ..lock.watchdog import TaskWatchdog, ThreadWatchdog
from .ops import (
    MAX_PERMITS,
    SemaphoreKeys,
    SemaphoreState,
    inspect_call,
    release_call,
    renew_call,
)
from .plans import acquire_plan

C = TypeVar("C", Client, AsyncClient)


class Permit(LeaseHolder):
    """``count`` permits of a semaphore held under one lease (``lease``), with its fencing token.

    ``valid_until`` (``time.monotonic()``) is a lower bound of when the server lets the lease go:
    it counts from the send time of the call that took or last renewed it. ``held`` turns false
    (``lost`` true) no later than that, or when a renewal found the lease gone."""

    def __init__(self, engine: Engine, keys: SemaphoreKeys, lease: str, count: int, fence: int,
                 since: float, ttl_ms: int, on_lost: Callable[[Any], None] | None) -> None:
        self.name = keys.name
        self.keys = keys
        self.lease = lease
        self.count = count
        self.fence = fence
        self.ttl_ms = ttl_ms
        self.on_lost = on_lost
        self.lost_reason: str | None = None
        self._engine = engine
        self._lease: Lease | None = Lease(ttl_ms, since + ttl_ms / 1000, None)
        self._watchdog: ThreadWatchdog | TaskWatchdog | None = None

    def _renew_plan(self, now: float, cap: float | None = None) -> Plan[float | None]:
        """One watchdog step (:mod:`pyredislua.lock.watchdog`): renew, or mark lost. Returns
        when to run next (None: stop). The reply is awaited until the lease ends by the local
        clock and no longer."""
        lease = self._lease
        if lease is None or self.lost_reason is not None:
            return None
        if now >= lease.valid_until:
            self._mark_lost("the lease ran out before it could be renewed")
            return None
        deadline = lease.valid_until if cap is None else min(lease.valid_until, cap)
        try:
            renewed = yield from self._engine.run_one(
                renew_call(self.keys, self.lease, self.ttl_ms), deadline=deadline)
        except TRANSPORT_ERRORS as error:  # retry until the lease runs out
            if time.monotonic() >= lease.valid_until:
                self._mark_lost(f"could not renew before the lease ran out: {error!r}")
                return None
            return min(time.monotonic() + lease.renew_every / 3, lease.valid_until)
        if not renewed:
            self._mark_lost("the lease ended before it could be renewed")
            return None
        lease.valid_until = now + self.ttl_ms / 1000
        return min(now + lease.renew_every, lease.valid_until)

    def _release_plan(self, permits: int) -> Plan[bool]:
        lease, self._lease = self._lease, None  # stops the watchdog before the lease is gone
        valid = lease is not None and self.lost_reason is None and \
            time.monotonic() < lease.valid_until
        reply = yield from self._engine.run_one(release_call(self.keys, self.lease, permits))
        if not reply.released and lease is not None:
            self._mark_lost("the lease ended before release" if not valid else
                            "the lease was gone at release")
        return reply.released

    def _renew_once_plan(self, ttl_ms: int) -> Plan[bool]:
        sent_at = time.monotonic()
        renewed = yield from self._engine.run_one(renew_call(self.keys, self.lease, ttl_ms))
        lease = self._lease
        if renewed and lease is not None and self.lost_reason is None:
            lease.ttl_ms = ttl_ms
            lease.valid_until = sent_at + ttl_ms / 1000
        elif not renewed and lease is not None:
            self._mark_lost("the lease ended before it could be renewed")
        return bool(renewed)

    def __repr__(self) -> str:
        return (f"<Permit {self.name!r} lease={self.lease} count={self.count} "
                f"fence={self.fence} held={self.held}>")


class Semaphore(Generic[C]):
    """A counting semaphore: ``permits`` permits shared by leases, with fair (first come, first
    served) waiting, fencing tokens and an auto-renewal watchdog, on a sync
    :class:`~pyredislua.Client` or an asyncio :class:`~pyredislua.AsyncClient`::

        sem = Semaphore(client, "gpus", permits=8, ttl=30)
        with sem.hold(2) as permit:                 # Client: values
            run(..., fence=permit.fence)
        async with sem.hold(2) as permit: ...       # AsyncClient: awaitables
        permit = sem.acquire(3, timeout=5); ...; sem.release(permit)

    Guarantee, and its limits
    -------------------------
    On a single Redis primary, the leases alive at any instant hold at most ``permits`` permits
    (as passed by the calls that took them: see below). Each lease ends ``ttl`` after it was
    taken or last renewed unless released, so the permits of a holder that dies come back when
    its lease ends. Every acquisition returns a **fencing token** (``permit.fence``) from a
    counter that never goes backwards; ``permit.valid_until`` is a lower bound of the lease.

    Waiting is not polling, and it is fair: a blocking acquire queues as a waiter (FIFO, by the
    server time it first queued) and blocks on a signal list (BLPOP). Whenever permits are freed
    (a release, or any call finding leases ended) they are granted to the waiters at the head of
    the queue, in order, as long as the next one's request fits: a request for k permits is
    never starved by a stream of smaller ones, and nobody takes permits while an earlier waiter
    still waits. A grant creates the waiter's lease at once and is pushed to the signal list;
    the waiter claims it with its next call (a waiter that pops another's grant forwards it to
    that waiter's own inbox list, which it blocks on too). A grant nobody claims (its waiter
    died) ends with its grant window (the waiter's registration, at least 250 ms) and its
    permits return.

    Not guaranteed: the same as the lock's (:class:`~pyredislua.Lock`): a holder paused past its
    lease runs beside the next holders (fence your writes); failover to a replica that missed
    the latest writes, restarts without persistence and eviction (run ``noeviction``) forget
    leases; leases expire on the server's clock. ``permits`` is passed by every call, not stored:
    each call decides with its own number, so callers that disagree get the limit of whichever
    call decides (a call with a smaller number takes nothing while more are held, one with a
    larger number may take more; leases already held are never revoked). Use one number.

    Options
    -------
    ttl: lease length in seconds. auto_renew: a watchdog renews every held permit's lease every
    ttl/3 (the lock's watchdog: a thread per sync client, a task per permit under asyncio).
    on_lost: called with the permit when its lease is lost while held. blocking_timeout: how
    long ``hold`` waits by default (None: forever).
    """

    def __init__(self, client: C, name: str, permits: int, *, ttl: float = 30.0,
                 auto_renew: bool = True, on_lost: Callable[[Any], None] | None = None,
                 blocking_timeout: float | None = None, prefix: str = "prl") -> None:
        if isinstance(permits, bool) or not isinstance(permits, int) or \
                not 1 <= permits <= MAX_PERMITS:
            raise ValueError(f"permits must be an integer in 1..{MAX_PERMITS}, got {permits!r}")
        self._client: C = client
        self.name = name
        self.keys = SemaphoreKeys(name, prefix)
        self.permits = permits
        self.ttl_ms = ms(ttl, "ttl")
        if self.ttl_ms > 86_400_000:
            raise ValueError("a lease ttl must be at most one day")
        self.auto_renew = auto_renew
        self.on_lost = on_lost
        self.blocking_timeout = blocking_timeout

    @property
    def client(self) -> C:
        return self._client

    def _check_count(self, count: int) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or \
                not 1 <= count <= self.permits:
            raise ValueError(f"count must be an integer in 1..{self.permits}, got {count!r}")

    def _acquire_plan(self, count: int, timeout: float | None, lease: str | None
                      ) -> Plan[Permit | None]:
        lease_id = lease or secrets.token_hex(12)
        client = self._client
        acquired = yield from acquire_plan(
            client.engine, self.keys, lease_id, self.permits, count, self.ttl_ms,
            timeout=timeout, max_block=client.max_block)
        if not acquired.reply.acquired:
            return None
        permit = Permit(client.engine, self.keys, lease_id, count, acquired.reply.fence,
                        acquired.since, self.ttl_ms, self.on_lost)
        if self.auto_renew:
            watchdog: ThreadWatchdog | TaskWatchdog = (
                TaskWatchdog(client, permit) if isinstance(client, AsyncClient)
                else ThreadWatchdog(client, permit))
            permit._watchdog = watchdog
            watchdog.start()
        return permit

    @overload
    def acquire(self: Semaphore[Client], count: int = 1, *, blocking: bool = True,
                timeout: float | None = None, lease: str | None = None) -> Permit | None: ...
    @overload
    def acquire(self: Semaphore[AsyncClient], count: int = 1, *, blocking: bool = True,
                timeout: float | None = None, lease: str | None = None
                ) -> Awaitable[Permit | None]: ...
    def acquire(self, count: int = 1, *, blocking: bool = True, timeout: float | None = None,
                lease: str | None = None) -> Permit | Awaitable[Permit | None] | None:
        """Take ``count`` permits: a :class:`Permit`, or None when not acquired within
        ``timeout`` seconds (None: wait forever; not blocking: one round trip). ``lease``: the
        lease id (default: random); no ``#``."""
        self._check_count(count)
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        return self._client.drive(self._acquire_plan(count, timeout if blocking else 0.0, lease))

    @overload
    def release(self: Semaphore[Client], permit: Permit) -> bool: ...
    @overload
    def release(self: Semaphore[AsyncClient], permit: Permit) -> Awaitable[bool]: ...
    def release(self, permit: Permit) -> bool | Awaitable[bool]:
        """Give the permits back (and let the server grant them to the head of the queue).
        False when the lease had already ended (or was released before). Renewal stops first;
        on an AsyncClient the release is shielded from cancellation."""
        plan = permit._release_plan(self.permits)
        watchdog = permit._watchdog
        if watchdog is None:
            return self._client.drive(plan)
        return watchdog.release(plan)

    @overload
    def renew(self: Semaphore[Client], permit: Permit, ttl: float | None = None) -> bool: ...
    @overload
    def renew(self: Semaphore[AsyncClient], permit: Permit, ttl: float | None = None
              ) -> Awaitable[bool]: ...
    def renew(self, permit: Permit, ttl: float | None = None) -> bool | Awaitable[bool]:
        """Extend the lease to ``ttl`` seconds (default: the semaphore's) from now; False when it
        had already ended (the permit is then lost)."""
        plan = permit._renew_once_plan(self.ttl_ms if ttl is None else ms(ttl, "ttl"))
        watchdog = permit._watchdog
        if watchdog is None:
            return self._client.drive(plan)
        return watchdog.exclusive(plan)

    @overload
    def inspect(self: Semaphore[Client]) -> SemaphoreState: ...
    @overload
    def inspect(self: Semaphore[AsyncClient]) -> Awaitable[SemaphoreState]: ...
    def inspect(self) -> SemaphoreState | Awaitable[SemaphoreState]:
        """Permits in use, waiters queued and the last fence (one read-only call); the permits
        free now are ``self.permits - state.in_use`` (a queued waiter may be owed them)."""
        return self._client.run(inspect_call(self.keys))

    def hold(self, count: int = 1, *, timeout: float | None = None) -> PermitHold[C]:
        """Context manager: acquire ``count`` permits (waiting up to ``timeout``, default
        ``blocking_timeout``) or raise :class:`~pyredislua.errors.SemaphoreTimeoutError`; release
        on exit; raise :class:`~pyredislua.errors.PermitLostError` on exit if the lease was lost
        meanwhile. ``with`` on a Client, ``async with`` on an AsyncClient."""
        self._check_count(count)
        return PermitHold[C](self, count, self.blocking_timeout if timeout is None else timeout)

    acquire_ctx = hold

    def __repr__(self) -> str:
        return f"<Semaphore {self.name!r} permits={self.permits}>"


class PermitHold(Generic[C]):
    """What :meth:`Semaphore.hold` returns."""

    def __init__(self, semaphore: Semaphore[C], count: int, timeout: float | None) -> None:
        self.semaphore: Semaphore[C] = semaphore
        self.count = count
        self.timeout = timeout
        self.permit: Permit | None = None

    def _take(self, permit: Permit | None) -> Permit:
        if permit is None:
            raise SemaphoreTimeoutError(
                f"semaphore {self.semaphore.name!r}: {self.count} permit(s) not acquired within "
                f"{self.timeout}s")
        self.permit = permit
        return permit

    def _lost(self, permit: Permit, exc_type: type[BaseException] | None) -> None:
        if permit.lost and exc_type is None:
            raise PermitLostError(f"semaphore {self.semaphore.name!r}: lease {permit.lease} was "
                                  f"lost while held: {permit.lost_reason}")

    def __enter__(self: PermitHold[Client]) -> Permit:
        semaphore = self.semaphore
        if isinstance(semaphore.client, AsyncClient):
            raise TypeError("a Semaphore on an AsyncClient is held with 'async with'")
        return self._take(semaphore.acquire(self.count, timeout=self.timeout))

    def __exit__(self: PermitHold[Client], exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        permit, self.permit = self.permit, None
        assert permit is not None
        self.semaphore.release(permit)
        self._lost(permit, exc_type)

    async def __aenter__(self: PermitHold[AsyncClient]) -> Permit:
        semaphore = self.semaphore
        if not isinstance(semaphore.client, AsyncClient):
            raise TypeError("a Semaphore on a sync Client is held with 'with'")
        return self._take(await semaphore.acquire(self.count, timeout=self.timeout))

    async def __aexit__(self: PermitHold[AsyncClient], exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        permit, self.permit = self.permit, None
        assert permit is not None
        await self.semaphore.release(permit)
        self._lost(permit, exc_type)
