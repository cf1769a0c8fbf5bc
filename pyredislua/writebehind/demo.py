"""Write-behind: transactions accepted by Redis at once, flushed to SQLite in batches."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from ..client import Client
from ..sample_data import generate
from .core import FlushEvent
from .sinks import SQLiteSink
from .store import WriteBehind

ORDER = 45


def demo(client: Client, say: Callable[[str], None]) -> None:
    data = generate(scale=0.3)
    store = WriteBehind(client, "demo-transactions", batch_size=200, max_delay=0.2)
    sink = SQLiteSink(":memory:", table="transactions")
    events: list[FlushEvent] = []
    txs = data.transactions[:1000]
    started = time.perf_counter()
    with store.flusher(sink, on_flush=events.append):
        for i in range(0, len(txs), 50):
            store.write_many([(t["id"], json.dumps(t)) for t in txs[i:i + 50]])
        accepted = time.perf_counter() - started
        store.write_many([(txs[0]["id"], json.dumps({**txs[0], "status": "refunded"}))])
    sizes = [e.claimed for e in events]
    say(f"write-behind: {len(txs) + 1} transaction writes accepted by Redis in "
        f"{accepted * 1000:.0f} ms, flushed to SQLite in {len(events)} batches {sizes} "
        f"(max lag {max(e.lag_ms for e in events)} ms)")
    row = sink.rows()[txs[0]["id"]]
    say(f"SQLite now holds {sink.count()} transactions; {txs[0]['id']} is at version "
        f"{row.version} with status {json.loads(row.value or b'{}')['status']!r} "
        "(last write wins)")
    sink.close()
