"""WATCH/MULTI/EXEC read-modify-write with retries, bound to a sync or an asyncio client::

    def move(pipe):                        # a redis-py transactional pipeline, WATCHing the keys
        a = int(pipe.get("{acct}:a") or 0)      # runs at once
        pipe.multi()                            # from here on, commands queue
        pipe.set("{acct}:a", a - 10)
        pipe.incrby("{acct}:b", 10)
        return a - 10

    done = Optimistic(client).transaction(move, "{acct}:a", "{acct}:b")
    done.value, done.attempts, done.conflicts

    async def move(pipe):
        a = int(await pipe.get("{acct}:a") or 0)
        ...
    done = await Optimistic(aclient).transaction(move, "{acct}:a", "{acct}:b")
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, overload

from ..client import AsyncClient, Client
from .ops import Backoff, Stats, Transacted, transaction_plan

C = TypeVar("C", Client, AsyncClient)
T = TypeVar("T")


class Optimistic(Generic[C]):
    """Optimistic transactions on any Redis data: WATCH the keys, read and compute, then
    MULTI/EXEC the writes, which Redis runs only if no watched key was written meanwhile; on a
    conflict, back off (exponential, full jitter) and run the function again.

    One attempt holds one connection from WATCH to EXEC (the driver's ``watch_attempt``); on a
    cluster the keys must share a slot (one hash tag) and the attempt runs on the node owning
    it, following a slot that moved.

    Guarantees: the writes queued after ``pipe.multi()`` are applied only if no watched key was
    written since it was watched, all of them (Redis runs EXEC atomically); an attempt that
    conflicts writes nothing. A lost EXEC reply is never retried as a conflict (that could apply
    the writes twice): it raises :class:`~pyredislua.errors.AmbiguousWriteError`. At most
    ``backoff.attempts`` tries, then :class:`~pyredislua.errors.TooManyConflictsError`.

    Limits: any write to a watched key is a conflict, even one that stores the same value, and
    so are its expiry and its eviction (Redis 7); reads of keys that are not watched are not
    protected; an error reply inside EXEC does not undo the other commands (Redis has
    no rollback: redis-py raises it after EXEC ran). The function may run several times: keep
    it free of side effects outside Redis.
    """

    client: C

    def __init__(self, client: C, *, backoff: Backoff | None = None,
                 rng: Callable[[], float] | None = None) -> None:
        self.client = client
        self.backoff = backoff or Backoff()
        self.stats = Stats()
        self._rng = rng or random.Random().random

    @overload
    def transaction(self: Optimistic[Client], fn: Callable[[Any], T], *keys: Any,
                    backoff: Backoff | None = None) -> Transacted[T]: ...
    @overload
    def transaction(self: Optimistic[AsyncClient], fn: Callable[[Any], Awaitable[T]],
                    *keys: Any, backoff: Backoff | None = None) -> Awaitable[Transacted[T]]: ...
    def transaction(self, fn: Callable[[Any], Any], *keys: Any,
                    backoff: Backoff | None = None
                    ) -> Transacted[Any] | Awaitable[Transacted[Any]]:
        """Run ``fn(pipe)`` as an optimistic transaction watching ``keys``, retrying on
        conflict. ``pipe`` is redis-py's transactional pipeline (``redis.asyncio``'s on an
        AsyncClient, where ``fn`` may be a coroutine function): its commands run at once until
        ``fn`` calls ``pipe.multi()``, and queue after it. ``fn`` need not call ``multi()``: an
        empty transaction still checks that what it read stayed unchanged. Returns
        :class:`~pyredislua.optimistic.ops.Transacted` (``value``: what ``fn`` returned,
        ``replies``: EXEC's, ``attempts``, ``conflicts``); what ``fn`` raises ends the
        transaction (nothing written) and is raised here."""
        return self.client.drive(transaction_plan(
            self.client.watch_attempt, fn, keys, backoff=backoff or self.backoff,
            rng=self._rng, stats=self.stats))
