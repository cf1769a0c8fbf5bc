"""The semaphore through real faults: a holder with a watchdog and a blocked waiter while Redis
restarts (with AOF and without persistence), is paused past the lease (SIGSTOP), and runs out of
memory. Each case asserts what the semaphore promises and records a row of the fault table."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

import pyredislua
from pyredislua import Permit, Semaphore
from tests.faultkit import FaultOutcome, FaultReport, FaultServer, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.semaphore]

COMPONENT = "semaphore holder and waiter (sync)"


@pytest.fixture(params=["aof", "none"], ids=["aof", "no-persistence"])
def restarting(request: pytest.FixtureRequest) -> Iterator[FaultServer]:
    name = "aof_server" if request.param == "aof" else "fault_server"
    yield request.getfixturevalue(name)


def _client(server: FaultServer) -> pyredislua.Client:
    return pyredislua.Client(redis.Redis(port=server.port, socket_timeout=2))


class _Waiter(threading.Thread):
    def __init__(self, sem: Semaphore[pyredislua.Client], count: int, timeout: float) -> None:
        super().__init__(daemon=True)
        self.sem, self.count, self.timeout = sem, count, timeout
        self.got: Permit | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.got = self.sem.acquire(self.count, timeout=self.timeout)
        except BaseException as error:  # recorded for the test to assert on
            self.error = error


def test_restart(restarting: FaultServer, fault_report: FaultReport) -> None:
    persisted = restarting.aof
    client = _client(restarting)
    lost = threading.Event()
    sem = Semaphore(client, "f", 3, ttl=3, on_lost=lambda _p: lost.set())
    holder = sem.acquire(3, blocking=False)
    assert holder is not None
    waiter = _Waiter(Semaphore(client, "f", 3, ttl=3, auto_renew=False), 2, timeout=8)
    waiter.start()
    admin = restarting.admin()
    wait_for(lambda: admin.zcard(sem.keys.waiters) == 1, what="the waiter to queue")
    restarting.crash_restart()
    back = time.monotonic()
    released = sem.release(holder)  # redis-py reconnects
    recovery = time.monotonic() - back
    waiter.join(10)
    assert waiter.error is None, waiter.error
    assert waiter.got is not None, "the waiter got its permits after the restart"
    if persisted:
        assert released and not lost.is_set(), "the lease survives a restart with AOF"
        assert waiter.got.fence > (holder.fence or 0)
    else:
        assert not released and holder.lost, "the holder learns the restart destroyed its lease"
    waiter.sem.release(waiter.got)
    fault_report.record(FaultOutcome(
        COMPONENT, "restart with AOF" if persisted else "restart without persistence", True,
        recovery, "none" if persisted else "release() -> False, permit.lost", 0, 0,
        "lease, queue and grant survive" if persisted else
        "the data set is gone: the holder is told (lost), the waiter queues again, fences "
        "restart at 1"))


def test_paused_past_the_lease(fault_server: FaultServer, fault_report: FaultReport) -> None:
    client = _client(fault_server)
    lost = threading.Event()
    sem = Semaphore(client, "p", 2, ttl=0.6, on_lost=lambda _p: lost.set())
    permit = sem.acquire(2, blocking=False)
    assert permit is not None and permit.valid_until is not None
    deadline = permit.valid_until
    resume = fault_server.pause_for(1.5)
    try:
        wait_for(lost.is_set, timeout=3, what="the watchdog to report the lost lease")
        told = time.monotonic()
        # the watchdog tells the holder no later than its local lease deadline (plus scheduling)
        assert told <= deadline + 0.35
        assert permit.lost and not permit.held
    finally:
        resume.join()
    assert sem.release(permit) is False  # the server let the lease go meanwhile
    again = sem.acquire(2, timeout=3)
    assert again is not None and again.fence > (permit.fence or 0)
    sem.release(again)
    fault_report.record(FaultOutcome(
        COMPONENT, "paused (SIGSTOP) past the lease", True, None,
        "permit.lost / on_lost at the local lease deadline", 0, 0,
        "the renewal hung on the frozen server; the holder was told before the lease ended"))


def test_client_kill(fault_server: FaultServer, fault_report: FaultReport) -> None:
    """CLIENT KILL while a holder (watchdog, 1 s lease) has every permit and a waiter is
    queued: the watchdog renews over a new connection, the waiter's blocking acquire rides it
    out and gets its permits once the holder lets go."""
    client = _client(fault_server)
    lost = threading.Event()
    sem = Semaphore(client, "k", 2, ttl=1, on_lost=lambda _p: lost.set())
    holder = sem.acquire(2, blocking=False)
    assert holder is not None
    waiter = _Waiter(Semaphore(client, "k", 2, ttl=3, auto_renew=False), 1, timeout=8)
    waiter.start()
    admin = fault_server.admin()
    wait_for(lambda: admin.zcard(sem.keys.waiters) == 1, what="the waiter to queue")
    killed = fault_server.kill_clients()
    back = time.monotonic()
    before = holder.valid_until or 0
    renewed = wait_for(lambda: (holder.valid_until or 0) > before and time.monotonic(),
                       timeout=2, what="a renewal after the kill")
    wait_for(lambda: (holder.valid_until or 0) > back + 2.2, timeout=4,
             what="renewals past three leases")
    assert holder.held and not lost.is_set()
    assert sem.release(holder) is True
    waiter.join(10)
    assert waiter.error is None and waiter.got is not None, (waiter.error, waiter.got)
    assert waiter.got.fence > (holder.fence or 0)
    waiter.sem.release(waiter.got)
    admin.close()
    fault_report.record(FaultOutcome(
        COMPONENT, "CLIENT KILL", True, renewed - back, "none", 0, 0,
        f"{killed} connections killed; the watchdog kept the lease, the queued waiter got its "
        "permit after the holder released"))


def test_at_maxmemory_holders_let_go(fault_server: FaultServer,
                                     fault_report: FaultReport) -> None:
    client = _client(fault_server)
    sem = Semaphore(client, "m", 2, ttl=30, auto_renew=False)
    permit = sem.acquire(1, blocking=False)
    assert permit is not None
    with fault_server.out_of_memory():
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            sem.acquire(1, blocking=False)
        assert sem.renew(permit) is True  # allow-oom: a holder keeps its lease
        assert sem.release(permit) is True  # and lets go
    again = sem.acquire(2, blocking=False)
    assert again is not None
    sem.release(again)
    fault_report.record(FaultOutcome(
        COMPONENT, "maxmemory (noeviction)", True, None, "OutOfMemoryError on acquire", 0, 0,
        "renew and release run (allow-oom); a new acquire is refused before writing"))
