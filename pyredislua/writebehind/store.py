"""The write-behind store: applications write to Redis now, a flusher writes to the database
later, in batches. See the package docstring for the guarantee."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..engine.protocol import Call
from ..sinks.base import Sink
from .effects import drive_async, drive_sync
from .flusher import AsyncFlusher, FlushConfig, Flusher, FlushEvent, drain_flow, ms
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
    reap_call,
    release_call,
    requeue_call,
    stats_call,
    value_bytes,
    write_call,
)

if TYPE_CHECKING:
    from ..client import AsyncClient, Client

Item = tuple[str, "bytes | str | None"]


def _chunks(seq: Sequence[Any], n: int = MAX_BATCH) -> list[Sequence[Any]]:
    return [seq[i:i + n] for i in range(0, len(seq), n)] or []


class _StoreBase:
    def __init__(self, client: Client | AsyncClient, name: str, *,
                 config: FlushConfig | None = None, prefix: str = "prl", **options: Any
                 ) -> None:
        self.keys = StoreKeys(name, prefix)
        self.config = config or FlushConfig(**options)
        self.engine = client.engine

    # -- call building (pure) -------------------------------------------------------------------

    def _write_calls(self, items: Iterable[Item]) -> list[Call[list[int]]]:
        triples: list[tuple[str, str, bytes]] = []
        for key, value in items:
            _key(key)
            triples.append(("del", key, b"") if value is None
                           else ("set", key, value_bytes(value)))
        if not triples:
            return []
        return [write_call(self.keys, list(chunk), self.config.batch_size)
                for chunk in _chunks(triples)]

    def _claim_call(self, count: int | None, lease: float | None) -> Call[Claim]:
        n = self.config.batch_size if count is None else count
        lease_ms = ms(self.config.lease if lease is None else lease, "lease", allow_zero=False)
        return claim_call(self.keys, n, lease_ms, max_attempts=self.config.max_attempts)

    def _ack_call(self, claim: Claim, records: Sequence[Record] | None) -> Call[list[int]]:
        return ack_call(self.keys, claim.token, claim.records if records is None else records)

    def _fail_call(self, claim: Claim, failures: Sequence[tuple[Record, str]]
                   ) -> Call[list[int]]:
        c = self.config
        return fail_call(self.keys, claim.token, failures,
                         max_attempts=c.max_attempts, backoff_ms=ms(c.backoff, "backoff"),
                         max_backoff_ms=ms(c.max_backoff, "max_backoff"))


class WriteBehind(_StoreBase):
    """A write-behind store on a sync :class:`~pyredislua.Client`.

    ``store = WriteBehind(client, "orders", batch_size=200, max_delay=0.5)``;
    ``store.set("order:1", b"...")`` (returns the version); ``store.delete("order:2")``;
    ``with store.flusher(SQLiteSink("app.db")): ...``.
    """

    def __init__(self, client: Client, name: str, **options: Any) -> None:
        super().__init__(client, name, **options)
        self.client = client

    def set(self, key: str, value: bytes | str) -> int:
        """Store ``value`` and mark the key dirty; returns its new version (one round trip)."""
        return self.write_many([(key, value)])[0]

    def delete(self, key: str) -> int:
        """Delete the key (a tombstone, flushed like any write); returns its new version."""
        return self.write_many([(key, None)])[0]

    def write_many(self, items: Iterable[Item]) -> list[int]:
        """Write (key, value) pairs (value None: delete), atomically per 1000 records, all in
        one pipelined round trip; returns the versions in order."""
        calls = self._write_calls(items)
        return [v for chunk in self.client.run_many(calls) for v in chunk] if calls else []

    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[0][0]

    def get_many(self, keys: Sequence[str]) -> list[tuple[bytes | None, int]]:
        """(value, version) per key: value None when deleted or never written."""
        calls = [get_call(self.keys, [_key(k) for k in chunk]) for chunk in _chunks(keys)]
        return [p for part in self.client.run_many(calls) for p in part] if calls else []

    def claim(self, count: int | None = None, lease: float | None = None) -> Claim:
        """Claim up to ``count`` due records (oldest first) under a lease; flush, then ack.

        Safe to re-send: a claim repeated after a lost reply returns the same records. A claim
        that expires counts as a failed attempt of its records (``max_attempts`` dead-letters
        them); records back from an expired claim are claimed one at a time until written."""
        return self.client.run(self._claim_call(count, lease))

    def ack(self, claim: Claim, records: Sequence[Record] | None = None) -> list[int]:
        """Ack records written to the sink (default: the whole claim): 1 clean, 0 written
        since the claim (stays dirty), 2 already clean."""
        return self.client.run(self._ack_call(claim, records))

    def fail(self, claim: Claim, failures: Sequence[tuple[Record, str]]) -> list[int]:
        """Report records the sink rejected: 1 retry scheduled, 2 dead-lettered, 3 rewritten
        since the claim, 0 not claimed by this claim."""
        return self.client.run(self._fail_call(claim, failures))

    def release(self, claim: Claim, records: Sequence[Record] | None = None,
                delay: float = 0.0) -> int:
        recs = claim.records if records is None else records
        return self.client.run(release_call(self.keys, claim.token, [r.key for r in recs],
                                            ms(delay, "delay")))

    def reap(self, limit: int = 100) -> int:
        return self.client.run(reap_call(self.keys, limit, self.config.max_attempts))

    def dead(self, offset: int = 0, count: int = 100) -> list[DeadRecord]:
        return self.client.run(dead_call(self.keys, offset, count))

    def requeue(self, keys: Sequence[str] = (), limit: int = 100) -> int:
        return self.client.run(requeue_call(self.keys, [_key(k) for k in keys], limit))

    def stats(self) -> StoreStats:
        return self.client.run(stats_call(self.keys))

    def flush(self, sink: Sink, max_batches: int | None = None) -> list[FlushEvent]:
        """Flush every due record into ``sink`` now, in this thread."""
        return drive_sync(self.client, drain_flow(self.engine, self.keys, sink, self.config,
                                                  max_batches))

    def flusher(self, sink: Sink, **options: Any) -> Flusher:
        """A background flusher thread (start it, or use it as a context manager)."""
        return Flusher(self, sink, **options)


class AsyncWriteBehind(_StoreBase):
    """A write-behind store on an :class:`~pyredislua.AsyncClient`; see :class:`WriteBehind`."""

    def __init__(self, client: AsyncClient, name: str, **options: Any) -> None:
        super().__init__(client, name, **options)
        self.client = client

    async def set(self, key: str, value: bytes | str) -> int:
        return (await self.write_many([(key, value)]))[0]

    async def delete(self, key: str) -> int:
        return (await self.write_many([(key, None)]))[0]

    async def write_many(self, items: Iterable[Item]) -> list[int]:
        calls = self._write_calls(items)
        if not calls:
            return []
        return [v for chunk in await self.client.run_many(calls) for v in chunk]

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key]))[0][0]

    async def get_many(self, keys: Sequence[str]) -> list[tuple[bytes | None, int]]:
        calls = [get_call(self.keys, [_key(k) for k in chunk]) for chunk in _chunks(keys)]
        return [p for part in await self.client.run_many(calls) for p in part] if calls else []

    async def claim(self, count: int | None = None, lease: float | None = None) -> Claim:
        return await self.client.run(self._claim_call(count, lease))

    async def ack(self, claim: Claim, records: Sequence[Record] | None = None) -> list[int]:
        return await self.client.run(self._ack_call(claim, records))

    async def fail(self, claim: Claim, failures: Sequence[tuple[Record, str]]) -> list[int]:
        return await self.client.run(self._fail_call(claim, failures))

    async def release(self, claim: Claim, records: Sequence[Record] | None = None,
                      delay: float = 0.0) -> int:
        recs = claim.records if records is None else records
        return await self.client.run(release_call(self.keys, claim.token,
                                                  [r.key for r in recs], ms(delay, "delay")))

    async def reap(self, limit: int = 100) -> int:
        return await self.client.run(reap_call(self.keys, limit, self.config.max_attempts))

    async def dead(self, offset: int = 0, count: int = 100) -> list[DeadRecord]:
        return await self.client.run(dead_call(self.keys, offset, count))

    async def requeue(self, keys: Sequence[str] = (), limit: int = 100) -> int:
        return await self.client.run(requeue_call(self.keys, [_key(k) for k in keys], limit))

    async def stats(self) -> StoreStats:
        return await self.client.run(stats_call(self.keys))

    async def flush(self, sink: Sink, max_batches: int | None = None) -> list[FlushEvent]:
        return await drive_async(self.client, drain_flow(self.engine, self.keys, sink,
                                                         self.config, max_batches))

    def flusher(self, sink: Sink, **options: Any) -> AsyncFlusher:
        return AsyncFlusher(self, sink, **options)
