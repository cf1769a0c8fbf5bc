"""Read-write lock contention and fairness against redis-rw-lock and a redis-py Lock mutex.

redis-py has no read-write lock in the installed release (8.x: ``redis.lock`` holds ``Lock``
only), so the peers are ``redis-rw-lock`` (PyPI; writer-preferring, built from python-redis-lock
mutexes and counters, from the ``bench`` extra) and a redis-py ``Lock`` taken by readers and
writers alike (exclusive, polling every 0.1 s: what a user without a read-write lock does).

Mixed: N processes each loop for a while, taking a read share or (with ``--write-ratio``) the
write lock, holding it ``--hold-ms``: acquisitions per second, and the time readers and writers
wait to acquire (p50/p99). Reader stream: ``--stream-readers`` processes keep a read share held
almost all the time (each re-acquires as soon as it released) while one process takes the write
lock over and over: its p50/p99/max wait. A lock that lets readers barge in past a waiting
writer starves it; a FIFO one makes it wait for the readers already holding only.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import time
from typing import Any

import redis

from ..bench._common import emit_json, print_table, server_url
from ..client import Client
from .rwlock import RWLock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="length of each run (default 3)")
    parser.add_argument("--processes", type=int, default=8,
                        help="contending processes in the mixed run (default 8)")
    parser.add_argument("--write-ratio", type=float, default=0.2,
                        help="share of write acquisitions in the mixed run (default 0.2)")
    parser.add_argument("--hold-ms", type=float, default=2.0,
                        help="how long each hold lasts (default 2 ms)")
    parser.add_argument("--stream-readers", type=int, default=6,
                        help="reader processes in the reader-stream run (default 6)")


def _peers() -> list[str]:
    kinds = ["pyredislua"]
    try:
        import redis_rw_lock  # noqa: F401
    except ImportError:
        pass
    else:
        kinds.append("redis_rw_lock")
    kinds.append("redis_py_mutex")
    return kinds


class _Adapter:
    """acquire(mode) / release() over one peer's lock, one hold at a time."""

    def __init__(self, kind: str, conn: redis.Redis, name: str) -> None:
        self.kind, self.conn, self.name = kind, conn, name
        self.held: Any = None
        if kind == "pyredislua":
            self.rw: Any = RWLock(Client(conn), name, ttl=30, auto_renew=False)
        elif kind == "redis_py_mutex":
            self.mutex = conn.lock(f"{name}:mutex", timeout=30)

    def acquire(self, mode: str) -> None:
        if self.kind == "pyredislua":
            self.held = self.rw.read() if mode == "read" else self.rw.write()
            self.held.acquire()
        elif self.kind == "redis_rw_lock":
            import redis_rw_lock

            self.held = redis_rw_lock.RWLock(
                self.conn, self.name, redis_rw_lock.RWLock.READ if mode == "read"
                else redis_rw_lock.RWLock.WRITE, expire=30)
            self.held.acquire()
        else:
            self.mutex.acquire(blocking=True)
            self.held = self.mutex

    def release(self) -> None:
        self.held.release()
        self.held = None


def _contender(kind: str, url: str, name: str, role: str, seconds: float, hold: float,
               write_ratio: float, seed: int, barrier: Any, out: Any) -> None:
    """role: "mixed" (reads and writes by write_ratio), "reader" or "writer"."""
    conn = redis.Redis.from_url(url)
    lock = _Adapter(kind, conn, name)
    rng = random.Random(seed)
    waits: list[tuple[str, float]] = []
    conn.ping()
    barrier.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if role == "mixed":
            mode = "write" if rng.random() < write_ratio else "read"
        else:
            mode = "write" if role == "writer" else "read"
        start = time.monotonic()
        lock.acquire(mode)
        waits.append((mode, time.monotonic() - start))
        time.sleep(hold)
        lock.release()
        if role == "writer":
            time.sleep(hold)  # the writer comes back after a pause; the readers never pause
    out.put(waits)
    conn.close()


def _run(kind: str, url: str, roles: list[str], seconds: float, hold: float,
         write_ratio: float) -> list[tuple[str, float]]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(roles))
    out = ctx.Queue()
    name = f"bench-rw-{kind}-{random.random()}"
    procs = [ctx.Process(target=_contender, args=(kind, url, name, role, seconds, hold,
                                                  write_ratio, i, barrier, out))
             for i, role in enumerate(roles)]
    for p in procs:
        p.start()
    # a writer starved by readers may never finish its acquire: its process is not waited for
    results = []
    for _ in procs:
        try:
            results.append(out.get(timeout=seconds + 30))
        except Exception:
            break
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
    return [w for ws in results for w in ws]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(waits: list[tuple[str, float]], seconds: float) -> dict[str, float]:
    reads = [w for m, w in waits if m == "read"]
    writes = [w for m, w in waits if m == "write"]
    return {
        "acquisitions_per_s": len(waits) / seconds,
        "reads": len(reads), "writes": len(writes),
        "read_wait_p50_ms": _pct(reads, 0.5) * 1000, "read_wait_p99_ms": _pct(reads, 0.99) * 1000,
        "write_wait_p50_ms": _pct(writes, 0.5) * 1000,
        "write_wait_p99_ms": _pct(writes, 0.99) * 1000,
        "write_wait_max_ms": max(writes, default=float("nan")) * 1000,
    }


def run(args: argparse.Namespace) -> int:
    hold = args.hold_ms / 1000
    results: dict[str, dict[str, dict[str, float]]] = {"mixed": {}, "reader_stream": {}}
    with server_url(args.url) as url:
        Client(redis.Redis.from_url(url)).load()
        for kind in _peers():
            waits = _run(kind, url, ["mixed"] * args.processes, args.seconds, hold,
                         args.write_ratio)
            results["mixed"][kind] = _summary(waits, args.seconds)
            waits = _run(kind, url, ["reader"] * args.stream_readers + ["writer"], args.seconds,
                         hold, 0.0)
            results["reader_stream"][kind] = _summary(waits, args.seconds)
    if args.json:
        emit_json({"results": results, "processes": args.processes,
                   "write_ratio": args.write_ratio, "hold_ms": args.hold_ms,
                   "stream_readers": args.stream_readers, "seconds": args.seconds})
        return 0
    rows = [(kind, f"{s['acquisitions_per_s']:,.0f}/s ({s['reads']:.0f} r, {s['writes']:.0f} w)",
             f"read p50 {s['read_wait_p50_ms']:.1f} p99 {s['read_wait_p99_ms']:.1f}, "
             f"write p50 {s['write_wait_p50_ms']:.1f} p99 {s['write_wait_p99_ms']:.1f}")
            for kind, s in results["mixed"].items()]
    print_table(f"mixed: {args.processes} processes, {args.write_ratio:.0%} writes, "
                f"{args.hold_ms:g} ms holds", rows, ("lock", "acquisitions", "wait (ms)"))
    rows = [(kind, f"{s['writes']:.0f} writes, {s['reads']:.0f} reads",
             f"p50 {s['write_wait_p50_ms']:.1f}, p99 {s['write_wait_p99_ms']:.1f}, "
             f"max {s['write_wait_max_ms']:.1f}")
            for kind, s in results["reader_stream"].items()]
    print_table(f"reader stream: {args.stream_readers} readers always re-acquiring, one writer",
                rows, ("lock", "acquisitions", "writer wait (ms)"))
    return 0
