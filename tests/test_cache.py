"""Cache patterns: single-flight under a 50-caller stampede, XFetch early recomputation at the
predicted rate, tag invalidation, write-through, warming, negative caching, bad input."""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from typing import Any

import pytest
import redis

import pyredislua
from pyredislua.cache import HIT, MISS, NEGATIVE, STALE, Cache, RawCodec, xfetch_early
from pyredislua.engine.protocol import Call
from pyredislua.lock import Lock
from tests import faultkit
from tests.conftest import snapshot

pytestmark = pytest.mark.cache


def test_cache_aside_hit_miss_and_events(client: pyredislua.Client) -> None:
    events: list[tuple[str, str]] = []
    cache = Cache(client, "c", ttl=60, on_event=lambda kind, key: events.append((kind, key)))
    calls = []
    assert cache.get_or_compute("k", lambda: calls.append(1) or {"a": 1}) == {"a": 1}
    assert cache.get_or_compute("k", lambda: calls.append(1) or {"a": 2}) == {"a": 1}
    assert len(calls) == 1
    assert ("misses", "k") in events and ("hits", "k") in events
    entry = cache.get("k")
    assert entry.status == HIT and 59_000 < entry.ttl_ms <= 60_000 and entry.delta_ms >= 1


def test_stampede_of_50_callers_computes_once(client: pyredislua.Client) -> None:
    cache = Cache(client, "stampede", ttl=60)
    computed = []
    barrier = threading.Barrier(50)

    def compute() -> str:
        computed.append(1)
        time.sleep(0.2)
        return "fresh"

    results: list[Any] = []

    def caller() -> None:
        barrier.wait()
        results.append(cache.get_or_compute("cold", compute))

    threads = [threading.Thread(target=caller) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 1
    assert results == ["fresh"] * 50
    assert cache.stats.computes == 1
    assert cache.stats.waits + cache.stats.hits == 49


async def test_async_stampede_computes_once(aclient: pyredislua.AsyncClient) -> None:
    cache = Cache(aclient, "astampede", ttl=60)
    computed = []

    async def compute() -> str:
        computed.append(1)
        await asyncio.sleep(0.1)
        return "fresh"

    results = await asyncio.gather(*(cache.get_or_compute("cold", compute) for _ in range(50)))
    assert results == ["fresh"] * 50 and len(computed) == 1


def test_xfetch_decision_matches_the_predicted_probability() -> None:
    rng = random.Random(1234)
    n = 20_000
    for delta, ttl, beta in [(100, 100, 1.0), (100, 300, 1.0), (50, 100, 2.0), (100, 50, 0.5)]:
        p = math.exp(-ttl / (delta * beta))
        hits = sum(xfetch_early(delta, ttl, beta, rng) for _ in range(n))
        sd = math.sqrt(n * p * (1 - p))
        assert abs(hits - n * p) < 4 * sd + 1, (delta, ttl, beta, hits, n * p)
    assert not xfetch_early(0, 100, 1.0, rng)  # no cost recorded: never early
    assert xfetch_early(10, 0, 1.0, rng)  # expired


def test_xfetch_recomputes_early_at_the_predicted_rate(client: pyredislua.Client) -> None:
    # The entry's remaining TTL and delta come from the server; with beta chosen so the
    # probability is ~exp(-ttl/(delta*beta)), count early recomputes over many reads.
    cache = Cache(client, "xf", ttl=3600, beta=1.0, seed=7)
    delta_ms, ttl_ms = 1000, 1000  # p = exp(-1) = 0.368
    n = 400
    early = 0
    for _i in range(n):
        client.run(Call("cache.set", (cache.keys.entry("k"), cache.keys.generations),
                        (b"1", ttl_ms, delta_ms, 0, 0)))
        before = cache.stats.early
        cache.get_or_compute("k", lambda: 2)
        early += cache.stats.early - before
    p = math.exp(-1)
    sd = math.sqrt(n * p * (1 - p))
    assert abs(early - n * p) < 4 * sd, (early, n * p)


def test_early_recompute_is_single_flight(client: pyredislua.Client) -> None:
    cache = Cache(client, "xf1", ttl=60, beta=1e9)  # always early
    client.run(Call("cache.set", (cache.keys.entry("k"), cache.keys.generations),
                    (b'"old"', 60_000, 10, 0, 0)))
    busy = Lock(client, cache._lock_name("k"), ttl=10)
    assert busy.acquire(blocking=False)
    assert cache.get_or_compute("k", lambda: "new") == "old"  # someone else recomputes
    busy.release()
    assert cache.get_or_compute("k", lambda: "new") == "new"
    assert cache.stats.early == 1


def test_stale_value_served_while_another_recomputes(client: pyredislua.Client) -> None:
    cache = Cache(client, "st", ttl=0.05, grace=60)
    cache.set("k", "old")
    time.sleep(0.06)  # let the logical TTL run out (the key lives on for the grace period)
    assert cache.get("k").status == STALE
    busy = Lock(client, cache._lock_name("k"), ttl=10)
    assert busy.acquire(blocking=False)
    assert cache.get_or_compute("k", lambda: "new") == "old"
    assert cache.stats.stale == 1
    busy.release()
    assert cache.get_or_compute("k", lambda: "new", ttl=60) == "new"


def test_negative_caching(client: pyredislua.Client) -> None:
    cache = Cache(client, "neg", ttl=60, negative_ttl=5)
    calls = []
    assert cache.get_or_compute("missing", lambda: calls.append(1)) is None
    assert cache.get_or_compute("missing", lambda: calls.append(1)) is None
    assert len(calls) == 1 and cache.stats.negative_hits == 1
    entry = cache.get("missing")
    assert entry.status == NEGATIVE and entry.ttl_ms <= 5000


def test_tag_invalidation_removes_exactly_the_tagged_keys(client: pyredislua.Client,
                                                          r: redis.Redis) -> None:
    cache = Cache(client, "tags", ttl=60, codec=RawCodec())
    tagged = {f"p{i}" for i in range(1200)}  # more than one bounded call
    cache.warm([(k, b"v") for k in sorted(tagged)], tags=["products"], batch=400)
    cache.warm([(f"c{i}", b"v") for i in range(50)], tags=["customers"])
    cache.set("both", b"v", tags=["products", "customers"])
    cache.set("plain", b"v")
    result = cache.invalidate_tag("products")
    assert result.generation == 1 and result.deleted == 1201 and result.left == 0
    for key in tagged | {"both"}:
        assert cache.get(key).status == MISS
        assert not r.exists(cache.keys.entry(key))
    for key in [f"c{i}" for i in range(50)] + ["plain"]:
        assert cache.get(key).status == HIT
    # entries tagged after the invalidation are valid again
    cache.set("p1", b"new", tags=["products"])
    assert cache.get("p1").status == HIT


def test_a_value_computed_across_an_invalidation_is_not_stored(
        client: pyredislua.Client) -> None:
    cache = Cache(client, "race", ttl=60)
    db = {"k": "old"}

    def compute() -> str:
        value = db["k"]  # read from the database...
        db["k"] = "new"  # ...then a writer updates it and invalidates the tag
        cache.invalidate_tag("t")
        return value

    assert cache.get_or_compute("k", compute, tags=["t"]) == "old"
    assert cache.stats.discarded == 1
    assert cache.get("k").status == MISS  # the stale "old" was not cached
    assert cache.get_or_compute("k", lambda: db["k"], tags=["t"]) == "new"
    assert cache.get("k").status == HIT


def test_a_failing_compute_releases_the_key(client: pyredislua.Client) -> None:
    cache = Cache(client, "boom", ttl=60, wait_timeout=5)

    def boom() -> str:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("k", boom)
    started = time.monotonic()
    assert cache.get_or_compute("k", lambda: "ok") == "ok"
    assert time.monotonic() - started < 1  # no wait for a lock lease to run out


def test_invalidation_is_atomic_before_physical_deletion(client: pyredislua.Client) -> None:
    cache = Cache(client, "tags2", ttl=60)
    cache.set("a", 1, tags=["t"])
    cache.set("b", 2, tags=["t"])
    # the bump alone (no entries declared) hides every carrier at once
    client.run(Call("cache.invalidate_tag", (cache.keys.generations, cache.keys.tag_set("t")),
                    ("t", 1)))
    assert cache.get("a").status == MISS and cache.get("b").status == MISS


def test_write_through_database_first_no_stale_cache_on_failure(
        client: pyredislua.Client) -> None:
    cache = Cache(client, "wt", ttl=60)
    db: dict[str, Any] = {}

    def db_write(key: str, value: Any) -> None:
        if value == "fail":
            raise RuntimeError("database down")
        db[key] = value

    cache.write_through("k", "v1", db_write)
    assert db["k"] == "v1" and cache.get_or_compute("k", lambda: db["k"]) == "v1"
    with pytest.raises(RuntimeError):
        cache.write_through("k", "fail", db_write)
    assert cache.get("k").status == MISS  # nothing stale left behind
    assert cache.get_or_compute("k", lambda: db["k"]) == "v1"


async def test_async_write_through_and_warm(aclient: pyredislua.AsyncClient) -> None:
    cache = Cache(aclient, "awt", ttl=60)
    db: dict[str, Any] = {}

    async def db_write(key: str, value: Any) -> None:
        db[key] = value

    await cache.write_through("k", [1, 2], db_write)
    assert db == {"k": [1, 2]}
    assert await cache.get_or_compute("k", lambda: None) == [1, 2]
    seen: list[int] = []
    assert await cache.warm([(f"w{i}", i) for i in range(25)], batch=10,
                            progress=seen.append) == 25
    assert seen == [10, 20, 25]


def test_warm_reports_progress(client: pyredislua.Client) -> None:
    cache = Cache(client, "warm", ttl=60)
    seen: list[int] = []
    assert cache.warm(((f"k{i}", i) for i in range(1050)), batch=500, progress=seen.append) == 1050
    assert seen == [500, 1000, 1050]
    assert cache.get_or_compute("k1049", lambda: -1) == 1049


BAD_SET = [
    ((b"v", "0", "0", "0", "0"), 2),  # ttl 0
    ((b"v", "1000", "0", "0", "2"), 2),  # negative not 0|1
    ((b"v", "1000", "0", "0", "0", "tag", "-1"), 2),  # a tag without its set key
    ((b"v", "1000", "0", "0", "0"), 4),  # two keys past the tags (one more is the metrics key)
    ((b"v", "1000", "0", "0", "0", "", "-1"), 3),  # empty tag
    ((b"v", "1000", "0", "0", "0", "t0"), 3),  # a tag without its expected generation
    ((b"v", "1000", "0", "0", "0", "t0", "-2"), 3),  # bad expected generation
    ((b"v", "1000", "0", "0", "0", "t0", "x"), 3),
    ((b"v", "1000", "0", "0", "0", *[x for i in range(33) for x in (f"t{i}", "-1")]), 35),
]


@pytest.mark.parametrize(("args", "nkeys"), BAD_SET)
def test_bad_set_is_rejected_and_changes_nothing(client: pyredislua.Client, r: redis.Redis,
                                                 args: tuple[Any, ...], nkeys: int) -> None:
    cache = Cache(client, "bad", ttl=60)
    cache.set("existing", 1, tags=["t0"])
    before = snapshot(r)
    keys = (cache.keys.entry("x"), cache.keys.generations,
            *(cache.keys.tag_set(f"t{i}") for i in range(nkeys - 2)))
    with pytest.raises(pyredislua.BadArgumentError):
        client.run(Call("cache.set", keys, args))
    assert snapshot(r) == before


def test_bad_invalidate_and_python_arguments(client: pyredislua.Client, r: redis.Redis) -> None:
    cache = Cache(client, "bad2", ttl=60)
    cache.set("k", 1, tags=["t"])
    before = snapshot(r)
    for keys, args in [((cache.keys.generations,), ("t", "1")),
                       ((cache.keys.generations, cache.keys.tag_set("t")), ("", "1")),
                       ((cache.keys.generations, cache.keys.tag_set("t")), ("t", "2"))]:
        with pytest.raises(pyredislua.BadArgumentError):
            client.run(Call("cache.invalidate_tag", keys, args))
    assert snapshot(r) == before
    with pytest.raises(ValueError):
        Cache(client, "x", ttl=0)
    with pytest.raises(ValueError):
        Cache(client, "{x}")
    with pytest.raises(ValueError):
        cache.get_or_compute("", lambda: 1)
    with pytest.raises(ValueError):
        cache.set("k", 1, tags=[""])
    with pytest.raises(ValueError):
        cache.warm([], batch=0)
    assert snapshot(r) == before


@pytest.mark.cli
def test_load_data_command(redis_url: str, r: redis.Redis,
                           capsys: pytest.CaptureFixture[str]) -> None:
    from pyredislua.cli import main

    assert main(["load-data", "--url", redis_url, "--quiet", "--scale", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "customers" in out and "transactions" in out
    client = pyredislua.Client(r)
    app = Cache(client, "app")
    assert app.get("customer:C000000").status == HIT
    from pyredislua.writebehind import WriteBehind

    assert WriteBehind(client, "transactions").stats().dirty == 250
    assert main(["writebehind", "stats", "--url", redis_url, "--store", "transactions"]) == 0
    assert main(["cache", "invalidate-tag", "--url", redis_url, "--namespace", "app",
                 "--tag", "customers"]) == 0
    assert app.get("customer:C000000").status == MISS


def test_demo_section(client: pyredislua.Client) -> None:
    from pyredislua.cache.demo import ORDER, demo
    from pyredislua.writebehind import demo as wb_demo

    lines: list[str] = []
    demo(client, lines.append)
    wb_demo.demo(client, lines.append)
    assert ORDER == 40 and wb_demo.ORDER == 45
    text = "\n".join(lines)
    assert "1 computation" in text and "SQLite now holds 1000 transactions" in text


# -- maxmemory (issue 14 item 2) and lifecycle (issue 8 §3) --------------------------------------


def test_at_maxmemory_the_cache_serves_computes_and_invalidates_without_storing(
        fault_server: faultkit.FaultServer) -> None:
    conn = redis.Redis(port=fault_server.port)
    cache = Cache(pyredislua.Client(conn), "oom", ttl=60)
    assert cache.get_or_compute("cached", lambda: "before", tags=["t"]) == "before"
    cache.set("other", "x", tags=["t"])
    db: dict[str, Any] = {}
    conn.config_set("maxmemory", 1)  # far below what is used: every write that grows is refused
    try:
        assert cache.get_or_compute("cached", lambda: "recomputed") == "before"  # a hit
        assert cache.get_or_compute("cold", lambda: "computed") == "computed"  # not stored
        cache.write_through("cached", "new", lambda k, v: db.__setitem__(k, v))
        assert db == {"cached": "new"} and cache.get("cached").status == MISS  # never stale
        assert cache.invalidate_tag("t").deleted == 1 and cache.get("other").status == MISS
        assert cache.delete("missing") is False
    finally:
        conn.config_set("maxmemory", 0)
    assert cache.stats.not_stored == 2 and cache.stats.lock_timeouts == 2
    assert cache.get_or_compute("cold", lambda: "stored now") == "stored now"
    assert cache.get("cold").status == HIT
    conn.close()


# Keys of a cache namespace left once every entry expired, with why (README, cache section).
CACHE_LEFT = {
    "tags": "tag generations: kept a day after an invalidation, and as long as any tagged entry",
}


def test_a_full_cache_lifecycle_leaves_only_the_documented_keys(
        client: pyredislua.Client) -> None:
    r = client.redis
    cache = Cache(client, "life", ttl=0.3, negative_ttl=0.3, grace=0.2, lock_ttl=5)
    barrier = threading.Barrier(5)

    def caller() -> None:
        barrier.wait()
        cache.get_or_compute("hot", lambda: time.sleep(0.05) or "v", tags=["a", "b"])

    threads = [threading.Thread(target=caller) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cache.get_or_compute("missing", lambda: None)
    cache.warm([(f"w{i}", i) for i in range(20)], tags=["a"])
    cache.write_through("wt", {"x": 1}, lambda k, v: None, tags=["b"])
    cache.set("gone", 1, tags=["c"])
    assert cache.delete("gone")
    assert cache.invalidate_tag("a").deleted == 21
    assert cache.stats.computes == 2
    ns = "prl:cache:{life}:"

    def expired() -> bool:
        return all(r.pttl(k) == -1 or r.pttl(k) > 5000 for k in r.scan_iter("prl:*"))

    faultkit.wait_for(expired, what="entries, tag sets and lock keys to expire")
    left = {k.decode() for k in r.scan_iter(ns + "*")}
    assert left == {ns + name for name in CACHE_LEFT}
    assert 0 < r.pttl(ns + "tags") <= 86_400_000  # expires on its own
    # single-flight locks use ephemeral fences: their counters end on their own too
    assert [k for k in r.scan_iter("prl:lock:*") if r.pttl(k) == -1] == []
