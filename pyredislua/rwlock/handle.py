"""One holder of a read-write lock: a read share or the write lock, on a sync or an asyncio
client. It is a :class:`~pyredislua.lock.hold.Hold` (the lock's sans-IO bookkeeping: the local
lease, lost leases, renewal) over the read-write lock's operations, renewed by the lock's
watchdogs."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from ..client import AsyncClient, Client
from ..engine.protocol import Call, Plan
from ..errors import LockNotOwnedError
from ..kit import ms
from ..lock.block import ClientHold
from ..lock.ops import RELEASED_UNCONFIRMED, parse_acquire
from ..lock.plans import REPLY_GRACE, Acquired, release_plan
from .ops import (
    HANDOFF_MS,
    Mode,
    RWLockKeys,
    acquire_call,
    acquire_plan,
    extend_call,
    release_call,
)

C = TypeVar("C", Client, AsyncClient)


class RWHandle(ClientHold[C]):
    """A read share (``mode="read"``) or the write lock (``mode="write"``) of one
    :class:`~pyredislua.rwlock.RWLock`, made by its ``read()`` / ``write()``::

        with rw.read() as share: ...                # Client
        async with rw.write() as w: use(w.fence)    # AsyncClient

    ``fence``: a writer's fencing token (a counter shared by the lock's writers, strictly
    increasing); for a reader, the fence of the last writer granted before it (no token of its
    own: readers change nothing a fence would protect). ``held``, ``lost``, ``valid_until`` and
    ``on_lost`` work as on a :class:`~pyredislua.lock.Lock`; so do ``acquire``, ``release``,
    ``extend`` and the watchdog (``auto_renew``, ``max_hold``). A handle's token belongs to the
    handle object, not to a thread or task; one handle holds at most once at a time.
    """

    def __init__(self, client: C, name: str, mode: Mode, *, ttl: float = 30.0,
                 auto_renew: bool = True, max_hold: float | None = None,
                 on_lost: Callable[[Any], None] | None = None,
                 blocking_timeout: float | None = None, token: str | None = None,
                 prefix: str = "prl", handoff: float = HANDOFF_MS / 1000) -> None:
        if mode not in ("read", "write"):
            raise ValueError(f"mode must be 'read' or 'write', got {mode!r}")
        super().__init__(client.engine, name, ttl=ttl, auto_renew=auto_renew, max_hold=max_hold,
                         on_lost=on_lost, blocking_timeout=blocking_timeout, token=token,
                         prefix=prefix, handoff=handoff)
        self.mode: Mode = mode
        self.rw_keys = RWLockKeys(name, prefix)
        self._bind(client)

    _what = "an RWLock"

    # -- the plans (Hold's, over the read-write lock's operations) --------------------------------

    def _extend_call(self, ttl_ms: int) -> Call[bool]:
        return extend_call(self.rw_keys, self._hold_token, self.mode, ttl_ms)

    def _try_call(self) -> Call[bool]:
        token = self.token
        call = acquire_call(self.rw_keys, token, self.mode, self._first_ttl_ms, None,
                            self.handoff_ms)
        sent_at = time.monotonic()

        def settle(reply: Any) -> bool:
            return self._settle(Acquired(parse_acquire(reply), sent_at, None), token)

        return Call(call.op, call.keys, call.args, settle)

    def _acquire_plan(self, timeout: float | None, max_block: float) -> Plan[bool]:
        token = self.token
        acquired = yield from acquire_plan(self._engine, self.rw_keys, token, self.mode,
                                           self._first_ttl_ms, timeout=timeout,
                                           max_block=max_block, handoff_ms=self.handoff_ms)
        return self._settle(acquired, token)

    def _release_plan(self) -> Plan[None]:
        lease, self._lease = self._lease, None  # stops the watchdog before the hold is gone
        now = time.monotonic()
        valid = lease is not None and self.lost_reason is None and now < lease.valid_until
        call = release_call(self.rw_keys, self._hold_token, self.mode, self.handoff_ms)
        give_up_at = max(lease.valid_until if lease is not None else now, now + REPLY_GRACE)
        released = yield from release_plan(self._engine, call, give_up_at)
        if released == RELEASED_UNCONFIRMED and valid:
            return  # released (or expired) after the work was done inside the lease
        if released in (0, RELEASED_UNCONFIRMED):
            if lease is not None:
                self._mark_lost("the lease expired before release")
            raise LockNotOwnedError(
                f"rwlock {self.name!r} is not held by this {self.mode} handle")

    # -- the façade -------------------------------------------------------------------------------

    @overload
    def acquire(self: RWHandle[Client], blocking: bool = True, timeout: float | None = None
                ) -> bool: ...
    @overload
    def acquire(self: RWHandle[AsyncClient], blocking: bool = True,
                timeout: float | None = None) -> Awaitable[bool]: ...
    def acquire(self, blocking: bool = True, timeout: float | None = None
                ) -> bool | Awaitable[bool]:
        """Acquire (in arrival order behind the waiters already queued); ``timeout`` in seconds
        (None: wait forever). Not blocking: one round trip, acquired only if nobody waits ahead
        and the lock is compatible. Acquiring again while holding renews the same hold."""
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        if not blocking:
            return self._client.run(self._try_call())
        return self._client.drive(self._acquire_plan(timeout, self._client.max_block))

    @overload
    def release(self: RWHandle[Client]) -> None: ...
    @overload
    def release(self: RWHandle[AsyncClient]) -> Awaitable[None]: ...
    def release(self) -> Awaitable[None] | None:
        """Release; raises LockNotOwnedError if this handle no longer holds (and marks the hold
        lost when it was held). Waiters at the head of the queue are granted the lock in the
        same call. Renewal stops first; on an AsyncClient the release is shielded from
        cancellation."""
        return self._watchdog.release(self._release_plan())

    @overload
    def extend(self: RWHandle[Client], ttl: float | None = None) -> None: ...
    @overload
    def extend(self: RWHandle[AsyncClient], ttl: float | None = None) -> Awaitable[None]: ...
    def extend(self, ttl: float | None = None) -> Awaitable[None] | None:
        """Renew the lease to ``ttl`` seconds (default: the handle's ttl) from now. Raises
        LockNotOwnedError if no longer held, LockLostError if the local lease ran out first."""
        ttl_ms = self.ttl_ms if ttl is None else ms(ttl)
        return self._watchdog.exclusive(self._extend_plan(ttl_ms))

    def __repr__(self) -> str:
        return (f"<RWHandle {self.name!r} {self.mode} fence={self.fence} held={self.held}>")
