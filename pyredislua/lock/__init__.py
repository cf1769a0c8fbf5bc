"""A distributed lock with fencing tokens, fair hand-off and an auto-renewal watchdog.

Guarantee, and its limits
-------------------------
On a single Redis primary, at most one owner token holds the lock at a time, for the length of its
lease. What a holder believes is a lower bound of that lease: ``lock.valid_until`` is counted from
a local time provably before the lease began, so ``held`` turns false (and ``lost`` true) no
later than Redis lets the lease go, whether or not a call is pending. Every acquisition returns a
**fencing token** (``lock.fence``) from a counter that never goes backwards, not on release, not
on expiry (``fences="durable"``, the default); ``fences="ephemeral"`` lets the counter expire
when the lock is not used for a long while (see :class:`Lock`).

What the lock does **not** guarantee:

* **A lease is time-bound.** A holder that stalls (GC pause, swapped process, network partition)
  past its lease can resume and act as if it still held the lock while another holder runs. The
  lock tells it (``held``, ``lost``, ``on_lost``, :class:`~pyredislua.errors.LockLostError` on
  leaving ``with``) but cannot stop a write under way. That is what fences are for: pass
  ``lock.fence`` with every write to the protected resource and have it reject a fence lower
  than the highest it has seen.
* **Failover, restarts without persistence.** Redis replicates asynchronously. If the primary
  fails after granting a lock and before a replica received it, the promoted replica does not
  know the lock is held and grants it again (and its fence counter may be behind); a restart
  without persistence forgets both too. ``WAIT`` narrows this window, it does not close it.
* **Eviction.** Run Redis with ``maxmemory-policy noeviction``: an LRU policy may silently delete a
  held lock or the fence counter.
* **Clock jumps.** Leases expire on the server's wall clock; holders count on their monotonic
  clock. The lower bound assumes both run at the same rate.

Waiting is not polling: a blocking acquire registers as a waiter and blocks on a signal list
(BLPOP). A release that finds a live waiter grants the lock directly to the longest-blocked one
(first come, first served: the releaser cannot barge back in) by pushing it a grant, which is the
new owner token and carries the next fence and a lease no longer than any registered waiter asked
for, so the waiter holds the lock without another round trip and a crashed holder delays waiters
by its own TTL at most. The grant expires with its lock. A grant nobody popped (its waiter was
between calls, or died) is taken over by the next waiter that registers, or by anyone after
``handoff``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import redis

from ..engine.keysets import KeySet
from ..engine.protocol import (
    Call,
    Command,
    Engine,
    NotSentError,
    NotSentTimeoutError,
    Plan,
    Sleep,
)
from ..errors import LockError, LockLostError, LockNotOwnedError
from ..kit import TIMER_GRAIN, as_text, ms

if TYPE_CHECKING:
    from ..client import AsyncClient, Client

# A waiter's registration outlives its BLPOP by this much, covering the round trip back: a
# waiter blocks only while it is surely registered.
REGISTRATION_SLACK_MS = 250


# After a release that granted the lock to a waiter, the releaser stays registered this long, so
# an acquire soon after goes straight to waiting (one round trip fewer per contended hold).
REQUEUE_MS = 1000


def registration_ms(max_block: float) -> int:
    """How long a waiting acquire registers for: its longest BLPOP plus the slack. Every such
    registration of a client lasts the same, so the order in which they end is the order in
    which they were made, which is the order in which BLPOP serves the waiters: the registration
    a grant consumes (the one that ends first) is normally its popper's. When it is not (a
    requeue registration is shorter, a reply overtook another), the popper's release names its
    waiter token and the server puts the consumed registration back."""
    return math.ceil(max_block * 1000) + REGISTRATION_SLACK_MS

# A call made this close to a blocking acquire's deadline (the final try is sent at the deadline)
# has this long for its reply; any other call's reply is awaited until the deadline and no longer.
REPLY_GRACE = 0.25
# A BLPOP ends by itself (its timeout, resolved on Redis' cron tick); a reply later than this
# past its timeout means the server is not answering: the connection is dropped, the wait redone.
BLPOP_GRACE = 1.0
# Connection errors inside a blocking acquire, release or renewal are retried with this backoff.
RETRY_FIRST, RETRY_MAX = 0.01, 0.25
# "ephemeral" fences: the counter expires this many leases (at least EPHEMERAL_FENCE_MIN_MS)
# after the last acquire or grant.
EPHEMERAL_FENCE_LEASES = 100
EPHEMERAL_FENCE_MIN_MS = 3_600_000

TRANSPORT_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
NOT_SENT_ERRORS = (NotSentError, NotSentTimeoutError)

FenceDurability = Literal["durable", "ephemeral"]


class LockTimeoutError(LockError, TimeoutError):
    """A blocking acquire did not get the lock within its timeout."""


def fence_ttl_ms(fences: FenceDurability, ttl_ms: int) -> int:
    """The fence counter's TTL for a durability: 0 (never expires) for ``durable``."""
    if fences == "durable":
        return 0
    if fences == "ephemeral":
        return max(EPHEMERAL_FENCE_LEASES * ttl_ms, EPHEMERAL_FENCE_MIN_MS)
    raise ValueError(f"fences must be 'durable' or 'ephemeral', got {fences!r}")


