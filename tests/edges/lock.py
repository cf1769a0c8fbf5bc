"""Edge scenarios of the lock operations."""

from __future__ import annotations

import pyredislua
from pyredislua.lock import LockKeys, acquire_call, release_call
from tests.edges import Scenario, run_all

K = LockKeys("edge")
ALL = (K.lock, K.fence, K.signal, K.waiters)


def _held(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "holder", 60_000)])


def _held_with_waiter(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "holder", 60_000), acquire_call(K, "w", 60_000, 60_000)])


def _granted_unpopped(client: pyredislua.Client) -> None:
    _held_with_waiter(client)
    run_all(client, [release_call(K, "holder", 60_000)])


def _fence_exists(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "before", 60_000), release_call(K, "before")])


SCENARIOS = [
    Scenario("lock.acquire", "free", ALL, ("me", 60_000), _fence_exists),
    Scenario("lock.acquire", "busy, registers as a waiter", ALL, ("me", 60_000, 60_000), _held),
    Scenario("lock.acquire", "busy, not waiting", ALL, ("me", 60_000), _held, writes=False),
    Scenario("lock.acquire", "repeat by the holder", ALL, ("holder", 90_000), _held),
    Scenario("lock.acquire", "registered waiter takes an unpopped grant", ALL, ("w", 60_000),
             _granted_unpopped),
    Scenario("lock.extend", "held", (K.lock,), ("holder", 90_000), _held),
    Scenario("lock.release", "no waiter", ALL, ("holder",), _held),
    Scenario("lock.release", "grants to a waiter", ALL, ("holder", 60_000), _held_with_waiter),
    Scenario("lock.inspect", "held with a waiter", (K.lock, K.fence, K.waiters), (),
             _held_with_waiter, writes=False),
]

# Being fixed (issue 8): these paths write before a tampered key makes them fail.
KNOWN_FAILURES = {
    "lock.acquire[free]-4:waiters:zset",
    "lock.acquire[registered waiter takes an unpopped grant]-2:fence:string",
    "lock.release[no waiter]-4:waiters:zset",
    "lock.release[grants to a waiter]-2:fence:string",
    "lock.release[grants to a waiter]-3:signal:list",
    "lock.release[grants to a waiter]-4:waiters:zset",
}
