"""Real concurrency: several processes hammer one limit; checked from the server timestamps the
admitted decisions carry."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import pytest
import redis

import pyredislua
from pyredislua.ratelimit import GCRA, ConcurrencyLimiter, SlidingLog, hit_all

pytestmark = [pytest.mark.ratelimit, pytest.mark.perf]

PROCESSES = 4


def _hammer(url: str, kind: str, start: Any, seconds: float, out: Any) -> None:
    client = pyredislua.Client(redis.Redis.from_url(url), mode="function")
    admitted: list[Any] = []
    if kind == "sliding_log":
        lim: Any = SlidingLog(client, "hammer", "20/200ms")
    elif kind == "gcra":
        lim = GCRA(client, "hammer", "20/200ms", burst=1)
    elif kind == "multi":
        per_user = SlidingLog(client, "user", "30/60s")
        per_tenant = SlidingLog(client, "tenant", "50/60s")
    else:
        lim = ConcurrencyLimiter(client, "hammer", 3, ttl=5)
    start.wait()
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        if kind == "multi":
            user = f"u{i % 3}"
            d = hit_all(client, [(per_user, user), (per_tenant, "acme")], cost=1 + i % 2,
                        tag="acme")
            if d.allowed:
                admitted.append((user, 1 + i % 2))
        elif kind == "concurrency":
            slot = lim.acquire("x")
            if slot.acquired:
                t0 = slot.decision.now_ms
                released, t1 = client.run(
                    pyredislua.ratelimit.ops.release_call(slot.key, slot.lease))
                assert released
                admitted.append((t0, t1, slot.decision.in_flight))
        else:
            d = lim.hit("x")
            if d.allowed:
                admitted.append(d.now_ms)
    out.put(admitted)


def _run(url: str, kind: str, seconds: float) -> list[Any]:
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(url, kind, start, seconds, out))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    results: list[Any] = []
    for _ in procs:
        results.extend(out.get(timeout=30))
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    return results


@pytest.mark.parametrize("kind", ["sliding_log", "gcra"])
def test_processes_never_exceed_the_limit_in_any_window(redis_url: str, r: redis.Redis,
                                                        kind: str) -> None:
    times = sorted(_run(redis_url, kind, 1.0))
    assert len(times) >= 40  # the limit was actually reached, window after window
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 200:
            j += 1
        assert i - j + 1 <= 20, f"{i - j + 1} admitted within 200 ms ending at {t}"
    for key in r.scan_iter():
        assert r.pttl(key) != -1  # every key has a TTL (-2: expired since the scan)


def test_multi_limit_charges_all_or_none_under_contention(redis_url: str, r: redis.Redis
                                                          ) -> None:
    admitted = _run(redis_url, "multi", 0.6)
    per_user: dict[str, int] = {}
    for user, cost in admitted:
        per_user[user] = per_user.get(user, 0) + cost
    total = sum(per_user.values())
    assert 0 < total <= 50
    assert all(v <= 30 for v in per_user.values())
    # what the server holds is exactly what the admitted decisions charged: no partial charge
    def entries(key: str) -> int:  # the sliding log marker (scored 0) is no entry
        return int(r.zcount(key, "(0", "+inf"))

    assert entries("prl:rl:{acme}:sliding_log:tenant:acme:60000") == total
    for user, units in per_user.items():
        assert entries(f"prl:rl:{{acme}}:sliding_log:user:{user}:60000") == units
    assert set(per_user) == {"u0", "u1", "u2"} or total == 50


def test_concurrency_limit_holds_across_processes(redis_url: str, r: redis.Redis) -> None:
    spans = _run(redis_url, "concurrency", 0.6)
    assert len(spans) > 10
    assert all(1 <= n <= 3 for _, _, n in spans)  # counted by the server at each grant
    events = sorted([(t0, 1) for t0, _, _ in spans] + [(t1, -1) for _, t1, _ in spans],
                    key=lambda e: (e[0], e[1]))  # at one ms, releases first
    in_flight = peak = 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    assert peak <= 3
