"""A distributed lock with fencing tokens, fair hand-off and an auto-renewal watchdog.

Guarantee, and its limits
-------------------------
On a single Redis primary, at most one owner token holds the lock at a time, for the length of its
lease. Every acquisition returns a **fencing token** (``lock.fence``): an integer from a counter
that never goes backwards, not on release, not on expiry.

What the lock does **not** guarantee:

* **A lease is time-bound.** A holder that stalls (GC pause, swapped process, network partition)
  past its lease can resume believing it still holds the lock while another holder runs. The
  watchdog narrows this window and tells you when renewal failed (``lost``, ``on_lost``,
  :class:`~pyredislua.errors.LockLostError` on leaving ``with``) but cannot close it. That is what
  fences are for: pass ``lock.fence`` with every write to the protected resource and have it
  reject a fence lower than the highest it has seen.
* **Failover.** Redis replicates asynchronously. If the primary fails after granting a lock and
  before a replica received it, the promoted replica does not know the lock is held and grants it
  again (and its fence counter may be behind). ``WAIT`` narrows this window, it does not close it.
* **Eviction.** Run Redis with ``maxmemory-policy noeviction``: an LRU policy may silently delete a
  held lock or the fence counter.

Waiting is not polling: a failed blocking acquire registers as a waiter and blocks on a signal
list (BLPOP). A release that finds a live waiter grants the lock directly to the longest-blocked
one (first come, first served: the releaser cannot barge back in) by pushing it a grant, which is
the new owner token and carries the next fence, so the waiter holds the lock without another
round trip. A holder that dies frees the lock within its TTL (waiters also wake when the lease
runs out); a grant nobody popped (its waiter died) can be taken by anyone after ``handoff``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from .engine.protocol import Call, Command, Engine, Plan, Sleep, text
from .errors import LockError, LockLostError, LockNotOwnedError

if TYPE_CHECKING:
    from .client import AsyncClient, Client

# Redis resolves BLPOP timeouts on its cron tick (100 ms at the default hz 10), so a blocking wait
# aims this much short of the caller's deadline and the last stretch is slept locally.
TIMER_GRAIN = 0.11
# A waiter's registration outlives its current BLPOP by this much, covering the round trip back.
REGISTRATION_SLACK_MS = 250
# After a release that granted the lock to a waiter, the releaser stays registered this long, so
# an acquire soon after goes straight to waiting (one round trip fewer per contended hold).
REQUEUE_MS = 1000


class LockTimeoutError(LockError, TimeoutError):
    """A blocking acquire did not get the lock within its timeout."""


def hash_tagged(name: str) -> str:
    """``name`` as a hash-tagged key part: kept if it already carries a ``{tag}``."""
    start = name.find("{")
    if start >= 0 and name.find("}", start + 2) > start + 1:
        return name
    return "{" + name + "}"


def _ms(seconds: float) -> int:
    """Seconds to whole milliseconds, rounding up so a positive duration never becomes 0."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be a positive number of seconds, got {seconds!r}")
    return max(1, math.ceil(seconds * 1000 - 1e-9))


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


def _parse_acquire(reply: Any) -> AcquireResult:
    if int(reply[0]) == 1:
        return AcquireResult(True, int(reply[1]), int(reply[2]))
    return AcquireResult(False, None, int(reply[1]))


def _parse_state(reply: Any) -> LockState:
    owner = None if reply[1] is None else text(reply[1])
    return LockState(bool(int(reply[0])), owner, int(reply[2]), int(reply[3]), int(reply[4]))


class LockKeys:
    """The keys of one lock, all under one hash tag (one cluster slot)."""

    def __init__(self, name: str, prefix: str = "prl") -> None:
        base = f"{prefix}:lock:{hash_tagged(name)}"
        self.lock = base
        self.fence = base + ":fence"
        self.signal = base + ":signal"
        self.waiters = base + ":waiters"


# -- call specs: one per Lua operation ---------------------------------------------------------


def acquire_call(keys: LockKeys, token: str, ttl_ms: int, wait_ms: int = 0
                 ) -> Call[AcquireResult]:
    args: tuple[str | int, ...] = (token, ttl_ms, wait_ms) if wait_ms else (token, ttl_ms)
    return Call("lock.acquire", (keys.lock, keys.fence, keys.signal, keys.waiters), args,
                _parse_acquire)


