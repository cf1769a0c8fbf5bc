"""Real concurrency: 8 processes contend for one lock and do a non-atomic read-modify-write
while holding it. Lost updates, overlapping holds or out-of-order fences would show here."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import time
from typing import Any

import pytest
import redis

import pyredislua
from pyredislua.lock import Lock

pytestmark = [pytest.mark.lock, pytest.mark.perf]

PROCESSES = 8
HOLDS_EACH = 40


def _worker(url: str, mode: str, barrier: Any, out: Any) -> None:
    conn = redis.Redis.from_url(url)
    client = pyredislua.Client(conn, mode=mode)  # type: ignore[arg-type]
    records = []
    barrier.wait()
    for _ in range(HOLDS_EACH):
        with Lock(client, "counter", ttl=30, auto_renew=False) as lock:
            start = time.monotonic_ns()
            value = int(conn.get("counter") or 0)  # deliberately not atomic
            conn.set("counter", value + 1)
            end = time.monotonic_ns()
            records.append((lock.fence, start, end))
    out.put(records)
    conn.close()


@pytest.mark.parametrize("mode", ["function", "script"])
def test_eight_processes_never_overlap(redis_url: str, r: redis.Redis, mode: str) -> None:
    pyredislua.Client(r, mode=mode).load()  # type: ignore[arg-type]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(redis_url, mode, barrier, out))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    per_process = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    holds = sorted((rec for recs in per_process for rec in recs), key=lambda rec: rec[1])
    assert len(holds) == PROCESSES * HOLDS_EACH
    assert int(r.get("counter") or 0) == len(holds), "a lost update means two holders overlapped"
    for (fence_a, _, end_a), (fence_b, start_b, _) in itertools.pairwise(holds):
        assert end_a < start_b, "holds overlap"
        assert fence_a < fence_b, "fences must increase in hold order"
