"""Cache patterns on Redis: cache-aside with stampede protection, write-through, warming,
negative caching and tag invalidation. One class, :class:`Cache`, for sync and asyncio clients:
its logic is written once as plans (:mod:`pyredislua.engine.protocol`: batches of commands, and
``Do`` steps for the compute function, the database write and the key's lock) that the client
drives.

Stampede protection, two ways:

* **single-flight**: on a miss, one caller per key recomputes under the key's lock
  (:mod:`pyredislua.lock`); the others block on the lock's signal list (no polling) and, handed
  the lock, find the fresh value and return it without computing. Its fences are ephemeral: a
  key's lock leaves no counter behind once it has not been used for an hour.
* **XFetch** probabilistic early recomputation: the entry carries its recompute cost (delta)
  and ``cache.get`` returns the remaining TTL; a reader recomputes early when
  ``now - delta * beta * ln(rand()) >= expiry``. An early recompute runs only if the key's lock
  is free; otherwise the reader returns the current value.

Out of memory (``maxmemory`` with ``noeviction``) or on a read-only replica, Redis refuses to
store values: the cache then serves what it has and returns computed values without storing them
(counted as ``not_stored``); a key's lock that cannot be taken is skipped (``lock_timeouts``).
Deleting and invalidating still run at maxmemory (they free memory).
"""


from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Generic, Protocol, TypeVar, overload

from redis.exceptions import OutOfMemoryError, ReadOnlyError

from ..client import AsyncClient, Client
from ..compression import Compressor
from ..engine.protocol import Call, Command, Do, Engine, Plan
from ..errors import LockNotOwnedError
from ..kit import as_text, ms
from ..lock import Lock
from ..observe.series import MinuteSeries
from .ops import (
    HIT,
    NEGATIVE,
    STALE,
    CacheKeys,
    Entry,
    TagInvalidation,
    delete_call,
    get_call,
    invalidate_tag_call,
    metrics_call,
    set_call,
    xfetch_early,
)

C = TypeVar("C", Client, AsyncClient)
Compute = Callable[[], Any] | Callable[[], Awaitable[Any]]

# Redis refused a write: out of memory, or a replica that became read-only in a failover.
REFUSED = (OutOfMemoryError, ReadOnlyError)


class Codec(Protocol):
    def dumps(self, value: Any) -> bytes: ...
    def loads(self, data: bytes) -> Any: ...


class JsonCodec:
    """Values as JSON (the default)."""

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), default=str).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class CompressedCodec:
    """Another codec's bytes, compressed by a :class:`~pyredislua.compression.Compressor`
    (small values stay raw behind a one-byte header): ``Cache(..., compress=Compressor())``
    builds one."""

    def __init__(self, inner: Codec, compressor: Compressor) -> None:
        self.inner = inner
        self.compressor = compressor

    def dumps(self, value: Any) -> bytes:
        return self.compressor.compress(self.inner.dumps(value))

    def loads(self, data: bytes) -> Any:
        return self.inner.loads(self.compressor.decompress(data))


class RawCodec:
    """Values as they are: bytes (str is encoded as UTF-8); reads return bytes."""

    def dumps(self, value: Any) -> bytes:
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, bytes):
            return value
        raise TypeError(f"RawCodec stores bytes or str, got {type(value).__name__}")

    def loads(self, data: bytes) -> Any:
        return data


@dataclass
class CacheStats:
    """Counters of one Cache object; also reported one by one to ``on_event``."""

    hits: int = 0
    misses: int = 0
    negative_hits: int = 0  # a cached "not found"
    stale: int = 0  # an expired value served while another caller recomputes
    early: int = 0  # XFetch early recomputations
    computes: int = 0  # calls of a compute function
    waits: int = 0  # misses served by another caller's recompute (single-flight)
    discarded: int = 0  # recomputed values not stored: a tag was invalidated meanwhile
    lock_timeouts: int = 0  # waited too long for another caller (or Redis refused the lock):
    # computed without the lock
    not_stored: int = 0  # computed or written values Redis refused to store (out of memory)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _tag_scan(keys: CacheKeys, tag: str, cursor: int, count: int) -> Plan[tuple[int, list[str]]]:
    [reply] = yield [Command(("SSCAN", keys.tag_set(tag), cursor, "COUNT", count))]
    if isinstance(reply, BaseException):
        raise reply
    nxt, members = reply
    names = [as_text(m) for m in members]
    return int(nxt), list(dict.fromkeys(names))[:1000]


