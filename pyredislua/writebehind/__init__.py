"""Write-behind: applications write to Redis now; a flusher writes to a database later, in
batches.

Layout: :mod:`.ops` (the call specs of ``lua/writebehind/*.lua`` and the store's key set),
:mod:`.core` (the flush logic as sans-IO plans), :mod:`.store` (:class:`WriteBehind`, one class
for sync and asyncio clients), :mod:`.flusher` (the background drivers: threads or asyncio
tasks), :mod:`.sinks` (where flushed records end up: SQLite, PostgreSQL, or your own).

Guarantee
---------
* **At-least-once to the sink.** A write Redis accepted stays dirty until a sink write of its
  version (or a newer one) was acknowledged. A flusher that crashes before acking leaves its
  claim to expire; the records become dirty again and are written again (sink writes are
  idempotent).
* **Last write wins per key.** Writes to a key that is not yet flushed coalesce: the sink gets
  the latest value (intermediate values may never reach it). Deletes are writes (tombstones).
* **No per-key reordering.** Every write gets a version from a hybrid clock (the server's time
  in microseconds, or the store's last version + 1 when higher), so a key's versions strictly
  increase; sinks apply a record only if its version is newer than the stored one, so a late or
  repeated batch never puts an older value back. A store Redis lost (a restart without
  persistence, a failover that lost writes, an old snapshot) starts again above every version it
  handed out before: the sinks keep taking its new writes. Limit: the server clock must not go
  back by more than the time between the loss and the next write.
* **A record that kills its flusher ends in the dead letters.** An expired claim counts as a
  failed attempt of each of its records; records back from an expired claim are claimed one at a
  time until written, so such a record takes only itself down; after ``max_attempts`` it is
  dead-lettered.
* **Safe to re-send.** A claim carries a request id: a repeat returns the records the first send
  claimed. Ack, fail, release and reap change nothing when repeated; a repeated write stores the
  same values again (last write wins). ``requeue`` is not re-sent automatically.
* **What is at risk if Redis loses data.** Redis holds the only copy of writes not yet flushed.
  Losing Redis data (no persistence, a failover before the replica received the writes, a
  restore from an old snapshot) loses those writes: at most everything written in the last
  ``max_delay`` plus flush time, and everything dirty while the sink was down. Run Redis with
  AOF (``appendfsync everysec`` or ``always``) and ``maxmemory-policy noeviction``; ``WAIT``
  after a write narrows the failover window.
"""

from .core import FlushConfig, FlusherTotals, FlushEvent, StopReport
from .flusher import AsyncFlusher, Flusher
from .ops import Claim, DeadRecord, Record, StoreKeys, StoreStats
from .store import WriteBehind

__all__ = [
    "AsyncFlusher",
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
