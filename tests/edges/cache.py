"""Edge scenarios of the cache operations."""

from __future__ import annotations

import pyredislua
from pyredislua.cache.ops import CacheKeys, invalidate_tag_call, set_call
from tests.edges import Scenario, run_all

K = CacheKeys("edge")
ENTRY, OTHER = K.entry("product:1"), K.entry("product:2")
T1, T2 = K.tag_set("t1"), K.tag_set("t2")
M = K.metrics_key


def _cached(client: pyredislua.Client) -> None:
    run_all(client, [set_call(K, "product:1", b'"v1"', 60_000, delta_ms=5, tags=["t1", "t2"]),
                     set_call(K, "product:2", b'"v2"', 60_000, tags=["t1"])])


def _bumped(client: pyredislua.Client) -> None:
    _cached(client)
    run_all(client, [invalidate_tag_call(K, "t1", [], bump=True)])


SCENARIOS = [
    Scenario("cache.get", "a hit with its tags' generations", (ENTRY, K.generations), ("t1",),
             _cached, writes=False),
    Scenario("cache.set", "a new entry, no tags", (ENTRY, K.generations),
             ('"v"', 60_000, 5, 0, 0)),
    Scenario("cache.set", "replaces an entry, with tags", (ENTRY, K.generations, T1, T2),
             ('"v"', 60_000, 5, 1000, 0, "t1", -1, "t2", 0), _cached),
    Scenario("cache.set", "a cached not-found, expected generations", (ENTRY, K.generations, T1),
             ("", 30_000, 0, 0, 1, "t1", 1), _bumped),
    Scenario("cache.set", "refused: a tag was invalidated meanwhile",
             (ENTRY, K.generations, T1), ('"v"', 60_000, 5, 0, 0, "t1", 0), _bumped,
             writes=False),
    # recording metrics
    Scenario("cache.get_recorded", "a hit", (ENTRY, K.generations, M), ("t1",), _cached),
    Scenario("cache.get_recorded", "a miss", (OTHER, K.generations, M), ()),
    Scenario("cache.set", "a new entry, records a recompute", (ENTRY, K.generations, M),
             ('"v"', 60_000, 5, 0, 0), trailing=1),
    Scenario("cache.set", "with tags, records a recompute", (ENTRY, K.generations, T1, T2, M),
             ('"v"', 60_000, 5, 1000, 0, "t1", -1, "t2", 0), _cached, trailing=1),
    Scenario("cache.set", "refused, records nothing", (ENTRY, K.generations, T1, M),
             ('"v"', 60_000, 5, 0, 0, "t1", 0), _bumped, writes=False, trailing=1),
    Scenario("cache.metrics", "recorded", (M,), (),
             lambda client: run_all(client, [set_call(CacheKeys("edge", metrics=True), "k",
                                                      b"v", 60_000, record=True)]),
             writes=False),
    Scenario("cache.delete", "an entry", (ENTRY,), (), _cached),
    Scenario("cache.invalidate_tag", "bumps and deletes the tagged entries",
             (K.generations, T1, ENTRY, OTHER), ("t1", 1), _cached),
    Scenario("cache.invalidate_tag", "a later call deletes what is left",
             (K.generations, T1, ENTRY, OTHER), ("t1", 0), _bumped),
]
