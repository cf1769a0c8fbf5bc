"""Several locks at once, without deadlock.

Two ways, for two situations:

* :class:`LockSet`: locks whose names share one hash tag (``{tenant}:a``, ``{tenant}:b``), so all
  their keys live in one cluster slot. One call (``lock.acquire_all``) checks that every lock is
  free, or already the caller's, before it writes anything, then takes them all, each with its
  own fence: all or none, one round trip. Nobody ever holds part of the set while waiting for
  the rest, so there is nothing to deadlock on. A blocking acquire registers as a waiter on the
  first busy lock (in key order) and blocks on its signal list (BLPOP) until that lock is granted
  to it or its lease runs out, then tries the whole set again.
* :class:`MultiLock`: locks anywhere (other slots, other nodes of a cluster). Each is an ordinary
  :class:`~pyredislua.lock.Lock`, taken one after another in one global order (sorted by key),
  each within a timeout; a failure releases all taken so far. Callers asking for {A, B} and for
  {B, A} both take A first, so no cycle of waits, hence no deadlock, can form.

Pure parts first (call specs and the blocking plan), then the two façades.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar, overload

from ..client import AsyncClient, Client
from ..engine.protocol import Call, Engine, Plan, Sleep
from ..errors import LockError, LockLostError, LockNotOwnedError
from ..kit import as_text, ms
from .block import ClientHold, HeldInBlock
from .hold import LockTimeoutError
from .lock import Lock
from .ops import (
    RELEASED_UNCONFIRMED,
    AcquireResult,
    FenceDurability,
    LockKeys,
    release_call,
)
from .plans import (
    REPLY_GRACE,
    TRANSPORT_ERRORS,
    Acquired,
    Tries,
    backoff,
    blocking_tries,
    lease_left,
)

C = TypeVar("C", Client, AsyncClient)

MAX_LOCKS = 64  # lock.acquire_all and lock.extend_all take at most this many locks


# -- call specs ------------------------------------------------------------------------------------


class AllResult(NamedTuple):
    """What ``lock.acquire_all`` replied."""

    acquired: bool
    fences: tuple[int, ...]  # one per lock, in the call's order (empty when busy)
    pttl_ms: int  # the lease when acquired; the busy lock's remaining lease otherwise
    busy: int | None = None  # index (0-based, in the call's order) of the first busy lock


def parse_acquire_all(reply: Any) -> AllResult:
    if int(reply[0]) == 1:
        return AllResult(True, tuple(int(f) for f in reply[2:]), int(reply[1]))
    return AllResult(False, (), int(reply[2]), int(reply[1]) - 1)


def _ordered(keys: Sequence[LockKeys]) -> None:
    if not 1 <= len(keys) <= MAX_LOCKS:
        raise ValueError(f"1..{MAX_LOCKS} locks at once, got {len(keys)}")


def acquire_all_call(keys: Sequence[LockKeys], token: str, ttl_ms: int,
                     wait_ms: int | None = None, fence_ttl_ms: int = 0, grant: str = "",
                     grant_at: int = -1) -> Call[AllResult]:
    """``wait_ms``: None (not a waiter), > 0 (register on the first busy lock), 0 (end the
    registrations); ``grant``: a grant popped from the signal list of ``keys[grant_at]``."""
    _ordered(keys)
    args: tuple[str | int, ...] = (token, ttl_ms)
    if wait_ms is not None or fence_ttl_ms or grant:
        args = (token, ttl_ms, -1 if wait_ms is None else wait_ms, fence_ttl_ms)
        if grant:
            if not 0 <= grant_at < len(keys):
                raise ValueError("a grant needs the index of the lock it was popped from")
            args = (*args, grant_at + 1, grant)
    return Call("lock.acquire_all", tuple(k for key in keys for k in key.all), args,
                parse_acquire_all)


def extend_all_call(keys: Sequence[LockKeys], token: str, ttl_ms: int) -> Call[bool]:
    _ordered(keys)
    return Call("lock.extend_all", tuple(k.lock for k in keys), (token, ttl_ms),
                lambda reply: int(reply) == 1)


def slot_tag(key: str) -> str:
    """The part of a key Redis hashes to its cluster slot (its first non-empty ``{...}``)."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


# -- the blocking all-or-none acquire -------------------------------------------------------------


class AcquiredAll(NamedTuple):
    result: AllResult
    since: float  # local send time of the call that took the locks: before every lease began


