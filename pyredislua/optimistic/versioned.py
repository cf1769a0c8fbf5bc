"""Versioned values with compare-and-set, bound to a sync or an asyncio client::

    accounts = Versioned(client, "accounts")
    e = accounts.get("alice")                        # Entry(value, version, ttl_ms)
    w = accounts.set("alice", b"100", version=e.version)
    if not w.ok: ...                                 # w.current: what is there now
    accounts.update("alice", lambda v: str(int(v or 0) + 1))   # retries on conflict

    accounts = Versioned(aclient, "accounts")        # the same, awaitable
    e = await accounts.get("alice")
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, overload

from ..client import AsyncClient, Client
from .ops import (
    KEEP,
    PREFIX,
    TTL,
    Backoff,
    Entry,
    Stats,
    Updated,
    UpdatedMany,
    Written,
    WrittenMany,
    delete_call,
    get_call,
    get_many_call,
    item_key,
    new_request_id,
    resent,
    set_call,
    set_many_call,
    ttl_arg,
    update_many_plan,
    update_plan,
)

C = TypeVar("C", Client, AsyncClient)
NewValue = bytes | str


class Versioned(Generic[C]):
    """Values stored with a version, written only by callers that name the version they read.

    Each value is a hash ``prl:opt:<namespace>:{<name>}`` (a name carrying its own ``{tag}``
    keeps it: values updated together must share one). Every write makes a new, strictly higher
    version: ``max(previous + 1, server time in µs)``, so a value deleted (or expired) and
    created again, or written on a replica promoted after losing the last writes, never reuses a
    version a reader may still hold — unless the server's clock went back further than the time
    between the two writes.

    Guarantees: a write succeeds only if no write happened since the version it names was read
    (one round trip, atomic in Redis); a refused write changes nothing and carries the current
    value and version; writes of several values under one hash tag (:meth:`set_many`) are all
    applied or none. A write whose reply is lost is sent again once with the same request id,
    which the script recognises; when that cannot settle whether it was applied (someone wrote
    in between), :class:`~pyredislua.errors.AmbiguousWriteError` is raised rather than guessing.

    Limits: a version is only as durable as the write that made it (asynchronous replication:
    a failover can lose the last writes, and a reader holding a lost version then sees
    mismatches, never a false match); values live until deleted unless a write gives them a TTL.

    ``backoff``: how :meth:`update` and :meth:`update_many` retry on conflict. ``stats``
    counts their outcomes.
    """

    client: C

    def __init__(self, client: C, namespace: str, *, prefix: str = PREFIX,
                 backoff: Backoff | None = None,
                 rng: Callable[[], float] | None = None) -> None:
        item_key(namespace, "x", prefix)  # validates the namespace
        self.client = client
        self.namespace = namespace
        self.prefix = prefix
        self.backoff = backoff or Backoff()
        self.stats = Stats()
        self._rng = rng or random.Random().random

    def key(self, name: str) -> str:
        """The Redis key of the value ``name``."""
        return item_key(self.namespace, name, self.prefix)

    @overload
    def get(self: Versioned[Client], name: str) -> Entry: ...
    @overload
    def get(self: Versioned[AsyncClient], name: str) -> Awaitable[Entry]: ...
    def get(self, name: str) -> Entry | Awaitable[Entry]:
        """The value with its version (``Entry.version`` 0, ``value`` None when absent).
        Read-only: runs on replicas (FCALL_RO) and at maxmemory."""
        return self.client.run(get_call(self.key(name)))

    @overload
    def get_many(self: Versioned[Client], names: Iterable[str]) -> dict[str, Entry]: ...
    @overload
    def get_many(self: Versioned[AsyncClient], names: Iterable[str]
                 ) -> Awaitable[dict[str, Entry]]: ...
    def get_many(self, names: Iterable[str]
                 ) -> dict[str, Entry] | Awaitable[dict[str, Entry]]:
        """Several values under one hash tag, read at one instant."""
        names = list(names)
        return self.client.run(get_many_call([self.key(n) for n in names], names))

    @overload
    def set(self: Versioned[Client], name: str, value: NewValue, *, version: int,
            ttl: TTL = KEEP) -> Written: ...
    @overload
    def set(self: Versioned[AsyncClient], name: str, value: NewValue, *, version: int,
            ttl: TTL = KEEP) -> Awaitable[Written]: ...
    def set(self, name: str, value: NewValue, *, version: int, ttl: TTL = KEEP
            ) -> Written | Awaitable[Written]:
        """Store ``value`` if the version is still ``version`` (0: it must not exist yet).
        ``ttl``: seconds, :data:`KEEP` (keep the key's TTL; none for a new value) or None (no
        expiry). ``Written.ok`` false: someone wrote since; ``Written.current`` is what is there
        now (nothing changed)."""
        key = self.key(name)
        call = set_call(key, value, version, ttl_arg(ttl), new_request_id())
        return self.client.run(resent(call, f"set of {key}"))

    @overload
    def delete(self: Versioned[Client], name: str, *, version: int) -> Written: ...
    @overload
    def delete(self: Versioned[AsyncClient], name: str, *, version: int
               ) -> Awaitable[Written]: ...
    def delete(self, name: str, *, version: int) -> Written | Awaitable[Written]:
        """Delete the value if its version is still ``version``. Runs at maxmemory."""
        key = self.key(name)
        return self.client.run(resent(delete_call(key, version), f"delete of {key}"))

    @overload
    def set_many(self: Versioned[Client], values: Mapping[str, tuple[int, NewValue]], *,
                 ttl: TTL = KEEP) -> WrittenMany: ...
    @overload
    def set_many(self: Versioned[AsyncClient], values: Mapping[str, tuple[int, NewValue]], *,
                 ttl: TTL = KEEP) -> Awaitable[WrittenMany]: ...
    def set_many(self, values: Mapping[str, tuple[int, NewValue]], *, ttl: TTL = KEEP
                 ) -> WrittenMany | Awaitable[WrittenMany]:
        """``{name: (version read, new value)}`` under one hash tag: all stored if every version
        still matches, else none (``WrittenMany.current`` has every value's state)."""
        names = list(values)
        items = [(self.key(n), values[n][0], values[n][1]) for n in names]
        call = set_many_call(items, ttl_arg(ttl), new_request_id(), names)
        return self.client.run(resent(call, f"set_many of {', '.join(k for k, _, _ in items)}"))

    @overload
    def update(self: Versioned[Client], name: str,
               fn: Callable[[bytes | None], NewValue], *, ttl: TTL = KEEP,
               backoff: Backoff | None = None) -> Updated: ...
    @overload
    def update(self: Versioned[AsyncClient], name: str,
               fn: Callable[[bytes | None], NewValue | Awaitable[NewValue]], *, ttl: TTL = KEEP,
               backoff: Backoff | None = None) -> Awaitable[Updated]: ...
    def update(self, name: str, fn: Callable[[bytes | None], Any], *, ttl: TTL = KEEP,
               backoff: Backoff | None = None) -> Updated | Awaitable[Updated]:
        """Read-modify-write: ``fn(current value or None)`` returns the new value, stored by
        compare-and-set; on a conflict ``fn`` runs again after a backoff and a fresh read (with
        ``Backoff(base=0)``: at once, on the value the refusal carried, with no read). ``fn``
        may run several times: keep it free of side effects. Raises TooManyConflictsError after
        ``backoff.attempts`` tries, and AmbiguousWriteError when a lost reply leaves the
        outcome unknown. On an AsyncClient ``fn`` may be a coroutine function."""
        return self.client.drive(update_plan(
            self.client.engine, self.key(name), fn, ttl_ms=ttl_arg(ttl),
            backoff=backoff or self.backoff, rng=self._rng, stats=self.stats))

    @overload
    def update_many(self: Versioned[Client], names: Iterable[str],
                    fn: Callable[[dict[str, bytes | None]], Mapping[str, NewValue]], *,
                    ttl: TTL = KEEP, backoff: Backoff | None = None) -> UpdatedMany: ...
    @overload
    def update_many(self: Versioned[AsyncClient], names: Iterable[str],
                    fn: Callable[[dict[str, bytes | None]], Any], *,
                    ttl: TTL = KEEP, backoff: Backoff | None = None
                    ) -> Awaitable[UpdatedMany]: ...
    def update_many(self, names: Iterable[str], fn: Callable[[dict[str, bytes | None]], Any], *,
                    ttl: TTL = KEEP, backoff: Backoff | None = None
                    ) -> UpdatedMany | Awaitable[UpdatedMany]:
        """:meth:`update` for several values under one hash tag, read at one instant and
        written all or none: ``fn({name: value or None})`` returns ``{name: new value}`` for
        every name (a value only read must be written back: its version is checked only when
        it is written)."""
        keys = {n: self.key(n) for n in names}
        return self.client.drive(update_many_plan(
            self.client.engine, keys, fn, ttl_ms=ttl_arg(ttl),
            backoff=backoff or self.backoff, rng=self._rng, stats=self.stats))
