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
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, overload

from ..client import AsyncClient, Client
from ..engine.protocol import Call, Command, Engine, Plan
from ..kit import as_text, tagged_name
from .ops import MAX_BATCH, RequestId, _bytes, ms, new_request_id

C = TypeVar("C", Client, AsyncClient)


class StreamKeys:
    def __init__(self, name: str, prefix: str = "prl") -> None:
        base = f"{prefix}:sq:{tagged_name(name)}"
        self.base = base
        self.stream = base + ":stream"
        self.dead = base + ":dead"
        self.cursors = base + ":cursors"
        self.consumers = base + ":consumers"
        self.all = (self.stream, self.dead)
        # the keys of stream.consume (its request record added per call)
        self.consume = (self.stream, self.dead, self.cursors, self.consumers)

    def request(self, request_id: str) -> str:
        """The request record of one call (an optional last key; expires by itself)."""
        return f"{self.base}:req:{request_id}"

    def with_request(self, keys: tuple[str, ...], request_id: RequestId = None
                     ) -> tuple[str, ...]:
        if request_id is False:
            return keys
        return (*keys, self.request(request_id or new_request_id()))


@dataclass(frozen=True)
class Entry:
    id: str
    deliveries: int
    payload: bytes
    consumer: str

    @property
    def text(self) -> str:
        return self.payload.decode()


@dataclass(frozen=True)
class StreamStats:
    length: int  # entries not yet acked (delivered or not)
    pending: int  # delivered, not acked (-1: the group does not exist yet)
    consumers: dict[str, int]
    dead: int


@dataclass(frozen=True)
class DeadEntry:
    id: str  # the entry's id in the dead-letter stream
    original_id: str
    deliveries: int
    reason: str
    payload: bytes


