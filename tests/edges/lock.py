"""Edge scenarios of the lock operations: one per writing path of each operation."""

from __future__ import annotations

import pyredislua
from pyredislua.lock import (
    LockKeys,
    ReentrantKeys,
    acquire_all_call,
    acquire_call,
    reentrant_acquire_call,
    reentrant_release_call,
    release_call,
)
from tests.edges import Scenario, run_all

K = LockKeys("edge")
ALL = (K.lock, K.fence, K.signal, K.waiters)
MET = (*ALL, K.metrics_key)  # recording metrics
EPHEMERAL = 3_600_000  # fence_ttl_ms of an ephemeral lock


def _held(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "holder", 60_000)])


def _held_ephemeral(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "holder", 60_000, None, EPHEMERAL)])


def _held_with_waiter(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "holder", 60_000), acquire_call(K, "w", 60_000, 60_000)])


def _held_ephemeral_with_waiter(client: pyredislua.Client) -> None:
    _held_ephemeral(client)
    run_all(client, [acquire_call(K, "w", 60_000, 60_000)])


def _held_with_expired_waiters(client: pyredislua.Client) -> None:
    _held(client)
    # a long wait keeps the set alive while three 1 ms registrations run out
    run_all(client, [acquire_call(K, "w", 60_000, 60_000),
                     *[acquire_call(K, f"gone-{i}", 60_000, 1) for i in range(3)]])
    r = client.redis
    ends = max(r.zscore(K.waiters, f"gone-{i}") or 0 for i in range(3))
    while True:  # until their 1 ms registrations are over by the server's clock
        seconds, micros = r.time()
        if seconds * 1000 + micros // 1000 > ends:
            break


def _held_with_only_expired_waiters(client: pyredislua.Client) -> None:
    _held_with_expired_waiters(client)
    run_all(client, [acquire_call(K, "w", 60_000, 0)])  # the long wait is given up


def _granted_unpopped(client: pyredislua.Client) -> None:
    _held_with_waiter(client)
    run_all(client, [release_call(K, "holder", 60_000)])


def _popped_out_of_order(client: pyredislua.Client) -> None:
    """The grant consumed "a"'s registration (the longest-standing), but "b" popped it."""
    _held(client)
    run_all(client, [acquire_call(K, "a", 60_000, 60_000), acquire_call(K, "b", 60_000, 60_000),
                     release_call(K, "holder", 60_000)])
    assert client.redis.lpop(K.signal) == b"grant:2:60000"


def _fence_exists(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "before", 60_000), release_call(K, "before")])


def _registered_then_free(client: pyredislua.Client) -> None:
    _held(client)
    run_all(client, [acquire_call(K, "me", 60_000, 60_000), release_call(K, "holder")])


def _carried(client: pyredislua.Client) -> None:
    """The holder's release carried the lock for its next acquire (turn_ms)."""
    _held_with_waiter(client)
    run_all(client, [release_call(K, "holder", 60_000, 100, "", 1_000, 60_000)])
    assert client.redis.hget(K.lock, "owner") == b"carry:holder"


def _carried_ephemeral(client: pyredislua.Client) -> None:
    _held_ephemeral_with_waiter(client)
    run_all(client, [release_call(K, "holder", 60_000, 100, "", 1_000, 60_000)])


def _held_in_a_turn(client: pyredislua.Client) -> None:
    """Carried once and taken again: the holder's turn has begun."""
    _carried(client)
    run_all(client, [acquire_call(K, "holder", 60_000)])


def _held_past_a_turn(client: pyredislua.Client) -> None:
    """A turn that began long ago (ts in the past): the next release grants."""
    _held_in_a_turn(client)
    client.redis.hset(K.lock, "ts", "1000")