def acquire_all_plan(
    engine: Engine,
    keys: Sequence[LockKeys],
    token: str,
    ttl_ms: int,
    *,
    blocking: bool,
    timeout: float | None,
    max_block: float,
    fence_ttl_ms: int = 0,
    handoff_ms: int = 100,
    clock: Callable[[], float] = time.monotonic,
) -> Plan[AcquiredAll]:
    """Take every lock of ``keys`` (one hash tag) or none (:func:`~.plans.blocking_tries`).
    Blocking: between tries, register as a waiter on the first busy lock and block on its signal
    list. A grant popped there is brought to the next try (the lock is then the caller's, with
    the grant's fence); if another lock of the set is busy by then, the grant is released at once
    (handed to that lock's next waiter): the caller never holds part of the set while it
    waits."""
    return (yield from blocking_tries(
        engine, _AllTries(engine, keys, token, ttl_ms, fence_ttl_ms, handoff_ms),
        blocking=blocking, timeout=timeout, max_block=max_block, clock=clock))


class _AllTries(Tries[AllResult, AcquiredAll]):
    def __init__(self, engine: Engine, keys: Sequence[LockKeys], token: str, ttl_ms: int,
                 fence_ttl_ms: int, handoff_ms: int) -> None:
        self.engine, self.keys, self.token, self.ttl_ms = engine, keys, token, ttl_ms
        self.fence_ttl_ms, self.handoff_ms = fence_ttl_ms, handoff_ms
        self.grant, self.granted_at = "", -1  # a grant popped, brought to the next try
        self.busy = 0  # the lock of the set the last try found busy

    def call(self, wait_ms: int | None) -> Call[AllResult]:
        return acquire_all_call(self.keys, self.token, self.ttl_ms, wait_ms, self.fence_ttl_ms,
                                self.grant, self.granted_at)

    def settle(self, result: AllResult, sent_at: float, waiting: bool,
               registered: tuple[float, float] | None) -> Plan[AcquiredAll | None]:
        if result.acquired:
            return AcquiredAll(result, sent_at)
        # the grant's lock is not worth holding while another lock of the set is busy
        yield from self._give_back()
        if not waiting:
            return AcquiredAll(result, sent_at)
        assert result.busy is not None
        self.busy = result.busy
        return None

    def free_in(self, result: AllResult) -> float:
        return lease_left(result.pttl_ms)

    def signals(self, result: AllResult | None) -> tuple[str, ...]:
        return (self.keys[self.busy].signal,)

    def popped(self, value: Any, since: float, deadline: float | None
               ) -> Plan[AcquiredAll | None]:
        self.grant, self.granted_at = as_text(value), self.busy
        return None
        yield  # a plan: the grant is used by the next try

    def timed_out(self, sent_at: float, registered: tuple[float, float] | None
                  ) -> Plan[AcquiredAll]:
        yield from self._give_back()
        return AcquiredAll(AllResult(False, (), 0), sent_at)

    def _give_back(self) -> Plan[None]:
        grant, at = self.grant, self.granted_at
        self.grant, self.granted_at = "", -1
        yield from _give_back(self.engine, self.keys, self.token, self.ttl_ms, self.handoff_ms,
                              grant, at)


def _give_back(engine: Engine, keys: Sequence[LockKeys], token: str, ttl_ms: int,
               handoff_ms: int, grant: str, at: int) -> Plan[None]:
    """Release a popped grant the caller will not use (it goes to that lock's next waiter)."""
    if not grant:
        return
    with contextlib.suppress(*TRANSPORT_ERRORS):  # else its lease runs out by itself
        yield from engine.run_one(release_call(keys[at], grant, ttl_ms, handoff_ms, token),
                                  deadline=time.monotonic() + REPLY_GRACE + 1.0)


def release_all_plan(engine: Engine, keys: Sequence[LockKeys], token: str, ttl_ms: int,
                     handoff_ms: int, give_up_at: float,
                     clock: Callable[[], float] = time.monotonic) -> Plan[list[int]]:
    """Release every lock of ``keys`` held by ``token``: one ``lock.release`` each (a waiter is
    granted its lock as after any release), all in one batch: one round trip. A batch whose reply
    was lost is re-sent for the locks not confirmed; a 0 after a lost reply is
    RELEASED_UNCONFIRMED. Returns one outcome per lock (0 not held, 1 or 2 released, -1
    unconfirmed)."""
    outcome = [0] * len(keys)
    pending = list(range(len(keys)))
    lost, failures = False, 0
    while True:
        calls = [release_call(keys[i], token, ttl_ms, handoff_ms) for i in pending]
        try:
            replies = yield from engine.run(calls, deadline=give_up_at + REPLY_GRACE, once=True)
        except TRANSPORT_ERRORS:
            lost = True
            if clock() >= give_up_at:
                for i in pending:
                    outcome[i] = RELEASED_UNCONFIRMED
                return outcome
            yield Sleep(min(backoff(failures), max(0.0, give_up_at - clock())))
            failures += 1
            continue
        for i, released in zip(pending, replies):
            outcome[i] = RELEASED_UNCONFIRMED if released == 0 and lost else int(released)
        return outcome


