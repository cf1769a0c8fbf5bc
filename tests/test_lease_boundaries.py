"""A holder counts its lease from before its call was sent; the server must keep the lease at
least that long, even for a call that runs across a millisecond boundary.

Server time is read in whole milliseconds, so a lease scored `now + ttl` with an exclusive end
ends up to 1 ms early; and Redis 7.0 deletes a key at once when it is given an expiry that is not
after the current millisecond (a key otherwise lives on through the millisecond of its expiry):
``PEXPIREAT`` of ``now + 1`` deletes the key when the clock reached the next millisecond since
``TIME`` was read, and even ``PEXPIRE k 1`` does when a millisecond ends while the command runs.
A holder of a 1 ms lease then believes it holds while a second holder already does.

Client and server share this host's wall clock, so the attack aims the first holder's call at
the end of a millisecond (a spread of offsets, whatever the round trip), then lets a second
contender try at once. Wherever the second gets in, it must be after the first's
``valid_until``: its reply cannot come before it was let in."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import pyredislua
from pyredislua import Lock, LockSet, ReentrantLock, Semaphore
from pyredislua.ratelimit.limiters import ConcurrencyLimiter
from pyredislua.rwlock import RWLock

pytestmark = pytest.mark.lock

OFFSETS_US = range(10, 400, 10)  # how long before a millisecond ends the first call is sent
ROUNDS = 4  # per offset


def _before_ms_ends(offset_us: int) -> None:
    """Return once the wall clock is within ``offset_us`` of the end of a millisecond (waits
    on the clock: at most 2 ms)."""
    while (time.time_ns() // 1000) % 1000 >= 1000 - offset_us:
        pass  # too late in this millisecond: the next one
    while (time.time_ns() // 1000) % 1000 < 1000 - offset_us:
        pass


@dataclass
class Case:
    # the first holder: its valid_until for a 1 ms lease taken now; None: not taken
    take: Callable[[int], float | None]
    # a second contender's one try, right after: whether it got in
    contend: Callable[[int], bool]


def _holders(first: Callable[[int, float], Any], second: Callable[[int, float], Any]) -> Case:
    """A case for objects with ``acquire(blocking=False)`` and ``valid_until``: ``first(i, ttl)``
    takes a 1 ms lease, ``second(i, ttl)`` contends with a 1 s one."""
    def take(i: int) -> float | None:
        holder = first(i, 0.001)
        return holder.valid_until if holder.acquire(blocking=False) else None

    def contend(i: int) -> bool:
        return bool(second(i, 1).acquire(blocking=False))

    return Case(take, contend)


def _cases(client: pyredislua.Client) -> Iterator[tuple[str, Case]]:
    def lock(name: str) -> Callable[[int, float], Lock[pyredislua.Client]]:
        return lambda i, ttl: Lock(client, name.format(i), ttl=ttl, auto_renew=False)

    def rw(mode: str) -> Callable[[int, float], Any]:
        return lambda i, ttl: getattr(RWLock(client, f"rw{i}", ttl=ttl, auto_renew=False), mode)()

    yield "lock", _holders(lock("l{}"), lock("l{}"))

    def extend_take(i: int) -> float | None:
        held = Lock(client, f"e{i}", ttl=5, auto_renew=False)
        assert held.acquire(blocking=False)
        held.extend(0.001)
        return held.valid_until

    yield "lock extend", Case(extend_take, _holders(lock("e{}"), lock("e{}")).contend)
    yield "reentrant lock", _holders(
        lambda i, ttl: ReentrantLock(client, f"r{i}", owner="a", ttl=ttl, auto_renew=False),
        lambda i, ttl: ReentrantLock(client, f"r{i}", owner="b", ttl=ttl, auto_renew=False))
    yield "lock set", _holders(
        lambda i, ttl: LockSet(client, [f"{{s{i}}}:a", f"{{s{i}}}:b"], ttl=ttl,
                               auto_renew=False),
        lock("{{s{}}}:b"))
    yield "rwlock read", _holders(rw("read"), rw("write"))
    yield "rwlock write", _holders(rw("write"), rw("read"))

    def permit_take(i: int) -> float | None:
        permit = Semaphore(client, f"sem{i}", permits=1, ttl=0.001).acquire(blocking=False)
        return None if permit is None else permit.valid_until

    def permit_contend(i: int) -> bool:
        return Semaphore(client, f"sem{i}", permits=1, ttl=1).acquire(blocking=False) is not None

    yield "semaphore", Case(permit_take, permit_contend)

    def slot_take(i: int) -> float | None:
        sent_at = time.monotonic()  # the limiter's lease: ttl from the call, as documented
        slot = ConcurrencyLimiter(client, "c", 1, ttl=0.001).acquire(f"id{i}")
        return sent_at + 0.001 if slot else None

    def slot_contend(i: int) -> bool:
        return bool(ConcurrencyLimiter(client, "c", 1, ttl=1).acquire(f"id{i}"))

    yield "concurrency limiter", Case(slot_take, slot_contend)


CASES = ("lock", "lock extend", "reentrant lock", "lock set", "rwlock read", "rwlock write",
         "semaphore", "concurrency limiter")


@pytest.mark.parametrize("name", CASES)
def test_no_second_holder_inside_a_believed_1ms_lease(client: pyredislua.Client,
                                                      name: str) -> None:
    cases = dict(_cases(client))
    assert tuple(cases) == CASES
    case = cases[name]
    taken = early = 0
    i = 0
    for offset in OFFSETS_US:
        for _ in range(ROUNDS):
            i += 1
            _before_ms_ends(offset)
            valid = case.take(i)
            if valid is None:
                continue
            taken += 1
            got_in = case.contend(i)
            replied = time.monotonic()
            if got_in and replied < valid:
                early += 1
    assert taken >= len(OFFSETS_US) * ROUNDS // 2
    assert early == 0, f"{early} of {taken} leases had a second holder while believed held"
