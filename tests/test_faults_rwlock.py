"""The read-write lock through real faults: a writer holding with its watchdog while readers
wait, as Redis restarts (with AOF and without persistence) or is paused past the lease
(SIGSTOP). Each case asserts what the lock promises and records its outcome (``fault_report``):
a holder learns of a lost lease no later than its local deadline; a blocking acquire keeps its
timeout through a pause and retries connection errors until its deadline; afterwards the lock
works again, with fences that go on increasing unless the restart destroyed the counter."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

import pyredislua
from pyredislua.rwlock import RWHandle, RWLock
from tests.faultkit import FaultOutcome, FaultReport, FaultServer, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.lock]

SYNC = "rwlock writer and readers (sync)"


@pytest.fixture(params=["aof", "none"], ids=["aof", "no-persistence"])
def restarting(request: pytest.FixtureRequest) -> Iterator[FaultServer]:
    name = "aof_server" if request.param == "aof" else "fault_server"
    yield request.getfixturevalue(name)


def _client(server: FaultServer, **kwargs: object) -> pyredislua.Client:
    return pyredislua.Client(redis.Redis(port=server.port, **kwargs))  # type: ignore[arg-type]


class _Waiter(threading.Thread):
    def __init__(self, handle: RWHandle[pyredislua.Client], timeout: float) -> None:
        super().__init__(daemon=True)
        self.handle, self.timeout = handle, timeout
        self.got: bool | None = None
        self.error: BaseException | None = None
        self.started_at = self.ended_at = 0.0

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            self.got = self.handle.acquire(timeout=self.timeout)
        except BaseException as error:  # recorded for the test to assert on
            self.error = error
        self.ended_at = time.monotonic()


def test_restart(restarting: FaultServer, fault_report: FaultReport) -> None:
    persisted = restarting.aof
    client = _client(restarting, socket_timeout=2)
    rw = RWLock(client, "f", ttl=3)
    lost = threading.Event()
    writer = RWLock(client, "f", ttl=3, on_lost=lambda _h: lost.set()).write()
    assert writer.acquire(blocking=False)
    first_fence = writer.fence
    waiter = _Waiter(rw.read(), timeout=8)
    waiter.start()
    wait_for(lambda: rw.inspect().waiters >= 1, what="the reader to register")
    restarting.crash_restart()
    back = time.monotonic()
    surfaced = "none"
    try:
        writer.release()  # connection errors are retried until the lease ends
    except pyredislua.LockNotOwnedError:
        surfaced = "LockNotOwnedError on release (the restart destroyed the hold)"
    recovery = time.monotonic() - back
    waiter.join(10)
    assert waiter.error is None, waiter.error
    assert waiter.got, "the reader got its share after the restart"
    if persisted:
        assert surfaced == "none" and not lost.is_set(), "the hold survives a restart with AOF"
    else:
        assert writer.lost, "the writer learns that the restart destroyed its hold"
    waiter.handle.release()
    again = rw.write()
    assert again.acquire(timeout=5)
    if persisted:
        assert again.fence is not None and first_fence is not None and again.fence > first_fence
    again.release()
    fault_report.record(FaultOutcome(
        SYNC, "restart with AOF" if persisted else "restart without persistence", True,
        recovery, surfaced, 0, 0,
        "hold and waiter survive; handed off after the restart" if persisted else
        "the data set is gone: the writer is told (lost), fences restart at 1"))


def test_pause_past_the_lease(fault_server: FaultServer, fault_report: FaultReport) -> None:
    client = _client(fault_server)  # redis-py's defaults: 5 s socket timeout, re-sends
    rw = RWLock(client, "f", ttl=1)
    lost_at: list[float] = []
    writer = RWLock(client, "f", ttl=1, on_lost=lambda _h: lost_at.append(time.monotonic())
                    ).write()
    assert writer.acquire(blocking=False)
    reader = _Waiter(rw.read(), timeout=1.5)
    resume = fault_server.pause_for(3.0)
    deadline = writer.valid_until
    assert deadline is not None
    reader.start()
    wait_for(lambda: lost_at, timeout=3, what="the writer to learn it lost the lease")
    assert writer.lost and not writer.held
    late = lost_at[0] - deadline
    assert late < 0.15, f"on_lost came {late:.3f}s after the local lease deadline"
    reader.join(3)
    assert reader.error is None and reader.got is False, (reader.error, reader.got)
    took = reader.ended_at - reader.started_at
    assert took < 1.5 + 0.25, f"acquire(timeout=1.5) took {took:.2f}s on a paused server"
    resume.join()
    back = time.monotonic()
    with pytest.raises(pyredislua.LockNotOwnedError):
        writer.release()
    again = rw.write()
    assert again.acquire(timeout=5)
    recovery = time.monotonic() - back
    assert again.fence is not None and writer.fence is not None and again.fence > writer.fence
    again.release()
    fault_report.record(FaultOutcome(
        SYNC, "SIGSTOP 3 s, lease 1 s", True, recovery,
        "lost/on_lost at the local lease deadline, LockNotOwnedError on release", 0, 0,
        f"on_lost {max(late, 0) * 1000:.0f} ms after the local deadline; a waiting reader's "
        f"acquire(timeout=1.5) returned in {took:.2f} s"))


def test_client_kill(fault_server: FaultServer, fault_report: FaultReport) -> None:
    """CLIENT KILL while a writer holds (watchdog, 1 s lease) and a reader waits: the watchdog
    renews over a new connection, the reader's blocking acquire rides it out and gets its share
    once the writer lets go."""
    client = _client(fault_server)
    rw = RWLock(client, "f", ttl=1)
    lost = threading.Event()
    writer = RWLock(client, "f", ttl=1, on_lost=lambda _h: lost.set()).write()
    assert writer.acquire(blocking=False)
    reader = _Waiter(rw.read(), timeout=8)
    reader.start()
    wait_for(lambda: rw.inspect().waiters >= 1, what="the reader to register")
    killed = fault_server.kill_clients()
    back = time.monotonic()
    before = writer.valid_until or 0
    try:
        renewed = wait_for(lambda: (writer.valid_until or 0) > before and time.monotonic(),
                           timeout=2, what="a renewal after the kill")
    except AssertionError:
        raise AssertionError(f"no renewal: lost={writer.lost} "
                             f"{getattr(writer, 'lost_reason', None)!r}") from None
    wait_for(lambda: (writer.valid_until or 0) > back + 2.2, timeout=4,
             what="renewals past three leases")
    assert writer.held and not lost.is_set()
    writer.release()
    reader.join(10)
    assert reader.error is None and reader.got, (reader.error, reader.got)
    reader.handle.release()
    fault_report.record(FaultOutcome(
        SYNC, "CLIENT KILL", True, renewed - back, "none", 0, 0,
        f"{killed} connections killed; the watchdog kept the hold, the waiting reader got its "
        f"share {reader.ended_at - back:.1f} s later (after the writer released)"))


def test_at_maxmemory_holders_let_go(fault_server: FaultServer,
                                     fault_report: FaultReport) -> None:
    """At maxmemory a new acquire is refused before writing; the holder's watchdog keeps
    renewing, extend and release run (allow-oom); once memory is back, acquires work again."""
    client = _client(fault_server)
    rw = RWLock(client, "f", ttl=1)
    writer = rw.write()
    assert writer.acquire(blocking=False)
    newcomer = RWLock(client, "g", ttl=5, auto_renew=False).read()
    with fault_server.out_of_memory() as admin:
        admin.config_set("maxmemory", 1)  # well past the limit: no write fits, however small
        before = admin.dbsize()
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            newcomer.acquire(blocking=False)
        assert admin.dbsize() == before, "a refused acquire wrote nothing"
        start = time.monotonic()  # the watchdog keeps renewing at the limit, past the lease
        wait_for(lambda: (writer.valid_until or 0) > start + 1.2, timeout=3, what="renewals")
        assert writer.held
        writer.extend()
        writer.release()  # frees the lock at the limit
        assert rw.inspect().writer is None
    back = time.monotonic()
    assert newcomer.acquire(blocking=False)
    recovery = time.monotonic() - back
    newcomer.release()
    fault_report.record(FaultOutcome(
        SYNC, "maxmemory (noeviction) and back", True, recovery,
        "OutOfMemoryError on a new acquire (nothing written)", 0, 0,
        "renewal, extend and release work at the limit; acquire works once memory is back"))
