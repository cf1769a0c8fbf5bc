"""The figures Redis keeps about named primitives, read in one pipelined round trip.

The queue, Streams and write-behind operations keep their totals in Redis, updated atomically by
the Lua operations themselves; locks keep their holder, fence and waiters. :func:`read` reads
them all with the read-only ``*.stats`` and ``lock.inspect`` operations in one pipelined round
trip (one per node on a cluster) and returns plain dataclasses, which the Prometheus collector
(:mod:`pyredislua.observe.prometheus`) and ``pyredislua top`` (:mod:`pyredislua.observe.top`)
each render their own way. A primitive that cannot be read (a key of the wrong type, a malformed
counter) carries its error; the others are still read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..client import AsyncClient, Client
from ..engine.protocol import Call
from ..lock import LockKeys, inspect_call
from ..lock.ops import LockState
from ..queue import ops as queue_ops
from ..queue.ops import QueueStats
from ..stream import ops as stream_ops
from ..stream.ops import StreamKeys, StreamStats
from ..writebehind import StoreKeys
from ..writebehind import ops as wb_ops
from ..writebehind.ops import StoreStats

Kind = Literal["queue", "stream", "store", "lock"]
Stats = QueueStats | StreamStats | StoreStats | LockState


@dataclass(frozen=True)
class Targets:
    """The named primitives to read (their names as given to their classes)."""

    queues: Sequence[str] = ()
    streams: Sequence[tuple[str, str]] = ()  # (queue name, consumer group)
    stores: Sequence[str] = ()
    locks: Sequence[str] = ()
    prefix: str = "prl"


@dataclass(frozen=True)
class Figure:
    """One primitive's figures at one reading: ``stats``, or ``error`` when unreadable."""

    kind: Kind
    name: str
    stats: Stats | None
    error: str | None = None
    group: str | None = None  # a Streams queue's consumer group

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    @property
    def counters(self) -> dict[str, int]:
        """The cumulative totals (queues and stores; empty otherwise), without the sequences
        that are not events."""
        if isinstance(self.stats, (QueueStats, StoreStats)):
            return {k: v for k, v in self.stats.counters.items() if k != "seq"}
        return {}

    @property
    def server_ms(self) -> int | None:
        """The server's clock when the figures were read, where the operation returns it."""
        return self.stats.now_ms if isinstance(self.stats, StoreStats) else None


@dataclass(frozen=True)
class Reading:
    """Every target's figures from one round trip, with the local monotonic time of the reply."""

    figures: list[Figure]
    monotonic: float
    wall: float = field(default_factory=time.time)

    def get(self, kind: Kind, name: str) -> Figure | None:
        for f in self.figures:
            if f.kind == kind and f.name == name:
                return f
        return None


def calls(client: Client | AsyncClient, targets: Targets
          ) -> list[tuple[Kind, str, str | None, Call[Any]]]:
    """The read-only calls of one reading: (kind, name, group, call) per target, in order."""
    out: list[tuple[Kind, str, str | None, Call[Any]]] = []
    for name in targets.queues:
        keys = queue_ops.QueueKeys(name, targets.prefix)
        out.append(("queue", name, None, queue_ops.stats_call(keys)))
    for name, group in targets.streams:
        out.append(("stream", name, group,
                    stream_ops.stats_call(StreamKeys(name, targets.prefix), group)))
    for name in targets.stores:
        out.append(("store", name, None, wb_ops.stats_call(StoreKeys(name, targets.prefix))))
    for name in targets.locks:
        out.append(("lock", name, None, inspect_call(LockKeys(name, targets.prefix))))
    return out


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def read(client: Client, targets: Targets) -> Reading:
    """Every target's figures in one pipelined round trip (one per node on a cluster). A
    primitive whose figures cannot be read carries the error; a connection failure raises."""
    planned = calls(client, targets)
    replies = client.run_many([c for *_, c in planned], raise_on_error=False) if planned else []
    now = time.monotonic()
    return Reading(figures(planned, replies), now)


def figures(planned: Sequence[tuple[Kind, str, str | None, Call[Any]]], replies: Sequence[Any]
            ) -> list[Figure]:
    """The figures of :func:`calls`' calls from their replies (run with
    ``raise_on_error=False``: an error reply becomes the figure's ``error``)."""
    return [
        Figure(kind, name, None, _describe(reply), group) if isinstance(reply, BaseException)
        else Figure(kind, name, reply, None, group)
        for (kind, name, group, _), reply in zip(planned, replies)]
