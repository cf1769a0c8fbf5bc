"""Cache: hit latency of get_or_compute versus a plain GET, and recompute count under a
stampede (N concurrent callers of one cold key) versus a naive cache-aside (GET, compute on
miss, SET)."""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import redis

from ..bench._common import emit_json, print_table, rate, server_url
from ..cache import Cache
from ..client import Client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=1.5, help="per latency measurement")
    parser.add_argument("--callers", type=int, default=50, help="concurrent callers (default 50)")
    parser.add_argument("--rounds", type=int, default=5, help="stampedes per contender")
    parser.add_argument("--compute-ms", type=float, default=100.0,
                        help="cost of one recompute (default 100 ms)")


def _stampede(callers: int, get: Any) -> tuple[int, float]:
    computes = [0]
    guard = threading.Lock()
    barrier = threading.Barrier(callers)

    def caller() -> None:
        barrier.wait()
        get(computes, guard)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return computes[0], time.perf_counter() - started


def run(args: argparse.Namespace) -> int:
    with server_url(args.url) as url:
        r = redis.Redis.from_url(url, max_connections=args.callers * 3 + 10)
        client = Client(r)
        client.load()
        cache = Cache(client, "bench", ttl=3600)
        r.set("bench:plain", b'{"id":42,"name":"Customer 42","tier":"gold"}')
        cache.set("hot", {"id": 42, "name": "Customer 42", "tier": "gold"})
        # alternate the contenders and keep each one's median, so load drift hits all alike
        runs: dict[str, list[float]] = {"plain": [], "op": [], "ours": []}
        for _ in range(3):
            runs["plain"].append(rate(lambda: r.get("bench:plain"), args.seconds / 3))
            runs["op"].append(rate(lambda: cache.get("hot"), args.seconds / 3))
            runs["ours"].append(rate(lambda: cache.get_or_compute("hot", lambda: None),
                                     args.seconds / 3))
        plain, op, ours = (sorted(runs[k])[1] for k in ("plain", "op", "ours"))
        compute_s = args.compute_ms / 1000

        def slow(computes: list[int], guard: threading.Lock) -> str:
            with guard:
                computes[0] += 1
            time.sleep(compute_s)
            return "value"

        results: dict[str, Any] = {"callers": args.callers, "rounds": args.rounds,
                                   "compute_ms": args.compute_ms}
        for kind in ("pyredislua", "naive"):
            total, walls = 0, []
            for i in range(args.rounds):
                key = f"cold:{kind}:{i}"
                if kind == "pyredislua":
                    def get(c: list[int], g: threading.Lock, key: str = key) -> Any:
                        return cache.get_or_compute(key, lambda: slow(c, g))
                else:
                    def get(c: list[int], g: threading.Lock, key: str = key) -> Any:
                        value = r.get(key)
                        if value is None:
                            value = slow(c, g)
                            r.set(key, value, ex=3600)
                        return value
                n, wall = _stampede(args.callers, get)
                total += n
                walls.append(wall)
            results[kind] = {"computes_per_stampede": total / args.rounds,
                             "wall_ms": 1000 * sum(walls) / len(walls)}
        results["hit_us"] = {"plain_get": 1e6 / plain, "cache_get_op": 1e6 / op,
                             "get_or_compute": 1e6 / ours}
    if args.json:
        emit_json(results)
        return 0
    h = results["hit_us"]
    print_table("cache hit latency (one client, sequential)", [
        ("plain GET", f"{h['plain_get']:.0f} us", "1 round trip, no decoding"),
        ("cache.get (the Lua op)", f"{h['cache_get_op']:.0f} us",
         f"{h['cache_get_op'] / h['plain_get']:.2f} x plain GET (1 FCALL_RO, raw entry)"),
        ("get_or_compute hit", f"{h['get_or_compute']:.0f} us",
         f"{h['get_or_compute'] / h['plain_get']:.2f} x plain GET (+ JSON decode, XFetch draw)"),
    ], ("what", "latency", "note"))
    p, n = results["pyredislua"], results["naive"]
    print_table(f"stampede: {args.callers} callers of one cold key, {args.compute_ms:.0f} ms "
                f"compute, {args.rounds} rounds", [
        ("pyredislua get_or_compute", f"{p['computes_per_stampede']:.1f}",
         f"{p['wall_ms']:.0f} ms until all {args.callers} had the value"),
        ("naive cache-aside", f"{n['computes_per_stampede']:.1f}",
         f"{n['wall_ms']:.0f} ms until all {args.callers} had the value"),
    ], ("what", "computes per stampede", "note"))
    return 0