SCENARIOS = [
    Scenario("lock.release", "carries for the releaser, its turn begins", ALL,
             ("holder", 60_000, 100, "", 1_000, 60_000), _held_with_waiter),
    Scenario("lock.release", "carries again within the turn", ALL,
             ("holder", 60_000, 100, "", 1_000, 60_000), _held_in_a_turn),
    Scenario("lock.release", "past the turn: grants, the turn ends", ALL,
             ("holder", 60_000, 100, "", 1_000, 60_000), _held_past_a_turn),
    Scenario("lock.release", "a carry passed on", ALL, ("carry:holder", 60_000, 100, "holder"),
             _carried),
    Scenario("lock.acquire", "the releaser takes its carry", ALL, ("holder", 60_000), _carried),
    Scenario("lock.acquire", "the releaser takes its carry as a waiter", ALL,
             ("holder", 60_000, 60_000), _carried),
    Scenario("lock.acquire", "the releaser takes its carry, ephemeral fence", ALL,
             ("holder", 60_000, -1, EPHEMERAL), _carried_ephemeral),
    Scenario("lock.acquire", "the releaser takes its carry, records", MET, ("holder", 60_000),
             _carried),
    Scenario("lock.acquire", "busy while carried, registers", ALL, ("w2", 60_000, 60_000),
             _carried),

    Scenario("lock.acquire", "free", ALL, ("me", 60_000), _fence_exists),
    Scenario("lock.acquire", "free, ephemeral fence", ALL, ("me", 60_000, -1, EPHEMERAL),
             _fence_exists),
    Scenario("lock.acquire", "free, a registered waiter's retry", ALL, ("me", 60_000, 60_000),
             _registered_then_free),
    Scenario("lock.acquire", "busy, registers as a waiter", ALL, ("me", 60_000, 60_000), _held),
    Scenario("lock.acquire", "busy, registers and clears expired registrations", ALL,
             ("me", 60_000, 60_000), _held_with_expired_waiters),
    Scenario("lock.acquire", "busy, not waiting", ALL, ("me", 60_000), _held, writes=False),
    Scenario("lock.acquire", "busy, a waiter gives up", ALL, ("w", 60_000, 0), _held_with_waiter),
    Scenario("lock.acquire", "repeat by the holder", ALL, ("holder", 90_000), _held),
    Scenario("lock.acquire", "registered waiter takes an unpopped grant", ALL, ("w", 60_000),
             _granted_unpopped),
    Scenario("lock.acquire", "a registering newcomer takes an unpopped grant", ALL,
             ("new", 60_000, 60_000), _granted_unpopped),
    Scenario("lock.acquire", "a newcomer takes an unpopped grant, ephemeral fence", ALL,
             ("new", 60_000, 60_000, EPHEMERAL), _granted_unpopped),
    Scenario("lock.extend", "held", (K.lock,), ("holder", 90_000), _held),
    Scenario("lock.release", "no waiter", ALL, ("holder",), _held),
    Scenario("lock.release", "only expired registrations: free", ALL, ("holder",),
             _held_with_only_expired_waiters),
    Scenario("lock.release", "grants to a waiter", ALL, ("holder", 60_000), _held_with_waiter),
    Scenario("lock.release", "grants to a waiter and requeues", ALL,
             ("holder", 60_000, 100, "", 60_000), _held_with_waiter),
    Scenario("lock.release", "grants to a waiter, ephemeral fence", ALL, ("holder", 60_000),
             _held_ephemeral_with_waiter),
    Scenario("lock.release", "a grant popped out of order puts the consumed waiter back", ALL,
             ("grant:2:60000", 60_000, 100, "b"), _popped_out_of_order),
    # recording metrics (the trailing metrics key)
    Scenario("lock.acquire", "free, records metrics", MET, ("me", 60_000), _fence_exists),
    Scenario("lock.acquire", "free, a registered waiter's retry, records metrics", MET,
             ("me", 60_000, 60_000), _registered_then_free),
    Scenario("lock.acquire", "busy, registers: its wait begins", MET, ("me", 60_000, 60_000),
             _held),
    Scenario("lock.acquire", "busy, registers and clears expired registrations, records", MET,
             ("me", 60_000, 60_000), _held_with_expired_waiters),
    Scenario("lock.acquire", "busy, a waiter gives up, records", MET, ("w", 60_000, 0),
             _held_with_waiter),
    Scenario("lock.acquire", "registered waiter takes an unpopped grant, records", MET,
             ("w", 60_000), _granted_unpopped),
    Scenario("lock.release", "only expired registrations: free, records", MET, ("holder",),
             _held_with_only_expired_waiters),
    Scenario("lock.release", "grants to a waiter and requeues, records", MET,
             ("holder", 60_000, 100, "", 60_000), _held_with_waiter),
    Scenario("lock.extend", "held, records nothing", (K.lock, K.metrics_key), ("holder", 90_000),
             _held, writes=True),
    Scenario("lock.extend", "expired: records it", (K.lock, K.metrics_key), ("gone", 90_000),
             _held),
    Scenario("lock.release", "no waiter, records nothing", MET, ("holder",), _held),
    Scenario("lock.release", "expired: records it", MET, ("gone",), _held),
    Scenario("lock.release", "expired, a waiter registered: records it", MET, ("gone",),
             _held_with_waiter),
    Scenario("lock.release", "grants to a waiter, records metrics", MET, ("holder", 60_000),
             _held_with_waiter),
    Scenario("lock.metrics", "recorded", (K.metrics_key,), (),
             lambda client: run_all(client, [acquire_call(LockKeys("edge", metrics=True),
                                                          "me", 60_000)]), writes=False),
    Scenario("lock.inspect", "held with a waiter", (K.lock, K.fence, K.waiters), (),
             _held_with_waiter, writes=False),
]


