"""What compression saves on the sample data set, and what it costs.

For each shape of value (one sample record of each kind, and pages of 20 records, as a cache of
list endpoints would hold), cache entries are written three ways (no compression, zlib, zstd when
installed) and measured with ``MEMORY USAGE``; the cost is the client's µs per compress and per
decompress. Usage: ``pyredislua bench compression [--url URL] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import redis

from ..cache import Cache
from ..client import Client
from ..compression import Compressor, _zstd
from ..sample_data import generate
from ._common import emit_json, server_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=float, default=0.2,
                        help="size of the sample data set (default 0.2: 200 customers, ...)")
    parser.add_argument("--min-size", type=int, default=128,
                        help="Compressor min_size (default 128)")


def _timed(step: Any, values: list[bytes], rounds: int = 5) -> float:
    """Median µs per value over ``rounds`` passes."""
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        for v in values:
            step(v)
        runs.append((time.perf_counter() - start) / len(values) * 1e6)
    return statistics.median(runs)


def _shapes(scale: float) -> dict[str, list[Any]]:
    data = generate(scale=scale)
    shapes: dict[str, list[Any]] = {
        "customer": data.customers, "product": data.products,
        "transaction": data.transactions[:1000], "session": data.sessions,
        "metric": data.metrics[:1000]}
    shapes["page of 20 customers"] = [data.customers[i:i + 20]
                                      for i in range(0, len(data.customers), 20)]
    shapes["page of 20 transactions"] = [data.transactions[i:i + 20]
                                         for i in range(0, min(len(data.transactions), 2000), 20)]
    return shapes


def measure(url: str, scale: float, min_size: int) -> list[dict[str, Any]]:
    conn = redis.Redis.from_url(url)
    client = Client(conn)
    algorithms: dict[str, Compressor | None] = {"none": None,
                                                "zlib": Compressor("zlib", min_size=min_size)}
    if _zstd() is not None:
        algorithms["zstd"] = Compressor("zstd", min_size=min_size)
    rows = []
    for shape, values in _shapes(scale).items():
        encoded = [json.dumps(v, separators=(",", ":")).encode() for v in values]
        row: dict[str, Any] = {"shape": shape, "values": len(values),
                               "json_bytes": statistics.mean(len(e) for e in encoded)}
        for name, compressor in algorithms.items():
            ns = f"bench-{name}"
            cache = Cache(client, ns, ttl=600, compress=compressor)
            conn.delete(*[f"prl:cache:{{{ns}}}:e:v{i}" for i in range(len(values))])
            for i, v in enumerate(values):
                cache.set(f"v{i}", v)
            used = sum(conn.memory_usage(f"prl:cache:{{{ns}}}:e:v{i}", samples=0) or 0
                       for i in range(len(values)))
            row[f"{name}_bytes_per_entry"] = used / len(values)
            if compressor is not None:
                packed = [compressor.compress(e) for e in encoded]
                row[f"{name}_compress_us"] = _timed(compressor.compress, encoded)
                row[f"{name}_decompress_us"] = _timed(compressor.decompress, packed)
                row[f"{name}_saved"] = 1 - row[f"{name}_bytes_per_entry"] / row[
                    "none_bytes_per_entry"]
        rows.append(row)
    conn.close()
    return rows


def run(args: argparse.Namespace) -> int:
    with server_url(args.url) as url:
        rows = measure(url, args.scale, args.min_size)
    if args.json:
        emit_json({"compression": rows})
        return 0
    algos = [a for a in ("zlib", "zstd") if f"{a}_saved" in rows[0]]
    head = f"{'value shape':<24} {'JSON B':>7} {'entry B':>8}"
    for a in algos:
        head += f" {a + ' B':>8} {'saved':>6} {'comp µs':>8} {'dec µs':>7}"
    print(head)
    for row in rows:
        line = (f"{row['shape']:<24} {row['json_bytes']:>7.0f} "
                f"{row['none_bytes_per_entry']:>8.0f}")
        for a in algos:
            line += (f" {row[a + '_bytes_per_entry']:>8.0f} {row[a + '_saved']:>6.0%} "
                     f"{row[a + '_compress_us']:>8.1f} {row[a + '_decompress_us']:>7.1f}")
        print(line)
    print(f"(entry B: MEMORY USAGE of the cache entry; values under {args.min_size} bytes, or "
          "that would not shrink, are stored raw behind a 1-byte header)")
    return 0
