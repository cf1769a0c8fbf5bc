#!/usr/bin/env python3
"""Server-side cost of the lock operations, from ``INFO commandstats``.

    .venv/bin/python tools/lock_cost.py [--rounds 2000] [--repeat 5] [--source CHECKOUT]

Runs on a throwaway redis-server and prints, per path, the microseconds Redis spent per FCALL
(``usec_per_call`` of ``fcall``: time inside Redis, no network), the best of ``--repeat`` runs
(the machine is shared; the minimum is the least disturbed), and how many commands each call
ran inside Redis (``redis.call``, counted by commandstats: exact, unlike time). Paths: acquire of
a free lock, release with nobody waiting (their sum is the uncontended cycle), a busy acquire
that registers as a waiter, and a release that grants the lock to a registered waiter.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# --source DIR: measure the pyredislua (and its lua/) in another checkout, e.g. a main worktree
if "--source" in sys.argv:
    sys.path.insert(0, sys.argv[sys.argv.index("--source") + 1])
else:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

import pyredislua
from pyredislua.engine.protocol import Call
from pyredislua.lock import LockKeys, acquire_call, release_call
from pyredislua.server import RedisServer


def _fcall(r: redis.Redis) -> tuple[int, float, int]:
    """FCALLs so far, the usec they took, and the commands they ran inside (redis.call)."""
    stats = r.info("commandstats")
    entry = stats.get("cmdstat_fcall", {"calls": 0, "usec": 0})
    inner = sum(int(v["calls"]) for k, v in stats.items()
                if k not in ("cmdstat_fcall", "cmdstat_info"))
    return int(entry["calls"]), float(entry["usec"]), inner


def _cost(client: pyredislua.Client, r: redis.Redis,
          setup: Callable[[LockKeys], list[Call[Any]]],
          measured: Callable[[LockKeys], Call[Any]], n: int) -> tuple[float, float]:
    """usec per FCALL of ``measured`` on n locks, each put in its state by ``setup`` first; the
    measured calls run back to back in one pipeline (warm, as under load)."""
    locks = [LockKeys(f"cost-{i}") for i in range(n)]
    r.delete(*[k for keys in locks for k in (keys.lock, keys.fence, keys.signal, keys.waiters)])
    client.run_many([c for keys in locks for c in setup(keys)])
    before = _fcall(r)
    client.run_many([measured(keys) for keys in locks])
    after = _fcall(r)
    calls = max(after[0] - before[0], 1)
    return (after[1] - before[1]) / calls, (after[2] - before[2]) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--source", help="checkout whose pyredislua to measure (default: this)")
    args = parser.parse_args()
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        client = pyredislua.Client(r, mode="function")
        client.load()
        n = args.rounds

        def acquire(keys: LockKeys) -> Call[Any]:
            return acquire_call(keys, "holder", 30_000)

        def release(keys: LockKeys) -> Call[Any]:
            return release_call(keys, "holder")

        def register(keys: LockKeys) -> Call[Any]:
            return acquire_call(keys, "waiter", 30_000, 2_250)

        paths: dict[str, tuple[Callable[[LockKeys], list[Call[Any]]],
                               Callable[[LockKeys], Call[Any]]]] = {
            "acquire, free": (lambda keys: [], acquire),
            "release, nobody waiting": (lambda keys: [acquire(keys)], release),
            "acquire, busy: register as waiter": (lambda keys: [acquire(keys)], register),
            "release, grant to a waiter": (lambda keys: [acquire(keys), register(keys)], release),
        }
        best = {name: float("inf") for name in paths}
        inner = {}
        for _ in range(args.repeat):
            for name, (setup, measured) in paths.items():
                usec, inner[name] = _cost(client, r, setup, measured, n)
                best[name] = min(best[name], usec)
        for name, usec in best.items():
            print(f"{name:40s} {usec:6.2f} usec/call  {inner[name]:5.2f} redis.calls/call")
        cycle = best["acquire, free"] + best["release, nobody waiting"]
        print(f"{'uncontended acquire+release cycle':40s} {cycle:6.2f} usec")
        print(f"redis-server {r.info('server')['redis_version']}")
        r.close()


if __name__ == "__main__":
    main()