# -- several locks under one hash tag (lock.acquire_all, lock.extend_all) --------------------------

A, B = LockKeys("{edge}:a"), LockKeys("{edge}:b")
AB = A.all + B.all


def _both_fences(client: pyredislua.Client) -> None:
    run_all(client, [acquire_all_call([A, B], "before", 60_000), release_call(A, "before"),
                     release_call(B, "before")])


def _b_held(client: pyredislua.Client) -> None:
    _both_fences(client)
    run_all(client, [acquire_call(B, "holder", 60_000)])


def _b_held_me_registered_on_a(client: pyredislua.Client) -> None:
    _b_held(client)
    run_all(client, [acquire_call(A, "other", 60_000), acquire_call(A, "me", 60_000, 60_000)])
    client.redis.delete(A.lock)  # its lease lapsed: "me" is still registered on a


def _both_mine_a_busy_elsewhere(client: pyredislua.Client) -> None:
    run_all(client, [acquire_all_call([A, B], "me", 60_000)])


def _a_mine(client: pyredislua.Client) -> None:
    _both_fences(client)
    run_all(client, [acquire_call(A, "me", 60_000)])


def _a_granted_to_me_out_of_order(client: pyredislua.Client) -> None:
    """a was granted consuming "first"'s registration, but "me" popped the grant."""
    _both_fences(client)
    run_all(client, [acquire_call(A, "holder", 60_000),
                     acquire_call(A, "first", 60_000, 60_000),
                     acquire_call(A, "me", 60_000, 60_000),
                     release_call(A, "holder", 60_000)])
    assert client.redis.lpop(A.signal) == b"grant:3:60000"


def _a_granted_to_me_b_busy(client: pyredislua.Client) -> None:
    _a_granted_to_me_out_of_order(client)
    run_all(client, [acquire_call(B, "holder", 60_000)])


def _both_held(client: pyredislua.Client) -> None:
    run_all(client, [acquire_all_call([A, B], "holder", 60_000)])


# -- the reentrant lock ----------------------------------------------------------------------------

R = ReentrantKeys("edge")
RALL = R.all


def _r_fence_exists(client: pyredislua.Client) -> None:
    run_all(client, [reentrant_acquire_call(R, "before", "q", 60_000)])
    client.run(reentrant_release_call(R, "before", "q"))


