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
from typing import Any, NamedTuple

from ..engine.protocol import Call, Engine, Plan
from ..kit import TIMER_GRAIN
from ..lock.plans import Tries, blocking_tries
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
    return (yield from blocking_tries(
        engine, _PermitTries(keys, lease, permits, count, ttl_ms), timeout=timeout,
        max_block=max_block, clock=clock))


class _PermitTries(Tries[AcquireReply, Acquired]):
    # the retry hint may be unknown (no lease in the queue's way has an end yet)
    stretch_cap = TIMER_GRAIN

    def __init__(self, keys: SemaphoreKeys, lease: str, permits: int, count: int,
                 ttl_ms: int) -> None:
        self.keys, self.lease, self.permits, self.count, self.ttl_ms = (
            keys, lease, permits, count, ttl_ms)
        self.grant: Grant | None = None  # another waiter's grant, to forward to its inbox

    def call(self, wait_ms: int | None) -> Call[AcquireReply]:
        return acquire_call(self.keys, self.lease, self.permits, self.count, self.ttl_ms,
                            wait_ms)

    def forward(self) -> Call[Any] | None:
        # sent at most once (its waiter claims the grant with a call anyway)
        grant, self.grant = self.grant, None
        return None if grant is None else forward_call(self.keys, grant)

    def settle(self, result: AcquireReply, sent_at: float, waiting: bool,
               registered: tuple[float, float] | None) -> Plan[Acquired | None]:
        if result.acquired or not waiting:
            return Acquired(result, sent_at)
        return None
        yield  # a plan: nothing to send

    def free_in(self, result: AcquireReply) -> float:
        return math.inf if result.retry_after_ms < 0 else result.retry_after_ms / 1000 + 0.001

    def signals(self, result: AcquireReply | None) -> tuple[str, ...]:
        return (self.keys.signal, inbox(self.keys, self.lease))

    def popped(self, value: Any, since: float, deadline: float | None
               ) -> Plan[Acquired | None]:
        grant = parse_grant(value)
        if grant.lease != self.lease:
            self.grant = grant  # not ours: forwarded with the next call
        # ours: the next call (a repeat of the lease) claims it
        return None
        yield

    def timed_out(self, sent_at: float, registered: tuple[float, float] | None
                  ) -> Plan[Acquired]:
        return Acquired(AcquireReply(False, 0, 0, 0, -1, 0), sent_at)
        yield
