"""The semaphore's Lua contract in Python: its keys, one call spec per operation, their replies.

Pure: building a call does no I/O. Any client runs them (``client.run(call)``, pipelines), and
so may any other Redis client following ``docs/reference.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..engine.keysets import KeySet
from ..engine.protocol import Call
from ..kit import as_text


class SemaphoreKeys(KeySet, keyset="semaphore"):
    """The keys of one semaphore (``lua/keysets/semaphore.keys``), all under one hash tag."""

    semaphore: str
    leases: str
    fence: str
    signal: str
    waiters: str
    waiting: str


MAX_PERMITS = 100_000


class AcquireReply(NamedTuple):
    acquired: bool
    fence: int  # 0 when not acquired
    in_use: int  # permits held by live leases after the call
    waiters: int  # waiters queued after the call
    retry_after_ms: int  # not acquired: when enough leases end on their own (-1: unknown)
    now_ms: int


class ReleaseReply(NamedTuple):
    released: bool
    in_use: int
    waiters: int
    granted: int  # grants this release made to queued waiters
    now_ms: int


GRANT_PREFIX = "grant:"


class Grant(NamedTuple):
    """A grant popped from the signal list: ``grant:<fence>:<lease>``."""

    fence: int
    lease: str
    raw: str


def parse_grant(grant: Any) -> Grant:
    text = as_text(grant)
    _, fence, lease = text.split(":", 2)
    return Grant(int(fence), lease, text)


def parse_acquire(reply: Any) -> AcquireReply:
    v = [int(x) for x in reply]
    return AcquireReply(bool(v[0]), v[1], v[2], v[3], v[4], v[5])


def parse_release(reply: Any) -> ReleaseReply:
    v = [int(x) for x in reply]
    return ReleaseReply(bool(v[0]), v[1], v[2], v[3], v[4])


def inbox(keys: SemaphoreKeys, lease: str) -> str:
    """A waiter's own list, BLPOPped with the signal list: a grant for it that another waiter
    popped is forwarded there (:func:`forward_call`)."""
    return f"{keys.signal}:{lease}"


def acquire_call(keys: SemaphoreKeys, lease: str, permits: int, count: int, ttl_ms: int,
                 wait_ms: int | None = None) -> Call[AcquireReply]:
    """``wait_ms``: None (not a waiter), > 0 (queue, or stay queued, for that long when not
    acquired), 0 (leave the queue)."""
    args: tuple[str | int, ...] = (lease, permits, count, ttl_ms)
    if wait_ms is not None:
        args = (*args, wait_ms)
    return Call("semaphore.acquire", keys.all, args, parse_acquire)


def forward_call(keys: SemaphoreKeys, grant: Grant) -> Call[bool]:
    """Forward a grant popped by the wrong waiter to its waiter's inbox (while unclaimed)."""
    return Call("semaphore.forward", (keys.semaphore, keys.waiting, inbox(keys, grant.lease)),
                (grant.raw,), lambda r: bool(int(r)))


class SemaphoreState(NamedTuple):
    in_use: int  # permits held by live leases
    queued: int  # waiters queued (registrations that ended count until a call drops them)
    fence: int  # the last fence issued (0 if never)
    now_ms: int


def inspect_call(keys: SemaphoreKeys) -> Call[SemaphoreState]:
    return Call("semaphore.inspect", (keys.semaphore, keys.fence, keys.waiters), (),
                lambda r: SemaphoreState(*(int(x) for x in r)))


def release_call(keys: SemaphoreKeys, lease: str, permits: int) -> Call[ReleaseReply]:
    return Call("semaphore.release", keys.all, (lease, permits), parse_release)


def renew_call(keys: SemaphoreKeys, lease: str, ttl_ms: int) -> Call[bool]:
    return Call("semaphore.renew", keys.all, (lease, ttl_ms), lambda r: bool(int(r[0])))
