"""Redlock on 5 local nodes against pottery's Redlock and aioredlock: acquire latency and
acquire+release cycles per second, with all nodes up, one node killed, one node paused.

Each contender runs back-to-back non-blocking acquire+release cycles on its own lock name, in
``--rounds`` rounds of ``--seconds``; reported: cycles/s (median of the rounds, and their
min-max spread) and the acquire latency (median and p99 of every acquire). Every contender's
per-node connections get the same 100 ms timeout (pyredislua's ``node_timeout``; redis-py's
``socket_timeout`` for pottery; aioredlock has no per-node timeout of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from ..bench._common import emit_json, print_table
from ..client import AsyncClient, Client
from ..server import RedisServer
from .redlock import Redlock

NODE_TIMEOUT = 0.1
TTL = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="length of each round (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement")
    parser.add_argument("--nodes", type=int, default=5, help="independent masters (default 5)")


class _Samples:
    def __init__(self) -> None:
        self.rates: list[float] = []
        self.acquire_s: list[float] = []
        self.failed = 0
        self.error: str | None = None

    def summary(self) -> dict[str, Any]:
        if not self.rates:
            return {"error": self.error or "no measurement"}
        lat = sorted(self.acquire_s)
        return {
            "cycles_per_s": statistics.median(self.rates),
            "cycles_per_s_min": min(self.rates),
            "cycles_per_s_max": max(self.rates),
            "acquire_median_ms": 1000 * statistics.median(lat),
            "acquire_p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "not_acquired": self.failed,
            "cycles": len(lat),
        }


def _measure_sync(acquire: Callable[[], bool], release: Callable[[], Any], rounds: int,
                  seconds: float) -> _Samples:
    samples = _Samples()
    for _ in range(20):  # warm up connections and code caches
        if acquire():
            release()
    for _ in range(rounds):
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            ok = acquire()
            samples.acquire_s.append(time.perf_counter() - t0)
            if ok:
                release()
            else:
                samples.failed += 1
            done += 1
        samples.rates.append(done / (time.perf_counter() - start))
    return samples


async def _measure_async(acquire: Callable[[], Awaitable[bool]],
                         release: Callable[[], Awaitable[Any]], rounds: int, seconds: float
                         ) -> _Samples:
    samples = _Samples()
    for _ in range(20):
        if await acquire():
            await release()
    for _ in range(rounds):
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            ok = await acquire()
            samples.acquire_s.append(time.perf_counter() - t0)
            if ok:
                await release()
            else:
                samples.failed += 1
            done += 1
        samples.rates.append(done / (time.perf_counter() - start))
    return samples


def _ours_sync(ports: list[int], name: str, rounds: int, seconds: float) -> _Samples:
    lock = Redlock([Client(redis.Redis(port=p)) for p in ports], name, ttl=TTL,
                   node_timeout=NODE_TIMEOUT, auto_renew=False)
    return _measure_sync(lambda: lock.acquire(blocking=False), lock.release, rounds, seconds)


async def _ours_async(ports: list[int], name: str, rounds: int, seconds: float) -> _Samples:
    conns = [redis.asyncio.Redis(port=p) for p in ports]
    lock = Redlock([AsyncClient(c) for c in conns], name, ttl=TTL, node_timeout=NODE_TIMEOUT,
                   auto_renew=False)
    try:
        return await _measure_async(lambda: lock.acquire(blocking=False), lock.release,
                                    rounds, seconds)
    finally:
        for conn in conns:
            await conn.aclose()


def _pottery(ports: list[int], name: str, rounds: int, seconds: float) -> _Samples:
    from pottery import Redlock as PotteryRedlock

    masters = [redis.Redis(port=p, socket_timeout=NODE_TIMEOUT,
                           socket_connect_timeout=NODE_TIMEOUT) for p in ports]
    lock = PotteryRedlock(key=name, masters=masters, auto_release_time=TTL)

    def acquire() -> bool:
        return bool(lock.acquire(blocking=False))

    return _measure_sync(acquire, lock.release, rounds, seconds)


async def _aioredlock(ports: list[int], name: str, rounds: int, seconds: float) -> _Samples:
    from aioredlock import Aioredlock, LockError

    manager = Aioredlock([{"host": "127.0.0.1", "port": p} for p in ports], retry_count=1)
    held: list[Any] = []

    async def acquire() -> bool:
        try:
            held.append(await manager.lock(name, lock_timeout=TTL))
        except LockError:
            return False
        return True

    async def release() -> None:
        await manager.unlock(held.pop())

    try:
        return await _measure_async(acquire, release, rounds, seconds)
    finally:
        await manager.destroy()


def _contenders() -> dict[str, Callable[[list[int], str, int, float], Any]]:
    return {"pyredislua (sync)": _ours_sync, "pyredislua (asyncio)": _ours_async,
            "pottery Redlock": _pottery, "aioredlock": _aioredlock}


def _run_one(kind: str, fn: Callable[..., Any], ports: list[int], name: str, rounds: int,
             seconds: float) -> dict[str, Any]:
    limit = rounds * seconds + 30  # a contender that hangs on a paused node is cut off
    try:
        if asyncio.iscoroutinefunction(fn):
            async def bounded() -> _Samples:
                samples: _Samples = await asyncio.wait_for(fn(ports, name, rounds, seconds),
                                                           limit)
                return samples
            samples = asyncio.run(bounded())
        else:
            samples = fn(ports, name, rounds, seconds)
    except ImportError as error:
        return {"error": f"not installed ({error}); pip install -e '.[bench]'"}
    except (asyncio.TimeoutError, TimeoutError):
        return {"error": f"hung: no result within {limit:.0f}s"}
    except Exception as error:
        return {"error": f"failed: {type(error).__name__}: {error}"}
    return samples.summary()


def run(args: argparse.Namespace) -> int:
    logging.getLogger("aioredlock").setLevel(logging.CRITICAL)
    servers = [RedisServer() for _ in range(args.nodes)]
    results: dict[str, dict[str, Any]] = {}
    try:
        for server in servers:
            server.start()
        ports = [s.port for s in servers]
        for port in ports:
            Client(redis.Redis(port=port)).load()
        scenarios = [("all nodes up", None), ("one node killed", "kill"),
                     ("one node paused (SIGSTOP)", "pause")]
        for scenario, fault in scenarios:
            if fault == "kill":
                servers[0].kill()
            elif fault == "pause":
                servers[0].start()
                assert servers[1].process is not None
                servers[1].process.send_signal(signal.SIGSTOP)
            results[scenario] = {}
            for i, (kind, fn) in enumerate(_contenders().items()):
                results[scenario][kind] = _run_one(kind, fn, ports, f"bench-{i}", args.rounds,
                                                   args.seconds)
    finally:
        for server in servers:
            if server.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    server.process.send_signal(signal.SIGCONT)
            server.close()
    ratios: dict[str, dict[str, float]] = {}
    for scenario, by_kind in results.items():
        ratios[scenario] = {}
        for ours, peer in (("pyredislua (sync)", "pottery Redlock"),
                           ("pyredislua (asyncio)", "aioredlock")):
            a, b = by_kind.get(ours, {}), by_kind.get(peer, {})
            if "cycles_per_s" in a and "cycles_per_s" in b:
                ratios[scenario][f"{ours} / {peer}"] = a["cycles_per_s"] / b["cycles_per_s"]
    if args.json:
        emit_json({"nodes": args.nodes, "rounds": args.rounds, "seconds": args.seconds,
                   "node_timeout_s": NODE_TIMEOUT, "results": results, "ratios": ratios})
        return 0
    for scenario, by_kind in results.items():
        rows = []
        for kind, r in by_kind.items():
            if "error" in r:
                rows.append((kind, r["error"], ""))
                continue
            rows.append((kind,
                         f"{r['cycles_per_s']:,.0f}/s ({r['cycles_per_s_min']:,.0f}-"
                         f"{r['cycles_per_s_max']:,.0f})",
                         f"{r['acquire_median_ms']:.2f} / {r['acquire_p99_ms']:.2f} ms"
                         + (f", {r['not_acquired']} not acquired" if r["not_acquired"] else "")))
        print_table(f"{args.nodes} nodes, {scenario}: acquire+release cycles", rows,
                    ("lock", "cycles/s (min-max of rounds)", "acquire median / p99"))
        for label, value in ratios[scenario].items():
            print(f"  {label}: {value:.2f} x")
    return 0