def extend_call(keys: LockKeys, token: str, ttl_ms: int) -> Call[bool]:
    return Call("lock.extend", (keys.lock,), (token, ttl_ms), lambda r: int(r) == 1)


RELEASED_FREE = 1
RELEASED_GRANTED = 2  # released, and granted straight to a registered waiter


def release_call(keys: LockKeys, token: str, ttl_ms: int = 30_000, handoff_ms: int = 100,
                 waiter: str = "", requeue_ms: int = 0) -> Call[int]:
    """Reply: 0 not held by ``token``, 1 released, 2 released and granted to a waiter.

    ``ttl_ms``: lease of a grant to a waiter that did not declare one (the releaser's own);
    ``waiter``: the holder's own waiter token when it holds through a grant; ``requeue_ms``:
    register that token as a waiter when the lock goes to someone else."""
    args: tuple[str | int, ...] = (token, ttl_ms, handoff_ms, waiter, requeue_ms)
    if not requeue_ms:
        args = args[:4] if waiter else args[:3] if handoff_ms != 100 else args[:2]
    return Call("lock.release", (keys.lock, keys.fence, keys.signal, keys.waiters), args, int)


def inspect_call(keys: LockKeys) -> Call[LockState]:
    return Call("lock.inspect", (keys.lock, keys.fence, keys.waiters), (), _parse_state)


# -- plans: the lock's logic, written once for sync and asyncio --------------------------------