# -- LockSet: one hash tag, all or none ----------------------------------------------------------


class LockSet(ClientHold[C]):
    """Several locks under one hash tag, taken all or none in one call, each with its own fence::

        with LockSet(client, ["{acct}:alice", "{acct}:bob"], ttl=10) as locks:
            transfer(..., fences=locks.fence_by_name)        # {"{acct}:alice": 17, "{acct}:bob": 4}

    Guarantee, and its limits
    -------------------------
    Everything :class:`~pyredislua.lock.Lock` guarantees, for every lock of the set, with one
    lease for all: ``valid_until`` is a lower bound of every lock's lease, the watchdog renews
    them together (``lock.extend_all``: all or none) and marks the set lost if any one was lost.
    Acquiring is atomic: either the token holds every lock after the call, or the call wrote no
    lock (a waiter's registration aside). The set never holds some locks while waiting for the
    others, so sets never deadlock each other, nor with single ``Lock`` users of the same names
    (a ``Lock`` holds one lock, and waits for none while holding it).

    Limits: every name must carry the same hash tag (``{tenant}:a``); the set is at most 64 locks;
    a blocking acquire is not FIFO across the set: it waits in line on one busy lock at a time (a
    grant of that lock is given back at once when another lock of the set turned busy meanwhile),
    so a set can wait longer than single-lock users that keep taking one of its locks; a set's
    acquire does not take over a grant nobody popped (it waits on that lock's signal, where it
    pops it). Releasing is one ``lock.release`` per lock in one pipeline (each hands its lock to
    its next waiter), not one atomic call. Names and keys are the ``Lock``'s: a ``Lock`` and a
    ``LockSet`` on the same names exclude each other.
    """

    def __init__(
        self,
        client: C,
        names: Iterable[str],
        *,
        ttl: float = 30.0,
        auto_renew: bool = True,
        max_hold: float | None = None,
        on_lost: Callable[[Any], None] | None = None,
        blocking_timeout: float | None = None,
        token: str | None = None,
        prefix: str = "prl",
        handoff: float = 0.1,
        fences: FenceDurability = "durable",
    ) -> None:
        unique = sorted(set(names), key=lambda n: LockKeys(n, prefix).lock)
        if not 1 <= len(unique) <= MAX_LOCKS:
            raise ValueError(f"a LockSet takes 1..{MAX_LOCKS} distinct names, got {len(unique)}")
        super().__init__(client.engine, unique[0], ttl=ttl, auto_renew=auto_renew,
                         max_hold=max_hold, on_lost=on_lost, blocking_timeout=blocking_timeout,
                         token=token, prefix=prefix, handoff=handoff, requeue=False,
                         fences=fences)
        self.names: tuple[str, ...] = tuple(unique)
        self.all_keys: tuple[LockKeys, ...] = tuple(LockKeys(n, prefix) for n in unique)
        tags = {slot_tag(k.lock) for k in self.all_keys}
        if len(tags) != 1:
            raise ValueError(
                "the names of a LockSet must share one hash tag, e.g. '{tenant}:a' and "
                f"'{{tenant}}:b'; got tags {sorted(tags)} (use MultiLock across tags)")
        self.name = ",".join(unique)
        self.fence_by_name: dict[str, int] = {}
        self._bind(client)

    _what = "a LockSet"

    def _timeout_error(self) -> LockTimeoutError:
        return LockTimeoutError(
            f"locks {list(self.names)} not acquired within {self.blocking_timeout}s")

    def _extend_call(self, ttl_ms: int) -> Call[bool]:
        return extend_all_call(self.all_keys, self.token, ttl_ms)

    def _settle_all(self, acquired: AcquiredAll) -> bool:
        result = acquired.result
        if not result.acquired:
            return False
        self.fence_by_name = dict(zip(self.names, result.fences))
        self._hold_token = self.token
        first = AcquireResult(True, result.fences[0], result.pttl_ms)
        return self._settle(Acquired(first, acquired.since, None), self.token)

    def _all_plan(self, blocking: bool, timeout: float | None, max_block: float
                  ) -> Plan[bool]:
        acquired = yield from acquire_all_plan(
            self._engine, self.all_keys, self.token, self._first_ttl_ms, blocking=blocking,
            timeout=timeout, max_block=max_block, fence_ttl_ms=self.fence_ttl_ms,
            handoff_ms=self.handoff_ms)
        return self._settle_all(acquired)

    def _release_all_plan(self) -> Plan[None]:
        lease, self._lease = self._lease, None  # stops the watchdog before the locks are gone
        now = time.monotonic()
        valid = lease is not None and self.lost_reason is None and now < lease.valid_until
        give_up_at = max(lease.valid_until if lease is not None else now, now + REPLY_GRACE)
        try:
            outcome = yield from release_all_plan(self._engine, self.all_keys, self.token,
                                                  self.ttl_ms, self.handoff_ms, give_up_at)
            not_held = [self.names[i] for i, o in enumerate(outcome)
                        if o == 0 or (o == RELEASED_UNCONFIRMED and not valid)]
            if not_held:
                if lease is not None:
                    self._mark_lost("a lease expired before release")
                raise LockNotOwnedError(f"locks {not_held} were not held by this owner")
        finally:
            self._end_hold_span()  # the lock.hold span _settle began (observe.tracing)

    @overload
    def acquire(self: LockSet[Client], blocking: bool = True, timeout: float | None = None
                ) -> bool: ...
    @overload
    def acquire(self: LockSet[AsyncClient], blocking: bool = True,
                timeout: float | None = None) -> Awaitable[bool]: ...
    def acquire(self, blocking: bool = True, timeout: float | None = None
                ) -> bool | Awaitable[bool]:
        """Take every lock or none; ``timeout`` in seconds (None: wait forever). Not blocking:
        one round trip. Acquiring again while holding renews the same hold."""
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        return self._client.drive(self._all_plan(blocking, timeout, self._client.max_block))

    @overload
    def release(self: LockSet[Client]) -> None: ...
    @overload
    def release(self: LockSet[AsyncClient]) -> Awaitable[None]: ...
    def release(self) -> Awaitable[None] | None:
        """Release every lock (one pipeline); raises LockNotOwnedError naming the locks this
        token no longer held (the others are released all the same)."""
        return self._watchdog.release(self._release_all_plan())

    @overload
    def extend(self: LockSet[Client], ttl: float | None = None) -> None: ...
    @overload
    def extend(self: LockSet[AsyncClient], ttl: float | None = None) -> Awaitable[None]: ...
    def extend(self, ttl: float | None = None) -> Awaitable[None] | None:
        """Renew every lease to ``ttl`` seconds (default: the set's ttl) from now, all or none."""
        ttl_ms = self.ttl_ms if ttl is None else ms(ttl)
        return self._watchdog.exclusive(self._extend_plan(ttl_ms))

