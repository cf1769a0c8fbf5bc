"""A queue on Redis Streams with a consumer group, for users who want the Streams model.

Entries are delivered FIFO (no priorities, no delays). A delivery's lease token is
(consumer, delivery count) from the group's pending entries list: ack, nack and extend check it
in Lua, so a consumer whose stalled entry was claimed by another gets STALE and changes nothing.
``consume`` first claims entries stalled longer than ``claim_idle`` (XAUTOCLAIM, which looks at
no more than 10 x count pending entries per call; the scan resumes where the group's previous
one stopped, the cursor kept in a declared hash), dead-letters
those already delivered ``max_deliveries`` times (XADD to a dead-letter stream + XACK + XDEL),
then reads new entries; with nothing to deliver it waits in ``XREAD BLOCK`` for an entry the
group has not delivered yet (the one thing scripts cannot do; XREAD only reads, so a re-sent
wait delivers nothing to nobody) and consumes again. Acked entries are deleted, so the stream
holds only unfinished work.

Re-sending: produce, consume, ack and nack carry a request record key per call
(``prl:sq:{name}:req:<id>``): a call re-sent after a lost reply replies as its first run did.
Consumers: each consume records when this consumer last consumed (``prl:sq:{name}:consumers``);
consumers idle for ``forget_idle`` seconds with nothing pending are deleted from the group, a few
per call, so random consumer names do not pile up.

Guarantee: at-least-once, as for :class:`~pyredislua.queue.Queue`.

Call specs and plans: :mod:`.ops`; keys: ``lua/keysets/streamqueue.keys``.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Iterable
from typing import Generic, Literal, TypeVar, overload

from ..client import AsyncClient, Client
from ..engine.protocol import Call, Engine
from ..kit import ms
from . import ops
from .ops import DeadEntry, Entry, StreamKeys, StreamStats

C = TypeVar("C", Client, AsyncClient)


class StreamQueue(Generic[C]):
    """The Streams queue, on a sync :class:`~pyredislua.Client` or an asyncio
    :class:`~pyredislua.AsyncClient` (values on the first, awaitables on the second)::

        sq = StreamQueue(client, "events", group="billing", consumer="worker-1")
        sq.produce([b"..."]); for e in sq.consume(10, timeout=5): ...; sq.ack([e])
    """

    def __init__(self, client: C, name: str, *, group: str = "workers",
                 consumer: str | None = None, claim_idle: float = 30.0, max_deliveries: int = 3,
                 forget_idle: float = 600.0, prefix: str = "prl") -> None:
        self.name = name
        self.keys = StreamKeys(name, prefix)
        self.group = group
        self.consumer = consumer or f"c-{secrets.token_hex(6)}"
        self.claim_idle_ms = ms(claim_idle, "claim_idle")
        self.max_deliveries = max_deliveries
        self.forget_idle_ms = ms(forget_idle, "forget_idle")
        self._engine: Engine = client.engine
        self._client: C = client

    @property
    def client(self) -> C:
        return self._client

    def _consume_call(self, count: int) -> Call[list[Entry]]:
        return ops.consume_call(self.keys, self.group, self.consumer, count, self.claim_idle_ms,
                                self.max_deliveries, self.forget_idle_ms)

    @overload
    def produce(self: StreamQueue[Client], payloads: Iterable[bytes | str]) -> list[str]: ...
    @overload
    def produce(self: StreamQueue[AsyncClient], payloads: Iterable[bytes | str]
                ) -> Awaitable[list[str]]: ...
    def produce(self, payloads: Iterable[bytes | str]) -> list[str] | Awaitable[list[str]]:
        return self._client.drive(ops.produce_plan(self._engine, self.keys, self.group, payloads))

    @overload
    def consume(self: StreamQueue[Client], count: int = 1, *, timeout: float | None = 0.0
                ) -> list[Entry]: ...
    @overload
    def consume(self: StreamQueue[AsyncClient], count: int = 1, *,
                timeout: float | None = 0.0) -> Awaitable[list[Entry]]: ...
    def consume(self, count: int = 1, *, timeout: float | None = 0.0
                ) -> list[Entry] | Awaitable[list[Entry]]:
        return self._client.drive(ops.consume_plan(
            self._engine, self.keys, self.group, lambda: self._consume_call(count), timeout,
            self._client.max_block))

    @overload
    def ack(self: StreamQueue[Client], entries: Iterable[Entry]) -> int: ...
    @overload
    def ack(self: StreamQueue[AsyncClient], entries: Iterable[Entry]) -> Awaitable[int]: ...
    def ack(self, entries: Iterable[Entry]) -> int | Awaitable[int]:
        return self._client.drive(ops.ack_plan(self._engine, self.keys, self.group, entries))

    @overload
    def nack(self: StreamQueue[Client], entry: Entry, reason: str = "",
             action: Literal["retry", "dead"] = "retry") -> str: ...
    @overload
    def nack(self: StreamQueue[AsyncClient], entry: Entry, reason: str = "",
             action: Literal["retry", "dead"] = "retry") -> Awaitable[str]: ...
    def nack(self, entry: Entry, reason: str = "",
             action: Literal["retry", "dead"] = "retry") -> str | Awaitable[str]:
        return self._client.run(ops.nack_call(self.keys, self.group, entry, reason, action))

    @overload
    def extend(self: StreamQueue[Client], entry: Entry) -> None: ...
    @overload
    def extend(self: StreamQueue[AsyncClient], entry: Entry) -> Awaitable[None]: ...
    def extend(self, entry: Entry) -> Awaitable[None] | None:
        return self._client.run(ops.extend_call(self.keys, self.group, entry))

    @overload
    def stats(self: StreamQueue[Client]) -> StreamStats: ...
    @overload
    def stats(self: StreamQueue[AsyncClient]) -> Awaitable[StreamStats]: ...
    def stats(self) -> StreamStats | Awaitable[StreamStats]:
        return self._client.run(ops.stats_call(self.keys, self.group))

    @overload
    def dead(self: StreamQueue[Client], count: int = 100) -> list[DeadEntry]: ...
    @overload
    def dead(self: StreamQueue[AsyncClient], count: int = 100) -> Awaitable[list[DeadEntry]]: ...
    def dead(self, count: int = 100) -> list[DeadEntry] | Awaitable[list[DeadEntry]]:
        return self._client.run(ops.dead_call(self.keys, count))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
