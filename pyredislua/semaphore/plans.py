"""The semaphore's blocking acquire: queue as a waiter, wait for a grant on the signal list
(BLPOP), claim it. Sans-IO: both drivers, sync and asyncio, run it; every wait is bounded by the
caller's deadline, its registration and when enough leases end on their own.

The retry and timing constants are the lock's (:mod:`pyredislua.lock.plans`): a waiter's
registration outlives each BLPOP by the same slack, transport errors are retried with the same
backoff until the deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import redis

from ..engine.protocol import Engine, Plan, Sleep
from ..engine.waiting import wait_for_signal
from ..kit import TIMER_GRAIN
from ..lock.plans import (
    BLPOP_GRACE,
    REGISTRATION_SLACK_MS,
    REPLY_GRACE,
    TRANSPORT_ERRORS,
    backoff,
    registration_ms,
)
from .ops import (
    AcquireReply,
    Grant,
    SemaphoreKeys,
    acquire_call,
    forward_call,
    inbox,
    parse_grant,
)


class Acquired(NamedTuple):
    """What an acquire ended with."""

    reply: AcquireReply
    since: float  # local time before the lease began (the send time of the call that took it)


def acquire_plan(
    engine: Engine,
    keys: SemaphoreKeys,
    lease: str,
    permits: int,
    count: int,
    ttl_ms: int,
    *,
    timeout: float | None,
    max_block: float,
    clock: Callable[[], float] = time.monotonic,
) -> Plan[Acquired]:
    """Try to acquire; until ``timeout`` (None: forever), queue as a waiter and block on the
    signal list between tries.

    A release (or any call that finds permits freed) grants them to the head of the queue, in
    order, and pushes each grant ``grant:<fence>:<lease>`` to the signal list; Redis hands it to
    the longest-blocked client. A waiter that pops its own grant claims it with its next
    acquire call (a repeat of its lease: the lease is renewed to ``ttl_ms`` from that call, so
    the local lease estimate counts from its send time). A waiter blocks on the signal list and
    on its own inbox (:func:`~.ops.inbox`); one that pops another waiter's grant forwards it to
    that waiter's inbox in the same round trip as its next acquire call, so the grant reaches
    its waiter whether it is blocked, between two calls, or not yet blocked (its next call
    claims it anyway). A waiter whose BLPOP ends empty tries again, keeping its place in the
    queue; the final try at the deadline leaves the queue, and still takes a grant made to it
    meanwhile. A grant nobody claims ends with its grant window and its permits return.
    """
    deadline = None if timeout is None else clock() + timeout
    window_ms = registration_ms(max_block)
    registered_until = 0.0
    forward: Grant | None = None
    signals = (keys.signal, inbox(keys, lease))
    failures, answered = 0, False
    while True:
        remaining = math.inf if deadline is None else deadline - clock()
        waiting = remaining > 0
        # register only to block: a waiter so close to its deadline that it would sleep the
        # rest out would be granted permits while it sleeps
        blocks = waiting and remaining - TIMER_GRAIN >= 0.001
        wait_ms: int | None = window_ms if blocks else (0 if registered_until else None)
        sent_at = clock()
        call_deadline = None if deadline is None else max(deadline, sent_at + REPLY_GRACE)
        call = acquire_call(keys, lease, permits, count, ttl_ms, wait_ms)
        try:
            if forward is None:
                reply = yield from engine.run_one(call, deadline=call_deadline)
            else:
                # one round trip: the grant to its waiter's inbox, then this waiter's own call
                _, reply = yield from engine.run([forward_call(keys, forward), call],
                                                 deadline=call_deadline)
        except TRANSPORT_ERRORS as error:
            # the outcome is unknown: the retry (a repeat of the lease id) tells
            forward = None  # sent at most once (its waiter claims the grant with a call anyway)
            if deadline is None:
                raise
            if clock() >= deadline:
                if not answered and not isinstance(error, redis.exceptions.TimeoutError):
                    raise  # Redis could not be reached at all
                return Acquired(AcquireReply(False, 0, 0, 0, -1, 0), sent_at)
            yield Sleep(min(backoff(failures), max(0.0, deadline - clock())))
            failures += 1
            continue
        failures, answered, forward = 0, True, None
        if wait_ms is not None:
            registered_until = sent_at + wait_ms / 1000 if wait_ms else 0.0
        if reply.acquired or not waiting:
            return Acquired(reply, sent_at)
        now = clock()
        free_in = math.inf if reply.retry_after_ms < 0 else reply.retry_after_ms / 1000 + 0.001
        left = math.inf if deadline is None else deadline - now - TIMER_GRAIN
        block = min(left, max_block, registered_until - now - REGISTRATION_SLACK_MS / 1000,
                    free_in)
        if block >= 0.001:
            blpop_deadline = now + block + BLPOP_GRACE
            if deadline is not None:
                blpop_deadline = min(blpop_deadline, max(deadline, now + block + 0.05))
            try:
                got = yield from wait_for_signal(signals, block, max_block=block,
                                                 deadline=blpop_deadline, grain=0.0)
            except TRANSPORT_ERRORS:
                continue  # the next acquire call retries, or gives up at the deadline
            if got is not None:
                grant = parse_grant(got[1])
                if grant.lease != lease:
                    forward = grant  # not ours: forwarded with the next call
                # ours: the next call (a repeat of the lease) claims it
        else:
            left = math.inf if deadline is None else deadline - clock()
            if left > 0:
                # the last stretch: sleep it out, then one final try
                yield Sleep(min(left, free_in, TIMER_GRAIN))
