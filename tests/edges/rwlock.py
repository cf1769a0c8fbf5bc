"""Edge scenarios of the read-write lock operations: one per writing path of each operation."""

from __future__ import annotations

import pyredislua
from pyredislua.rwlock import RWLockKeys, acquire_call, release_call
from tests.edges import Scenario, run_all

K = RWLockKeys("edge")
ALL = K.all
LONG = 60_000


def _fence_exists(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "before", "write", LONG), release_call(K, "before", "write")])


def _read_held(client: pyredislua.Client) -> None:
    _fence_exists(client)
    run_all(client, [acquire_call(K, "reader", "read", LONG)])


def _write_held(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "writer", "write", LONG)])


def _expired_share(client: pyredislua.Client) -> None:
    """A reader's share that ran out (its lease 1 ms), its key still there."""
    run_all(client, [acquire_call(K, "gone", "read", LONG), acquire_call(K, "gone", "read", 1)])
    r = client.redis
    ends = r.zscore(K.readers, "gone") or 0
    while True:  # until the 1 ms lease is over by the server's clock
        seconds, micros = r.time()
        if seconds * 1000 + micros // 1000 > ends:
            break


def _read_held_writer_waits(client: pyredislua.Client) -> None:
    _read_held(client)
    run_all(client, [acquire_call(K, "w", "write", LONG, LONG)])


def _write_held_readers_wait(client: pyredislua.Client) -> None:
    _fence_exists(client)
    run_all(client, [acquire_call(K, "writer", "write", LONG),
                     acquire_call(K, "r1", "read", LONG, LONG),
                     acquire_call(K, "r2", "read", LONG, LONG),
                     acquire_call(K, "w2", "write", LONG, LONG)])


def _granted_reader(client: pyredislua.Client) -> None:
    _write_held_readers_wait(client)
    run_all(client, [release_call(K, "writer", "write", LONG)])


def _granted_unclaimed_writer(client: pyredislua.Client) -> None:
    """w1 released to g (granted, not claimed yet), x waits behind it; the wake-ups are gone."""
    run_all(client, [acquire_call(K, "w1", "write", LONG),
                     acquire_call(K, "g", "write", LONG, LONG),
                     acquire_call(K, "x", "write", LONG, LONG),
                     release_call(K, "w1", "write", LONG)])  # the grant lasts the whole test
    client.redis.delete(K.signal)


SCENARIOS = [
    Scenario("rwlock.acquire", "free, a reader", ALL, ("me", "read", LONG), _fence_exists),
    Scenario("rwlock.acquire", "free, a writer", ALL, ("me", "write", LONG), _fence_exists),
    Scenario("rwlock.acquire", "a writer after an expired share", ALL, ("me", "write", LONG),
             _expired_share),
    Scenario("rwlock.acquire", "readers share", ALL, ("me", "read", LONG), _read_held),
    Scenario("rwlock.acquire", "repeat by a reader", ALL, ("reader", "read", 90_000), _read_held),
    Scenario("rwlock.acquire", "repeat by the writer", ALL, ("writer", "write", 90_000),
             _write_held),
    Scenario("rwlock.acquire", "busy, not waiting", ALL, ("me", "write", LONG), _read_held,
             writes=False),
    Scenario("rwlock.acquire", "busy, registers as the first waiter", ALL,
             ("me", "write", LONG, LONG), _read_held),
    Scenario("rwlock.acquire", "a reader queues behind a waiting writer", ALL,
             ("me", "read", LONG, LONG), _read_held_writer_waits),
    Scenario("rwlock.acquire", "a reader not waiting behind a waiting writer", ALL,
             ("me", "read", LONG), _read_held_writer_waits, writes=False),
    Scenario("rwlock.acquire", "a waiting writer gives up, the readers behind it go", ALL,
             ("w", "write", LONG, 0), _read_held_writer_waits),
    Scenario("rwlock.acquire", "a granted reader claims its grant", ALL,
             ("r1", "read", 90_000, LONG), _granted_reader),
    Scenario("rwlock.acquire", "a woken waiter passes its wake-up back to an unclaimed grant",
             ALL, ("x", "write", LONG, LONG, LONG, 1), _granted_unclaimed_writer),
    Scenario("rwlock.release", "a reader, nobody waits", ALL, ("reader", "read"), _read_held),
    Scenario("rwlock.release", "the writer, nobody waits", ALL, ("writer", "write"), _write_held),
    Scenario("rwlock.release", "the writer grants the readers at the head", ALL,
             ("writer", "write"), _write_held_readers_wait),
    Scenario("rwlock.release", "the last reader grants a waiting writer", ALL, ("reader", "read"),
             _read_held_writer_waits),
    Scenario("rwlock.release", "not held", ALL, ("nobody", "write"), _read_held, writes=False),
    Scenario("rwlock.extend", "the writer", (K.rwlock, K.readers), ("writer", "write", 90_000),
             _write_held),
    Scenario("rwlock.extend", "a reader", (K.rwlock, K.readers), ("reader", "read", 90_000),
             _read_held),
    Scenario("rwlock.inspect", "readers and a waiting writer", ALL, (), _read_held_writer_waits,
             writes=False),
]