def _fields(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return {as_text(k): v for k, v in raw.items()}
    it = iter(raw)
    return {as_text(k): v for k, v in zip(it, it)}


def _parse_stats(reply: Any) -> StreamStats:
    flat = reply[2]
    per = {as_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
    return StreamStats(int(reply[0]), int(reply[1]), per, int(reply[3]))


def _parse_dead(reply: Any) -> list[DeadEntry]:
    out = []
    for entry in reply:
        f = _fields(entry[1])
        out.append(DeadEntry(as_text(entry[0]), as_text(f.get("id", b"")),
                             int(f.get("deliveries", 0)), as_text(f.get("reason", b"")),
                             _bytes(f.get("p", b""))))
    return out


def _last_delivered(groups: Any, group: str) -> str:
    """The group's last-delivered-id from an XINFO GROUPS reply ("$" when unknown: the stream
    or the group is gone, and consume will make them again)."""
    if isinstance(groups, BaseException) or not groups:
        return "$"
    for info in groups:
        fields = info if isinstance(info, dict) else _fields(info)
        fields = {as_text(k): v for k, v in fields.items()}
        if as_text(fields.get("name", b"")) == group:
            return as_text(fields.get("last-delivered-id", "$"))
    return "$"


def _texts(reply: Any) -> list[str]:
    return [as_text(x) for x in reply]


def _discarded(call: Call[Any]) -> Call[None]:
    """``call`` with its reply dropped."""
    return Call(call.op, call.keys, call.args, lambda reply: None)


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
        self.claim_idle_ms = ms(claim_idle, name="claim_idle", allow_zero=False)
        self.max_deliveries = max_deliveries
        self.forget_idle_ms = ms(forget_idle, name="forget_idle", allow_zero=False)
        self._engine: Engine = client.engine
        self._client: C = client

    @property
    def client(self) -> C:
        return self._client

    def _entries(self, consumer: str) -> Any:
        def parse(reply: Any) -> list[Entry]:
            return [Entry(as_text(e[0]), int(e[1]), _bytes(e[2]), consumer) for e in reply]
        return parse

    def _produce_calls(self, payloads: Iterable[bytes | str]) -> list[Call[list[str]]]:
        items = [_bytes(p) for p in payloads]
        calls: list[Call[list[str]]] = []
        for start in range(0, len(items), MAX_BATCH):
            chunk: list[str | bytes] = [self.group]
            chunk.extend(items[start:start + MAX_BATCH])
            args = tuple(chunk)
            calls.append(Call("stream.produce", self.keys.with_request(self.keys.all), args,
                              _texts))
        return calls

    def _produce_plan(self, payloads: Iterable[bytes | str]) -> Plan[list[str]]:
        calls = self._produce_calls(payloads)
        if not calls:
            return []
        results = yield from self._engine.run(calls)
        return [i for chunk in results for i in chunk]

    def _consume_call(self, count: int, request_id: RequestId = None) -> Call[list[Entry]]:
        return Call("stream.consume", self.keys.with_request(self.keys.consume, request_id),
                    (self.group, self.consumer, count, self.claim_idle_ms, self.max_deliveries,
                     self.forget_idle_ms), self._entries(self.consumer))

    def _consume_plan(self, count: int, timeout: float | None, max_block: float
                      ) -> Plan[list[Entry]]:
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got = yield from self._engine.run_one(self._consume_call(count))
            if got:
                return got
            remaining = math.inf if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return []
            # Scripts cannot block: wait in XREAD for an entry after the last one the group
            # delivered (read-only, so a re-sent wait delivers nothing), then consume again.
            # Stalled entries are claimed on the next pass (at most max_block later).
            block_ms = max(1, int(min(remaining, max_block) * 1000))
            [groups] = yield [Command(("XINFO", "GROUPS", self.keys.stream))]
            after = _last_delivered(groups, self.group)
            [reply] = yield [Command(("XREAD", "BLOCK", block_ms, "COUNT", 1,
                                      "STREAMS", self.keys.stream, after))]
            if isinstance(reply, BaseException):
                raise reply

    def _ack_call(self, entries: Iterable[Entry]) -> list[Call[int]]:
        items = list(entries)
        calls: list[Call[int]] = []
        for i in range(0, len(items), MAX_BATCH):
            chunk = items[i:i + MAX_BATCH]
            consumers = {e.consumer for e in chunk}
            for consumer in sorted(consumers):
                args: list[str | int | bytes] = [self.group, consumer]
                for e in chunk:
                    if e.consumer == consumer:
                        args.extend((e.id, e.deliveries))
                calls.append(Call("stream.ack", self.keys.with_request(self.keys.all),
                                  tuple(args), int))
        return calls

    def _nack_call(self, entry: Entry, reason: str, action: str) -> Call[str]:
        return Call("stream.nack", self.keys.with_request(self.keys.all),
                    (self.group, entry.consumer, entry.id, entry.deliveries, reason, action),
                    as_text)

    def _extend_call(self, entry: Entry) -> Call[int]:
        return Call("stream.extend", self.keys.all,
                    (self.group, entry.consumer, entry.id, entry.deliveries), int)

    def _stats_call(self) -> Call[StreamStats]:
        return Call("stream.stats", self.keys.all, (self.group,), _parse_stats)

    def _dead_call(self, count: int) -> Call[list[DeadEntry]]:
        return Call("stream.dead", self.keys.all, (count,), _parse_dead)

    def _ack_plan(self, entries: Iterable[Entry]) -> Plan[int]:
        calls = self._ack_call(entries)
        if not calls:
            return 0
        results = yield from self._engine.run(calls)
        return sum(results)

    @overload
    def produce(self: StreamQueue[Client], payloads: Iterable[bytes | str]) -> list[str]: ...
    @overload
    def produce(self: StreamQueue[AsyncClient], payloads: Iterable[bytes | str]
                ) -> Awaitable[list[str]]: ...
    def produce(self, payloads: Iterable[bytes | str]) -> list[str] | Awaitable[list[str]]:
        return self._client.drive(self._produce_plan(payloads))

    @overload
    def consume(self: StreamQueue[Client], count: int = 1, *, timeout: float | None = 0.0
                ) -> list[Entry]: ...
    @overload
    def consume(self: StreamQueue[AsyncClient], count: int = 1, *,
                timeout: float | None = 0.0) -> Awaitable[list[Entry]]: ...
    def consume(self, count: int = 1, *, timeout: float | None = 0.0
                ) -> list[Entry] | Awaitable[list[Entry]]:
        return self._client.drive(self._consume_plan(count, timeout, self._client.max_block))

    @overload
    def ack(self: StreamQueue[Client], entries: Iterable[Entry]) -> int: ...
    @overload
    def ack(self: StreamQueue[AsyncClient], entries: Iterable[Entry]) -> Awaitable[int]: ...
    def ack(self, entries: Iterable[Entry]) -> int | Awaitable[int]:
        return self._client.drive(self._ack_plan(entries))

    @overload
    def nack(self: StreamQueue[Client], entry: Entry, reason: str = "",
             action: Literal["retry", "dead"] = "retry") -> str: ...
    @overload
    def nack(self: StreamQueue[AsyncClient], entry: Entry, reason: str = "",
             action: Literal["retry", "dead"] = "retry") -> Awaitable[str]: ...
    def nack(self, entry: Entry, reason: str = "",
             action: Literal["retry", "dead"] = "retry") -> str | Awaitable[str]:
        return self._client.run(self._nack_call(entry, reason, action))

    @overload
    def extend(self: StreamQueue[Client], entry: Entry) -> None: ...
    @overload
    def extend(self: StreamQueue[AsyncClient], entry: Entry) -> Awaitable[None]: ...
    def extend(self, entry: Entry) -> Awaitable[None] | None:
        return self._client.run(_discarded(self._extend_call(entry)))

    @overload
    def stats(self: StreamQueue[Client]) -> StreamStats: ...
    @overload
    def stats(self: StreamQueue[AsyncClient]) -> Awaitable[StreamStats]: ...
    def stats(self) -> StreamStats | Awaitable[StreamStats]:
        return self._client.run(self._stats_call())

    @overload
    def dead(self: StreamQueue[Client], count: int = 100) -> list[DeadEntry]: ...
    @overload
    def dead(self: StreamQueue[AsyncClient], count: int = 100) -> Awaitable[list[DeadEntry]]: ...
    def dead(self, count: int = 100) -> list[DeadEntry] | Awaitable[list[DeadEntry]]:
        return self._client.run(self._dead_call(count))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
