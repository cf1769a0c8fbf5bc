"""What one ``Lock`` object knows of its hold, and the plans that change it: no I/O.

A :class:`Hold` keeps the owner token, the fence, the local estimate of the lease (a lower bound
of the server's), why the hold was lost, and whether the object is still a registered waiter. Its
methods build the call or plan for each step of the lock (acquire, release, extend, one watchdog
renewal) and settle the state from what came back. :class:`~pyredislua.lock.Lock` runs them on a
sync or an asyncio client; the watchdogs (:mod:`.watchdog`) run the renewals.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..engine.protocol import Call, Engine, Plan
from ..errors import LockError, LockLostError, LockNotOwnedError
from ..kit import ms
from ..observe import tracing
from .lease import Lease, LeaseHolder
from .ops import (
    RELEASED_CARRIED,
    RELEASED_GRANTED,
    RELEASED_UNCONFIRMED,
    FenceDurability,
    LockKeys,
    acquire_call,
    extend_call,
    fence_ttl_ms,
    parse_acquire,
    pass_on_call,
    release_call,
)
from .plans import REPLY_GRACE, TRANSPORT_ERRORS, Acquired, acquire_plan, release_plan

# After a release that granted the lock to a waiter, the releaser stays registered this long, so
# an acquire soon after goes straight to waiting (one round trip fewer per contended hold).
REQUEUE_MS = 1000


class LockTimeoutError(LockError, TimeoutError):
    """A blocking acquire did not get the lock within its timeout."""


class Hold(LeaseHolder):
    """The sans-IO core of a lock object; see the module docstring and :class:`Lock`."""

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
        metrics: bool = False,
        turn: float = 0.0,
    ) -> None:
        self.name = name
        self.keys = LockKeys(name, prefix, metrics=metrics)
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
        self.requeue = requeue
        if not 0 <= turn <= 60:
            raise ValueError(f"turn must be between 0 and 60 seconds, got {turn!r}")
        self.turn_ms = ms(turn) if turn else 0
        # local time until which a lock carried for this object's next acquire is its to take;
        # past it (not acquired again) it is passed on (the watchdog's timer)
        self._carried: float | None = None
        self.fence: int | None = None
        self.lost_reason: str | None = None
        self._engine = engine
        self._lease: Lease | None = None
        self._hold_token = self.token  # a hold that came from a popped grant has its token
        self._releases = 0
        # (sent, until): this object is a registered waiter (its release requeued it, or a wait
        # ended without ending its registration); the next acquire may wait for a grant first
        self._registered: tuple[float, float] | None = None
        self._hold_span: Any = None  # the lock.hold span while tracing (observe.tracing)

    # -- what this object believes (no round trip) --------------------------------------------

    @property
    def owner_token(self) -> str:
        """The owner token of the current hold: ``token``, or the grant this object popped."""
        return self._hold_token

    def _noted_lost(self, reason: str) -> None:
        if self._hold_span is not None:
            self._hold_span.add_event("lost", {"pyredislua.lock.reason": reason})

    def _on_acquired(self) -> None:
        """Called once a hold begins (the façade starts its watchdog)."""

    def _on_carried(self, until: float) -> None:
        """Called when a release carried the lock (the façade times its pass-on)."""

    def _pass_on_plan(self, now: float) -> Plan[float | None]:
        """The carry timer: a lock carried for this object and not acquired again by ``until``
        is passed on to the longest-blocked waiter (or freed). Returns when to look again (a
        later carry), or None."""
        until = self._carried
        if until is None:
            return None
        if now < until:
            return until
        self._carried = None
        # unsent or unanswered: the carry's own lease ends it (turn + 250 ms on the server)
        with contextlib.suppress(*TRANSPORT_ERRORS):
            yield from self._engine.run_one(
                pass_on_call(self.keys, self.token, self.ttl_ms, self.handoff_ms),
                deadline=now + REPLY_GRACE)
        return None

    # -- acquire ---------------------------------------------------------------------------------

    def _acquire_token(self) -> str:
        # while this object holds, a repeated acquire is an idempotent retry of its own hold
        return self._hold_token if self.held else self.token

    def _registration(self) -> tuple[float, float] | None:
        registered = self._registered
        if registered is not None and registered[1] <= time.monotonic():
            registered = self._registered = None
        return registered

    def _try_call(self) -> Call[bool]:
        """A non-blocking acquire: one call (the hot path, no plan machinery), whose reply
        settles the hold. The lease is counted from now, before the call is sent."""
        token = self._acquire_token()
        registered = self._registration()
        self._registered = self._carried = None
        call = acquire_call(self.keys, token, self._first_ttl_ms, 0 if registered else None,
                            self.fence_ttl_ms)
        sent_at = time.monotonic()

        def settle(reply: Any) -> bool:
            return self._settle(Acquired(parse_acquire(reply), sent_at, None), token)

        return Call(call.op, call.keys, call.args, settle)

    def _acquire_plan(self, timeout: float | None, max_block: float) -> Plan[bool]:
        """A blocking acquire (see :func:`~pyredislua.lock.plans.acquire_plan`)."""
        traced = tracing.active()
        span = None if traced is None else traced.lock_wait(self.name, True)
        self._carried = None  # this acquire takes the carry, if any: no pass-on
        try:
            token = self._acquire_token()
            acquired = yield from acquire_plan(
                self._engine, self.keys, token, self._first_ttl_ms, blocking=True,
                timeout=timeout, max_block=max_block, fence_ttl_ms=self.fence_ttl_ms,
                registered=self._registration())
            got = self._settle(acquired, token)
        except BaseException as error:
            if traced is not None:
                traced.end(span, error)
            raise
        if traced is not None:
            traced.lock_waited(span, got, self.fence)
        return got

    def _traced_try_plan(self, traced: tracing.Tracing) -> Plan[bool]:
        """A non-blocking acquire in a ``lock.wait`` span (only while tracing)."""
        span = traced.lock_wait(self.name, False)
        try:
            got = yield from self._engine.run_one(self._try_call())
        except BaseException as error:
            traced.end(span, error)
            raise
        traced.lock_waited(span, got, self.fence)
        return got

    def _end_hold_span(self) -> None:
        span, self._hold_span = self._hold_span, None
        if span is not None:
            span.set_attribute("pyredislua.lock.lost", self.lost_reason is not None)
            span.end()

    def _settle(self, acquired: Acquired, token: str) -> bool:
        result = acquired.result
        self._registered = acquired.registered
        if not result.acquired:
            return False
        renewing = self.held
        self._hold_token = result.token or token
        self.fence = result.fence
        self.lost_reason = None
        since = acquired.since
        cap = None if self.max_hold is None else since + self.max_hold
        self._lease = Lease(self.ttl_ms, since + result.pttl_ms / 1000, cap)
        if not renewing or self._hold_span is None:
            self._end_hold_span()  # a hold lost and never released: it ended anyway
            traced = tracing.active()
            if traced is not None:
                self._hold_span = traced.lock_hold(self.name, self.fence)
        self._on_acquired()
        return True

    # -- release ---------------------------------------------------------------------------------

    def _release_plan(self) -> Plan[None]:
        """Release; raises LockNotOwnedError if this token no longer holds the lock (and marks
        the hold lost when it was held). A release whose reply was lost is re-sent; finding the
        lock gone then counts as released if the lease was still valid when release was asked
        for (the work done under it stayed inside it)."""
        lease, self._lease = self._lease, None  # stops the watchdog before the lock is gone
        now = time.monotonic()
        valid = lease is not None and self.lost_reason is None and now < lease.valid_until
        hold, self._hold_token = self._hold_token, self.token
        waiter = self.token if hold != self.token else ""
        # by default only a Lock used again (a loop) requeues: one used once would leave a
        # registration nobody answers for a second, and a grant to it would wait unpopped
        requeue = self.requeue if self.requeue is not None else self._releases > 0
        self._releases += 1
        self._registered = None
        # bounded barging (turn): a loop's release may keep the lock for its next acquire
        turn_ms = self.turn_ms if requeue else 0
        call = release_call(self.keys, hold, self.ttl_ms, self.handoff_ms, waiter,
                            REQUEUE_MS if requeue else 0, turn_ms)
        give_up_at = max(lease.valid_until if lease is not None else now, now + REPLY_GRACE)
        try:
            released = yield from release_plan(self._engine, call, give_up_at)
            if released == RELEASED_GRANTED and requeue:
                self._registered = (now, now + REQUEUE_MS / 1000)
            if turn_ms and released in (RELEASED_CARRIED, RELEASED_UNCONFIRMED):
                # carried (or maybe, after a lost reply): passed on unless acquired again soon
                self._carried = now + turn_ms / 1000
                self._on_carried(self._carried)
            if released == RELEASED_UNCONFIRMED and valid:
                return  # released (or expired) after the work was done inside the lease
            if released in (0, RELEASED_UNCONFIRMED):
                if lease is not None:
                    self._mark_lost("the lease expired before release")
                raise LockNotOwnedError(f"lock {self.name!r} is not held by this owner")
        finally:
            self._end_hold_span()

    # -- extend and renew ------------------------------------------------------------------------

    def _extend_call(self, ttl_ms: int) -> Call[bool]:
        """The call renewing this hold's lease (a subclass holding other keys renews its own)."""
        return extend_call(self.keys, self._hold_token, ttl_ms)

    def _extend_plan(self, ttl_ms: int) -> Plan[None]:
        """Renew the lease to ``ttl_ms`` from now, awaiting the reply until the local lease
        runs out and no longer."""
        if self.lost_reason is None and self.lost:
            self._mark_lost("the lease ran out before extend")
        if self.lost:
            raise LockLostError(f"lock {self.name!r} was lost while held: {self.lost_reason}")
        lease = self._lease
        deadline = None if lease is None else lease.valid_until
        sent_at = time.monotonic()
        try:
            extended = yield from self._engine.run_one(
                self._extend_call(ttl_ms), deadline=deadline)
        except TRANSPORT_ERRORS as error:
            if self._lease is not None and time.monotonic() >= self._lease.valid_until:
                self._mark_lost(f"could not extend before the lease ran out: {error!r}")
            raise
        if not extended:
            if self._lease is not None:
                self._mark_lost("the lease expired or was taken over before extend")
            raise LockNotOwnedError(f"lock {self.name!r} is not held by this owner")
        if self._lease is not None and self.lost_reason is None:
            self._lease.valid_until = sent_at + ttl_ms / 1000

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
                self._extend_call(ttl_ms), deadline=deadline)
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

    # -- context managers ------------------------------------------------------------------------

    def _timeout_error(self) -> LockTimeoutError:
        return LockTimeoutError(f"lock {self.name!r} not acquired within {self.blocking_timeout}s")

    def _exit_error(self, exc_type: type[BaseException] | None) -> LockLostError | None:
        if self.lost and exc_type is None:
            return LockLostError(f"lock {self.name!r} was lost while held: {self.lost_reason}")
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} fence={self.fence} held={self.held}>"