class AcquireResult(NamedTuple):
    acquired: bool
    fence: int | None
    pttl_ms: int  # lease length when acquired; time until the lock frees up when busy
    token: str | None = None  # the owner token of the hold: the caller's, or a popped grant


GRANT_PREFIX = "grant:"


def parse_grant(grant: str) -> AcquireResult:
    """A grant popped from the signal list: ``grant:<fence>:<lease ms>`` is the owner token."""
    _, fence, lease = grant.split(":")
    return AcquireResult(True, int(fence), int(lease), grant)


@dataclass(frozen=True)
class LockState:
    held: bool
    owner: str | None
    pttl_ms: int
    fence: int
    waiters: int


def _parse_acquire(reply: Any) -> AcquireResult:
    if int(reply[0]) == 1:
        return AcquireResult(True, int(reply[1]), int(reply[2]))
    return AcquireResult(False, None, int(reply[1]))


def _parse_state(reply: Any) -> LockState:
    owner = None if reply[1] is None else as_text(reply[1])
    return LockState(bool(int(reply[0])), owner, int(reply[2]), int(reply[3]), int(reply[4]))


class LockKeys(KeySet, keyset="lock"):
    """The keys of one lock (``lua/keysets/lock.keys``), all under one hash tag."""

    lock: str
    fence: str
    signal: str
    waiters: str


# -- call specs: one per Lua operation ---------------------------------------------------------


def acquire_call(keys: LockKeys, token: str, ttl_ms: int, wait_ms: int | None = None,
                 fence_ttl_ms: int = 0) -> Call[AcquireResult]:
    """``wait_ms``: None (not a waiter), > 0 (register for that long when busy), 0 (end a
    registration); ``fence_ttl_ms``: 0 durable fences, else the counter's TTL."""
    args: tuple[str | int, ...] = (token, ttl_ms)
    if wait_ms is not None or fence_ttl_ms:
        args = (token, ttl_ms, -1 if wait_ms is None else wait_ms)
        if fence_ttl_ms:
            args = (*args, fence_ttl_ms)
    return Call("lock.acquire", (keys.lock, keys.fence, keys.signal, keys.waiters), args,
                _parse_acquire)


def extend_call(keys: LockKeys, token: str, ttl_ms: int) -> Call[bool]:
    return Call("lock.extend", (keys.lock,), (token, ttl_ms), lambda r: int(r) == 1)


RELEASED_FREE = 1
RELEASED_GRANTED = 2  # released, and granted straight to a registered waiter
RELEASED_UNCONFIRMED = -1  # the reply was lost and a re-send found the lock no longer ours


def release_call(keys: LockKeys, token: str, ttl_ms: int = 30_000, handoff_ms: int = 100,
                 waiter: str = "", requeue_ms: int = 0) -> Call[int]:
    """Reply: 0 not held by ``token``, 1 released, 2 released and granted to a waiter.

    ``ttl_ms``: the releaser's lease (of a grant to waiters that declared none, and of its own
    requeue registration); ``waiter``: the token to register with ``requeue_ms`` when the lock
    goes to someone else (default: ``token``)."""
    args: tuple[str | int, ...] = (token, ttl_ms, handoff_ms, waiter, requeue_ms)
    if not requeue_ms:
        args = args[:4] if waiter else args[:3] if handoff_ms != 100 else args[:2]
    return Call("lock.release", (keys.lock, keys.fence, keys.signal, keys.waiters), args, int)


