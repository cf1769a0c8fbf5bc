"""The lock's Lua contract in Python: its keys, one call spec per operation, and their replies.

Pure: building a call does no I/O. Any client runs them (``client.run(call)``, pipelines,
``client.run_many``), and so may any other Redis client following ``docs/reference.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from ..engine.keysets import KeySet
from ..engine.protocol import Call
from ..kit import as_text
from ..observe.series import MinuteSeries, parse_series


class LockKeys(KeySet, keyset="lock"):
    """The keys of one lock (``lua/keysets/lock.keys``), all under one hash tag."""

    lock: str
    fence: str
    signal: str
    waiters: str


# -- fences ---------------------------------------------------------------------------------------

FenceDurability = Literal["durable", "ephemeral"]

# "ephemeral" fences: the counter expires this many leases (at least EPHEMERAL_FENCE_MIN_MS)
# after the last acquire or grant.
EPHEMERAL_FENCE_LEASES = 100
EPHEMERAL_FENCE_MIN_MS = 3_600_000


def fence_ttl_ms(fences: FenceDurability, ttl_ms: int) -> int:
    """The fence counter's TTL for a durability: 0 (never expires) for ``durable``."""
    if fences == "durable":
        return 0
    if fences == "ephemeral":
        return max(EPHEMERAL_FENCE_LEASES * ttl_ms, EPHEMERAL_FENCE_MIN_MS)
    raise ValueError(f"fences must be 'durable' or 'ephemeral', got {fences!r}")


# -- replies --------------------------------------------------------------------------------------


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


def parse_acquire(reply: Any) -> AcquireResult:
    if int(reply[0]) == 1:
        return AcquireResult(True, int(reply[1]), int(reply[2]))
    return AcquireResult(False, None, int(reply[1]))


def parse_state(reply: Any) -> LockState:
    owner = None if reply[1] is None else as_text(reply[1])
    return LockState(bool(int(reply[0])), owner, int(reply[2]), int(reply[3]), int(reply[4]))


def _renewed(reply: Any) -> bool:
    return int(reply) == 1


# -- call specs: one per Lua operation ------------------------------------------------------------


def acquire_call(keys: LockKeys, token: str, ttl_ms: int, wait_ms: int | None = None,
                 fence_ttl_ms: int = 0) -> Call[AcquireResult]:
    """``wait_ms``: None (not a waiter), > 0 (register for that long when busy), 0 (end a
    registration); ``fence_ttl_ms``: 0 durable fences, else the counter's TTL."""
    args: tuple[str | int, ...] = (token, ttl_ms)
    if wait_ms is not None or fence_ttl_ms:
        args = (token, ttl_ms, -1 if wait_ms is None else wait_ms)
        if fence_ttl_ms:
            args = (*args, fence_ttl_ms)
    return Call("lock.acquire", keys.with_metrics(), args, parse_acquire)


def extend_call(keys: LockKeys, token: str, ttl_ms: int) -> Call[bool]:
    return Call("lock.extend", keys.with_metrics((keys.lock,)), (token, ttl_ms), _renewed)


RELEASED_FREE = 1
RELEASED_GRANTED = 2  # released, and granted straight to a registered waiter
RELEASED_CARRIED = 3  # kept for the releaser's next acquire, within its turn (turn_ms)
RELEASED_UNCONFIRMED = -1  # the reply was lost and a re-send found the lock no longer ours

CARRY_PREFIX = "carry:"  # the owner of a lock carried for its releaser: carry:<token>


def release_call(keys: LockKeys, token: str, ttl_ms: int = 30_000, handoff_ms: int = 100,
                 waiter: str = "", requeue_ms: int = 0, turn_ms: int = 0) -> Call[int]:
    """Reply: 0 not held by ``token``, 1 released, 2 released and granted to a waiter, 3
    carried for the releaser's next acquire (``turn_ms``).

    ``ttl_ms``: the releaser's lease (of a grant to waiters that declared none, and of its own
    requeue registration); ``waiter``: the token to register with ``requeue_ms`` when the lock
    goes to someone else (default: ``token``); ``turn_ms``: keep the lock for the releaser's
    next acquire while its turn is younger than this (bounded barging)."""
    args: tuple[str | int, ...] = (token, ttl_ms, handoff_ms, waiter, requeue_ms, turn_ms)
    if not turn_ms:
        args = args[:5]
        if not requeue_ms:
            args = args[:4] if waiter else args[:3] if handoff_ms != 100 else args[:2]
    return Call("lock.release", keys.with_metrics(), args, int)


def pass_on_call(keys: LockKeys, token: str, ttl_ms: int = 30_000, handoff_ms: int = 100
                 ) -> Call[int]:
    """Pass on a lock carried for ``token`` that it will not acquire again: granted to the
    longest-blocked waiter (2), or freed (1); 0 when it is no longer carried (taken again, or
    its carry ran out)."""
    return release_call(keys, CARRY_PREFIX + token, ttl_ms, handoff_ms, token)


def metrics_call(keys: LockKeys) -> Call[MinuteSeries]:
    """The lock's recorded metrics (``lock.metrics``, no writes; keys built with
    ``metrics=True`` make acquire, release and extend record: see
    :mod:`pyredislua.observe.series`)."""
    return Call("lock.metrics", (keys.metrics_key,), (), parse_series("lock", keys.name))


def inspect_call(keys: LockKeys) -> Call[LockState]:
    return Call("lock.inspect", (keys.lock, keys.fence, keys.waiters), (), parse_state)
