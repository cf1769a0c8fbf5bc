"""Optimistic concurrency: compare-and-set and WATCH transactions"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..client import Client
from .transactions import Optimistic
from .versioned import Versioned

ORDER = 45


def demo(client: Client, say: Callable[[str], None]) -> None:
    stock = Versioned(client, "demo-stock")
    made = stock.set("sku-7", "10", version=0)
    say(f"compare-and-set: sku-7 stored with 10 units at version {made.version}.")
    seen = stock.get("sku-7")
    stock.set("sku-7", "9", version=seen.version)  # someone sells one meanwhile
    late = stock.set("sku-7", "8", version=seen.version)
    assert late.current is not None
    say(f"a write naming the version read before that sale is refused (ok={late.ok}); the "
        f"refusal carries the current state ({late.current.value!r} at version "
        f"{late.version}), so a retry needs no read.")

    threads, per_thread = 8, 25

    def restock() -> None:
        for _ in range(per_thread):
            stock.update("sku-7", lambda v: str(int(v or 0) + 1))

    pool = [threading.Thread(target=restock) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    s = stock.stats
    say(f"{threads} threads x {per_thread} updates of one value: {s.committed} committed, "
        f"{s.conflicts} conflicts retried; the value is now {stock.get('sku-7').value!r} "
        f"(9 + {threads * per_thread}: exact).")

    opt = Optimistic(client)
    client.redis.mset({"{demo-acct}:alice": 100, "{demo-acct}:bob": 0})

    def transfer(pipe: Any) -> int:
        alice = int(pipe.get("{demo-acct}:alice"))
        pipe.multi()
        pipe.set("{demo-acct}:alice", alice - 30)
        pipe.incrby("{demo-acct}:bob", 30)
        return alice - 30

    done = opt.transaction(transfer, "{demo-acct}:alice", "{demo-acct}:bob")
    say(f"WATCH/MULTI/EXEC: moved 30 from alice to bob in {done.attempts} attempt(s); alice has "
        f"{done.value} left. Any Redis data, any commands; on a conflict it retries with backoff "
        "and jitter, up to a bound.")