def inspect_call(keys: LockKeys) -> Call[LockState]:
    return Call("lock.inspect", (keys.lock, keys.fence, keys.waiters), (), _parse_state)


# -- plans: the lock's logic, written once for sync and asyncio --------------------------------


class Acquired(NamedTuple):
    """What a blocking acquire ended with."""

    result: AcquireResult
    since: float  # local time before the lease began: the lease ends no earlier than since + it
    registered: tuple[float, float] | None  # (since, until): still a registered waiter


def _backoff(attempt: int) -> float:
    return min(RETRY_MAX, RETRY_FIRST * 2.0 ** attempt)


def acquire_plan(
    engine: Engine,
    keys: LockKeys,
    token: str,
    ttl_ms: int,
    *,
    blocking: bool,
    timeout: float | None,
    max_block: float,
    fence_ttl_ms: int = 0,
    registered: tuple[float, float] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Plan[Acquired]:
    """Try to acquire; while blocking, register as a waiter and wait on the signal list (BLPOP)
    for a grant between tries. Sleeps locally only for the last stretch before the deadline,
    which Redis' timer grain cannot resolve.

    ``registered``: (sent, until) when the caller is a registered waiter already (its release
    requeued it): it may wait for a grant before trying.

    The lease is counted from a local time that is provably before the lease began: the send
    time of the acquire that won, or, for a popped grant, of the call that registered the waiter
    (a grant found already waiting at registration is taken over by that call instead of popped
    later, so a popped grant was always made after its popper registered).

    The timeout is kept under pauses and restarts: with a timeout, every call waits for its
    reply until the deadline (the final try, sent at the deadline, ``REPLY_GRACE``), connection
    errors are retried until the deadline, and a wait that hits the deadline ends the acquire:
    not acquired (a paused server included), or the last connection error when Redis could not
    be reached at all. The last
    call's outcome may then be unknown: the server may still grant it when it wakes, and the
    lock then stays taken until its lease (``ttl``) runs out.
    """
    deadline = None if timeout is None else clock() + timeout
    window_ms = registration_ms(max_block)
    since, until = registered if registered is not None else (0.0, 0.0)
    if blocking and registered is not None:
        block = _block_for(deadline, max_block, until, math.inf, clock)
        if block >= 0.001:
            popped = yield from _wait_for_grant(keys, ttl_ms, engine, block, since, deadline,
                                                clock)
            if popped is not None:
                return popped
    failures, answered = 0, False
    while True:
        remaining = math.inf if deadline is None else deadline - clock()
        waiting = blocking and remaining > 0
        # register only to block: a waiter so close to its deadline that it sleeps the rest out
        # instead would be granted the lock while it sleeps, or take the place of one that blocks
        blocks = waiting and remaining - TIMER_GRAIN >= 0.001
        wait_ms: int | None = window_ms if blocks else (0 if until else None)
        sent_at = clock()
        call_deadline = None if deadline is None else max(deadline, sent_at + REPLY_GRACE)
        try:
            result = yield from engine.run_one(
                acquire_call(keys, token, ttl_ms, wait_ms, fence_ttl_ms), deadline=call_deadline)
        except TRANSPORT_ERRORS as error:
            # the outcome is unknown: the retry (acquire is idempotent for its token) tells
            if deadline is None:
                raise
            if clock() >= deadline:
                if not answered and not isinstance(error, redis.exceptions.TimeoutError):
                    raise  # Redis could not be reached at all: an outage, not a busy lock
                busy = AcquireResult(False, None, 0)
                return Acquired(busy, sent_at, (since, until) if until else None)
            yield Sleep(min(_backoff(failures), max(0.0, deadline - clock())))
            failures += 1
            continue
        failures, answered = 0, True
        if wait_ms is not None:
            since, until = (sent_at, sent_at + wait_ms / 1000) if wait_ms else (0.0, 0.0)
        if result.acquired:
            return Acquired(result, sent_at, None)
        if not waiting:
            return Acquired(result, sent_at, (since, until) if until else None)
        free_in = max(result.pttl_ms, 1) / 1000 + 0.001
        block = _block_for(deadline, max_block, until, free_in, clock)
        if block >= 0.001:
            popped = yield from _wait_for_grant(keys, ttl_ms, engine, block, since, deadline,
                                                clock)
            if popped is not None:
                return popped
        else:
            remaining = math.inf if deadline is None else deadline - clock()
            if remaining > 0:
                # The last stretch: sleep it out, then one final try, which takes over a grant
                # pushed meanwhile (a registered waiter may take one that nobody popped).
                yield Sleep(min(remaining, free_in))


def _block_for(deadline: float | None, max_block: float, registered_until: float,
               free_in: float, clock: Callable[[], float]) -> float:
    """How long the next BLPOP may block: within the caller's deadline (less the timer grain),
    within its registration (a waiter blocks only while surely registered), and no longer than
    until the lease runs out (a crashed holder then frees the lock)."""
    now = clock()
    remaining = math.inf if deadline is None else deadline - now - TIMER_GRAIN
    registered = registered_until - now - REGISTRATION_SLACK_MS / 1000
    return min(remaining, max_block, registered, free_in)


def _wait_for_grant(keys: LockKeys, ttl_ms: int, engine: Engine, block: float, since: float,
                    deadline: float | None, clock: Callable[[], float]
                    ) -> Plan[Acquired | None]:
    """Block on the signal list; a popped grant makes the caller the holder. ``since``: the
    send time of the call that registered the caller, before the grant was made."""
    blpop_deadline = clock() + block + BLPOP_GRACE
    if deadline is not None:  # the BLPOP itself ends (block) before the deadline
        blpop_deadline = min(blpop_deadline, max(deadline, clock() + block + 0.05))
    [popped] = yield [Command(("BLPOP", keys.signal, round(block, 3)), deadline=blpop_deadline)]
    if isinstance(popped, TRANSPORT_ERRORS):
        return None  # the next acquire call retries (and backs off) or gives up at the deadline
    if isinstance(popped, BaseException):
        raise popped
    if not popped:
        return None
    grant = parse_grant(as_text(popped[1]))
    assert grant.token is not None
    ends = since + grant.pttl_ms / 1000  # the lease, counted from before the grant was made
    if grant.pttl_ms == ttl_ms and ends - clock() > REPLY_GRACE:
        return Acquired(grant, since, None)
    # The grant carries the shortest lease any waiter registered with, or so much of it went by
    # while this waiter blocked that what it may count on is nearly over: set its own lease,
    # counted from now (the grant's lease may still run on the server).
    extend_sent = clock()
    try:
        extended = yield from engine.run_one(extend_call(keys, grant.token, ttl_ms),
                                             deadline=max(ends, extend_sent + REPLY_GRACE))
    except TRANSPORT_ERRORS:
        return Acquired(grant, since, None)  # hold with what is left of the grant's lease
    if extended:
        return Acquired(AcquireResult(True, grant.fence, ttl_ms, grant.token), extend_sent, None)
    return None  # the grant's lease ran out before it could be extended


def release_plan(engine: Engine, call: Call[int], give_up_at: float,
                 clock: Callable[[], float] = time.monotonic) -> Plan[int]:
    """Release, sent once (``resend: once``) and re-sent here when its reply was lost, until
    ``give_up_at`` (when the lease is over by itself).

    A release that ran but whose reply was lost replies 0 when re-sent; a 0 after a lost reply is
    therefore RELEASED_UNCONFIRMED (released, or the lease ran out meanwhile: either way not held
    and not lost while the work ran, if the lease was valid when release was asked for)."""
    lost_reply = False
    failures = 0
    while True:
        try:
            released = yield from engine.run_one(call, deadline=give_up_at + REPLY_GRACE)
        except TRANSPORT_ERRORS as error:
            lost_reply = lost_reply or not isinstance(error, NOT_SENT_ERRORS)
            if clock() >= give_up_at:
                return RELEASED_UNCONFIRMED
            yield Sleep(min(_backoff(failures), max(0.0, give_up_at - clock())))
            failures += 1
            continue
        if released == 0 and lost_reply:
            return RELEASED_UNCONFIRMED
        return released


@dataclass(slots=True)
class Lease:
    """When to renew a held lock and for how long; pure bookkeeping, no I/O."""

    ttl_ms: int
    valid_until: float  # local time by which the server-side lease surely has not ended
    cap_at: float | None  # max_hold: renewal never extends past this instant

    @property
    def renew_every(self) -> float:
        return self.ttl_ms / 3000

    def next_renewal_ttl(self, now: float) -> int | None:
        """The TTL to renew with now, or None when the hold cap leaves nothing to renew."""
        if self.cap_at is None:
            return self.ttl_ms
        left_ms = math.floor((self.cap_at - now) * 1000)
        return min(self.ttl_ms, left_ms) if left_ms > 0 else None


class _LockBase:
    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        ttl: float = 30.0,
        auto_renew: bool = True,
        max_hold: float | None = None,
        on_lost: Callable[[Any], None] | None = None,
        blocking_timeout: float | None = None,
        token: str | None = None,
        prefix: str = "prl",
        handoff: float = 0.1,
        requeue: bool | None = None,
        fences: FenceDurability = "durable",
    ) -> None:
        self.name = name
        self.keys = LockKeys(name, prefix)
        self.token = token or secrets.token_hex(16)
        self.ttl_ms = ms(ttl)
        self.handoff_ms = ms(handoff)
        self.auto_renew = auto_renew
        self.max_hold = None if max_hold is None else float(max_hold)
        # the very first lease must not outlive the hold cap either
        self._first_ttl_ms = self.ttl_ms if max_hold is None else min(self.ttl_ms, ms(max_hold))
        self.fences: FenceDurability = fences
        self.fence_ttl_ms = fence_ttl_ms(fences, self.ttl_ms)
        self.on_lost = on_lost
        self.blocking_timeout = blocking_timeout
        self.fence: int | None = None
        self.lost_reason: str | None = None
        self._engine = engine
        self._lease: Lease | None = None
        self._hold_token = self.token  # a hold that came from a popped grant has its token
        self.requeue = requeue
        self._releases = 0
        # (sent, until): this object is a registered waiter (its release requeued it, or a wait
        # ended without ending its registration); the next acquire may wait for a grant first
        self._registered: tuple[float, float] | None = None
        self._released_at = 0.0
        self._requeued = False

    @property
    def owner_token(self) -> str:
        """The owner token of the current hold: ``token``, or the grant this object popped."""
        return self._hold_token

    @property
    def lost(self) -> bool:
        """True once this holder may no longer hold the lock although it did not release it:
        renewal failed, or the lease ran out by the local clock (the server's lease may last a
        little longer; the local estimate is a lower bound), whether or not a call is pending."""
        if self.lost_reason is not None:
            return True
        lease = self._lease
        return lease is not None and time.monotonic() >= lease.valid_until

    @property
    def held(self) -> bool:
        """Whether this object believes it holds the lock (no round trip; see ``owned()``)."""
        return self._lease is not None and not self.lost

    @property
    def valid_until(self) -> float | None:
        """``time.monotonic()`` by which the current lease has surely not ended (None: not
        held). Work done before it is inside the lease."""
        lease = self._lease
        return None if lease is None or self.lost_reason is not None else lease.valid_until

    def _registration(self) -> tuple[float, float] | None:
        registered = self._registered
        if registered is not None and registered[1] <= time.monotonic():
            registered = self._registered = None
        return registered

    def _start_acquire(self, blocking: bool, timeout: float | None, max_block: float
                       ) -> tuple[str, Call[AcquireResult] | Plan[Acquired]]:
        """The owner token to acquire with, and what to run: one call when not blocking (the
        hot path, no plan machinery), else the waiting plan."""
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        # while this object holds, a repeated acquire is an idempotent retry of its own hold
        token = self._hold_token if self.held else self.token
        registered = self._registration()
        if not blocking:
            self._registered = None
            return token, acquire_call(self.keys, token, self._first_ttl_ms,
                                       0 if registered else None, self.fence_ttl_ms)
        return token, acquire_plan(self._engine, self.keys, token, self._first_ttl_ms,
                                   blocking=True, timeout=timeout, max_block=max_block,
                                   fence_ttl_ms=self.fence_ttl_ms, registered=registered)

    def _finish_acquire(self, acquired: Acquired, token: str) -> bool:
        result = acquired.result
        self._registered = acquired.registered
        if not result.acquired:
            return False
        self._hold_token = result.token or token
        self.fence = result.fence
        self.lost_reason = None
        sent_at = acquired.since
        cap = None if self.max_hold is None else sent_at + self.max_hold
        self._lease = Lease(self.ttl_ms, sent_at + result.pttl_ms / 1000, cap)
        return True

    def _mark_lost(self, reason: str) -> None:
        if self.lost_reason is None:
            self.lost_reason = reason
            if self.on_lost is not None:
                with contextlib.suppress(Exception):
                    self.on_lost(self)

    def _renew_plan(self, now: float, cap: float | None = None) -> Plan[float | None]:
        """One watchdog step: renew, or mark lost. Returns when to run next (None: stop).

        The renewal's reply is awaited until the lease ends by the local clock (or ``cap``, when
        another lock's lease ends sooner) and no longer: a holder learns of a lost lease at its
        local deadline even while Redis is paused or unreachable."""
        lease = self._lease
        if lease is None or self.lost_reason is not None:
            return None
        ttl_ms = lease.next_renewal_ttl(now)
        if ttl_ms is None:
            # The hold cap is reached: the lease was renewed up to the cap and ends there.
            if now >= lease.valid_until:
                self._mark_lost(f"max_hold of {self.max_hold:g}s reached; the lease expired")
                return None
            return lease.valid_until
        if now >= lease.valid_until:
            self._mark_lost("the lease ran out before it could be renewed")
            return None
        deadline = lease.valid_until if cap is None else min(lease.valid_until, cap)
        try:
            renewed = yield from self._engine.run_one(
                extend_call(self.keys, self._hold_token, ttl_ms), deadline=deadline)
        except TRANSPORT_ERRORS as error:  # retry until the lease runs out
            if time.monotonic() >= lease.valid_until:
                self._mark_lost(f"could not renew before the lease ran out: {error!r}")
                return None
            return min(time.monotonic() + lease.renew_every / 3, lease.valid_until)
        if not renewed:
            self._mark_lost("the lease expired or was taken over before it could be renewed")
            return None
        lease.valid_until = now + ttl_ms / 1000
        return min(now + lease.renew_every, lease.valid_until)

    def _start_release(self) -> tuple[Plan[int], bool, bool]:
        """The release plan, whether there was a lease, and whether it was still valid (by the
        local clock) when release was asked for: the work done under it stayed inside it."""
        lease, self._lease = self._lease, None  # stops the watchdog before the lock is gone
        now = time.monotonic()
        valid = lease is not None and self.lost_reason is None and now < lease.valid_until
        hold, self._hold_token = self._hold_token, self.token
        waiter = self.token if hold != self.token else ""
        # by default only a Lock used again (a loop) requeues: one used once would leave a
        # registration nobody answers for a second, and a grant to it would wait unpopped
        requeue = self.requeue if self.requeue is not None else self._releases > 0
        self._releases += 1
        requeue_ms = REQUEUE_MS if requeue else 0
        self._released_at = now
        self._registered = None
        self._requeued = requeue
        call = release_call(self.keys, hold, self.ttl_ms, self.handoff_ms, waiter, requeue_ms)
        give_up_at = max(lease.valid_until if lease is not None else now, now + REPLY_GRACE)
        return release_plan(self._engine, call, give_up_at), lease is not None, valid

    def _finish_release(self, released: int, had_lease: bool, valid: bool) -> None:
        if released == RELEASED_GRANTED and self._requeued:
            self._registered = (self._released_at, self._released_at + REQUEUE_MS / 1000)
        if released == RELEASED_UNCONFIRMED and valid:
            return  # released (or expired) after the work was done inside the lease
        if released in (0, RELEASED_UNCONFIRMED):
            if had_lease:
                self._mark_lost("the lease expired before release")
            raise LockNotOwnedError(f"lock {self.name!r} is not held by this owner")

    def _start_extend(self, ttl: float | None) -> tuple[Call[bool], int, float, float | None]:
        ttl_ms = self.ttl_ms if ttl is None else ms(ttl)
        if self.lost_reason is None and self.lost:
            self._mark_lost("the lease ran out before extend")
        lease = self._lease
        deadline = None if lease is None or self.lost else lease.valid_until
        return (extend_call(self.keys, self._hold_token, ttl_ms), ttl_ms, time.monotonic(),
                deadline)

    def _finish_extend(self, extended: bool, ttl_ms: int, sent_at: float) -> None:
        if not extended:
            if self._lease is not None:
                self._mark_lost("the lease expired or was taken over before extend")
            raise LockNotOwnedError(f"lock {self.name!r} is not held by this owner")
        if self._lease is not None and self.lost_reason is None:
            self._lease.valid_until = sent_at + ttl_ms / 1000

    def _extend_plan(self, ttl: float | None) -> Plan[None]:
        call, ttl_ms, sent_at, deadline = self._start_extend(ttl)
        if self.lost:
            raise LockLostError(f"lock {self.name!r} was lost while held: {self.lost_reason}")
        try:
            extended = yield from self._engine.run_one(call, deadline=deadline)
        except TRANSPORT_ERRORS as error:
            if self._lease is not None and time.monotonic() >= self._lease.valid_until:
                self._mark_lost(f"could not extend before the lease ran out: {error!r}")
            raise
        self._finish_extend(extended, ttl_ms, sent_at)

    def _timeout_error(self) -> LockTimeoutError:
        return LockTimeoutError(f"lock {self.name!r} not acquired within {self.blocking_timeout}s")

    def _exit_error(self, exc_type: type[BaseException] | None) -> LockLostError | None:
        if self.lost and exc_type is None:
            return LockLostError(f"lock {self.name!r} was lost while held: {self.lost_reason}")
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} fence={self.fence} held={self.held}>"


