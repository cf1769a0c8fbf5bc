"""What one ``Redlock`` object knows of its hold, and the plans that change it: no I/O.

The counterpart of :class:`pyredislua.lock.hold.Hold` for N nodes: the same bookkeeping
(:class:`~pyredislua.lock.lease.LeaseHolder`: ``lost``/``on_lost``, ``valid_until``), and the same
watchdog interface (``_renew_plan``), so :mod:`pyredislua.lock.watchdog` renews it unchanged.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..engine.protocol import Engine
from ..errors import LockError, LockLostError, LockNotOwnedError
from ..kit import ms
from ..lock.hold import LockTimeoutError
from ..lock.lease import Lease, LeaseHolder
from ..lock.ops import LockKeys
from .core import Attempt, FanPlan, attempts_plan, extend_round, quorum, release_all

# What the random retry delay draws from (not for secrets: it only spreads clients apart).
_draw = random.Random().random


class RedlockHold(LeaseHolder):
    """The sans-IO core of a Redlock object; see :class:`~pyredislua.redlock.Redlock`."""

    def __init__(
        self,
        engines: Sequence[Engine],
        name: str,
        *,
        ttl: float = 30.0,
        node_timeout: float = 0.1,
        retry_delay: float = 0.2,
        auto_renew: bool = True,
        max_hold: float | None = None,
        on_lost: Callable[[Any], None] | None = None,
        blocking_timeout: float | None = None,
        token: str | None = None,
        prefix: str = "prl",
    ) -> None:
        if not engines:
            raise ValueError("Redlock needs at least one node")
        self.name = name
        self.keys = LockKeys(name, prefix)
        self.token = token or secrets.token_hex(16)
        if len(self.token) > 200:
            raise ValueError("token: at most 200 characters (each attempt appends a count)")
        self.ttl_ms = ms(ttl)
        if not node_timeout > 0 or not math.isfinite(node_timeout):
            raise ValueError(f"node_timeout must be a positive number of seconds, got "
                             f"{node_timeout!r}")
        if node_timeout * 1000 >= self.ttl_ms:
            raise ValueError("node_timeout must be much shorter than ttl (the validity time is "
                             "what is left of ttl once the nodes replied)")
        if not retry_delay >= 0 or not math.isfinite(retry_delay):
            raise ValueError(f"retry_delay must be a non-negative number, got {retry_delay!r}")
        self.node_timeout = float(node_timeout)
        self.retry_delay = float(retry_delay)
        self.auto_renew = auto_renew
        self.max_hold = None if max_hold is None else float(max_hold)
        self._first_ttl_ms = self.ttl_ms if max_hold is None else min(self.ttl_ms, ms(max_hold))
        self.on_lost = on_lost
        self.blocking_timeout = blocking_timeout
        self.fence: int | None = None
        self.lost_reason: str | None = None
        self.last_attempt: Attempt | None = None  # the last acquire attempt (why it failed)
        self._engines = tuple(engines)
        self._lease: Lease | None = None
        self._attempts = 0
        self._hold_token = self.token

    def _next_token(self) -> str:
        """Every attempt's owner token: this object's token and a count (see attempts_plan)."""
        self._attempts += 1
        return f"{self.token}.{self._attempts}"

    @property
    def owner_token(self) -> str:
        """The owner token of the current (or last) hold on the nodes: ``<token>.<attempt>``."""
        return self._hold_token

    @property
    def nodes(self) -> int:
        return len(self._engines)

    @property
    def quorum(self) -> int:
        return quorum(len(self._engines))

    # -- what this object believes (no round trip) ----------------------------------------------

    def _on_acquired(self) -> None:
        """Called once a hold begins (the façade starts its watchdog)."""

    # -- plans ------------------------------------------------------------------------------------

    def _acquire_plan(self, blocking: bool, timeout: float | None) -> FanPlan[bool]:
        if self.held:
            raise LockError(f"redlock {self.name!r} is held by this object already "
                            "(extend() renews it)")
        attempt = yield from attempts_plan(
            self._engines, self.keys, self._next_token, self._first_ttl_ms,
            node_timeout=self.node_timeout, blocking=blocking, timeout=timeout,
            retry=self.retry_delay, draw=_draw)
        self.last_attempt = attempt
        if not attempt.acquired:
            return False
        self.fence = attempt.fence
        self._hold_token = attempt.token
        self.lost_reason = None
        cap = None if self.max_hold is None else attempt.started + self.max_hold
        self._lease = Lease(self.ttl_ms, attempt.valid_until, cap)
        self._on_acquired()
        return True

    def _release_plan(self) -> FanPlan[None]:
        """Release on every node. Raises LockNotOwnedError when this object held nothing valid
        (never acquired, or lost: then no node had to be ours) and no majority released."""
        lease, self._lease = self._lease, None  # stops the watchdog first
        valid = lease is not None and self.lost_reason is None and \
            time.monotonic() < lease.valid_until
        votes = yield from release_all(self._engines, self.keys, self._hold_token,
                                       set(range(self.nodes)), self.node_timeout,
                                       enough=self.quorum)
        if valid or len(votes.yes) >= self.quorum:
            return
        if lease is not None:
            self._mark_lost("the validity ran out before release")
        raise LockNotOwnedError(f"redlock {self.name!r} is not held by this owner")

    def _lose(self, reason: str) -> FanPlan[None]:
        """The hold is gone: release what is left of it everywhere, and say so."""
        self._mark_lost(reason)
        yield from release_all(self._engines, self.keys, self._hold_token, set(range(self.nodes)),
                               self.node_timeout)

    def _extend_plan(self, ttl_ms: int) -> FanPlan[None]:
        """Renew the lease to ``ttl_ms`` from now on a majority; otherwise the hold is lost
        (released everywhere, ``lost``), and LockLostError is raised."""
        if self.lost_reason is None and self.lost:
            yield from self._lose("the validity ran out before extend")
        lease = self._lease
        if lease is None or self.lost:
            raise LockLostError(f"redlock {self.name!r} is not held: {self.lost_reason}")
        renewal = yield from extend_round(self._engines, self.keys, self._hold_token, ttl_ms,
                                          self.node_timeout, lease.valid_until)
        if not renewal.extended:
            yield from self._lose("extend did not reach a majority of the nodes in time")
            raise LockLostError(f"redlock {self.name!r} was lost: {self.lost_reason}")
        if self._lease is lease:
            lease.valid_until = renewal.valid_until

    def _renew_plan(self, now: float, cap: float | None = None) -> FanPlan[float | None]:
        """One watchdog step: renew on a majority, or retry while the validity lasts, or lose
        the hold (released everywhere). Returns when to run next (None: stop)."""
        lease = self._lease
        if lease is None or self.lost_reason is not None:
            return None
        ttl_ms = lease.next_renewal_ttl(now)
        if ttl_ms is None:
            if now >= lease.valid_until:
                yield from self._lose(f"max_hold of {self.max_hold:g}s reached")
                return None
            return lease.valid_until
        if now >= lease.valid_until:
            yield from self._lose("the validity ran out before it could be renewed")
            return None
        deadline = lease.valid_until if cap is None else min(lease.valid_until, cap)
        renewal = yield from extend_round(self._engines, self.keys, self._hold_token, ttl_ms,
                                          self.node_timeout, deadline)
        if self._lease is not lease:
            return None  # released meanwhile (asyncio: release runs beside the renewal)
        if renewal.extended:
            lease.valid_until = renewal.valid_until
            return min(time.monotonic() + lease.renew_every, lease.valid_until)
        if renewal.hopeless:
            yield from self._lose("a majority of the nodes no longer hold this token's lease")
            return None
        if time.monotonic() >= lease.valid_until:
            yield from self._lose("no majority renewed before the validity ran out")
            return None
        # some nodes did not answer in time: try again soon, while the validity lasts
        return min(time.monotonic() + lease.renew_every / 3, lease.valid_until)

    # -- context managers ----------------------------------------------------------------------

    def _timeout_error(self) -> LockTimeoutError:
        why = "" if self.last_attempt is None else f": {self.last_attempt.reason}"
        return LockTimeoutError(
            f"redlock {self.name!r} not acquired within {self.blocking_timeout}s{why}")

    def _exit_error(self, exc_type: type[BaseException] | None) -> LockLostError | None:
        if self.lost and exc_type is None:
            return LockLostError(f"redlock {self.name!r} was lost while held: {self.lost_reason}")
        return None

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} nodes={self.nodes} fence={self.fence} "
                f"held={self.held}>")