def acquire_plan(
    engine: Engine,
    keys: LockKeys,
    token: str,
    ttl_ms: int,
    *,
    blocking: bool,
    timeout: float | None,
    max_block: float,
    requeued: tuple[float, float] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Plan[tuple[AcquireResult, float]]:
    """Try to acquire; while blocking, wait on the signal list for a grant between tries.

    Returns the last result and the local time its request was sent (a safe lower bound for when
    the lease started). Sleeps locally only for the last stretch before the deadline, which
    Redis' timer grain cannot resolve. ``requeued``: (sent, until) when the caller's own release
    registered it as a waiter: it may wait for a grant before trying.

    A grant's lease is counted from the send time of the call after which it was made (the failed
    attempt, or the requeueing release): a safe lower bound even for a grant that sat in the list.
    """
    deadline = None if timeout is None else clock() + timeout
    if blocking and requeued is not None:
        remaining = math.inf if deadline is None else deadline - clock()
        block = min(remaining - TIMER_GRAIN, max_block, requeued[1] - clock() - 3 * TIMER_GRAIN)
        if block >= 0.001:
            popped = yield from _wait_for_grant(keys, ttl_ms, engine, block, requeued[0], clock)
            if popped is not None:
                return popped
    while True:
        remaining = math.inf if deadline is None else deadline - clock()
        waiting = blocking and remaining > 0
        wait_ms = 0
        if waiting:
            wait_ms = math.ceil(min(remaining, max_block) * 1000) + REGISTRATION_SLACK_MS
        sent_at = clock()
        result = yield from engine.run_one(acquire_call(keys, token, ttl_ms, wait_ms))
        if result.acquired or not waiting:
            return result, sent_at
        remaining = math.inf if deadline is None else deadline - clock()
        free_in = max(result.pttl_ms, 1) / 1000
        block = min(remaining - TIMER_GRAIN, max_block, free_in + 0.001)
        if block >= 0.001:
            popped = yield from _wait_for_grant(keys, ttl_ms, engine, block, sent_at, clock)
            if popped is not None:
                return popped
        elif remaining > 0:
            # The last stretch: sleep it out, then one final try, which takes over a grant pushed
            # meanwhile (a registered waiter may take one that nobody popped).
            yield Sleep(min(remaining, free_in + 0.001))


def _wait_for_grant(keys: LockKeys, ttl_ms: int, engine: Engine, block: float, since: float,
                    clock: Callable[[], float]) -> Plan[tuple[AcquireResult, float] | None]:
    """Block on the signal list; a popped grant makes the caller the holder. ``since``: the
    grant was made after this local time."""
    [popped] = yield [Command(("BLPOP", keys.signal, round(block, 3)))]
    if isinstance(popped, BaseException):
        raise popped
    if not popped:
        return None
    grant = parse_grant(text(popped[1]))
    if grant.pttl_ms == ttl_ms:
        return grant, since
    # the grant carries another waiter's lease length: set ours
    assert grant.token is not None
    extend_sent = clock()
    if (yield from engine.run_one(extend_call(keys, grant.token, ttl_ms))):
        return AcquireResult(True, grant.fence, ttl_ms, grant.token), extend_sent
    return None


@dataclass(slots=True)
class Lease:
    """When to renew a held lock and for how long; pure bookkeeping, no I/O."""

    ttl_ms: int
    valid_until: float  # local estimate of when the server-side lease ends
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


class _LockBase:
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
        requeue: bool = True,
    ) -> None:
        self.name = name
        self.keys = LockKeys(name, prefix)
        self.token = token or secrets.token_hex(16)
        self.ttl_ms = _ms(ttl)
        self.handoff_ms = _ms(handoff)
        self.auto_renew = auto_renew
        self.max_hold = None if max_hold is None else float(max_hold)
        # the very first lease must not outlive the hold cap either
        self._first_ttl_ms = self.ttl_ms if max_hold is None else min(self.ttl_ms, _ms(max_hold))
        self.on_lost = on_lost
        self.blocking_timeout = blocking_timeout
        self.fence: int | None = None
        self.lost_reason: str | None = None
        self._engine = engine
        self._lease: Lease | None = None
        self._hold_token = self.token  # a hold that came from a popped grant has its token
        self.requeue = requeue
        self._registered_until = 0.0  # our release requeued us as a waiter until then
        self._released_at = 0.0

    @property
    def owner_token(self) -> str:
        """The owner token of the current hold: ``token``, or the grant this object popped."""
        return self._hold_token

    @property
    def lost(self) -> bool:
        """True once this holder may no longer hold the lock although it did not release it."""
        return self.lost_reason is not None

    @property
    def held(self) -> bool:
        """Whether this object believes it holds the lock (no round trip; see ``owned()``)."""
        return self._lease is not None and not self.lost

    def _start_acquire(self, blocking: bool, timeout: float | None, max_block: float
                       ) -> tuple[str, Call[AcquireResult] | Plan[tuple[AcquireResult, float]]]:
        """The owner token to acquire with, and what to run: one call when not blocking (the
        hot path, no plan machinery), else the waiting plan."""
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        # while this object holds, a repeated acquire is an idempotent retry of its own hold
        token = self._hold_token if self.held else self.token
        if not blocking:
            return token, acquire_call(self.keys, token, self._first_ttl_ms)
        requeued = None
        if self._registered_until > time.monotonic():
            requeued = (self._released_at, self._registered_until)
        self._registered_until = 0.0
        return token, acquire_plan(self._engine, self.keys, token, self._first_ttl_ms,
                                   blocking=True, timeout=timeout, max_block=max_block,
                                   requeued=requeued)

    def _finish_acquire(self, result: AcquireResult, token: str, sent_at: float) -> bool:
        if not result.acquired:
            return False
        self._hold_token = result.token or token
        self.fence = result.fence
        self.lost_reason = None
        cap = None if self.max_hold is None else sent_at + self.max_hold
        self._lease = Lease(self.ttl_ms, sent_at + result.pttl_ms / 1000, cap)
        return True

    def _mark_lost(self, reason: str) -> None:
        if self.lost_reason is None:
            self.lost_reason = reason
            if self.on_lost is not None:
                with contextlib.suppress(Exception):
                    self.on_lost(self)

    def _renew_plan(self, now: float) -> Plan[float | None]:
        """One watchdog step: renew, or mark lost. Returns when to run next (None: stop)."""
        lease = self._lease
        if lease is None or self.lost:
            return None
        ttl_ms = lease.next_renewal_ttl(now)
        if ttl_ms is None:
            # The hold cap is reached: the lease was renewed up to the cap and ends there.
            if now >= lease.valid_until:
                self._mark_lost(f"max_hold of {self.max_hold:g}s reached; the lease expired")
                return None
            return lease.valid_until
        try:
            renewed = yield from self._engine.run_one(
                extend_call(self.keys, self._hold_token, ttl_ms))
        except Exception as error:  # connection trouble: retry until the lease runs out
            if time.monotonic() >= lease.valid_until:
                self._mark_lost(f"could not renew before the lease ran out: {error!r}")
                return None
            return min(time.monotonic() + lease.renew_every / 3, lease.valid_until)
        if not renewed:
            self._mark_lost("the lease expired or was taken over before it could be renewed")
            return None
        lease.valid_until = now + ttl_ms / 1000
        return min(now + lease.renew_every, lease.valid_until)

    def _start_release(self) -> tuple[Call[int], bool]:
        had_lease = self._lease is not None
        self._lease = None  # stops the watchdog before the lock is gone
        hold, self._hold_token = self._hold_token, self.token
        waiter = self.token if hold != self.token else ""
        requeue_ms = REQUEUE_MS if self.requeue else 0
        self._released_at = time.monotonic()
        call = release_call(self.keys, hold, self.ttl_ms, self.handoff_ms, waiter, requeue_ms)
        return call, had_lease

    def _finish_release(self, released: int, had_lease: bool) -> None:
        if released == RELEASED_GRANTED and self.requeue:
            self._registered_until = self._released_at + REQUEUE_MS / 1000
        if not released:
            if had_lease:
                self._mark_lost("the lease expired before release")
            raise LockNotOwnedError(f"lock {self.name!r} is not held by this owner")

    def _start_extend(self, ttl: float | None) -> tuple[Call[bool], int, float]:
        ttl_ms = self.ttl_ms if ttl is None else _ms(ttl)
        return extend_call(self.keys, self._hold_token, ttl_ms), ttl_ms, time.monotonic()

    def _finish_extend(self, extended: bool, ttl_ms: int, sent_at: float) -> None:
        if not extended:
            raise LockNotOwnedError(f"lock {self.name!r} is not held by this owner")
        if self._lease is not None:
            self._lease.valid_until = sent_at + ttl_ms / 1000

    def _timeout_error(self) -> LockTimeoutError:
        return LockTimeoutError(f"lock {self.name!r} not acquired within {self.blocking_timeout}s")

    def _exit_error(self, exc_type: type[BaseException] | None) -> LockLostError | None:
        if self.lost and exc_type is None:
            return LockLostError(f"lock {self.name!r} was lost while held: {self.lost_reason}")
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} fence={self.fence} held={self.held}>"


