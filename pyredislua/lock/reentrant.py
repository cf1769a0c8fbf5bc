"""A reentrant lock: the same owner may take it again, and must release as many times.

The server keeps one field per hold in the lock hash (``r:<request id>``), so the hold count is
exact under re-sent calls: an acquire re-sent after a lost reply names the same request id and is
recognised as the same hold (never a second one: no count of 2 for one hold, no lock that is
never released), and a release names the hold it ends, so a re-sent release ends nothing else.
Ownership is an explicit owner token, not a thread id: tasks, threads and processes that share an
owner token share the lock.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar, overload

from ..client import AsyncClient, Client
from ..engine.protocol import Call, Engine, Plan
from ..errors import LockNotOwnedError
from ..kit import ms
from .block import ClientHold
from .lease import Lease
from .ops import RELEASED_UNCONFIRMED, LockKeys
from .plans import (
    REPLY_GRACE,
    Tries,
    blocking_tries,
    lease_left,
    release_plan,
)

C = TypeVar("C", Client, AsyncClient)


class ReentrantKeys(LockKeys, keyset="rlock"):
    """The keys of one reentrant lock (``lua/keysets/rlock.keys``): ``prl:rlock:{name}:lock``,
    ``:fence``, ``:signal``, ``:waiters``; other keys than a :class:`~pyredislua.lock.Lock` of
    the same name."""

    lock: str
    fence: str
    signal: str
    waiters: str


class ReentrantResult(NamedTuple):
    acquired: bool
    fence: int | None
    holds: int  # the owner's holds after the call (0 when busy)
    pttl_ms: int  # when busy: until the holder's lease ends


def parse_reentrant_acquire(reply: Any) -> ReentrantResult:
    if int(reply[0]) == 1:
        return ReentrantResult(True, int(reply[1]), int(reply[2]), 0)
    return ReentrantResult(False, None, 0, int(reply[1]))


# release outcomes, besides RELEASED_UNCONFIRMED
REENTRANT_NOT_HELD = 0  # the owner does not hold the lock
REENTRANT_RELEASED = 1  # this hold ended
REENTRANT_ALREADY = 2  # this request holds nothing (a re-sent release), the owner still holds


class ReentrantRelease(NamedTuple):
    outcome: int  # 0, 1 or 2 (see above), or RELEASED_UNCONFIRMED
    holds: int  # the owner's holds left


def reentrant_acquire_call(keys: ReentrantKeys, owner: str, request: str, ttl_ms: int,
                           wait_ms: int | None = None) -> Call[ReentrantResult]:
    args: tuple[str | int, ...] = (owner, request, ttl_ms)
    if wait_ms is not None:
        args = (*args, wait_ms)
    return Call("lock.reentrant_acquire", keys.all, args, parse_reentrant_acquire)


def reentrant_release_call(keys: ReentrantKeys, owner: str, request: str
                           ) -> Call[ReentrantRelease]:
    return Call("lock.reentrant_release", keys.all, (owner, request),
                lambda reply: ReentrantRelease(int(reply[0]), int(reply[1])))


def reentrant_extend_call(keys: ReentrantKeys, owner: str, ttl_ms: int) -> Call[bool]:
    return Call("lock.reentrant_extend", (keys.lock,), (owner, ttl_ms),
                lambda reply: int(reply) == 1)


def new_request() -> str:
    return secrets.token_hex(8)


def reentrant_acquire_plan(
    engine: Engine,
    keys: ReentrantKeys,
    owner: str,
    request: str,
    ttl_ms: int,
    *,
    blocking: bool,
    timeout: float | None,
    max_block: float,
    clock: Callable[[], float] = time.monotonic,
) -> Plan[tuple[ReentrantResult, float]]:
    """Acquire (one hold, named ``request``; :func:`~.plans.blocking_tries`). The release that
    frees the lock pushes one wake-up when a waiter is registered; whoever tries first then takes
    the lock (not FIFO), and a waiter that was not woken tries again when the lease it saw runs
    out. Returns the result and the send time of the call that took it (before the lease began).
    The acquire is idempotent for its request id."""
    return (yield from blocking_tries(
        engine, _ReentrantTries(keys, owner, request, ttl_ms), blocking=blocking,
        timeout=timeout, max_block=max_block, clock=clock))


class _ReentrantTries(Tries[ReentrantResult, tuple[ReentrantResult, float]]):
    def __init__(self, keys: ReentrantKeys, owner: str, request: str, ttl_ms: int) -> None:
        self.keys, self.owner, self.request, self.ttl_ms = keys, owner, request, ttl_ms

    def call(self, wait_ms: int | None) -> Call[ReentrantResult]:
        return reentrant_acquire_call(self.keys, self.owner, self.request, self.ttl_ms, wait_ms)

    def settle(self, result: ReentrantResult, sent_at: float, waiting: bool,
               registered: tuple[float, float] | None
               ) -> Plan[tuple[ReentrantResult, float] | None]:
        if result.acquired or not waiting:
            return result, sent_at
        return None
        yield  # a plan: nothing to send

    def free_in(self, result: ReentrantResult) -> float:
        return lease_left(result.pttl_ms)

    def signals(self, result: ReentrantResult | None) -> tuple[str, ...]:
        return (self.keys.signal,)

    def timed_out(self, sent_at: float, registered: tuple[float, float] | None
                  ) -> Plan[tuple[ReentrantResult, float]]:
        return ReentrantResult(False, None, 0, 0), sent_at
        yield


class ReentrantLock(ClientHold[C]):
    """A reentrant lock with fencing tokens and a watchdog, owned by an explicit owner token::

        def transfer(client, owner):
            with ReentrantLock(client, "acct:7", owner=owner):      # holds: 1, fence 12
                audit(client, owner)
        def audit(client, owner):
            with ReentrantLock(client, "acct:7", owner=owner):      # holds: 2, fence 12
                ...
        lock = ReentrantLock(client, "acct:7", owner="job-42")
        lock.acquire(); lock.acquire(); lock.release(); lock.release()   # nested on one object

    Each ``acquire`` is one hold, named by a fresh request id; each ``release`` ends the most
    recent hold this object took. The lock is free once every hold of the owner (through any
    object, task, thread or process using that owner token) was released, or the lease ran out.

    Guarantee, and its limits
    -------------------------
    On a single Redis primary, at most one owner token holds the lock at a time, for the length
    of its lease. The first hold of an owner gets a **fencing token** from a counter that never
    goes backwards; nested holds return the same fence. The hold count is exact under retries:
    an acquire re-sent after a lost reply (the client retries connection errors until the
    timeout) is recognised by its request id and counted once, a re-sent release ends nothing
    more (the failure Redisson's per-owner counter has: a count of 2 for one hold, and a lock
    never released). Nested acquires and renewals never shorten the lease (``PEXPIRE GT``): a
    holder's ``valid_until`` stays a lower bound whatever the other holders of the owner do.

    What it does not guarantee: everything :class:`~pyredislua.lock.Lock` says about leases,
    failover, eviction and clock jumps holds here too. Ownership is the owner token: two tasks
    given the same token share the lock (that is what reentrancy means); give every independent
    owner its own token. Waiting is not FIFO: the release that frees the lock pushes one wake-up
    to the signal list when a waiter is registered, and whoever tries first (a woken waiter, or a
    newcomer) takes the lock; a waiter that was not woken tries again when the lease it saw ends.
    A hold that is never released keeps the lock until its lease ends (with ``auto_renew``,
    renewed until the process ends or ``max_hold`` is reached): release every hold. At most
    1000 holds per owner at once.
    """

    def __init__(
        self,
        client: C,
        name: str,
        *,
        owner: str | None = None,
        ttl: float = 30.0,
        auto_renew: bool = True,
        max_hold: float | None = None,
        on_lost: Callable[[Any], None] | None = None,
        blocking_timeout: float | None = None,
        prefix: str = "prl",
    ) -> None:
        super().__init__(client.engine, name, ttl=ttl, auto_renew=auto_renew, max_hold=max_hold,
                         on_lost=on_lost, blocking_timeout=blocking_timeout, token=owner,
                         prefix=prefix, requeue=False)
        self.rkeys = ReentrantKeys(name, prefix)
        self.keys = self.rkeys
        self.holds = 0  # the owner's holds on the server, as the last reply said
        self._requests: list[str] = []  # this object's holds, most recent last
        self._bind(client)

    @property
    def owner(self) -> str:
        return self.token

    _what = "a ReentrantLock"

    @property
    def depth(self) -> int:
        """How many holds this object has (its acquires not yet released)."""
        return len(self._requests)

    def _extend_call(self, ttl_ms: int) -> Call[bool]:
        return reentrant_extend_call(self.rkeys, self.token, ttl_ms)

    def _plan(self, blocking: bool, timeout: float | None, max_block: float) -> Plan[bool]:
        request = new_request()
        result, since = yield from reentrant_acquire_plan(
            self._engine, self.rkeys, self.token, request, self._first_ttl_ms, blocking=blocking,
            timeout=timeout, max_block=max_block)
        if not result.acquired:
            return False
        if result.holds == 1:
            self._requests.clear()  # the owner's only hold: any other this object kept is over
        self._requests.append(request)
        self.holds = result.holds
        self.fence = result.fence
        lease = self._lease
        ends = since + self._first_ttl_ms / 1000
        if lease is not None and self.lost_reason is None and len(self._requests) > 1:
            lease.valid_until = max(lease.valid_until, ends)  # the lease was never shortened
            return True
        self.lost_reason = None
        cap = None if self.max_hold is None else since + self.max_hold
        self._lease = Lease(self.ttl_ms, ends, cap)
        self._on_acquired()
        return True

    def _release_one_plan(self) -> Plan[None]:
        if not self._requests:
            raise LockNotOwnedError(f"reentrant lock {self.name!r}: this object holds nothing")
        request = self._requests.pop()
        lease = self._lease
        last = not self._requests
        if last:
            self._lease = None  # stops the watchdog before the lock may be gone
        now = time.monotonic()
        valid = lease is not None and self.lost_reason is None and now < lease.valid_until
        give_up_at = max(lease.valid_until if lease is not None else now, now + REPLY_GRACE)
        call = reentrant_release_call(self.rkeys, self.token, request)
        outcome = yield from release_plan(self._engine, _outcome_only(call, self), give_up_at)
        if outcome == RELEASED_UNCONFIRMED and valid:
            return
        if outcome in (REENTRANT_NOT_HELD, RELEASED_UNCONFIRMED):
            self._lease = None
            self._requests.clear()
            if lease is not None:
                self._mark_lost("the lease expired before release")
            raise LockNotOwnedError(f"reentrant lock {self.name!r} is not held by this owner")

    @overload
    def acquire(self: ReentrantLock[Client], blocking: bool = True,
                timeout: float | None = None) -> bool: ...
    @overload
    def acquire(self: ReentrantLock[AsyncClient], blocking: bool = True,
                timeout: float | None = None) -> Awaitable[bool]: ...
    def acquire(self, blocking: bool = True, timeout: float | None = None
                ) -> bool | Awaitable[bool]:
        """Take one hold (the first of the owner takes the lock and a new fence, a nested one
        the same fence); ``timeout`` in seconds (None: wait forever)."""
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        return self._client.drive(self._plan(blocking, timeout, self._client.max_block))

    @overload
    def release(self: ReentrantLock[Client]) -> None: ...
    @overload
    def release(self: ReentrantLock[AsyncClient]) -> Awaitable[None]: ...
    def release(self) -> Awaitable[None] | None:
        """End this object's most recent hold; the owner's last hold frees the lock. Raises
        LockNotOwnedError if the owner no longer holds it (lease expired)."""
        plan = self._release_one_plan()
        if len(self._requests) <= 1:
            return self._watchdog.release(plan)  # renewal stops; shielded on asyncio
        # a nested hold: renewal goes on for the others; on asyncio shielded from cancellation
        if isinstance(self._client, AsyncClient):
            return _shielded(self._client.drive(plan))
        return self._watchdog.exclusive(plan)

    @overload
    def extend(self: ReentrantLock[Client], ttl: float | None = None) -> None: ...
    @overload
    def extend(self: ReentrantLock[AsyncClient], ttl: float | None = None
               ) -> Awaitable[None]: ...
    def extend(self, ttl: float | None = None) -> Awaitable[None] | None:
        """Make the lease last at least ``ttl`` seconds (default: the lock's ttl) from now."""
        ttl_ms = self.ttl_ms if ttl is None else ms(ttl)
        return self._watchdog.exclusive(self._extend_plan(ttl_ms))

    def __repr__(self) -> str:
        return (f"<ReentrantLock {self.name!r} owner={self.token!r} fence={self.fence} "
                f"depth={self.depth} held={self.held}>")


async def _shielded(release: Awaitable[None]) -> None:
    await asyncio.shield(release)


def _outcome_only(call: Call[ReentrantRelease], lock: ReentrantLock[Any]) -> Call[int]:
    """The release call with its reply read as the outcome (``holds`` noted on the lock)."""

    def parse(reply: Any) -> int:
        result = call.parse(reply)
        lock.holds = result.holds
        return result.outcome

    return Call(call.op, call.keys, call.args, parse)
