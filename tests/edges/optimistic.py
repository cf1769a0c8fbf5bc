"""Edge scenarios of the optimistic (compare-and-set) operations.

Versions are made from the server clock, so the setups write versioned values directly, at
known versions, in the layout the operations keep (a hash {t, n, v, w})."""

from __future__ import annotations

from collections.abc import Callable

import pyredislua
from pyredislua.optimistic import item_key
from tests.edges import Scenario

A, B = item_key("edge", "{e}a"), item_key("edge", "{e}b")


def _stored(key: str, version: int, value: str = "old", writer: str = "", ttl_ms: int = 0
            ) -> Callable[[pyredislua.Client], None]:
    def setup(client: pyredislua.Client) -> None:
        client.redis.hset(key, mapping={"t": "prl:optimistic", "n": version, "v": value,
                                        "w": writer})
        if ttl_ms:
            client.redis.pexpire(key, ttl_ms)

    return setup


def _both(client: pyredislua.Client) -> None:
    _stored(A, 5, ttl_ms=60_000)(client)
    _stored(B, 9)(client)


SCENARIOS = [
    Scenario("optimistic.get", "an existing value", (A,), (), _stored(A, 5, ttl_ms=60_000),
             writes=False),
    Scenario("optimistic.get", "an absent value", (A,), (), writes=False),
    Scenario("optimistic.get_many", "two values", (A, B), (), _both, writes=False),
    Scenario("optimistic.set", "creates (expected version 0)", (A,), (0, "new")),
    Scenario("optimistic.set", "replaces, sets a TTL", (A,), (5, "new", 30_000, "req-2"),
             _stored(A, 5)),
    Scenario("optimistic.set", "replaces, keeps the TTL", (A,), (5, "new"),
             _stored(A, 5, ttl_ms=60_000)),
    Scenario("optimistic.set", "replaces, removes the TTL", (A,), (5, "new", -1),
             _stored(A, 5, ttl_ms=60_000)),
    Scenario("optimistic.set", "refused: another version", (A,), (4, "new"), _stored(A, 5),
             writes=False),
    Scenario("optimistic.set", "a re-sent call recognises its version", (A,),
             (4, "new", 0, "req-1"), _stored(A, 5, writer="req-1"), writes=False),
    Scenario("optimistic.delete", "deletes", (A,), (5,), _stored(A, 5, ttl_ms=60_000)),
    Scenario("optimistic.delete", "refused: another version", (A,), (4,), _stored(A, 5),
             writes=False),
    Scenario("optimistic.set_many", "creates one, replaces one", (A, B),
             (0, "req-3", 5, "a2", 0, "b1"), _stored(A, 5)),
    Scenario("optimistic.set_many", "replaces both, sets a TTL", (A, B),
             (30_000, "", 5, "a2", 9, "b2"), _both),
    Scenario("optimistic.set_many", "refused: one version differs", (A, B),
             (0, "", 5, "a2", 8, "b2"), _both, writes=False),
]
