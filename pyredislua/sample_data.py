"""A sample data set shaped like an enterprise application, generated deterministically:
customers in tiers, product inventory, transactions, performance metrics and active sessions.

``pyredislua load-data --url URL`` loads it: customers and products as cache entries (namespace
``app``, tagged by tier and category), sessions in the ``sessions`` cache namespace,
transactions and metrics into write-behind stores (``transactions``, ``metrics``) ready to be
flushed to a database.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cache import Cache
from .client import Client
from .writebehind import WriteBehind

TIERS = (("bronze", 0.55), ("silver", 0.28), ("gold", 0.13), ("platinum", 0.04))
CATEGORIES = ("hardware", "software", "services", "support", "training", "cloud")
REGIONS = ("emea", "amer", "apac")
SERVICES = ("api", "checkout", "search", "auth", "billing")


@dataclass
class SampleData:
    customers: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"customers": len(self.customers), "products": len(self.products),
                "transactions": len(self.transactions), "metrics": len(self.metrics),
                "sessions": len(self.sessions)}


def generate(*, scale: float = 1.0, seed: int = 2026) -> SampleData:
    """1000 customers, 300 products, 5000 transactions, 2400 metric points, 400 sessions at
    scale 1."""
    rng = random.Random(seed)
    def n(base: int) -> int:
        return max(1, int(base * scale))

    data = SampleData()
    tiers = [t for t, _ in TIERS]
    weights = [w for _, w in TIERS]
    for i in range(n(1000)):
        tier = rng.choices(tiers, weights)[0]
        data.customers.append({
            "id": f"C{i:06d}", "name": f"Customer {i}", "tier": tier,
            "region": rng.choice(REGIONS),
            "credit_limit": {"bronze": 1_000, "silver": 5_000, "gold": 25_000,
                             "platinum": 100_000}[tier],
            "since": f"20{rng.randint(10, 25)}-{rng.randint(1, 12):02d}-01"})
    for i in range(n(300)):
        data.products.append({
            "sku": f"P{i:05d}", "name": f"Product {i}", "category": rng.choice(CATEGORIES),
            "price_cents": rng.randint(500, 500_000), "stock": rng.randint(0, 5_000),
            "warehouse": rng.choice(REGIONS)})
    for i in range(n(5000)):
        customer = rng.choice(data.customers)
        product = rng.choice(data.products)
        qty = rng.randint(1, 20)
        data.transactions.append({
            "id": f"T{i:08d}", "customer": customer["id"], "sku": product["sku"],
            "quantity": qty, "amount_cents": qty * product["price_cents"],
            "status": rng.choices(("settled", "pending", "refunded"), (0.9, 0.08, 0.02))[0]})
    for minute in range(n(480)):
        for service in SERVICES:
            data.metrics.append({
                "id": f"{service}:{minute:05d}", "service": service, "minute": minute,
                "p50_ms": round(rng.lognormvariate(3, 0.3), 2),
                "p99_ms": round(rng.lognormvariate(4.5, 0.4), 2),
                "errors": rng.randint(0, 5), "requests": rng.randint(500, 5000)})
    for i in range(n(400)):
        customer = rng.choice(data.customers)
        data.sessions.append({"id": f"S{i:06d}", "customer": customer["id"],
                              "ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{i % 250}",
                              "cart": [rng.choice(data.products)["sku"]
                                       for _ in range(rng.randint(0, 4))]})
    return data


def load(client: Client, data: SampleData, *,
         progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Load the data set: pipelined batches, ``progress(kind, done)`` after each."""
    app = Cache(client, "app", ttl=3600)

    def report(kind: str) -> Callable[[int], None]:
        return lambda done: progress(kind, done) if progress else None

    app.warm([(f"customer:{c['id']}", c) for c in data.customers if c["tier"] == "bronze"],
             tags=["customers", "tier:bronze"], progress=report("customers"))
    for tier, _ in TIERS[1:]:
        app.warm([(f"customer:{c['id']}", c) for c in data.customers if c["tier"] == tier],
                 tags=["customers", f"tier:{tier}"], progress=report("customers"))
    for category in CATEGORIES:
        app.warm([(f"product:{p['sku']}", p) for p in data.products
                  if p["category"] == category],
                 tags=["products", f"category:{category}"], progress=report("products"))
    Cache(client, "sessions", ttl=1800).warm(
        [(f"session:{s['id']}", s) for s in data.sessions], progress=report("sessions"))
    for name, rows in (("transactions", data.transactions), ("metrics", data.metrics)):
        store = WriteBehind(client, name)
        for i in range(0, len(rows), 1000):
            chunk = rows[i:i + 1000]
            store.write_many([(r["id"], json.dumps(r, separators=(",", ":")))
                              for r in chunk])
            if progress:
                progress(name, i + len(chunk))
    return data.counts()
