"""Edge scenarios of the write-behind operations.

Claim ids (lease deadline * 1000 + a sequence) and versions (the server clock) depend on when
the setup ran; the setups pin them to fixed values, a state the operations could have written
themselves, so every call's ARGV is known in advance.
"""

from __future__ import annotations

import time

import pyredislua
from pyredislua.engine.protocol import Call
from pyredislua.writebehind import Record
from pyredislua.writebehind.ops import StoreKeys, claim_call, fail_call, write_call
from tests.edges import Scenario, run_all

K = StoreKeys("edge")
ALL = K.all
MET = (*ALL, K.metrics_key)  # recording metrics
RID = 4242  # the request id of the pinned claim
FIXED = 9_000_000_000_000_000  # the pinned claim's id: its lease ends in the 23rd century
VERSIONS = {"a": 101, "b": 102, "c": -103}  # c is a delete


def _written(client: pyredislua.Client) -> None:
    run_all(client, [write_call(K, [("set", "a", b"1"), ("set", "b", b"2"), ("del", "c", b"")])])
    client.redis.hset(K.versions, mapping=VERSIONS)
    client.redis.hset(K.stats, "seq", 103)


def _claimed(client: pyredislua.Client) -> None:
    _written(client)
    claim = client.run(claim_call(K, 10, 60_000, request_id=RID))
    r = client.redis
    r.zadd(K.claimed, {key: FIXED for key in ("a", "b", "c")}, xx=True)
    r.hdel(K.stats, f"rid:{claim.token}")
    r.hset(K.stats, mapping={f"claim:{RID}": f"{FIXED} {claim.oldest_dirty_since_ms}",
                             f"rid:{FIXED}": RID})


def _written_during_claim(client: pyredislua.Client) -> None:
    _claimed(client)
    run_all(client, [write_call(K, [("set", "a", b"again")])])


def _failed(client: pyredislua.Client, max_attempts: int) -> None:
    _claimed(client)
    run_all(client, [fail_call(K, FIXED, [(Record("a", 101, b"1"), "boom")],
                               max_attempts=max_attempts, backoff_ms=60_000,
                               max_backoff_ms=60_000)])


def _in_backoff(client: pyredislua.Client) -> None:
    _failed(client, 5)


def _dead(client: pyredislua.Client) -> None:
    _failed(client, 1)


def _expired(client: pyredislua.Client) -> None:
    _written(client)
    claim = client.run(claim_call(K, 10, 1))
    while True:  # the server clock passes the 1 ms lease
        sec, usec = client.redis.time()
        if sec * 1000 + usec // 1000 > claim.token // 1000:
            return
        time.sleep(0.001)


def _claim(max_attempts: int, request_id: int) -> tuple[int, ...]:
    return (10, 60_000, 0, 0, max_attempts, request_id)


SCENARIOS = [
    Scenario("writebehind.write", "new records", ALL,
             (0, "set", "a", "1", "set", "b", "2", "del", "c", "")),
    Scenario("writebehind.write", "coalesces into dirty records", ALL, (0, "set", "a", "2"),
             _written),
    Scenario("writebehind.write", "written during a claim", ALL, (0, "set", "a", "3"), _claimed),
    Scenario("writebehind.write", "a record in backoff", ALL, (0, "set", "a", "4"), _in_backoff),
    Scenario("writebehind.write", "supersedes a dead letter", ALL, (0, "del", "a", ""), _dead),
    Scenario("writebehind.claim", "claims due records", ALL, _claim(5, 77), _written),
    Scenario("writebehind.claim", "an expired claim comes back (an attempt)", ALL,
             _claim(5, 78), _expired),
    Scenario("writebehind.claim", "an expired claim is dead-lettered", ALL, _claim(1, 79),
             _expired),
    Scenario("writebehind.claim", "a repeat returns the same records", ALL, _claim(5, RID),
             _claimed, writes=False),
    Scenario("writebehind.claim", "nothing due", ALL, _claim(5, 80), writes=False),
    Scenario("writebehind.ack", "cleans, forgets a tombstone", ALL,
             (FIXED, "a", 101, "c", -103), _claimed),
    Scenario("writebehind.ack", "the whole claim: forgets its request id", ALL,
             (FIXED, "a", 101, "b", 102, "c", -103), _claimed),
    Scenario("writebehind.ack", "written since the claim", ALL, (FIXED, "a", 101),
             _written_during_claim),
    Scenario("writebehind.fail", "retry after a backoff", ALL,
             (FIXED, 5, 1000, 1000, "a", 101, "boom"), _claimed),
    Scenario("writebehind.fail", "dead-letter", ALL, (FIXED, 1, 1000, 1000, "a", 101, "boom"),
             _claimed),
    Scenario("writebehind.fail", "written since the claim", ALL,
             (FIXED, 5, 1000, 1000, "a", 101, "boom"), _written_during_claim),
    Scenario("writebehind.release", "back to dirty", ALL, (FIXED, 0, "a", "b"), _claimed),
    Scenario("writebehind.release", "into a backoff", ALL, (FIXED, 5000, "a"), _claimed),
    Scenario("writebehind.reap", "expired claims", ALL, (100, 5), _expired),
    Scenario("writebehind.requeue", "the oldest dead letters", ALL, (100,), _dead),
    Scenario("writebehind.requeue", "named dead letters", ALL, (100, "a"), _dead),
    Scenario("writebehind.dead", "lists dead letters", ALL, (), _dead, writes=False),
    Scenario("writebehind.stats", "a claim and a dead letter", ALL, (), _dead, writes=False),
    Scenario("writebehind.get", "values and versions", (K.values, K.versions), ("a", "c"),
             _written, writes=False),
    # recording metrics (the trailing metrics key)
    Scenario("writebehind.write", "new records, records metrics", MET,
             (0, "set", "a", "1", "set", "b", "2", "del", "c", "")),
    Scenario("writebehind.write", "one record, records metrics", MET, (0, "set", "a", "2"),
             _written),
    Scenario("writebehind.claim", "claims due records, records nothing", MET, _claim(5, 77),
             _written),
    Scenario("writebehind.claim", "an expired claim is dead-lettered, records it", MET,
             _claim(1, 79), _expired),
    Scenario("writebehind.ack", "cleans, records metrics", MET, (FIXED, "a", 101, "c", -103),
             _claimed),
    Scenario("writebehind.fail", "dead-letter, records metrics", MET,
             (FIXED, 1, 1000, 1000, "a", 101, "boom"), _claimed),
    Scenario("writebehind.fail", "retry, records metrics", MET,
             (FIXED, 5, 1000, 1000, "a", 101, "boom"), _claimed),
    Scenario("writebehind.reap", "expired claims, records metrics", MET, (100, 5), _expired),
    Scenario("writebehind.metrics", "recorded", (K.metrics_key,), (),
             lambda client: run_all(client, [Call("writebehind.write", MET,
                                                  (0, "set", "a", "1"))]), writes=False),
]
