"""Semaphore contention: processes taking permits of one semaphore, holding them briefly, giving
them back; the blocking FIFO semaphore against the concurrency limiter polled by retrying.

Phases, each ``--seconds`` long with ``--processes`` processes on ``--permits`` permits:

* ``semaphore``: ``Semaphore.acquire(1)`` (queues, BLPOPs its grant), hold, release;
* ``semaphore-mixed``: the same, each request for 1 to 3 permits (a request for 3 must not be
  starved by the 1s);
* ``limiter``: ``ConcurrencyLimiter.acquire`` (never waits), retried every ``--poll-ms`` while
  all slots are taken (the usual loop around a non-waiting limiter; redis-py has no semaphore).

Reported: holds per second, the wait for permits (median, p99, max) per requested count, the
server's CPU per hold, script calls and BLPOPs per hold, fairness (most / fewest holds per
process), and the most permits ever held at once (a shared INCRBY counter inside each hold).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import statistics
import time
from typing import Any

import redis

from ..bench._common import emit_json, server_url
from ..client import Client
from ..ratelimit import ConcurrencyLimiter
from .semaphore import Semaphore

PHASES = ("semaphore", "semaphore-mixed", "limiter")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each phase")
    parser.add_argument("--processes", type=int, default=8, help="contending processes")
    parser.add_argument("--permits", type=int, default=4, help="permits of the semaphore")
    parser.add_argument("--hold-ms", type=float, default=1.0, help="how long each hold lasts")
    parser.add_argument("--poll-ms", type=float, default=1.0,
                        help="the limiter loop's pause between retries")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"which phases (default {','.join(PHASES)})")


# the commands clients send (commandstats also counts the calls scripts make)
_CLIENT_COMMANDS = ("fcall", "fcall_ro", "evalsha", "evalsha_ro", "eval", "blpop")


def _calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in _CLIENT_COMMANDS)


def _cpu(r: redis.Redis) -> float:
    cpu = r.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _worker(url: str, phase: str, args: dict[str, Any], seed: int, barrier: Any,
            out: Any) -> None:
    rng = random.Random(seed)
    conn = redis.Redis.from_url(url)
    client = Client(conn)
    name = f"bench-sem-{phase}"
    sem = Semaphore(client, name, args["permits"], ttl=10, auto_renew=False)
    limiter = ConcurrencyLimiter(client, name, args["permits"], ttl=10)
    waits: dict[int, list[float]] = {}
    holds, most = 0, 0
    hold = args["hold_ms"] / 1000
    poll = args["poll_ms"] / 1000
    barrier.wait()
    end = time.monotonic() + args["seconds"]
    while time.monotonic() < end:
        count = rng.randint(1, min(3, args["permits"])) if phase == "semaphore-mixed" else 1
        asked = time.monotonic()
        permit = None
        if phase == "limiter":
            slot = limiter.acquire("all")
            while not slot.acquired:
                time.sleep(poll)
                slot = limiter.acquire("all")
        else:
            permit = sem.acquire(count, timeout=30)
            if permit is None:
                continue
        waits.setdefault(count, []).append(time.monotonic() - asked)
        most = max(most, int(conn.incrby(f"{name}:inuse", count)))
        time.sleep(hold)
        conn.decrby(f"{name}:inuse", count)
        if permit is None:
            limiter.release(slot)
        else:
            sem.release(permit)
        holds += 1
    out.put({"holds": holds, "waits": waits, "most": most})
    conn.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _phase(url: str, phase: str, args: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    processes = args["processes"]
    barrier = ctx.Barrier(processes + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, phase, args, i, barrier, out))
             for i in range(processes)]
    for p in procs:
        p.start()
    r = redis.Redis.from_url(url)
    barrier.wait(timeout=120)
    calls, cpu, started = _calls(r), _cpu(r), time.monotonic()
    rows = [out.get(timeout=args["seconds"] + 120) for _ in procs]
    elapsed = time.monotonic() - started
    calls, cpu = _calls(r) - calls, _cpu(r) - cpu
    for p in procs:
        p.join(30)
    r.close()
    holds = sum(x["holds"] for x in rows)
    waits: dict[int, list[float]] = {}
    for x in rows:
        for count, values in x["waits"].items():
            waits.setdefault(int(count), []).extend(values)
    return {
        "phase": phase, "processes": processes, "permits": args["permits"],
        "holds_per_s": holds / elapsed,
        "wait_ms": {str(count): {"median": statistics.median(v) * 1000,
                                 "p99": _pct(v, 0.99) * 1000, "max": max(v) * 1000,
                                 "n": len(v)} for count, v in sorted(waits.items())},
        "server_cpu_us_per_hold": cpu * 1e6 / holds if holds else 0.0,
        "calls_per_hold": calls / holds if holds else 0.0,
        "fairness": max(x["holds"] for x in rows) / max(1, min(x["holds"] for x in rows)),
        "most_in_use": max(x["most"] for x in rows),
    }


def run(args: argparse.Namespace) -> int:
    phases = [p.strip() for p in str(args.phases).split(",") if p.strip()]
    if set(phases) - set(PHASES):
        raise SystemExit(f"--phases among {','.join(PHASES)}")
    settings = {"seconds": args.seconds, "processes": args.processes, "permits": args.permits,
                "hold_ms": args.hold_ms, "poll_ms": args.poll_ms}
    with server_url(args.url) as url:
        Client(redis.Redis.from_url(url)).load()
        results = [_phase(url, phase, settings) for phase in phases]
    if args.json:
        emit_json({"results": results, **settings})
        return 0
    print(f"\n{args.processes} processes on {args.permits} permits, holds of "
          f"{args.hold_ms:g} ms, {args.seconds:g} s per phase (limiter retried every "
          f"{args.poll_ms:g} ms)")
    header = ("phase", "holds/s", "permits", "wait median/p99/max ms", "calls+BLPOPs/hold",
              "server CPU us/hold", "fairness", "most held")
    table = [header]
    for x in results:
        for count, w in x["wait_ms"].items():
            table.append((x["phase"], f"{x['holds_per_s']:,.0f}", count,
                          f"{w['median']:.1f} / {w['p99']:.1f} / {w['max']:.1f}",
                          f"{x['calls_per_hold']:.1f}", f"{x['server_cpu_us_per_hold']:.0f}",
                          f"{x['fairness']:.1f}", str(x["most_in_use"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for n, row in enumerate(table):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    return 0
