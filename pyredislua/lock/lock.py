"""The lock façade: one class, on a sync or an asyncio client."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from ..client import AsyncClient, Client
from ..engine.protocol import Call
from ..kit import ms
from ..observe import tracing
from ..observe.series import MinuteSeries
from .block import ClientHold
from .ops import FenceDurability, LockState, inspect_call, metrics_call, parse_state

C = TypeVar("C", Client, AsyncClient)

# With ``turn``, a blocked waiter looks again this long past a turn (the carry's lease on the
# server outlives the turn by 250 ms).
CARRY_LOOK_AGAIN = 0.3
T = TypeVar("T")


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _asked(call: Call[LockState], answer: Callable[[LockState], T]) -> Call[T]:
    """``call`` with its reply read as ``answer`` of the lock's state."""
    return Call(call.op, call.keys, call.args, lambda reply: answer(parse_state(reply)))


class Lock(ClientHold[C]):
    """A distributed lock with fencing tokens, fair hand-off and an auto-renewal watchdog, on a
    sync :class:`~pyredislua.Client` or an asyncio :class:`~pyredislua.AsyncClient`::

        with Lock(client, "orders", ttl=10) as lock:          # Client: values
            write(..., fence=lock.fence)
        async with Lock(aclient, "orders", ttl=10) as lock:   # AsyncClient: awaitables
            ...
        lock = Lock(client, "orders"); lock.acquire(timeout=2); ...; lock.release()

    Guarantee, and its limits
    -------------------------
    On a single Redis primary, at most one owner token holds the lock at a time, for the length
    of its lease. What a holder believes is a lower bound of that lease: ``lock.valid_until`` is
    counted from a local time provably before the lease began, so ``held`` turns false (and
    ``lost`` true) no later than Redis lets the lease go, whether or not a call is pending.
    Every acquisition returns a **fencing token** (``lock.fence``) from a counter that never goes
    backwards, not on release, not on expiry (``fences="durable"``, the default).

    What the lock does **not** guarantee:

    * **A lease is time-bound.** A holder that stalls (GC pause, swapped process, network
      partition) past its lease can resume and act as if it still held the lock while another
      holder runs. The lock tells it (``held``, ``lost``, ``on_lost``,
      :class:`~pyredislua.errors.LockLostError` on leaving ``with``) but cannot stop a write
      under way. That is what fences are for: pass ``lock.fence`` with every write to the
      protected resource and have it reject a fence lower than the highest it has seen.
    * **Failover, restarts without persistence.** Redis replicates asynchronously. If the
      primary fails after granting a lock and before a replica received it, the promoted
      replica does not know the lock is held and grants it again (and its fence counter may be
      behind); a restart without persistence forgets both too. ``WAIT`` narrows this window, it
      does not close it.
    * **Eviction.** Run Redis with ``maxmemory-policy noeviction``: an LRU policy may silently
      delete a held lock or the fence counter.
    * **Clock jumps.** Leases expire on the server's wall clock; holders count on their
      monotonic clock. The lower bound assumes both run at the same rate.

    Waiting is not polling: a blocking acquire registers as a waiter and blocks on a signal list
    (BLPOP). A release that finds a live waiter grants the lock directly to the longest-blocked
    one (first come, first served: the releaser cannot barge back in, unless ``turn`` lets it
    for a bounded time) by pushing it a grant,
    which is the new owner token and carries the next fence and a lease no longer than any
    registered waiter asked for, so the waiter holds the lock without another round trip and a
    crashed holder delays waiters by its own TTL at most. The grant expires with its lock. A
    grant nobody popped (its waiter was between calls, or died) is taken over by the next waiter
    that registers, or by anyone after ``handoff``.

    Options
    -------
    ttl: lease length in seconds. auto_renew: a watchdog renews the lease every ttl/3 while held
    (a thread per sync client, a task per lock under asyncio; see :mod:`.watchdog`).
    max_hold: cap on total hold time (seconds); renewal stops there and the lease lapses.
    on_lost: called (from the watchdog) when the lease is lost while held, at the latest when it
    runs out by the local clock, even while a renewal call hangs on a paused server.
    blocking_timeout: how long ``with`` waits (None: forever). token: the owner token (default:
    random per Lock object; the token belongs to this object, not to a thread or task).
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

    ``turn`` (seconds, 0 by default: every hold goes to the longest-blocked waiter): bounded
    barging, for a Lock used in a loop. While its turn is younger than ``turn``, a release that
    finds waiters keeps the lock for this object's next acquire (the lock is *carried*: nobody
    else takes it meanwhile) instead of handing it over, so a loop runs hot in one process, as
    it would under redis-py's polling lock; the first release past the turn grants the lock to
    the longest-blocked waiter as usual, whose own turn then begins. The turn starts at the
    first release that carries, so the longest-blocked waiter waits at most ``turn`` plus the
    hold then under way and one more (Go's ``sync.Mutex`` bounds its barging the same way).
    Every hold, carried or not, gets the next fence. A carry that is not acquired again within
    ``turn`` is passed on by a timer (the watchdog's thread, or a timer on the asyncio loop); if
    the process dies instead, the carry's lease (``turn`` + 250 ms) ends it, and waiters then
    notice when their BLPOP times out: within ``turn`` + 0.3 s for Locks with a ``turn`` (give
    every user of one lock name the same ``turn``), 2 s by default for others. Only releases
    that requeue (see ``requeue``) carry. Short turns hand over more often and cost
    throughput: on the lock benchmark (holds of two round trips, 8 processes) 1 ms turns reach
    about 0.75 x redis-py's throughput, 10 ms turns (about 20 holds each) more than 1.0 x.

    ``metrics=True``: acquire, release and extend record per-minute counts (acquired, contended,
    handoffs, expired) in ``prl:lock:{name}:metrics``; read them with :meth:`metrics` (see
    docs/design/metrics-in-redis.md).

    Every method is one call or one plan (:mod:`.ops`, :mod:`.plans`, :mod:`.hold`), returned as
    the client makes it: a value on a ``Client``, an awaitable on an ``AsyncClient``.
    """

    def __init__(
        self,
        client: C,
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
        super().__init__(client.engine, name, ttl=ttl, auto_renew=auto_renew, max_hold=max_hold,
                         on_lost=on_lost, blocking_timeout=blocking_timeout, token=token,
                         prefix=prefix, handoff=handoff, requeue=requeue, fences=fences,
                         metrics=metrics, turn=turn)
        self._bind(client)

    _what = "a Lock"

    @overload
    def acquire(self: Lock[Client], blocking: bool = True, timeout: float | None = None
                ) -> bool: ...
    @overload
    def acquire(self: Lock[AsyncClient], blocking: bool = True, timeout: float | None = None
                ) -> Awaitable[bool]: ...
    def acquire(self, blocking: bool = True, timeout: float | None = None
                ) -> bool | Awaitable[bool]:
        """Acquire; ``timeout`` in seconds (None: wait forever), honoured to the millisecond,
        also while Redis is paused or restarting (connection errors are retried until then).
        Not blocking: one round trip. Acquiring again while holding renews the same hold."""
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        if not blocking:
            traced = tracing.active()
            if traced is not None:
                return self._client.drive(self._traced_try_plan(traced))
            return self._client.run(self._try_call())
        max_block = self._client.max_block
        if self.turn_ms:
            # a carrier that died holds the lock until its carry's lease ends (turn + 250 ms):
            # waiters look again that soon instead of at the end of a long BLPOP
            max_block = min(max_block, self.turn_ms / 1000 + CARRY_LOOK_AGAIN)
            if self._carried is not None and tracing.active() is None:
                # the lock was carried for this object: taking it is one plain call (the
                # hot path of a loop in its turn); only if the carry is gone, wait as usual
                return self._take_carry(timeout, max_block)
        return self._client.drive(self._acquire_plan(timeout, max_block))

    def _take_carry(self, timeout: float | None, max_block: float) -> bool | Awaitable[bool]:
        client = self._client
        deadline = None if timeout is None else time.monotonic() + timeout
        if isinstance(client, AsyncClient):
            return self._take_carry_async(client, deadline, max_block)
        return client.run(self._try_call()) or client.drive(
            self._acquire_plan(_left(deadline), max_block))

    async def _take_carry_async(self, client: AsyncClient, deadline: float | None,
                                max_block: float) -> bool:
        return await client.run(self._try_call()) or await client.drive(
            self._acquire_plan(_left(deadline), max_block))

    @overload
    def release(self: Lock[Client]) -> None: ...
    @overload
    def release(self: Lock[AsyncClient]) -> Awaitable[None]: ...
    def release(self) -> Awaitable[None] | None:
        """Release; raises LockNotOwnedError if this token no longer holds the lock (and marks
        the hold lost when it was held). A release whose reply was lost is re-sent; finding the
        lock gone then counts as released if the lease was still valid when release was asked
        for. Renewal stops first; on an AsyncClient the release is shielded from cancellation."""
        return self._watchdog.release(self._release_plan())

    @overload
    def extend(self: Lock[Client], ttl: float | None = None) -> None: ...
    @overload
    def extend(self: Lock[AsyncClient], ttl: float | None = None) -> Awaitable[None]: ...
    def extend(self, ttl: float | None = None) -> Awaitable[None] | None:
        """Renew the lease to ``ttl`` seconds (default: the lock's ttl) from now. Raises
        LockNotOwnedError if the lock is no longer held, LockLostError if the local lease ran
        out first (the renewal is awaited until then and no longer)."""
        ttl_ms = self.ttl_ms if ttl is None else ms(ttl)
        return self._watchdog.exclusive(self._extend_plan(ttl_ms))

    @overload
    def inspect(self: Lock[Client]) -> LockState: ...
    @overload
    def inspect(self: Lock[AsyncClient]) -> Awaitable[LockState]: ...
    def inspect(self) -> LockState | Awaitable[LockState]:
        """The lock's state on the server (one read-only call)."""
        return self._client.run(inspect_call(self.keys))

    @overload
    def metrics(self: Lock[Client]) -> MinuteSeries: ...
    @overload
    def metrics(self: Lock[AsyncClient]) -> Awaitable[MinuteSeries]: ...
    def metrics(self) -> MinuteSeries | Awaitable[MinuteSeries]:
        """What acquire, release and extend recorded (with ``metrics=True``, by any client), per
        minute over the last hour (one read-only call)."""
        return self._client.run(metrics_call(self.keys))

    @overload
    def owned(self: Lock[Client]) -> bool: ...
    @overload
    def owned(self: Lock[AsyncClient]) -> Awaitable[bool]: ...
    def owned(self) -> bool | Awaitable[bool]:
        """Whether this token holds the lock, asked of the server."""
        token = self._hold_token
        return self._client.run(_asked(inspect_call(self.keys), lambda s: s.owner == token))

    @overload
    def locked(self: Lock[Client]) -> bool: ...
    @overload
    def locked(self: Lock[AsyncClient]) -> Awaitable[bool]: ...
    def locked(self) -> bool | Awaitable[bool]:
        """Whether anyone holds the lock, asked of the server."""
        return self._client.run(_asked(inspect_call(self.keys), lambda s: s.held))

