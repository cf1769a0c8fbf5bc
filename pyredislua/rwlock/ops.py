"""The read-write lock's Lua contract in Python: its keys, one call spec per operation, their
replies, and the blocking acquire plan.

Pure: building a call or a plan does no I/O. Any client runs them (``client.run(call)``,
``client.drive(plan)``, pipelines), and so may any other Redis client following
``docs/reference.md``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis

from ..engine.keysets import KeySet
from ..engine.protocol import Call, Engine, Plan, Sleep
from ..engine.waiting import wait_for_signal
from ..kit import TIMER_GRAIN, as_text
from ..lock.ops import AcquireResult, parse_acquire
from ..lock.plans import (
    BLPOP_GRACE,
    REGISTRATION_SLACK_MS,
    REPLY_GRACE,
    TRANSPORT_ERRORS,
    Acquired,
    backoff,
    registration_ms,
)


class RWLockKeys(KeySet, keyset="rwlock"):
    """The keys of one read-write lock (``lua/keysets/rwlock.keys``), all under one hash tag."""

    rwlock: str
    readers: str
    fence: str
    queue: str
    deadlines: str
    signal: str


Mode = Literal["read", "write"]
MODES: tuple[Mode, ...] = ("read", "write")


@dataclass(frozen=True)
class RWLockState:
    writer: str | None  # the writer's token (a waiting writer granted the lock included)
    writer_pttl_ms: int  # 0 when no writer
    fence: int  # the writer's fence, else the last issued (0: never)
    readers: int  # live read shares (granted waiting readers included)
    waiters: int  # live registered waiters


def parse_state(reply: Any) -> RWLockState:
    writer = None if reply[0] is None else as_text(reply[0])
    return RWLockState(writer, int(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]))


def _renewed(reply: Any) -> bool:
    return int(reply) == 1


# -- call specs: one per Lua operation ------------------------------------------------------------


HANDOFF_MS = 30


def _args(token: str, mode: Mode, ttl_ms: int, wait_ms: int | None, handoff_ms: int,
          woken: bool) -> tuple[str | int, ...]:
    args: tuple[str | int, ...] = (token, mode, ttl_ms)
    if wait_ms is not None or handoff_ms != HANDOFF_MS or woken:
        args = (*args, -1 if wait_ms is None else wait_ms)
    if handoff_ms != HANDOFF_MS or woken:
        args = (*args, handoff_ms)
    return (*args, 1) if woken else args


def acquire_call(keys: RWLockKeys, token: str, mode: Mode, ttl_ms: int,
                 wait_ms: int | None = None, handoff_ms: int = HANDOFF_MS, woken: bool = False
                 ) -> Call[AcquireResult]:
    """``wait_ms``: None (not a waiter), > 0 (register, or renew the registration, for that long
    when not acquired), 0 (a waiter's last try: claim a grant, else end the registration).
    ``handoff_ms``: how long a grant this call makes to another waiter waits for its claim.
    ``woken``: the caller popped a wake-up since its last call (see the plan)."""
    return Call("rwlock.acquire", keys.all,
                _args(token, mode, ttl_ms, wait_ms, handoff_ms, woken), parse_acquire)


def _parse_waiting(reply: Any) -> tuple[AcquireResult, bool]:
    """An acquire's reply, and whether it passed the caller's wake-up back to a grantee."""
    return parse_acquire(reply), int(reply[0]) == 0 and len(reply) > 2 and int(reply[2]) == 1


def release_call(keys: RWLockKeys, token: str, mode: Mode, handoff_ms: int = HANDOFF_MS
                 ) -> Call[int]:
    """Reply: 1 released, 0 not held by ``token`` in ``mode``."""
    args: tuple[str | int, ...] = (token, mode)
    if handoff_ms != HANDOFF_MS:
        args = (*args, handoff_ms)
    return Call("rwlock.release", keys.all, args, int)


def extend_call(keys: RWLockKeys, token: str, mode: Mode, ttl_ms: int) -> Call[bool]:
    return Call("rwlock.extend", (keys.rwlock, keys.readers), (token, mode, ttl_ms), _renewed)


def inspect_call(keys: RWLockKeys) -> Call[RWLockState]:
    return Call("rwlock.inspect", keys.all, (), parse_state)


# -- the blocking acquire -------------------------------------------------------------------------


def acquire_plan(
    engine: Engine,
    keys: RWLockKeys,
    token: str,
    mode: Mode,
    ttl_ms: int,
    *,
    timeout: float | None,
    max_block: float,
    handoff_ms: int = HANDOFF_MS,
    clock: Callable[[], float] = time.monotonic,
) -> Plan[Acquired]:
    """Acquire, waiting in the lock's FIFO queue: each call registers (or renews the
    registration, keeping the caller's place) for its longest BLPOP plus a slack, and blocks on
    the signal list between calls. A release, or any call that finds the head of the queue free
    to go, grants the lock to the head (one writer, or the run of readers before the next
    writer) and wakes the waiters; the grantee's next call claims it with its own lease. A
    blocked waiter also asks again when a holder's lease (or an unclaimed grant's hand-off
    window) would end by itself and when its registration is due for renewal; never otherwise.
    Every registered waiter gets one wake-up per grant, but BLPOP serves whoever blocks first:
    a waiter that took one and is not granted passes it back when a grant is still unclaimed
    (once in a row), so a grantee that blocks late still finds it.

    At the deadline a last call (``wait_ms`` 0) claims a grant made meanwhile or ends the
    registration: a grant is never left to a waiter that gave up. If the caller dies while
    waiting, its registration (and a grant made to it) lapses within ``registration_ms``.

    The lease is counted from the send time of the call that acquired or claimed: the server
    counts it from later. Connection errors are retried until the deadline (an acquire is
    idempotent for its token); with no deadline they are raised."""
    deadline = None if timeout is None else clock() + timeout
    window_ms = registration_ms(max_block)
    until = 0.0  # local time by which the registration surely ends (0: not registered)
    woken = False  # popped a wake-up since the last call
    failures, answered = 0, False
    while True:
        remaining = math.inf if deadline is None else deadline - clock()
        # register only to block: a waiter that sleeps its last stretch out tries once at the end
        blocks = remaining - TIMER_GRAIN >= 0.001
        if not blocks and until and remaining > 0:
            # the last stretch, shorter than Redis' timer grain: sleep it out registered, then a
            # last try claims a grant made meanwhile or ends the registration
            yield Sleep(remaining)
            continue
        wait_ms: int | None = window_ms if blocks else (0 if until else None)
        sent_at = clock()
        call_deadline = None if deadline is None else max(deadline, sent_at + REPLY_GRACE)
        call = Call("rwlock.acquire", keys.all,
                    _args(token, mode, ttl_ms, wait_ms, handoff_ms, woken), _parse_waiting)
        try:
            result, passed = yield from engine.run_one(call, deadline=call_deadline)
        except TRANSPORT_ERRORS as error:
            if deadline is None:
                raise
            if clock() >= deadline:
                if not answered and not isinstance(error, redis.exceptions.TimeoutError):
                    raise  # Redis could not be reached at all: an outage, not a busy lock
                return Acquired(AcquireResult(False, None, 0), sent_at, None)
            yield Sleep(min(backoff(failures), max(0.0, deadline - clock())))
            failures += 1
            continue
        failures, answered = 0, True
        # a wake-up is passed back at most once in a row: a waiter that took its own passed
        # wake-up again (the grantee had not blocked yet) blocks instead of passing it around
        woken = False
        if wait_ms is not None:
            until = sent_at + wait_ms / 1000 if wait_ms else 0.0
        free_in = max(result.pttl_ms, 1) / 1000 + 0.001
        if result.acquired or wait_ms == 0:
            return Acquired(result, sent_at, None)
        if wait_ms is None:  # a timeout shorter than the timer grain: try again at the end
            remaining = math.inf if deadline is None else deadline - clock()
            if remaining <= 0:
                return Acquired(result, sent_at, None)
            yield Sleep(min(remaining, free_in))
            continue
        now = clock()
        block = min(math.inf if deadline is None else deadline - now - TIMER_GRAIN, max_block,
                    until - now - REGISTRATION_SLACK_MS / 1000, free_in)
        if block >= 0.001:
            # a transport error: the next call retries (and backs off) or gives up at the deadline
            with contextlib.suppress(*TRANSPORT_ERRORS):
                popped = yield from wait_for_signal(
                    (keys.signal,), block, max_block=block,
                    deadline=clock() + block + BLPOP_GRACE, grain=0.0)
                woken = popped is not None and not passed
        elif deadline is None or deadline - clock() > TIMER_GRAIN:
            yield Sleep(max(block, 0.001))  # the registration is due for renewal: ask again
