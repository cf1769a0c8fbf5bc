"""What a holder believes about its lease, with no round trip: shared by a lock's
:class:`~.hold.Hold`, a Redlock's :class:`~pyredislua.redlock.hold.RedlockHold` and a semaphore's
:class:`~pyredislua.semaphore.Permit`, which the watchdogs (:mod:`.watchdog`) renew alike.

The local estimate of a lease is a lower bound of the server's: it counts from the send time of
the call that took or last renewed it. So ``held`` turns false no later than the server lets the
lease go, whether or not a call is in flight, and ``lost`` says so.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Lease:
    """When to renew a held lease and for how long; pure bookkeeping, no I/O."""

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


class LeaseHolder:
    """The state every holder keeps of its lease: the lease (None: not held), why it was lost
    (None: it was not), and whom to tell."""

    lost_reason: str | None
    on_lost: Callable[[Any], None] | None
    _lease: Lease | None

    @property
    def lost(self) -> bool:
        """True once this holder may no longer hold what it took although it did not release
        it: a renewal failed, or the lease ran out by the local clock (the server's may last a
        little longer; the local estimate is a lower bound), whether or not a call is pending."""
        if self.lost_reason is not None:
            return True
        lease = self._lease
        return lease is not None and time.monotonic() >= lease.valid_until

    @property
    def held(self) -> bool:
        """Whether this object believes it holds (no round trip)."""
        return self._lease is not None and not self.lost

    @property
    def valid_until(self) -> float | None:
        """``time.monotonic()`` by which the current lease has surely not ended (None: not
        held). Work done before it is inside the lease."""
        lease = self._lease
        return None if lease is None or self.lost_reason is not None else lease.valid_until

    def _mark_lost(self, reason: str) -> None:
        """Record the first reason the lease was lost, and tell ``on_lost`` (once; what it
        raises is not the holder's business)."""
        if self.lost_reason is None:
            self.lost_reason = reason
            self._noted_lost(reason)
            if self.on_lost is not None:
                with contextlib.suppress(Exception):
                    self.on_lost(self)

    def _noted_lost(self, reason: str) -> None:
        """A subclass's own note of the loss (a tracing event), before ``on_lost``."""