class Lock(_LockBase):
    """A distributed lock on a sync :class:`~pyredislua.Client`.

    ``with Lock(client, "orders", ttl=10) as lock: write(..., fence=lock.fence)``

    ttl: lease length in seconds. auto_renew: a watchdog renews the lease every ttl/3 while held.
    max_hold: cap on total hold time (seconds); renewal stops there and the lease lapses.
    on_lost: called (from the watchdog thread) when the lease is lost while held, at the latest
    when it runs out by the local clock, even while a renewal call hangs on a paused server.
    blocking_timeout: how long ``with`` waits (None: forever). token: the owner token (default:
    random per Lock object; the token belongs to this object, not to a thread).
    handoff: how long a grant nobody popped stays reserved for registered waiters (then anyone
    may take it). requeue: after a release that granted the lock to a waiter, stay registered as
    a waiter for a second, so that the next acquire goes straight to waiting (for loops). None
    (default): from this object's second release on, so a Lock used once leaves no registration
    that nobody answers (a grant to it would wait, unpopped, for a registered waiter).
    fences: ``"durable"`` (default): the fence counter never expires, fences increase for the
    life of the Redis data set. ``"ephemeral"``: the counter expires ``max(100 x ttl, 1 h)``
    after the last acquire or grant of this lock, so a lock that is not used for that long
    leaves no key behind, and its fences then restart at 1. While the counter exists (holds
    that start less than that apart) fences increase as for a durable lock, with one exception:
    if a single hold is renewed for longer than the counter's TTL and its holder then dies
    without releasing, the next fence may restart at 1. Every user of one lock name must use the
    same setting. For short-lived mutexes whose fences nobody stores (the cache's single-flight).
    """

    def __init__(self, client: Client, name: str, **options: Any) -> None:
        super().__init__(client.engine, name, **options)
        self._client = client
        # Serialises this object's calls with its watchdog: a renewal never runs after release.
        self._mutex = threading.Lock()
        self._scheduled = False

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Acquire; ``timeout`` in seconds (None: wait forever), honoured to the millisecond,
        also while Redis is paused or restarting (connection errors are retried until then)."""
        token, work = self._start_acquire(blocking, timeout, self._client.max_block)
        if isinstance(work, Call):
            sent_at = time.monotonic()
            acquired = Acquired(self._client.run(work), sent_at, None)
        else:
            acquired = self._client.drive(work)
        got = self._finish_acquire(acquired, token)
        if got and self.auto_renew:
            _renewer_for(self._client).schedule(self, time.monotonic() + self.ttl_ms / 3000)
        return got

    def release(self) -> None:
        """Release; raises LockNotOwnedError if this token no longer holds the lock (and marks
        the hold lost when it was held). A release whose reply was lost is re-sent; finding the
        lock gone then counts as released if the lease was still valid when release was asked
        for."""
        with self._mutex:
            plan, had_lease, valid = self._start_release()
            self._finish_release(self._client.drive(plan), had_lease, valid)

    def extend(self, ttl: float | None = None) -> None:
        """Renew the lease to ``ttl`` seconds (default: the lock's ttl) from now. Raises
        LockNotOwnedError if the lock is no longer held, LockLostError if the local lease ran
        out first (the renewal is awaited until then and no longer)."""
        with self._mutex:
            self._client.drive(self._extend_plan(ttl))

    def inspect(self) -> LockState:
        return self._client.run(inspect_call(self.keys))

    def owned(self) -> bool:
        """Whether this token holds the lock, asked of the server."""
        return self.inspect().owner == self._hold_token

    def locked(self) -> bool:
        """Whether anyone holds the lock, asked of the server."""
        return self.inspect().held

    def _renew_step(self, cap: float | None) -> float | None:
        with self._mutex:
            return self._client.drive(self._renew_plan(time.monotonic(), cap))

    def __enter__(self) -> Lock:
        if not self.acquire(blocking=True, timeout=self.blocking_timeout):
            raise self._timeout_error()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(LockNotOwnedError):
            self.release()
        error = self._exit_error(exc_type)
        if error is not None:
            raise error


class _Renewer:
    """One watchdog thread per client renews every held lock of that client.

    A lock has at most one entry in the queue; an entry that outlived its lease (the lock was
    released and taken again) only renews early, which is harmless. A renewal waits for its
    reply no longer than until the first lease in the queue runs out, so a hanging call never
    delays another lock's lost-lease report.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Lock]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="pyredislua-renewer", daemon=True)
        self._thread.start()

    def schedule(self, lock: Lock, when: float) -> None:
        with self._cond:
            if lock._scheduled:
                return
            lock._scheduled = True
            heapq.heappush(self._heap, (when, next(self._seq), lock))
            if self._heap[0][2] is lock:
                self._cond.notify()

    def _earliest_end(self) -> float | None:
        ends = [lock._lease.valid_until for _, _, lock in self._heap if lock._lease is not None]
        return min(ends) if ends else None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _, _, lock = heapq.heappop(self._heap)
                lock._scheduled = False
                cap = self._earliest_end()
            if lock._lease is None or lock.lost_reason is not None:
                continue
            try:
                nxt = lock._renew_step(cap)
            except Exception as error:
                lock._mark_lost(f"renewal failed: {error!r}")
                continue
            if nxt is not None:
                self.schedule(lock, nxt)


_renewers_guard = threading.Lock()


def _renewer_for(client: Client) -> _Renewer:
    with _renewers_guard:
        renewer: _Renewer | None = getattr(client, "_renewer", None)
        if renewer is None:
            renewer = _Renewer()
            client._renewer = renewer  # type: ignore[attr-defined]
        return renewer


class AsyncLock(_LockBase):
    """A distributed lock on an :class:`~pyredislua.AsyncClient`; see :class:`Lock`.

    ``async with Lock(client, "orders") as lock: ...``. The watchdog is an asyncio task; release
    is shielded from cancellation so a cancelled task never leaves the lock held until expiry.
    """

    def __init__(self, client: AsyncClient, name: str, **options: Any) -> None:
        super().__init__(client.engine, name, **options)
        self._client = client
        self._watchdog: asyncio.Task[None] | None = None

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        token, work = self._start_acquire(blocking, timeout, self._client.max_block)
        if isinstance(work, Call):
            sent_at = time.monotonic()
            acquired = Acquired(await self._client.run(work), sent_at, None)
        else:
            acquired = await self._client.drive(work)
        got = self._finish_acquire(acquired, token)
        if got and self.auto_renew and self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        return got

    async def _watch(self) -> None:
        nxt: float | None = time.monotonic() + self.ttl_ms / 3000
        while nxt is not None:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            try:
                nxt = await self._client.drive(self._renew_plan(time.monotonic()))
            except Exception as error:
                self._mark_lost(f"renewal failed: {error!r}")
                return

    async def release(self) -> None:
        """Release (shielded from cancellation); raises LockNotOwnedError if not held."""
        await asyncio.shield(self._release())

    async def _release(self) -> None:
        task, self._watchdog = self._watchdog, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        plan, had_lease, valid = self._start_release()
        self._finish_release(await self._client.drive(plan), had_lease, valid)

    async def extend(self, ttl: float | None = None) -> None:
        await self._client.drive(self._extend_plan(ttl))

    async def inspect(self) -> LockState:
        return await self._client.run(inspect_call(self.keys))

    async def owned(self) -> bool:
        return (await self.inspect()).owner == self._hold_token

    async def locked(self) -> bool:
        return (await self.inspect()).held

    async def __aenter__(self) -> AsyncLock:
        if not await self.acquire(blocking=True, timeout=self.blocking_timeout):
            raise self._timeout_error()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(LockNotOwnedError):
            await self.release()
        error = self._exit_error(exc_type)
        if error is not None:
            raise error
