"""Write-behind: applications write to Redis now; a flusher writes to a database later, in
batches.

Guarantee
---------
* **At-least-once to the sink.** A write Redis accepted stays dirty until a sink write of its
  version (or a newer one) was acknowledged. A flusher that crashes before acking leaves its
  claim to expire; the records become dirty again and are written again (sink writes are
  idempotent).
* **Last write wins per key.** Writes to a key that is not yet flushed coalesce: the sink gets
  the latest value (intermediate values may never reach it). Deletes are writes (tombstones).
* **No per-key reordering.** Every write gets a version from one store-wide sequence, so a key's
  versions strictly increase; sinks apply a record only if its version is newer than the stored
  one, so a late or repeated batch never puts an older value back.
* **What is at risk if Redis loses data.** Redis holds the only copy of writes not yet flushed.
  Losing Redis data (no persistence, a failover before the replica received the writes, a
  restore from an old snapshot) loses those writes: at most everything written in the last
  ``max_delay`` plus flush time, and everything dirty while the sink was down. Run Redis with
  AOF (``appendfsync everysec`` or ``always``) and ``maxmemory-policy noeviction``; ``WAIT``
  after a write narrows the failover window. A restored or failed-over Redis can also restart
  the version sequence below versions the sink already holds: after such an event, bump the
  sequence past the sink's highest version (``HSET <store>:stats seq <max version>``) or
  records will be rejected by the sink as older.
"""

from .flusher import AsyncFlusher, FlushConfig, Flusher, FlusherTotals, FlushEvent, StopReport
from .ops import Claim, DeadRecord, Record, StoreKeys, StoreStats
from .store import AsyncWriteBehind, WriteBehind

__all__ = [
    "AsyncFlusher",
    "AsyncWriteBehind",
    "Claim",
    "DeadRecord",
    "FlushConfig",
    "FlushEvent",
    "Flusher",
    "FlusherTotals",
    "Record",
    "StopReport",
    "StoreKeys",
    "StoreStats",
    "WriteBehind",
]