# -- MultiLock: any slots, one global order -------------------------------------------------------


class MultiLock(HeldInBlock, Generic[C]):
    """Several locks anywhere (any slots, any nodes of a cluster), taken one at a time in one
    global order, each within a timeout; a failure releases every lock taken so far::

        with MultiLock(client, ["orders:17", "stock:apple"], ttl=10, blocking_timeout=5) as ml:
            ship(..., fences=ml.fence_by_name)

    Guarantee, and its limits
    -------------------------
    Each lock is an ordinary :class:`~pyredislua.lock.Lock` (fence, fair hand-off, watchdog,
    the same keys: a ``MultiLock`` and a ``Lock`` on one name exclude each other). Every
    ``MultiLock`` takes its locks sorted by key, so two callers asking for {A, B} and {B, A}
    both wait for A first: no cycle of waits can form among ``MultiLock`` users (nor with
    single-lock users, who hold one lock and wait for none while holding it), hence no deadlock.
    ``lock_timeout`` bounds the wait for each lock and ``timeout`` the whole acquire; a failed
    acquire releases what it took, in reverse order, before returning False.

    Limits: the set is not taken atomically: while a caller waits for its third lock it holds the
    first two (others wanting those wait behind it; the order makes that wait finite). Code that
    takes locks any other way (a ``Lock`` held while acquiring a ``MultiLock`` whose first key
    sorts after it) can still deadlock until a lease or a timeout ends it. Each lock has its own
    lease and watchdog: ``lost`` is true once any lease was lost. For locks under one hash tag,
    :class:`LockSet` takes them all in one call instead.
    """

    def __init__(
        self,
        client: C,
        names: Iterable[str],
        *,
        ttl: float = 30.0,
        lock_timeout: float | None = None,
        blocking_timeout: float | None = None,
        auto_renew: bool = True,
        max_hold: float | None = None,
        on_lost: Callable[[Any], None] | None = None,
        token: str | None = None,
        prefix: str = "prl",
        handoff: float = 0.1,
        fences: FenceDurability = "durable",
    ) -> None:
        unique = sorted(set(names), key=lambda n: LockKeys(n, prefix).lock)
        if not unique:
            raise ValueError("a MultiLock takes at least one name")
        self._client: C = client
        self.lock_timeout = lock_timeout
        self.blocking_timeout = blocking_timeout
        self.locks: tuple[Lock[C], ...] = tuple(
            Lock(client, n, ttl=ttl, auto_renew=auto_renew, max_hold=max_hold, on_lost=on_lost,
                 token=token, prefix=prefix, handoff=handoff, requeue=False, fences=fences)
            for n in unique)
        self.names: tuple[str, ...] = tuple(unique)

    _what = "a MultiLock"

    def _on_asyncio(self) -> bool:
        return isinstance(self._client, AsyncClient)

    def _timeout_error(self) -> LockTimeoutError:
        return LockTimeoutError(
            f"locks {list(self.names)} not acquired within {self.blocking_timeout}s")

    def _exit_error(self, exc_type: type[BaseException] | None) -> LockLostError | None:
        for lk in self.locks:
            error = lk._exit_error(exc_type)
            if error is not None:
                return error
        return None

    @property
    def client(self) -> C:
        return self._client

    @property
    def fence_by_name(self) -> dict[str, int]:
        return {lk.name: lk.fence for lk in self.locks if lk.held and lk.fence is not None}

    @property
    def held(self) -> bool:
        """Whether every lock is believed held (no round trip)."""
        return all(lk.held for lk in self.locks)

    @property
    def lost(self) -> bool:
        return any(lk.lost for lk in self.locks)

    def _plan(self, blocking: bool, timeout: float | None, max_block: float,
              clock: Callable[[], float] = time.monotonic) -> Plan[bool]:
        """Take the locks in order; on a failure release those taken (reverse order)."""
        deadline = None if timeout is None else clock() + timeout
        taken: list[Lock[C]] = []
        for lk in self.locks:
            remaining = None if deadline is None else max(0.0, deadline - clock())
            per = remaining if self.lock_timeout is None else (
                self.lock_timeout if remaining is None else min(self.lock_timeout, remaining))
            if blocking:
                ok = yield from lk._acquire_plan(per, max_block)
            else:
                ok = yield from self._client.engine.run_one(lk._try_call())
            if not ok:
                for got in reversed(taken):
                    with contextlib.suppress(LockError):
                        yield from got._release_plan()
                return False
            taken.append(lk)
        return True

    @overload
    def acquire(self: MultiLock[Client], blocking: bool = True, timeout: float | None = None
                ) -> bool: ...
    @overload
    def acquire(self: MultiLock[AsyncClient], blocking: bool = True,
                timeout: float | None = None) -> Awaitable[bool]: ...
    def acquire(self, blocking: bool = True, timeout: float | None = None
                ) -> bool | Awaitable[bool]:
        """Take every lock in key order; ``timeout``: the whole acquire (None: no limit besides
        ``lock_timeout`` per lock). False (holding none) when one was not taken in time."""
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        return self._client.drive(self._plan(blocking, timeout, self._client.max_block))

    @overload
    def release(self: MultiLock[Client]) -> None: ...
    @overload
    def release(self: MultiLock[AsyncClient]) -> Awaitable[None]: ...
    def release(self) -> Awaitable[None] | None:
        """Release every lock (reverse order), each through its own watchdog; raises
        LockNotOwnedError naming those this token no longer held, after releasing the others."""
        if isinstance(self._client, AsyncClient):
            return self._release_async()
        failed = []
        for lk in reversed(self.locks):
            try:
                lk.release()
            except LockNotOwnedError:
                failed.append(lk.name)
        _raise_not_owned(failed)
        return None

    async def _release_async(self) -> None:
        failed = []
        for lk in reversed(self.locks):
            try:
                await lk.release()  # type: ignore[misc]
            except LockNotOwnedError:
                failed.append(lk.name)
        _raise_not_owned(failed)

    def __repr__(self) -> str:
        return f"<MultiLock {list(self.names)} held={self.held}>"


def _raise_not_owned(failed: list[str]) -> None:
    if failed:
        raise LockNotOwnedError(f"locks {failed} were not held by this owner")
