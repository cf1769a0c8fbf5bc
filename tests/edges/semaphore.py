"""Edge scenarios of the semaphore operations: one per writing path of each operation."""

from __future__ import annotations

import pyredislua
from pyredislua.semaphore import SemaphoreKeys, acquire_call, inbox, release_call
from tests.edges import Scenario, run_all

K = SemaphoreKeys("edge")
ALL = K.all
N = 3


def _held(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "holder", N, 2, 60_000)])


def _full(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "holder", N, 3, 60_000)])


def _full_with_waiter(client: pyredislua.Client) -> None:
    _full(client)
    run_all(client, [acquire_call(K, "w", N, 2, 60_000, 60_000)])


def _full_with_two_waiters(client: pyredislua.Client) -> None:
    _full_with_waiter(client)
    run_all(client, [acquire_call(K, "w2", N, 1, 60_000, 60_000)])


def _granted_unclaimed(client: pyredislua.Client) -> None:
    _full_with_waiter(client)
    run_all(client, [release_call(K, "holder", N)])


def _ended_lease(client: pyredislua.Client) -> None:
    """A 1 ms lease of 2 permits that has ended by the server's clock (its entry still there)."""
    run_all(client, [acquire_call(K, "gone", N, 2, 1), acquire_call(K, "holder", N, 1, 60_000)])
    r = client.redis
    ends = r.zscore(K.semaphore, "gone") or 0
    while True:
        seconds, micros = r.time()
        if seconds * 1000 + micros // 1000 > ends:
            break


SCENARIOS = [
    Scenario("semaphore.acquire", "free, fresh", ALL, ("me", N, 2, 60_000)),
    Scenario("semaphore.acquire", "free, some held", ALL, ("me", N, 1, 60_000), _held),
    Scenario("semaphore.acquire", "repeat by the holder: renews", ALL, ("holder", N, 2, 90_000),
             _held),
    Scenario("semaphore.acquire", "busy, not waiting", ALL, ("me", N, 2, 60_000), _held,
             writes=False),
    Scenario("semaphore.acquire", "busy, queues as a waiter", ALL, ("me", N, 2, 60_000, 60_000),
             _held),
    Scenario("semaphore.acquire", "a queued waiter gives up", ALL, ("w", N, 2, 60_000, 0),
             _full_with_waiter),
    Scenario("semaphore.acquire", "a waiter claims its grant", ALL, ("w", N, 2, 60_000, 60_000),
             _granted_unclaimed),
    Scenario("semaphore.acquire", "prunes an ended lease and takes its permits", ALL,
             ("me", N, 2, 60_000), _ended_lease),
    Scenario("semaphore.forward", "an unclaimed grant to its waiter's inbox",
             (K.semaphore, K.waiting, inbox(K, "w")), ("grant:2:w",), _granted_unclaimed),
    Scenario("semaphore.inspect", "full, with a waiter", (K.semaphore, K.fence, K.waiters), (),
             _full_with_waiter, writes=False),
    Scenario("semaphore.renew", "held", ALL, ("holder", 90_000), _held),
    Scenario("semaphore.renew", "a waiter claims its grant", ALL, ("w", 90_000),
             _granted_unclaimed),
    Scenario("semaphore.release", "held, nobody waiting", ALL, ("holder", N), _held),
    Scenario("semaphore.release", "grants to the queue's head", ALL, ("holder", N),
             _full_with_two_waiters),
    Scenario("semaphore.release", "an unclaimed grant given back", ALL, ("w", N),
             _granted_unclaimed),
]
