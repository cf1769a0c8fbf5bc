"""The write-behind store: applications write to Redis now, a flusher writes to the database
later, in batches. See the package docstring for the guarantee.

One class for sync and asyncio: :class:`WriteBehind` is bound to a
:class:`~pyredislua.Client` (its methods return values) or an :class:`~pyredislua.AsyncClient`
(they return awaitables); each method builds a call or a plan (pure) and hands it to the client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, TypeVar, overload

from ..client import AsyncClient, Client
from ..engine.protocol import Call, Engine, Plan
from ..kit import as_bytes, ms
from ..observe.series import MinuteSeries
from .core import FlushConfig, FlushEvent, drain_plan
from .flusher import AsyncFlusher, Flusher
from .ops import (
    MAX_BATCH,
    Claim,
    DeadRecord,
    Record,
    StoreKeys,
    StoreStats,
    _key,
    ack_call,
    claim_call,
    dead_call,
    fail_call,
    get_call,
    metrics_call,
    reap_call,
    release_call,
    requeue_call,
    stats_call,
    write_call,
)
from .sinks.base import Sink

C = TypeVar("C", Client, AsyncClient)
T = TypeVar("T")
Item = tuple[str, "bytes | str | None"]
_DEFAULT = FlushConfig()


def _chunks(seq: Sequence[T], n: int = MAX_BATCH) -> list[Sequence[T]]:
    return [seq[i:i + n] for i in range(0, len(seq), n)]


def _joined(engine: Engine, calls: Sequence[Call[list[T]]]) -> Plan[list[T]]:
    """Run the calls in one pipelined round trip and join their lists in order."""
    if not calls:
        return []
    parts = yield from engine.run(calls)
    return [v for part in parts for v in part]


def _first(call: Call[list[T]]) -> Call[T]:
    parse = call.parse
    return Call(call.op, call.keys, call.args, lambda reply: parse(reply)[0])


class WriteBehind(Generic[C]):
    """A write-behind store.

    ``store = WriteBehind(client, "orders", batch_size=200, max_delay=0.5)``;
    ``store.set("order:1", b"...")`` (returns the version); ``store.delete("order:2")``;
    ``with store.flusher(SQLiteSink("app.db")): ...``. On an asyncio client the same methods
    return awaitables, and ``async with store.flusher(sink): ...`` runs asyncio tasks.

    Flushing (see :class:`~pyredislua.writebehind.FlushConfig`): ``batch_size`` records per sink
    batch, flushed when that many are due or the oldest has waited ``max_delay`` seconds;
    ``lease``: a claim not acked within it returns to dirty; ``max_attempts`` failed attempts
    before a record is dead-lettered, retried after ``backoff`` doubling up to ``max_backoff``;
    ``unavailable_delay``: retry delay of a batch the sink could not take at all. ``config``: a
    whole :class:`FlushConfig` instead. ``metrics=True``: writes, claims, acks, failures and
    reaps record per-minute counts (written, flushed, failed, dead) and the write-to-ack lag
    histogram in ``prl:wb:{name}:metrics``; read them with :meth:`metrics` (see
    docs/design/metrics-in-redis.md).
    """

    client: C

    def __init__(self, client: C, name: str, *, config: FlushConfig | None = None,
                 prefix: str = "prl", batch_size: int = _DEFAULT.batch_size,
                 max_delay: float = _DEFAULT.max_delay, lease: float = _DEFAULT.lease,
                 max_attempts: int = _DEFAULT.max_attempts, backoff: float = _DEFAULT.backoff,
                 max_backoff: float = _DEFAULT.max_backoff,
                 unavailable_delay: float = _DEFAULT.unavailable_delay,
                 metrics: bool = False) -> None:
        if not name:
            raise ValueError("a write-behind store needs a name")
        self.client = client
        self.keys = StoreKeys(name, prefix, metrics=metrics)
        self.config = config or FlushConfig(
            batch_size=batch_size, max_delay=max_delay, lease=lease, max_attempts=max_attempts,
            backoff=backoff, max_backoff=max_backoff, unavailable_delay=unavailable_delay)

    @property
    def engine(self) -> Engine:
        return self.client.engine

    # -- pure: call specs and plans ---------------------------------------------------------------

    def write_calls(self, items: Iterable[Item]) -> list[Call[list[int]]]:
        """The write calls for (key, value) pairs (value None: delete), 1000 records each."""
        triples: list[tuple[str, str, bytes]] = []
        for key, value in items:
            _key(key)
            triples.append(("del", key, b"") if value is None
                           else ("set", key, as_bytes(value)))
        return [write_call(self.keys, chunk, self.config.batch_size)
                for chunk in _chunks(triples)]

    def claim_call(self, count: int | None = None, lease: float | None = None) -> Call[Claim]:
        n = self.config.batch_size if count is None else count
        lease_ms = self.config.lease_ms if lease is None else ms(lease, "lease")
        return claim_call(self.keys, n, lease_ms, max_attempts=self.config.max_attempts)

    def ack_call(self, claim: Claim, records: Sequence[Record] | None = None
                 ) -> Call[list[int]]:
        return ack_call(self.keys, claim.token, claim.records if records is None else records)

    def fail_call(self, claim: Claim, failures: Sequence[tuple[Record, str]]
                  ) -> Call[list[int]]:
        c = self.config
        return fail_call(self.keys, claim.token, failures, max_attempts=c.max_attempts,
                         backoff_ms=c.backoff_ms, max_backoff_ms=c.max_backoff_ms)

    def release_call(self, claim: Claim, records: Sequence[Record] | None = None,
                     delay: float = 0.0) -> Call[int]:
        recs = claim.records if records is None else records
        return release_call(self.keys, claim.token, [r.key for r in recs],
                            ms(delay, "delay", allow_zero=True))

    def flush_plan(self, sink: Sink, max_batches: int | None = None) -> Plan[list[FlushEvent]]:
        return drain_plan(self.engine, self.keys, sink, self.config, max_batches)

    # -- driven -----------------------------------------------------------------------------------

    @overload
    def set(self: WriteBehind[Client], key: str, value: bytes | str) -> int: ...
    @overload
    def set(self: WriteBehind[AsyncClient], key: str, value: bytes | str) -> Awaitable[int]: ...
    def set(self, key: str, value: bytes | str) -> int | Awaitable[int]:
        """Store ``value`` and mark the key dirty; returns its new version (one round trip)."""
        return self.client.run(_first(self.write_calls([(key, value)])[0]))

    @overload
    def delete(self: WriteBehind[Client], key: str) -> int: ...
    @overload
    def delete(self: WriteBehind[AsyncClient], key: str) -> Awaitable[int]: ...
    def delete(self, key: str) -> int | Awaitable[int]:
        """Delete the key (a tombstone, flushed like any write); returns its new version."""
        return self.client.run(_first(self.write_calls([(key, None)])[0]))

    @overload
    def write_many(self: WriteBehind[Client], items: Iterable[Item]) -> list[int]: ...
    @overload
    def write_many(self: WriteBehind[AsyncClient], items: Iterable[Item]
                   ) -> Awaitable[list[int]]: ...
    def write_many(self, items: Iterable[Item]) -> list[int] | Awaitable[list[int]]:
        """Write (key, value) pairs (value None: delete), atomically per 1000 records, all in
        one pipelined round trip; returns the versions in order."""
        return self.client.drive(_joined(self.engine, self.write_calls(items)))

    @overload
    def get(self: WriteBehind[Client], key: str) -> bytes | None: ...
    @overload
    def get(self: WriteBehind[AsyncClient], key: str) -> Awaitable[bytes | None]: ...
    def get(self, key: str) -> bytes | Awaitable[bytes | None] | None:
        """The key's current value (None: deleted or never written), flushed or not."""
        call = get_call(self.keys, [_key(key)])
        return self.client.run(Call(call.op, call.keys, call.args,
                                    lambda reply: call.parse(reply)[0][0]))

    @overload
    def get_many(self: WriteBehind[Client], keys: Sequence[str]
                 ) -> list[tuple[bytes | None, int]]: ...
    @overload
    def get_many(self: WriteBehind[AsyncClient], keys: Sequence[str]
                 ) -> Awaitable[list[tuple[bytes | None, int]]]: ...
    def get_many(self, keys: Sequence[str]
                 ) -> list[tuple[bytes | None, int]] | Awaitable[list[tuple[bytes | None, int]]]:
        """(value, version) per key: value None when deleted or never written."""
        calls = [get_call(self.keys, [_key(k) for k in chunk]) for chunk in _chunks(keys)]
        return self.client.drive(_joined(self.engine, calls))

    @overload
    def claim(self: WriteBehind[Client], count: int | None = None,
              lease: float | None = None) -> Claim: ...
    @overload
    def claim(self: WriteBehind[AsyncClient], count: int | None = None,
              lease: float | None = None) -> Awaitable[Claim]: ...
    def claim(self, count: int | None = None, lease: float | None = None
              ) -> Claim | Awaitable[Claim]:
        """Claim up to ``count`` due records (oldest first) under a lease; flush, then ack.

        Safe to re-send: a claim repeated after a lost reply returns the same records. A claim
        that expires counts as a failed attempt of its records (``max_attempts`` dead-letters
        them); records back from an expired claim are claimed one at a time until written."""
        return self.client.run(self.claim_call(count, lease))

    @overload
    def ack(self: WriteBehind[Client], claim: Claim,
            records: Sequence[Record] | None = None) -> list[int]: ...
    @overload
    def ack(self: WriteBehind[AsyncClient], claim: Claim,
            records: Sequence[Record] | None = None) -> Awaitable[list[int]]: ...
    def ack(self, claim: Claim, records: Sequence[Record] | None = None
            ) -> list[int] | Awaitable[list[int]]:
        """Ack records written to the sink (default: the whole claim): 1 clean, 0 written
        since the claim (stays dirty), 2 already clean."""
        return self.client.run(self.ack_call(claim, records))

    @overload
    def fail(self: WriteBehind[Client], claim: Claim,
             failures: Sequence[tuple[Record, str]]) -> list[int]: ...
    @overload
    def fail(self: WriteBehind[AsyncClient], claim: Claim,
             failures: Sequence[tuple[Record, str]]) -> Awaitable[list[int]]: ...
    def fail(self, claim: Claim, failures: Sequence[tuple[Record, str]]
             ) -> list[int] | Awaitable[list[int]]:
        """Report records the sink rejected: 1 retry scheduled, 2 dead-lettered, 3 rewritten
        since the claim, 0 not claimed by this claim."""
        return self.client.run(self.fail_call(claim, failures))

    @overload
    def release(self: WriteBehind[Client], claim: Claim,
                records: Sequence[Record] | None = None, delay: float = 0.0) -> int: ...
    @overload
    def release(self: WriteBehind[AsyncClient], claim: Claim,
                records: Sequence[Record] | None = None,
                delay: float = 0.0) -> Awaitable[int]: ...
    def release(self, claim: Claim, records: Sequence[Record] | None = None,
                delay: float = 0.0) -> int | Awaitable[int]:
        """Give claimed records back without counting an attempt, due after ``delay``."""
        return self.client.run(self.release_call(claim, records, delay))

    @overload
    def reap(self: WriteBehind[Client], limit: int = 100) -> int: ...
    @overload
    def reap(self: WriteBehind[AsyncClient], limit: int = 100) -> Awaitable[int]: ...
    def reap(self, limit: int = 100) -> int | Awaitable[int]:
        """Return expired claims to dirty (an attempt each) and make due retries dirty."""
        return self.client.run(reap_call(self.keys, limit, self.config.max_attempts))

    @overload
    def dead(self: WriteBehind[Client], offset: int = 0, count: int = 100
             ) -> list[DeadRecord]: ...
    @overload
    def dead(self: WriteBehind[AsyncClient], offset: int = 0, count: int = 100
             ) -> Awaitable[list[DeadRecord]]: ...
    def dead(self, offset: int = 0, count: int = 100
             ) -> list[DeadRecord] | Awaitable[list[DeadRecord]]:
        """Dead-lettered records, oldest first, with their last error."""
        return self.client.run(dead_call(self.keys, offset, count))

    @overload
    def requeue(self: WriteBehind[Client], keys: Sequence[str] = (), limit: int = 100
                ) -> int: ...
    @overload
    def requeue(self: WriteBehind[AsyncClient], keys: Sequence[str] = (), limit: int = 100
                ) -> Awaitable[int]: ...
    def requeue(self, keys: Sequence[str] = (), limit: int = 100) -> int | Awaitable[int]:
        """Make dead-lettered records dirty again: ``keys``, or the oldest ``limit``."""
        return self.client.run(requeue_call(self.keys, [_key(k) for k in keys], limit))

    @overload
    def stats(self: WriteBehind[Client]) -> StoreStats: ...
    @overload
    def stats(self: WriteBehind[AsyncClient]) -> Awaitable[StoreStats]: ...
    def stats(self) -> StoreStats | Awaitable[StoreStats]:
        return self.client.run(stats_call(self.keys))

    @overload
    def metrics(self: WriteBehind[Client]) -> MinuteSeries: ...
    @overload
    def metrics(self: WriteBehind[AsyncClient]) -> Awaitable[MinuteSeries]: ...
    def metrics(self) -> MinuteSeries | Awaitable[MinuteSeries]:
        """What the operations recorded (with ``metrics=True``, by any client): counts per
        minute over the last hour and the hour's lag histogram (one read-only call)."""
        return self.client.run(metrics_call(self.keys))

    @overload
    def flush(self: WriteBehind[Client], sink: Sink, max_batches: int | None = None
              ) -> list[FlushEvent]: ...
    @overload
    def flush(self: WriteBehind[AsyncClient], sink: Sink, max_batches: int | None = None
              ) -> Awaitable[list[FlushEvent]]: ...
    def flush(self, sink: Sink, max_batches: int | None = None
              ) -> list[FlushEvent] | Awaitable[list[FlushEvent]]:
        """Flush every due record into ``sink`` now, in the caller's thread or task."""
        return self.client.drive(self.flush_plan(sink, max_batches))

    @overload
    def flusher(self: WriteBehind[Client], sink: Sink, *,
                on_flush: Callable[[FlushEvent], None] | None = None,
                on_error: Callable[[BaseException], None] | None = None,
                workers: int = 1) -> Flusher: ...
    @overload
    def flusher(self: WriteBehind[AsyncClient], sink: Sink, *,
                on_flush: Callable[[FlushEvent], None] | None = None,
                on_error: Callable[[BaseException], None] | None = None,
                workers: int = 1) -> AsyncFlusher: ...
    def flusher(self, sink: Sink, *, on_flush: Callable[[FlushEvent], None] | None = None,
                on_error: Callable[[BaseException], None] | None = None,
                workers: int = 1) -> Flusher | AsyncFlusher:
        """A background flusher (start it, or use it as a context manager): threads on a sync
        client (:class:`Flusher`), asyncio tasks on an asyncio one (:class:`AsyncFlusher`)."""
        if isinstance(self.client, AsyncClient):
            return AsyncFlusher(self, sink, on_flush=on_flush, on_error=on_error,
                                workers=workers)
        return Flusher(self, sink, on_flush=on_flush, on_error=on_error, workers=workers)

    def __repr__(self) -> str:
        return f"WriteBehind({self.keys.name!r})"