class Lock(_LockBase):
    """A distributed lock on a sync :class:`~pyredislua.Client`.

    ``with client.lock("orders", ttl=10) as lock: write(..., fence=lock.fence)``

    ttl: lease length in seconds. auto_renew: a watchdog renews the lease every ttl/3 while held.
    max_hold: cap on total hold time (seconds); renewal stops there and the lease lapses.
    on_lost: called (from the watchdog thread) when the lease is lost while held.
    blocking_timeout: how long ``with`` waits (None: forever). token: the owner token (default:
    random per Lock object; the token belongs to this object, not to a thread).
    handoff: how long a grant nobody popped stays reserved for registered waiters (then anyone
    may take it). requeue: after a release that granted the lock to a waiter, stay registered as
    a waiter for a second, so that the next acquire goes straight to waiting (for loops).
    """

    def __init__(self, client: Client, name: str, **options: Any) -> None:
        super().__init__(client.engine, name, **options)
        self._client = client
        # Serialises this object's calls with its watchdog: a renewal never runs after release.
        self._mutex = threading.Lock()
        self._scheduled = False

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Acquire; ``timeout`` in seconds (None: wait forever), honoured to the millisecond."""
        token, work = self._start_acquire(blocking, timeout, self._client.max_block)
        if isinstance(work, Call):
            sent_at = time.monotonic()
            result = self._client.run(work)
        else:
            result, sent_at = self._client.drive(work)
        acquired = self._finish_acquire(result, token, sent_at)
        if acquired and self.auto_renew:
            _renewer_for(self._client).schedule(self, time.monotonic() + self.ttl_ms / 3000)
        return acquired

    def release(self) -> None:
        """Release; raises LockNotOwnedError if this token no longer holds the lock."""
        with self._mutex:
            call, had_lease = self._start_release()
            self._finish_release(self._client.run(call), had_lease)

    def extend(self, ttl: float | None = None) -> None:
        """Renew the lease to ``ttl`` seconds (default: the lock's ttl) from now."""
        with self._mutex:
            call, ttl_ms, sent_at = self._start_extend(ttl)
            self._finish_extend(self._client.run(call), ttl_ms, sent_at)

    def inspect(self) -> LockState:
        return self._client.run(inspect_call(self.keys))

    def owned(self) -> bool:
        """Whether this token holds the lock, asked of the server."""
        return self.inspect().owner == self._hold_token

    def locked(self) -> bool:
        """Whether anyone holds the lock, asked of the server."""
        return self.inspect().held

    def _renew_step(self) -> float | None:
        with self._mutex:
            return self._client.drive(self._renew_plan(time.monotonic()))

    def __enter__(self) -> Lock:
        if not self.acquire(blocking=True, timeout=self.blocking_timeout):
            raise self._timeout_error()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(LockNotOwnedError):
            self.release()
        error = self._exit_error(exc_type)
        if error is not None:
            raise error


class _Renewer:
    """One watchdog thread per client renews every held lock of that client.

    A lock has at most one entry in the queue; an entry that outlived its lease (the lock was
    released and taken again) only renews early, which is harmless.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Lock]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="pyredislua-renewer", daemon=True)
        self._thread.start()

    def schedule(self, lock: Lock, when: float) -> None:
        with self._cond:
            if lock._scheduled:
                return
            lock._scheduled = True
            heapq.heappush(self._heap, (when, next(self._seq), lock))
            if self._heap[0][2] is lock:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _, _, lock = heapq.heappop(self._heap)
                lock._scheduled = False
            if not lock.held:
                continue
            try:
                nxt = lock._renew_step()
            except Exception as error:
                lock._mark_lost(f"renewal failed: {error!r}")
                continue
            if nxt is not None:
                self.schedule(lock, nxt)


_renewers_guard = threading.Lock()


def _renewer_for(client: Client) -> _Renewer:
    with _renewers_guard:
        renewer: _Renewer | None = getattr(client, "_renewer", None)
        if renewer is None:
            renewer = _Renewer()
            client._renewer = renewer  # type: ignore[attr-defined]
        return renewer


class AsyncLock(_LockBase):
    """A distributed lock on an :class:`~pyredislua.AsyncClient`; see :class:`Lock`.

    ``async with client.lock("orders") as lock: ...``. The watchdog is an asyncio task; release
    is shielded from cancellation so a cancelled task never leaves the lock held until expiry.
    """

    def __init__(self, client: AsyncClient, name: str, **options: Any) -> None:
        super().__init__(client.engine, name, **options)
        self._client = client
        self._watchdog: asyncio.Task[None] | None = None

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        token, work = self._start_acquire(blocking, timeout, self._client.max_block)
        if isinstance(work, Call):
            sent_at = time.monotonic()
            result = await self._client.run(work)
        else:
            result, sent_at = await self._client.drive(work)
        acquired = self._finish_acquire(result, token, sent_at)
        if acquired and self.auto_renew and self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        return acquired

    async def _watch(self) -> None:
        nxt: float | None = time.monotonic() + self.ttl_ms / 3000
        while nxt is not None:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            try:
                nxt = await self._client.drive(self._renew_plan(time.monotonic()))
            except Exception as error:
                self._mark_lost(f"renewal failed: {error!r}")
                return

    async def release(self) -> None:
        """Release (shielded from cancellation); raises LockNotOwnedError if not held."""
        await asyncio.shield(self._release())

    async def _release(self) -> None:
        task, self._watchdog = self._watchdog, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        call, had_lease = self._start_release()
        self._finish_release(await self._client.run(call), had_lease)

    async def extend(self, ttl: float | None = None) -> None:
        call, ttl_ms, sent_at = self._start_extend(ttl)
        self._finish_extend(await self._client.run(call), ttl_ms, sent_at)

    async def inspect(self) -> LockState:
        return await self._client.run(inspect_call(self.keys))

    async def owned(self) -> bool:
        return (await self.inspect()).owner == self._hold_token

    async def locked(self) -> bool:
        return (await self.inspect()).held

    async def __aenter__(self) -> AsyncLock:
        if not await self.acquire(blocking=True, timeout=self.blocking_timeout):
            raise self._timeout_error()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(LockNotOwnedError):
            await self.release()
        error = self._exit_error(exc_type)
        if error is not None:
            raise error
