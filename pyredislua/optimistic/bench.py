"""Optimistic concurrency under contention: N processes incrementing shared counters with
compare-and-set (Versioned.update), the WATCH helper (Optimistic.transaction) and the lock
(pyredislua.lock.Lock around GET/SET), side by side in one run.

Each phase: the processes start together and, for ``--seconds``, increment a counter picked at
random among ``--counters``; reported per method and contention level: increments per second,
conflicts and retries per increment, the server's CPU time per increment (INFO cpu), fairness
(most / fewest increments per process), increments given up (TooManyConflictsError, or any
error) and whether the counters add up exactly. INCR (atomic in Redis, no read-modify-write)
is the ceiling.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import time
from typing import Any

import redis

from ..bench._common import emit_json, server_url
from ..client import Client
from ..lock import Lock
from .ops import Backoff
from .transactions import Optimistic
from .versioned import Versioned

METHODS = ("incr", "cas", "watch", "lock")
LABELS = {
    "incr": "INCR (atomic, the ceiling)",
    "cas": "compare-and-set (Versioned.update)",
    "watch": "WATCH/MULTI/EXEC (Optimistic.transaction)",
    "lock": "lock around GET/SET (Lock)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each phase")
    parser.add_argument("--processes", type=int, default=8, help="contending processes")
    parser.add_argument("--counters", default="1,4",
                        help="contention levels: how many shared counters, comma-separated "
                        "(default 1,4)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"which methods (default {','.join(METHODS)})")


def _name(counters: int, i: int) -> str:
    return f"bench:opt:{{c{counters}}}:{i}"


def _worker(url: str, phases: list[tuple[str, int]], seconds: float, ready: Any, go: Any,
            done: Any, out: Any, seed: int) -> None:
    rng = random.Random(seed)
    conn = redis.Redis.from_url(url)
    client = Client(conn)
    conn.ping()
    for method, counters in phases:
        names = [_name(counters, i) for i in range(counters)]
        store = Versioned(client, "bench")
        opt = Optimistic(client, backoff=Backoff())
        locks = {n: Lock(client, f"bench-opt:{n}", ttl=10) for n in names}
        successes = 0
        failures: dict[str, int] = {}
        ready.wait()
        go.wait()
        start = time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline:
            name = rng.choice(names)
            try:
                if method == "incr":
                    conn.incr(name)
                elif method == "cas":
                    store.update(name, lambda v: b"%d" % (int(v or 0) + 1))
                elif method == "watch":
                    def incr(pipe: Any, key: str = name) -> None:
                        n = int(pipe.get(key) or 0)
                        pipe.multi()
                        pipe.set(key, n + 1)

                    opt.transaction(incr, name)
                else:
                    with locks[name]:
                        n = int(conn.get(name) or 0)
                        conn.set(name, n + 1)
                successes += 1
            except Exception as error:  # a give-up or an error: counted as a failure
                kind = type(error).__name__
                failures[kind] = failures.get(kind, 0) + 1
        end = time.monotonic()
        stats = store.stats if method == "cas" else opt.stats
        out.put({"method": method, "counters": counters, "successes": successes,
                 "failures": failures, "conflicts": stats.conflicts,
                 "interrupted": stats.interrupted, "start": start, "end": end})
        done.wait()
    conn.close()


def _server_cpu(r: redis.Redis) -> float:
    """Seconds of CPU the server used so far (its main thread and all)."""
    cpu = r.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _total(r: redis.Redis, method: str, counters: int) -> int:
    names = [_name(counters, i) for i in range(counters)]
    if method == "cas":
        store = Versioned(Client(r), "bench")
        return sum(int(store.get(n).value or 0) for n in names)
    return sum(int(v or 0) for v in r.mget(names))


def _run_phases(url: str, phases: list[tuple[str, int]], processes: int, seconds: float
                ) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    ready, go, done = (ctx.Barrier(processes + 1) for _ in range(3))
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, phases, seconds, ready, go, done, out, i))
             for i in range(processes)]
    for p in procs:
        p.start()
    r = redis.Redis.from_url(url)
    results = []
    for method, counters in phases:
        ready.wait(timeout=120)
        names = [_name(counters, i) for i in range(counters)]
        store = Versioned(Client(r), "bench")
        r.delete(*names, *(store.key(n) for n in names))
        cpu = _server_cpu(r)
        go.wait(timeout=60)
        rows = [out.get(timeout=seconds + 120) for _ in procs]
        cpu = _server_cpu(r) - cpu
        done.wait(timeout=60)
        successes = sum(x["successes"] for x in rows)
        elapsed = max(x["end"] for x in rows) - min(x["start"] for x in rows)
        conflicts = sum(x["conflicts"] for x in rows)
        retries = conflicts + sum(x["interrupted"] for x in rows)
        results.append({
            "method": method, "counters": counters, "processes": processes,
            "increments_per_s": successes / elapsed,
            "conflicts_per_increment": conflicts / successes if successes else 0.0,
            "retries_per_increment": retries / successes if successes else 0.0,
            "server_cpu_us_per_increment": cpu * 1e6 / successes if successes else 0.0,
            "fairness": max(x["successes"] for x in rows) / max(1, min(x["successes"]
                                                                     for x in rows)),
            "failures": sum(n for x in rows for n in x["failures"].values()),
            "failure_kinds": sorted({k for x in rows for k in x["failures"]}),
            "exact": _total(r, method, counters) == successes,
            "per_process_min": min(x["successes"] for x in rows),
            "per_process_max": max(x["successes"] for x in rows),
        })
    for p in procs:
        p.join(30)
    r.close()
    return results


def run(args: argparse.Namespace) -> int:
    levels = [int(c) for c in str(args.counters).split(",") if c.strip()]
    methods = [m.strip() for m in str(args.methods).split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown or not levels or min(levels) < 1:
        raise SystemExit(f"--methods among {','.join(METHODS)}, --counters positive integers")
    phases = [(m, c) for c in levels for m in methods]
    with server_url(args.url) as url:
        Client(redis.Redis.from_url(url)).load()
        results = _run_phases(url, phases, args.processes, args.seconds)
    if args.json:
        emit_json({"results": results, "processes": args.processes, "seconds": args.seconds})
        return 0
    header = ("method", "counters", "increments/s", "conflicts/inc", "retries/inc",
              "server CPU us/inc", "fairness", "gave up", "exact")
    table = [header]
    for x in results:
        table.append((LABELS[x["method"]], str(x["counters"]), f"{x['increments_per_s']:,.0f}",
                      f"{x['conflicts_per_increment']:.2f}",
                      f"{x['retries_per_increment']:.2f}",
                      f"{x['server_cpu_us_per_increment']:.0f}", f"{x['fairness']:.1f}",
                      str(x["failures"]), "yes" if x["exact"] else "NO"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"\n{args.processes} processes incrementing shared counters, {args.seconds:g} s per "
          "phase")
    for n, row in enumerate(table):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    return 0
