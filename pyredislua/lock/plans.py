"""The lock's multi-step plans: :func:`blocking_tries`, the waiting loop every blocking acquire
shares (a lock, a lock set, a reentrant lock, a semaphore's permits: each says what its calls
are and how their replies settle, in a :class:`Tries`), the lock's own blocking acquire on it,
and a release re-sent after a lost reply. Sans-IO: both drivers, sync and asyncio, run them;
every wait is bounded by the caller's deadline, its registration and the holder's lease.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

import redis

from ..engine.protocol import Call, Engine, NotSentError, NotSentTimeoutError, Plan, Sleep
from ..engine.waiting import REPLY_GRACE as REPLY_GRACE
from ..engine.waiting import TRANSPORT_ERRORS as TRANSPORT_ERRORS
from ..engine.waiting import backoff as backoff
from ..engine.waiting import wait_for_signal
from ..kit import TIMER_GRAIN, as_text
from .ops import (
    RELEASED_UNCONFIRMED,
    AcquireResult,
    LockKeys,
    acquire_call,
    extend_call,
    parse_grant,
)

# A waiter's registration outlives its BLPOP by this much, covering the round trip back: a
# waiter blocks only while it is surely registered.
REGISTRATION_SLACK_MS = 250
# A BLPOP ends by itself (its timeout, resolved on Redis' cron tick); a reply later than this
# past its timeout means the server is not answering: the connection is dropped, the wait redone.
BLPOP_GRACE = 1.0
# REPLY_GRACE, backoff and TRANSPORT_ERRORS (imported from here by the other lock areas) are
# shared with every call that keeps a caller's deadline: engine/waiting.py
NOT_SENT_ERRORS = (NotSentError, NotSentTimeoutError)

R = TypeVar("R")
T = TypeVar("T")


def registration_ms(max_block: float) -> int:
    """How long a waiting acquire registers for: its longest BLPOP plus the slack. Every such
    registration of a client lasts the same, so the order in which they end is the order in
    which they were made, which is the order in which BLPOP serves the waiters: the registration
    a grant consumes (the one that ends first) is normally its popper's. When it is not (a
    requeue registration is shorter, a reply overtook another), the popper's release names its
    waiter token and the server puts the consumed registration back."""
    return math.ceil(max_block * 1000) + REGISTRATION_SLACK_MS


class Acquired(NamedTuple):
    """What a blocking acquire ended with."""

    result: AcquireResult
    since: float  # local time before the lease began: the lease ends no earlier than since + it
    registered: tuple[float, float] | None  # (since, until): still a registered waiter


Registration = tuple[float, float]  # (sent, until): the call that registered a waiter, and its end


class Tries(Generic[R, T]):
    """What one kind of blocking acquire does at each step of :func:`blocking_tries` (a lock,
    a set of locks under one tag, a reentrant lock, a semaphore's permits); the waiting itself
    is shared."""

    # the last stretch before the deadline is slept in pieces no longer than this
    stretch_cap = math.inf

    def call(self, wait_ms: int | None) -> Call[R]:
        """The acquire call; ``wait_ms`` as the operations take it (None: not a waiter, 0: end
        the registration, > 0: register for that long)."""
        raise NotImplementedError

    def forward(self) -> Call[Any] | None:
        """A call to send first in the acquire's round trip (taken: sent at most once)."""
        return None

    def settle(self, result: R, sent_at: float, waiting: bool,
               registered: Registration | None) -> Plan[T | None]:
        """What a reply ends with (None: wait, then try again). ``waiting``: the caller may
        still wait."""
        raise NotImplementedError

    def free_in(self, result: R) -> float:
        """Seconds until what is busy frees itself at most (a lease ends; inf: unknown)."""
        raise NotImplementedError

    def signals(self, result: R | None) -> tuple[str, ...]:
        """The signal lists to block on (``result`` None: before the first try)."""
        raise NotImplementedError

    def popped(self, value: Any, since: float, deadline: float | None) -> Plan[T | None]:
        """What a popped signal ends with (None: try again). ``since``: the send time of the
        call that registered the caller, before anything was pushed to it."""
        return None
        yield

    def timed_out(self, sent_at: float, registered: Registration | None) -> Plan[T]:
        """The outcome when the deadline passed while Redis did not answer."""
        raise NotImplementedError


def blocking_tries(engine: Engine, tries: Tries[Any, T], *, blocking: bool = True,
                   timeout: float | None, max_block: float,
                   registered: Registration | None = None,
                   clock: Callable[[], float] = time.monotonic) -> Plan[T]:
    """Try to acquire; while blocking, register as a waiter and wait on a signal list (BLPOP)
    between tries, for no longer than the caller's deadline (less the timer grain), the
    registration (a waiter blocks only while surely registered) and the lease of what is busy (a
    crashed holder then frees it). Sleeps locally only for the last stretch before the deadline,
    which Redis' timer grain cannot resolve; the final try is sent at the deadline.

    ``registered``: the caller is a registered waiter already (its release requeued it): it may
    wait for a signal before trying.

    The timeout is kept under pauses and restarts: with a timeout, every call waits for its
    reply until the deadline (the final try, sent at the deadline, ``REPLY_GRACE``), connection
    errors are retried until the deadline (every acquire is idempotent for its token), and a wait
    that hits the deadline ends the acquire (``tries.timed_out``), or raises the last connection
    error when Redis could not be reached at all. The last call's outcome may then be unknown:
    the server may still grant it when it wakes, and what it took stays taken until its lease
    runs out."""
    deadline = None if timeout is None else clock() + timeout
    window_ms = registration_ms(max_block)
    since, until = registered if registered is not None else (0.0, 0.0)
    if blocking and registered is not None:
        block = _block_for(deadline, max_block, until, math.inf, clock)
        if block >= 0.001:
            popped = yield from _wait(tries.signals(None), block, deadline, clock)
            if popped is not None:
                final = yield from tries.popped(popped, since, deadline)
                if final is not None:
                    return final
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
        call, first = tries.call(wait_ms), tries.forward()
        try:
            if first is None:
                result = yield from engine.run_one(call, deadline=call_deadline)
            else:  # one round trip
                _, result = yield from engine.run([first, call], deadline=call_deadline)
        except TRANSPORT_ERRORS as error:
            # the outcome is unknown: the retry (the acquire is idempotent) tells
            if deadline is None:
                raise
            if clock() >= deadline:
                if not answered and not isinstance(error, redis.exceptions.TimeoutError):
                    raise  # Redis could not be reached at all: an outage, not a busy lock
                return (yield from tries.timed_out(sent_at, (since, until) if until else None))
            yield Sleep(min(backoff(failures), max(0.0, deadline - clock())))
            failures += 1
            continue
        failures, answered = 0, True
        if wait_ms is not None:
            since, until = (sent_at, sent_at + wait_ms / 1000) if wait_ms else (0.0, 0.0)
        final = yield from tries.settle(result, sent_at, waiting,
                                        (since, until) if until else None)
        if final is not None:
            return final
        free_in = tries.free_in(result)
        block = _block_for(deadline, max_block, until, free_in, clock)
        if block >= 0.001:
            popped = yield from _wait(tries.signals(result), block, deadline, clock)
            if popped is not None:
                final = yield from tries.popped(popped, since, deadline)
                if final is not None:
                    return final
        else:
            remaining = math.inf if deadline is None else deadline - clock()
            if remaining > 0:
                # The last stretch: sleep it out, then one final try, which takes over a grant
                # pushed meanwhile (a registered waiter may take one that nobody popped).
                yield Sleep(min(remaining, free_in, tries.stretch_cap))


def lease_left(pttl_ms: int) -> float:
    """Seconds until a lease with ``pttl_ms`` left has surely ended (at least 1 ms on)."""
    return max(pttl_ms, 1) / 1000 + 0.001


def _block_for(deadline: float | None, max_block: float, registered_until: float,
               free_in: float, clock: Callable[[], float]) -> float:
    """How long the next BLPOP may block: within the caller's deadline (less the timer grain),
    within its registration (a waiter blocks only while surely registered), and no longer than
    until the lease runs out (a crashed holder then frees the lock)."""
    now = clock()
    remaining = math.inf if deadline is None else deadline - now - TIMER_GRAIN
    registered = registered_until - now - REGISTRATION_SLACK_MS / 1000
    return min(remaining, max_block, registered, free_in)


def _wait(signals: tuple[str, ...], block: float, deadline: float | None,
          clock: Callable[[], float]) -> Plan[Any]:
    """Block on ``signals`` for ``block`` seconds (aimed short of the deadline already: no timer
    grain taken off again); the popped value, or None (nothing came, or the connection failed:
    the next try retries, and backs off, or gives up at the deadline)."""
    blpop_deadline = clock() + block + BLPOP_GRACE
    if deadline is not None:  # the BLPOP itself ends (block) before the deadline
        blpop_deadline = min(blpop_deadline, max(deadline, clock() + block + 0.05))
    try:
        popped = yield from wait_for_signal(signals, block, max_block=block,
                                            deadline=blpop_deadline, grain=0.0)
    except TRANSPORT_ERRORS:
        return None
    return None if popped is None else popped[1]


# -- a lock ----------------------------------------------------------------------------------


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
    registered: Registration | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Plan[Acquired]:
    """Acquire one lock (:func:`blocking_tries`): a release grants the lock to the
    longest-blocked waiter by pushing it a grant, which makes it the holder.

    The lease is counted from a local time that is provably before the lease began: the send
    time of the acquire that won, or, for a popped grant, of the call that registered the waiter
    (a grant found already waiting at registration is taken over by that call instead of popped
    later, so a popped grant was always made after its popper registered)."""
    return (yield from blocking_tries(
        engine, _LockTries(engine, keys, token, ttl_ms, fence_ttl_ms, clock), blocking=blocking,
        timeout=timeout, max_block=max_block, registered=registered, clock=clock))


class _LockTries(Tries[AcquireResult, Acquired]):
    def __init__(self, engine: Engine, keys: LockKeys, token: str, ttl_ms: int,
                 fence_ttl_ms: int, clock: Callable[[], float]) -> None:
        self.engine, self.keys, self.token, self.ttl_ms = engine, keys, token, ttl_ms
        self.fence_ttl_ms, self.clock = fence_ttl_ms, clock

    def call(self, wait_ms: int | None) -> Call[AcquireResult]:
        return acquire_call(self.keys, self.token, self.ttl_ms, wait_ms, self.fence_ttl_ms)

    def settle(self, result: AcquireResult, sent_at: float, waiting: bool,
               registered: Registration | None) -> Plan[Acquired | None]:
        if result.acquired:
            return Acquired(result, sent_at, None)
        if not waiting:
            return Acquired(result, sent_at, registered)
        return None
        yield  # a plan: settling a lock's reply needs no call

    def free_in(self, result: AcquireResult) -> float:
        return lease_left(result.pttl_ms)

    def signals(self, result: AcquireResult | None) -> tuple[str, ...]:
        return (self.keys.signal,)

    def timed_out(self, sent_at: float, registered: Registration | None) -> Plan[Acquired]:
        return Acquired(AcquireResult(False, None, 0), sent_at, registered)
        yield  # a plan: nothing to undo

    def popped(self, value: Any, since: float, deadline: float | None
               ) -> Plan[Acquired | None]:
        """A popped grant makes the caller the holder."""
        clock = self.clock
        grant = parse_grant(as_text(value))
        assert grant.token is not None
        ends = since + grant.pttl_ms / 1000  # the lease, counted from before the grant was made
        if grant.pttl_ms == self.ttl_ms and ends - clock() > REPLY_GRACE:
            return Acquired(grant, since, None)
        # The grant carries the shortest lease any waiter registered with, or so much of it went
        # by while this waiter blocked that what it may count on is nearly over: set its own
        # lease, counted from now (the grant's lease may still run on the server).
        extend_sent = clock()
        try:
            extended = yield from self.engine.run_one(
                extend_call(self.keys, grant.token, self.ttl_ms),
                deadline=max(ends, extend_sent + REPLY_GRACE))
        except TRANSPORT_ERRORS:
            return Acquired(grant, since, None)  # hold with what is left of the grant's lease
        if extended:
            return Acquired(AcquireResult(True, grant.fence, self.ttl_ms, grant.token),
                            extend_sent, None)
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
            yield Sleep(min(backoff(failures), max(0.0, give_up_at - clock())))
            failures += 1
            continue
        if released == 0 and lost_reply:
            return RELEASED_UNCONFIRMED
        return released