class Cache(Generic[C]):
    """A cache namespace, on a sync :class:`~pyredislua.Client` (methods return values) or an
    :class:`~pyredislua.AsyncClient` (they return awaitables; ``compute`` and ``db_write`` may
    then be coroutine functions).

    ``cache = Cache(client, "catalog", ttl=300)``;
    ``product = cache.get_or_compute("product:42", lambda: db.load(42), tags=["products"])``.
    ``compute`` returning None caches "not found" for ``negative_ttl``.
    ``compress=Compressor()`` stores values compressed (zstd or zlib; small ones raw), see
    :mod:`pyredislua.compression`; other clients reading them must decompress.
    ``metrics=True``: lookups record hits, misses and stale entries, and recomputes record
    themselves, per minute in ``prl:cache:{namespace}:metrics`` (read them with :meth:`metrics`;
    see docs/design/metrics-in-redis.md).
    """

    client: C

    def __init__(self, client: C, namespace: str, *, ttl: float = 300.0,
                 negative_ttl: float = 30.0, grace: float = 0.0, beta: float = 1.0,
                 lock_ttl: float = 30.0, wait_timeout: float | None = None,
                 codec: Codec | None = None, compress: Compressor | None = None,
                 prefix: str = "prl", on_event: Callable[[str, str], None] | None = None,
                 seed: int | None = None, metrics: bool = False) -> None:
        self.client = client
        self.keys = CacheKeys(namespace, prefix, metrics=metrics)
        self.namespace = namespace
        self.ttl_ms = ms(ttl, "ttl")
        self.negative_ttl_ms = ms(negative_ttl, "negative_ttl")
        self.grace_ms = ms(grace, "grace", allow_zero=True)
        if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        self.beta = float(beta)
        self.lock_ttl = lock_ttl
        self.wait_timeout = lock_ttl if wait_timeout is None else wait_timeout
        self.codec: Codec = codec or JsonCodec()
        if compress is not None:
            self.codec = CompressedCodec(self.codec, compress)
        self.stats = CacheStats()
        self.on_event = on_event
        self.rng = random.Random(seed)

    @property
    def engine(self) -> Engine:
        return self.client.engine

    # -- bookkeeping ------------------------------------------------------------------------------

    def _count(self, kind: str, key: str) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        if self.on_event is not None:
            with contextlib.suppress(Exception):
                self.on_event(kind, key)

    def _lock_name(self, key: str) -> str:
        return f"cache|{self.namespace}|{key}"

    def _lock(self, key: str) -> Lock[Any]:
        """The key's single-flight lock: a short-lived mutex whose fences nobody stores, so its
        fence counter is ephemeral (it expires with the lock's disuse instead of staying for
        every key ever computed)."""
        return Lock(self.client, self._lock_name(key), ttl=self.lock_ttl, fences="ephemeral")

    def _ttl(self, ttl: float | None, negative: bool) -> int:
        if ttl is not None:
            return ms(ttl, "ttl")
        return self.negative_ttl_ms if negative else self.ttl_ms

    def _decode(self, entry: Entry) -> Any:
        return None if entry.value is None else self.codec.loads(entry.value)

    # -- plans (pure until driven) ----------------------------------------------------------------

    def _compute_and_set(self, key: str, compute: Compute, ttl: float | None,
                         tags: Sequence[str], generations: Sequence[int] | None) -> Plan[Any]:
        """Compute and store; ``generations``: the tags' generations read before computing,
        so a value computed across an invalidation of one of its tags is not stored."""
        self._count("computes", key)
        started = time.perf_counter()
        value = yield Do(compute)
        delta_ms = max(1, round((time.perf_counter() - started) * 1000))
        data = None if value is None else self.codec.dumps(value)
        try:
            stored = yield from self.engine.run_one(set_call(
                self.keys, key, data, self._ttl(ttl, value is None), delta_ms=delta_ms,
                grace_ms=self.grace_ms, tags=tags, expected=generations, record=True))
        except REFUSED:
            self._count("not_stored", key)
            return value
        if not stored:
            self._count("discarded", key)
        return value

    def _acquire(self, lock: Lock[Any], blocking: bool,
                 timeout: float | None = None) -> Plan[bool]:
        """Take the key's lock; False also when Redis refuses it (out of memory): the caller
        goes on without it, as after a wait that timed out."""
        try:
            args = (True, timeout) if blocking else (False,)
            return bool((yield Do(lock.acquire, args)))
        except REFUSED:
            return False

    def _release(self, lock: Lock[Any]) -> Plan[None]:
        with contextlib.suppress(LockNotOwnedError):
            yield Do(lock.release)

    def get_or_compute_plan(self, key: str, compute: Compute, *, ttl: float | None = None,
                            tags: Sequence[str] = ()) -> Plan[Any]:
        entry = yield from self.engine.run_one(get_call(self.keys, key, tags))
        if entry.found and not xfetch_early(entry.delta_ms, entry.ttl_ms, self.beta, self.rng):
            self._count("negative_hits" if entry.status == NEGATIVE else "hits", key)
            return self._decode(entry)
        lock = self._lock(key)
        if entry.found or entry.status == STALE:
            # early recomputation, or an expired value still in grace: recompute only if no
            # one else is; otherwise serve what is there
            if not (yield from self._acquire(lock, False)):
                self._count("stale" if entry.status == STALE else "hits", key)
                return self._decode(entry)
            self._count("early" if entry.found else "misses", key)
            try:
                return (yield from self._compute_and_set(key, compute, ttl, tags,
                                                         entry.generations))
            finally:
                yield from self._release(lock)
        self._count("misses", key)
        if not (yield from self._acquire(lock, True, self.wait_timeout)):
            self._count("lock_timeouts", key)
            return (yield from self._compute_and_set(key, compute, ttl, tags,
                                                     entry.generations))
        try:
            again = yield from self.engine.run_one(get_call(self.keys, key, tags, record=False))
            if again.found:  # another caller recomputed while we waited
                self._count("waits", key)
                return self._decode(again)
            return (yield from self._compute_and_set(key, compute, ttl, tags,
                                                     again.generations))
        finally:
            yield from self._release(lock)

    def write_through_plan(self, key: str, value: Any, db_write: Callable[[str, Any], Any], *,
                           ttl: float | None = None, tags: Sequence[str] = ()) -> Plan[None]:
        lock = self._lock(key)
        try:
            locked = bool((yield Do(lock.acquire, (True, self.wait_timeout))))
            if not locked:
                raise TimeoutError(f"cache key {key!r} stayed locked for {self.wait_timeout}s")
        except REFUSED:
            # Out of memory: no refill can store a value either, so going on without the lock
            # cannot leave a stale entry behind.
            self._count("lock_timeouts", key)
            locked = False
        try:
            # Invalidate first: whatever fails below, the cache cannot keep a value the
            # database no longer has. The lock keeps cache-aside refills out meanwhile.
            yield from self.engine.run_one(delete_call(self.keys, key))
            yield Do(db_write, (key, value))  # the database first...
            try:
                yield from self.engine.run_one(self.set_call(key, value, ttl=ttl, tags=tags))
            except REFUSED:  # the database has it; the cache holds nothing for the key
                self._count("not_stored", key)
        finally:
            if locked:
                yield from self._release(lock)

    def warm_plan(self, items: Iterable[tuple[str, Any]], *, ttl: float | None = None,
                  tags: Sequence[str] = (), batch: int = 500,
                  progress: Callable[[int], None] | None = None) -> Plan[int]:
        if not 1 <= batch <= 10_000:
            raise ValueError(f"batch must be 1..10000, got {batch!r}")
        return self._warm(items, ttl, tags, batch, progress)

    def _warm(self, items: Iterable[tuple[str, Any]], ttl: float | None, tags: Sequence[str],
              batch: int, progress: Callable[[int], None] | None) -> Plan[int]:
        done = 0
        chunk: list[tuple[str, Any]] = []
        for item in [*items, None]:
            if item is not None:
                chunk.append(item)
            if chunk and (item is None or len(chunk) >= batch):
                yield from self.engine.run([self.set_call(k, v, ttl=ttl, tags=tags)
                                            for k, v in chunk])
                done += len(chunk)
                chunk = []
                if progress is not None:
                    progress(done)
        return done

    def invalidate_tag_plan(self, tag: str, *, batch: int = 500) -> Plan[TagInvalidation]:
        cursor, members = yield from _tag_scan(self.keys, tag, 0, batch)
        first = yield from self.engine.run_one(
            invalidate_tag_call(self.keys, tag, members, bump=True))
        deleted, left = first.deleted, first.left
        while cursor != 0:
            cursor, members = yield from _tag_scan(self.keys, tag, cursor, batch)
            if members:
                r = yield from self.engine.run_one(
                    invalidate_tag_call(self.keys, tag, members, bump=False))
                deleted, left = deleted + r.deleted, r.left
        return TagInvalidation(first.generation, deleted, left)

    def set_call(self, key: str, value: Any, *, ttl: float | None = None,
                 tags: Sequence[str] = ()) -> Call[bool]:
        return set_call(self.keys, key, None if value is None else self.codec.dumps(value),
                        self._ttl(ttl, value is None), grace_ms=self.grace_ms, tags=tags)

    # -- driven -----------------------------------------------------------------------------------

    @overload
    def get(self: Cache[Client], key: str) -> Entry: ...
    @overload
    def get(self: Cache[AsyncClient], key: str) -> Awaitable[Entry]: ...
    def get(self, key: str) -> Entry | Awaitable[Entry]:
        """The raw entry (status, value bytes, delta, remaining TTL); counts nothing."""
        return self.client.run(get_call(self.keys, key, record=False))

    @overload
    def metrics(self: Cache[Client]) -> MinuteSeries: ...
    @overload
    def metrics(self: Cache[AsyncClient]) -> Awaitable[MinuteSeries]: ...
    def metrics(self) -> MinuteSeries | Awaitable[MinuteSeries]:
        """What the lookups and recomputes recorded (with ``metrics=True``, by any client), per
        minute over the last hour (one read-only call)."""
        return self.client.run(metrics_call(self.keys))

    @overload
    def get_or_compute(self: Cache[Client], key: str, compute: Callable[[], Any], *,
                       ttl: float | None = None, tags: Sequence[str] = ()) -> Any: ...
    @overload
    def get_or_compute(self: Cache[AsyncClient], key: str, compute: Compute, *,
                       ttl: float | None = None, tags: Sequence[str] = ()) -> Awaitable[Any]: ...
    def get_or_compute(self, key: str, compute: Compute, *, ttl: float | None = None,
                       tags: Sequence[str] = ()) -> Any:
        """The cached value, or ``compute()``'s, stored (single-flight: one caller per key
        computes, the others wait for its value; XFetch: recomputed early now and then)."""
        return self.client.drive(self.get_or_compute_plan(key, compute, ttl=ttl, tags=tags))

    @overload
    def set(self: Cache[Client], key: str, value: Any, *, ttl: float | None = None,
            tags: Sequence[str] = ()) -> None: ...
    @overload
    def set(self: Cache[AsyncClient], key: str, value: Any, *, ttl: float | None = None,
            tags: Sequence[str] = ()) -> Awaitable[None]: ...
    def set(self, key: str, value: Any, *, ttl: float | None = None,
            tags: Sequence[str] = ()) -> Awaitable[None] | None:
        call = self.set_call(key, value, ttl=ttl, tags=tags)
        return self.client.run(Call(call.op, call.keys, call.args, _nothing))

    @overload
    def delete(self: Cache[Client], key: str) -> bool: ...
    @overload
    def delete(self: Cache[AsyncClient], key: str) -> Awaitable[bool]: ...
    def delete(self, key: str) -> bool | Awaitable[bool]:
        return self.client.run(delete_call(self.keys, key))

    @overload
    def write_through(self: Cache[Client], key: str, value: Any,
                      db_write: Callable[[str, Any], Any], *, ttl: float | None = None,
                      tags: Sequence[str] = ()) -> None: ...
    @overload
    def write_through(self: Cache[AsyncClient], key: str, value: Any,
                      db_write: Callable[[str, Any], Any], *, ttl: float | None = None,
                      tags: Sequence[str] = ()) -> Awaitable[None]: ...
    def write_through(self, key: str, value: Any, db_write: Callable[[str, Any], Any], *,
                      ttl: float | None = None, tags: Sequence[str] = ()
                      ) -> Awaitable[None] | None:
        """Write ``value`` to the database (``db_write(key, value)``), then to the cache. If
        the database write raises, the cache holds no value for the key (never a stale one)."""
        return self.client.drive(self.write_through_plan(key, value, db_write, ttl=ttl,
                                                         tags=tags))

    @overload
    def warm(self: Cache[Client], items: Iterable[tuple[str, Any]], *,
             ttl: float | None = None, tags: Sequence[str] = (), batch: int = 500,
             progress: Callable[[int], None] | None = None) -> int: ...
    @overload
    def warm(self: Cache[AsyncClient], items: Iterable[tuple[str, Any]], *,
             ttl: float | None = None, tags: Sequence[str] = (), batch: int = 500,
             progress: Callable[[int], None] | None = None) -> Awaitable[int]: ...
    def warm(self, items: Iterable[tuple[str, Any]], *, ttl: float | None = None,
             tags: Sequence[str] = (), batch: int = 500,
             progress: Callable[[int], None] | None = None) -> int | Awaitable[int]:
        """Bulk-load entries, ``batch`` per pipelined round trip; ``progress(done)`` after each."""
        return self.client.drive(self.warm_plan(items, ttl=ttl, tags=tags, batch=batch,
                                                progress=progress))

    @overload
    def invalidate_tag(self: Cache[Client], tag: str, *, batch: int = 500
                       ) -> TagInvalidation: ...
    @overload
    def invalidate_tag(self: Cache[AsyncClient], tag: str, *, batch: int = 500
                       ) -> Awaitable[TagInvalidation]: ...
    def invalidate_tag(self, tag: str, *, batch: int = 500
                       ) -> TagInvalidation | Awaitable[TagInvalidation]:
        """Invalidate every entry carrying ``tag`` (atomically: one generation bump), then
        delete them in bounded calls."""
        return self.client.drive(self.invalidate_tag_plan(tag, batch=batch))

    def __repr__(self) -> str:
        return f"Cache({self.namespace!r})"


def _nothing(reply: Any) -> None:
    return None


__all__ = ["HIT", "Cache", "CacheStats", "Codec", "JsonCodec", "RawCodec"]