def _r_held(client: pyredislua.Client) -> None:
    _r_fence_exists(client)
    run_all(client, [reentrant_acquire_call(R, "owner", "r1", 60_000)])


def _r_held_twice(client: pyredislua.Client) -> None:
    _r_held(client)
    run_all(client, [reentrant_acquire_call(R, "owner", "r2", 60_000)])


def _r_held_with_waiter(client: pyredislua.Client) -> None:
    _r_held(client)
    run_all(client, [reentrant_acquire_call(R, "w", "q", 60_000, 60_000)])


def _r_registered_then_free(client: pyredislua.Client) -> None:
    _r_held_with_waiter(client)
    client.run(reentrant_release_call(R, "owner", "r1"))


SCENARIOS += [
    Scenario("lock.acquire_all", "free", AB, ("me", 60_000), _both_fences),
    Scenario("lock.acquire_all", "free, ephemeral fences", AB, ("me", 60_000, -1, EPHEMERAL),
             _both_fences),
    Scenario("lock.acquire_all", "one mine, one free", AB, ("me", 90_000), _a_mine),
    Scenario("lock.acquire_all", "repeat by the holder", AB, ("holder", 90_000), _both_held),
    Scenario("lock.acquire_all", "busy, not waiting", AB, ("me", 60_000), _b_held,
             writes=False),
    Scenario("lock.acquire_all", "busy, registers on the busy lock", AB, ("me", 60_000, 60_000),
             _b_held),
    Scenario("lock.acquire_all", "busy, moves its registration to the busy lock", AB,
             ("me", 60_000, 60_000), _b_held_me_registered_on_a),
    Scenario("lock.acquire_all", "busy, a waiter gives up", AB, ("me", 60_000, 0),
             _b_held_me_registered_on_a),
    Scenario("lock.acquire_all", "a popped grant taken with the rest, consumed waiter back", AB,
             ("me", 60_000, 60_000, 0, 1, "grant:3:60000"), _a_granted_to_me_out_of_order),
    Scenario("lock.acquire_all", "a popped grant, another lock busy", AB,
             ("me", 60_000, 60_000, 0, 1, "grant:3:60000"), _a_granted_to_me_b_busy),
    Scenario("lock.extend_all", "held", (A.lock, B.lock), ("holder", 90_000), _both_held),
    Scenario("lock.reentrant_acquire", "free", RALL, ("owner", "r1", 60_000), _r_fence_exists),
    Scenario("lock.reentrant_acquire", "free, a registered waiter's retry", RALL,
             ("w", "q", 60_000, 60_000), _r_registered_then_free),
    Scenario("lock.reentrant_acquire", "again by the owner", RALL, ("owner", "r2", 60_000),
             _r_held),
    Scenario("lock.reentrant_acquire", "a re-sent acquire renews only", RALL,
             ("owner", "r1", 90_000), _r_held),
    Scenario("lock.reentrant_acquire", "busy, not waiting", RALL, ("w", "q", 60_000), _r_held,
             writes=False),
    Scenario("lock.reentrant_acquire", "busy, registers as a waiter", RALL,
             ("w", "q", 60_000, 60_000), _r_held),
    Scenario("lock.reentrant_acquire", "busy, a waiter gives up", RALL, ("w", "q", 60_000, 0),
             _r_held_with_waiter),
    Scenario("lock.reentrant_release", "a nested hold", RALL, ("owner", "r2"), _r_held_twice),
    Scenario("lock.reentrant_release", "the last hold, nobody waiting", RALL, ("owner", "r1"),
             _r_held),
    Scenario("lock.reentrant_release", "the last hold wakes a waiter", RALL, ("owner", "r1"),
             _r_held_with_waiter),
    Scenario("lock.reentrant_release", "a re-sent release", RALL, ("owner", "r3"),
             _r_held_twice, writes=False),
    Scenario("lock.reentrant_extend", "held", (R.lock,), ("owner", 90_000), _r_held),
]
