"""Cache-aside, negative caching, a stampede and tag invalidation over the sample data set."""

from __future__ import annotations

import functools
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable

from ..cache import Cache
from ..client import Client
from ..sample_data import generate

ORDER = 40


def demo(client: Client, say: Callable[[str], None]) -> None:
    data = generate(scale=0.3)
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute("CREATE TABLE customers (id TEXT PRIMARY KEY, doc TEXT)")
    db.executemany("INSERT INTO customers VALUES (?, ?)",
                   [(c["id"], json.dumps(c)) for c in data.customers])
    db_lock = threading.Lock()
    queries = [0]

    def load_customer(cid: str) -> object:
        with db_lock:
            queries[0] += 1
            row = db.execute("SELECT doc FROM customers WHERE id = ?", (cid,)).fetchone()
        time.sleep(0.002)  # a database round trip
        return None if row is None else json.loads(row[0])

    cache = Cache(client, "demo-app", ttl=60, negative_ttl=10)
    rng = random.Random(5)
    ids = [c["id"] for c in data.customers]
    reads = 2000
    started = time.perf_counter()
    for _ in range(reads):  # skewed: a few customers are read a lot
        cid = ids[min(int(rng.paretovariate(1.2)) - 1, len(ids) - 1)]
        cache.get_or_compute(f"customer:{cid}", functools.partial(load_customer, cid),
                             tags=["customers"])
    elapsed = time.perf_counter() - started
    s = cache.stats
    say(f"cache-aside: {reads} customer reads -> {s.hits} hits, {s.misses} misses, "
        f"{queries[0]} database queries ({s.hits / reads:.0%} hit rate, "
        f"{elapsed / reads * 1e6:.0f} us per read)")
    cache.get_or_compute("customer:NOPE", lambda: load_customer("NOPE"))
    cache.get_or_compute("customer:NOPE", lambda: load_customer("NOPE"))
    say(f"negative caching: an unknown customer read twice -> {cache.stats.negative_hits} "
        "cached not-found, one database query")

    computes = [0]

    def slow_report() -> dict[str, int]:
        computes[0] += 1
        time.sleep(0.2)
        return {"revenue_cents": sum(t["amount_cents"] for t in data.transactions)}

    threads = [threading.Thread(target=cache.get_or_compute, args=("report:revenue",
                                                                   slow_report))
               for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    say(f"stampede: 30 concurrent readers of a cold 200 ms report -> {computes[0]} "
        f"computation; the others waited on the key's lock and read its result")
    inv = cache.invalidate_tag("customers")
    say(f"tag invalidation: 'customers' -> {inv.deleted} entries gone in one atomic bump "
        f"(generation {inv.generation})")
