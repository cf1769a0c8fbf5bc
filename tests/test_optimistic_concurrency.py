"""Real concurrency: 8 processes increment shared counters with compare-and-set and with the
WATCH helper (every increment counted exactly, conflicts counted), and processes moving money
between accounts are SIGKILLed at random moments (no money made or lost, nothing malformed,
nothing left but the accounts)."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from typing import Any

import pytest
import redis

import pyredislua
from pyredislua.optimistic import Backoff, Optimistic, Versioned
from tests.faultkit import FaultOutcome, FaultReport, wait_for

pytestmark = pytest.mark.optimistic

PROCESSES = 8
INCREMENTS = 50
COUNTERS = ("{cnt}a", "{cnt}b")
PATIENT = Backoff(attempts=1000, base=0.0005, cap=0.02)


def _incrementer(url: str, mode: str, barrier: Any, out: Any) -> None:
    conn = redis.Redis.from_url(url)
    client = pyredislua.Client(conn, mode=mode)  # type: ignore[arg-type]
    store = Versioned(client, "bench", backoff=PATIENT)
    opt = Optimistic(client, backoff=PATIENT)
    barrier.wait()
    for i in range(INCREMENTS):
        store.update(COUNTERS[i % 2], lambda v: str(int(v or 0) + 1))
    barrier.wait()
    for i in range(INCREMENTS):
        key = COUNTERS[i % 2]

        def incr(pipe: Any, key: str = key) -> None:
            n = int(pipe.get(key) or 0)
            pipe.multi()
            pipe.set(key, n + 1)

        opt.transaction(incr, key)
    out.put({"cas": (store.stats.committed, store.stats.conflicts),
             "watch": (opt.stats.committed, opt.stats.conflicts, opt.stats.interrupted)})
    conn.close()


@pytest.mark.perf
@pytest.mark.parametrize("mode", ["function", "script"])
def test_eight_processes_count_exactly(redis_url: str, r: redis.Redis, mode: str) -> None:
    pyredislua.Client(r, mode=mode).load()  # type: ignore[arg-type]
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [ctx.Process(target=_incrementer, args=(redis_url, mode, barrier, out))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    store = Versioned(pyredislua.Client(r), "bench")
    total = PROCESSES * INCREMENTS
    cas = sum(int(store.get(n).value or 0) for n in COUNTERS)
    watch = sum(int(r.get(n) or 0) for n in COUNTERS)
    assert cas == total and watch == total, "an increment lost or applied twice"
    assert sum(res["cas"][0] for res in results) == total
    assert sum(res["watch"][0] for res in results) == total
    conflicts = sum(res["cas"][1] + res["watch"][1] for res in results)
    assert conflicts > 0, "8 processes on 2 counters and no conflict at all: not concurrent"
    assert sum(res["watch"][2] for res in results) == 0  # no connection trouble here


ACCOUNTS = [f"{{bank}}{i}" for i in range(6)]
START = 100


def _mover(url: str, kind: str, seed: int) -> None:
    rng = random.Random(seed)
    conn = redis.Redis.from_url(url)
    client = pyredislua.Client(conn)
    store = Versioned(client, "bank", backoff=PATIENT)
    opt = Optimistic(client, backoff=PATIENT)
    conn.incr(f"started:{kind}:{seed}")  # outside the accounts' slot and name space
    while True:
        a, b = rng.sample(ACCOUNTS, 2)
        amount = rng.randint(1, 10)
        if kind == "cas":
            def move(balances: dict[str, bytes | None], a: str = a, b: str = b,
                     amount: int = amount) -> dict[str, str]:
                return {a: str(int(balances[a] or 0) - amount),
                        b: str(int(balances[b] or 0) + amount)}

            store.update_many([a, b], move)
        else:
            def transfer(pipe: Any, a: str = a, b: str = b, amount: int = amount) -> None:
                x, y = int(pipe.get(a)), int(pipe.get(b))
                pipe.multi()
                pipe.set(a, x - amount)
                pipe.set(b, y + amount)

            opt.transaction(transfer, a, b)


@pytest.mark.faults
def test_sigkilled_movers_leave_the_books_balanced(redis_url: str, r: redis.Redis,
                                                  fault_report: FaultReport) -> None:
    client = pyredislua.Client(r)
    store = Versioned(client, "bank")
    store.set_many({a: (0, str(START)) for a in ACCOUNTS})
    r.mset(dict.fromkeys(ACCOUNTS, START))
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_mover, args=(redis_url, kind, seed), daemon=True)
             for seed, kind in enumerate(["cas", "watch"] * 3)]
    for p in procs:
        p.start()
    wait_for(lambda: len(list(r.scan_iter("started:*"))) == len(procs), timeout=60,
             what="every mover started")
    rng = random.Random(7)
    for p in procs:  # killed one by one, each at some moment of its loop
        time.sleep(rng.uniform(0.0, 0.1))  # spread the kills over their loops
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
    moved = store.get_many(ACCOUNTS)  # raises on anything malformed
    assert sum(int(e.value or b"0") for e in moved.values()) == START * len(ACCOUNTS)
    assert all(e.version > 0 for e in moved.values())
    assert sum(int(v) for v in r.mget(ACCOUNTS)) == START * len(ACCOUNTS)
    left = {k.decode() for k in r.scan_iter(count=1000)} - {f"started:{k}:{s}" for s, k in
                                                             enumerate(["cas", "watch"] * 3)}
    assert left == {*ACCOUNTS, *(store.key(a) for a in ACCOUNTS)}
    changed = sum(1 for e in moved.values() if e.value != str(START).encode())
    assert changed > 0, "the movers were killed before moving anything"
    fault_report.record(FaultOutcome(
        "optimistic (both methods)", "6 processes moving money SIGKILLed mid-loop", True, None,
        "none", 0, 0, "sum of balances unchanged; nothing malformed, no other key left"))


@pytest.mark.perf
def test_the_benchmark_counts_exactly(redis_url: str, r: redis.Redis) -> None:
    from pyredislua.optimistic.bench import _run_phases

    results = _run_phases(redis_url, [("cas", 1), ("watch", 1), ("lock", 1)], 3, 0.3)
    assert [x["method"] for x in results] == ["cas", "watch", "lock"]
    for x in results:
        assert x["exact"], x  # what was given up wrote nothing
        assert set(x["failure_kinds"]) <= {"TooManyConflictsError"}, x
        assert x["increments_per_s"] > 0
