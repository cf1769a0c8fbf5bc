"""The sink protocol of write-behind.

A sink receives batches of :class:`~pyredislua.writebehind.Record` and must write each batch

* **all or nothing** (one transaction): when ``write`` raises, the flusher assumes nothing of the
  batch is durable and retries it;
* **idempotently and version-conditionally**: a record is applied only when its version is newer
  than the one the sink holds for that key, so a re-delivered or reordered record never puts an
  older value back over a newer one (deletes are kept as tombstone rows carrying their version,
  for the same reason).

Errors: raise :class:`SinkUnavailableError` when the sink as a whole is down (connection lost):
the batch goes back without counting an attempt. Any other exception marks the batch as holding
a bad record; the flusher splits it to find the records that fail on their own, which are
retried with backoff and dead-lettered after ``max_attempts``, while the others are written.

``write`` may be a coroutine function (the asyncio flusher awaits it); a plain blocking ``write``
runs in a worker thread under the asyncio flusher.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..ops import Record


class SinkUnavailableError(Exception):
    """The sink cannot take any write right now; nothing of the batch was written."""


@runtime_checkable
class Sink(Protocol):
    def write(self, records: Sequence[Record]) -> Awaitable[None] | None:
        """Apply the records in one transaction, each only if newer than the stored version."""


@dataclass(frozen=True)
class SinkRow:
    """A row as a sink holds it: ``value`` None and ``deleted`` for a tombstone."""

    key: str
    value: bytes | None
    version: int
    deleted: bool


def latest_per_key(records: Iterable[Record]) -> list[Record]:
    """One record per key, the newest version (a single statement must not touch a row twice)."""
    best: dict[str, Record] = {}
    for r in records:
        cur = best.get(r.key)
        if cur is None or r.version > cur.version:
            best[r.key] = r
    return list(best.values())
