"""Edge scenarios of the lock operations: one per writing path of each operation."""

from __future__ import annotations

import pyredislua
from pyredislua.lock import LockKeys, acquire_call, release_call
from tests.edges import Scenario, run_all

K = LockKeys("edge")
ALL = (K.lock, K.fence, K.signal, K.waiters)
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


SCENARIOS = [
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
    Scenario("lock.inspect", "held with a waiter", (K.lock, K.fence, K.waiters), (),
             _held_with_waiter, writes=False),
]
