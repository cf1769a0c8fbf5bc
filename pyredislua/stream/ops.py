"""Call specs and plans of the Streams queue's Lua operations (``lua/stream/*.lua``): pure
descriptions, no I/O.

Keys: ``lua/keysets/streamqueue.keys`` (:class:`StreamKeys`). Re-sending: produce, consume, ack
and nack carry a request record key per call (``prl:sq:{name}:req:<id>``, a new random id by
default; ``request_id=False`` leaves it out): a call re-sent after a lost reply replies as its
first run did.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..engine.keysets import RecordedKeySet, RequestId
from ..engine.protocol import Call, Engine, Plan
from ..engine.waiting import TRANSPORT_ERRORS, WAIT_GRACE, run_by, wait_for_entry
from ..kit import as_fields, as_payload, as_text

MAX_BATCH = 1000  # entries per Lua call; more are split and pipelined


class StreamKeys(RecordedKeySet, keyset="streamqueue"):
    """The keys of one Streams queue, all under one hash tag, from
    ``lua/keysets/streamqueue.keys``: ``all`` (stream, dead) is what most operations take;
    consume takes ``consume`` (those, the cursors and the consumer registry); the per-call request
    record is :meth:`request`."""

    stream: str
    dead: str
    cursors: str
    consumers: str

    def __init__(self, name: str, prefix: str = "prl") -> None:
        super().__init__(name, prefix)
        self.consume = (*self.all, self.cursors, self.consumers)


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


# -- parsers ------------------------------------------------------------------------------------


def _parse_stats(reply: Any) -> StreamStats:
    flat = reply[2]
    per = {as_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
    return StreamStats(int(reply[0]), int(reply[1]), per, int(reply[3]))


def _parse_dead(reply: Any) -> list[DeadEntry]:
    out = []
    for entry in reply:
        f = as_fields(entry[1])
        out.append(DeadEntry(as_text(entry[0]), as_text(f.get("id", b"")),
                             int(f.get("deliveries", 0)), as_text(f.get("reason", b"")),
                             as_payload(f.get("p", b""))))
    return out


def _texts(reply: Any) -> list[str]:
    return [as_text(x) for x in reply]


def _entries(consumer: str) -> Callable[[Any], list[Entry]]:
    def parse(reply: Any) -> list[Entry]:
        return [Entry(as_text(e[0]), int(e[1]), as_payload(e[2]), consumer) for e in reply]
    return parse


# -- call specs ---------------------------------------------------------------------------------


def produce_calls(keys: StreamKeys, group: str, payloads: Iterable[bytes | str]
                  ) -> list[Call[list[str]]]:
    """One call per 1000 entries, each with its own new request record."""
    items = [as_payload(p) for p in payloads]
    calls: list[Call[list[str]]] = []
    for start in range(0, len(items), MAX_BATCH):
        chunk: list[str | bytes] = [group]
        chunk.extend(items[start:start + MAX_BATCH])
        calls.append(Call("stream.produce", keys.with_request(), tuple(chunk), _texts))
    return calls


def consume_call(keys: StreamKeys, group: str, consumer: str, count: int, claim_idle_ms: int,
                 max_deliveries: int, forget_idle_ms: int, request_id: RequestId = None
                 ) -> Call[list[Entry]]:
    return Call("stream.consume", keys.with_request(request_id, keys.consume),
                (group, consumer, count, claim_idle_ms, max_deliveries, forget_idle_ms),
                _entries(consumer))


def ack_calls(keys: StreamKeys, group: str, entries: Iterable[Entry]) -> list[Call[int]]:
    """One call per consumer per 1000 entries, each with its own new request record."""
    items = list(entries)
    calls: list[Call[int]] = []
    for i in range(0, len(items), MAX_BATCH):
        chunk = items[i:i + MAX_BATCH]
        for consumer in sorted({e.consumer for e in chunk}):
            args: list[str | int | bytes] = [group, consumer]
            for e in chunk:
                if e.consumer == consumer:
                    args.extend((e.id, e.deliveries))
            calls.append(Call("stream.ack", keys.with_request(), tuple(args), int))
    return calls


def nack_call(keys: StreamKeys, group: str, entry: Entry, reason: str, action: str,
              request_id: RequestId = None) -> Call[str]:
    return Call("stream.nack", keys.with_request(request_id),
                (group, entry.consumer, entry.id, entry.deliveries, reason, action), as_text)


def extend_call(keys: StreamKeys, group: str, entry: Entry) -> Call[None]:
    """Reset the entry's idle time (its reply is dropped)."""
    return Call("stream.extend", keys.all, (group, entry.consumer, entry.id, entry.deliveries),
                lambda reply: None)


def stats_call(keys: StreamKeys, group: str) -> Call[StreamStats]:
    return Call("stream.stats", keys.all, (group,), _parse_stats)


def dead_call(keys: StreamKeys, count: int) -> Call[list[DeadEntry]]:
    return Call("stream.dead", keys.all, (count,), _parse_dead)


# -- plans --------------------------------------------------------------------------------------


def produce_plan(engine: Engine, keys: StreamKeys, group: str, payloads: Iterable[bytes | str]
                 ) -> Plan[list[str]]:
    """Add the entries in one round trip (a call per 1000); their ids, in order."""
    calls = produce_calls(keys, group, payloads)
    if not calls:
        return []
    results = yield from engine.run(calls)
    return [i for chunk in results for i in chunk]


def ack_plan(engine: Engine, keys: StreamKeys, group: str, entries: Iterable[Entry]) -> Plan[int]:
    """Ack (and delete) the entries in one round trip; how many were acked."""
    calls = ack_calls(keys, group, entries)
    if not calls:
        return 0
    results = yield from engine.run(calls)
    return sum(results)


def consume_plan(engine: Engine, keys: StreamKeys, group: str,
                 consume: Callable[[], Call[list[Entry]]], timeout: float | None,
                 max_block: float, clock: Callable[[], float] = time.monotonic
                 ) -> Plan[list[Entry]]:
    """Consume; when nothing came, wait (XREAD BLOCK, :func:`wait_for_entry`) for an entry the
    group has not delivered yet and consume again (``consume`` makes each call: a new request
    record each time), until ``timeout`` (None: forever; 0: one
    try). Stalled entries are claimed on the next pass (at most ``max_block`` later).

    A timeout above 0 is kept while Redis is paused or restarting (each consume is re-sent with
    its request record until the deadline: :func:`~pyredislua.engine.waiting.run_by`, and the
    wait ends by it): nothing when no reply came by then, although the server may still deliver
    entries to that consume when it wakes (claimed by a consumer after ``claim_idle``)."""
    if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
        raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    end = None if timeout is None else clock() + timeout
    deadline = end if timeout else None  # kept under faults: a wait's, not a single try's
    while True:
        got = yield from run_by(engine, consume(), deadline, clock)
        if got is None:
            return []
        if got:
            return got
        remaining = math.inf if end is None else end - clock()
        if remaining <= 0:
            return []
        if deadline is None:
            yield from wait_for_entry(keys.stream, group, remaining, max_block=max_block)
            continue
        try:
            yield from wait_for_entry(keys.stream, group, remaining, max_block=max_block,
                                      deadline=min(deadline, clock() + min(remaining, max_block)
                                                   + WAIT_GRACE))
        except TRANSPORT_ERRORS:
            if clock() >= deadline:
                return []
