"""Streams-queue consumers (threads and asyncio) through real faults (issue 14): Redis restarted
with AOF and without persistence, paused with SIGSTOP past ``claim_idle``, its clients killed,
driven to maxmemory and back. Each case records a row of the README's fault table::

    PYREDISLUA_FAULT_TABLE=faults.md tools/dev test -m faults tests/test_faults_stream.py

The Streams queue has no worker of its own: two consumers run the loop the README shows
(``consume(10, timeout=...)``, handle, ``ack``), riding out what
:func:`~pyredislua.errors.transient` calls transient with a short pause, as a user's loop would.
Each entry is acked on its own so that a stale token (``STALE``: another consumer claimed it;
``NOTFOUND``: a restart destroyed the group) is counted per entry.

Columns: *lost* counts entries Redis accepted that were never handled, beyond what the fault
destroyed (a restart without persistence destroys the entries not yet handled: in the note);
*duplicated* counts extra handlings of an entry, each of which must follow an ack refused as
stale (at-least-once: a pause past ``claim_idle`` lets a consumer claim the entries another was
handling). Every case checks that stop() leaves no consumer thread or task behind.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis
import redis.asyncio

import pyredislua
from pyredislua.errors import NotFoundError, StaleTokenError, transient
from pyredislua.stream import Entry, StreamQueue
from tests.faultkit import FaultOutcome, FaultReport, FaultServer, through_restarts, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.queue]

NAME = "sfaults"
CONSUMERS = 2
WAIT = 0.5  # each consume(timeout=WAIT)


class Tracker:
    """What the consumers handled (by payload), what their acks said, and what they rode out."""

    def __init__(self) -> None:
        self.runs: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.acked_at: list[float] = []
        self.stale = 0  # acks refused: the entry was claimed by another, or destroyed
        self.consume_took: list[tuple[float, float]] = []  # (ended at, seconds) per consume
        self.guard = threading.Lock()

    def ran(self, entry: Entry) -> None:
        with self.guard:
            self.runs[entry.text] += 1

    def acked(self, ok: bool) -> None:
        with self.guard:
            if ok:
                self.acked_at.append(time.monotonic())
            else:
                self.stale += 1

    def error(self, error: BaseException) -> None:
        with self.guard:
            self.errors[type(error).__name__] += 1

    def consumed(self, began: float) -> None:
        now = time.monotonic()
        with self.guard:
            self.consume_took.append((now, now - began))

    def count(self, payloads: Sequence[str]) -> int:
        with self.guard:
            return sum(1 for p in payloads if self.runs[p])

    def duplicates(self) -> int:
        with self.guard:
            return sum(n - 1 for n in self.runs.values() if n > 1)

    def first_ack_after(self, t: float) -> float | None:
        with self.guard:
            return next((at - t for at in self.acked_at if at >= t), None)

    def longest_consume(self, since: float) -> float:
        """The longest consume(timeout=WAIT) that ended after ``since``."""
        with self.guard:
            return max((took for end, took in self.consume_took if end >= since), default=0.0)

    def surfaced(self, extra: str = "") -> str:
        with self.guard:
            parts = [f"consumers rode out: {n}x {e}" for e, n in sorted(self.errors.items())]
        return "; ".join([*parts, *([extra] if extra else [])]) or "none"


def _stale(error: BaseException) -> bool:
    return isinstance(error, (StaleTokenError, NotFoundError))


class ThreadConsumers:
    label = "Streams queue consumers (threads)"

    def __init__(self, port: int, tracker: Tracker, claim_idle: float) -> None:
        self.tracker = tracker
        self.stopping = threading.Event()
        self.conns = [redis.Redis(port=port) for _ in range(CONSUMERS)]
        self.queues = [StreamQueue(pyredislua.Client(c), NAME, consumer=f"c{i}",
                                   claim_idle=claim_idle, max_deliveries=100)
                       for i, c in enumerate(self.conns)]
        self.threads = [threading.Thread(target=self._loop, args=(q,), daemon=True)
                        for q in self.queues]
        self.failures: list[BaseException] = []

    def _loop(self, sq: StreamQueue[pyredislua.Client]) -> None:
        try:
            while not self.stopping.is_set():
                began = time.monotonic()
                try:
                    entries = sq.consume(10, timeout=WAIT)
                except Exception as error:
                    if not transient(error):
                        raise
                    self.tracker.error(error)
                    self.stopping.wait(0.05)
                    continue
                self.tracker.consumed(began)
                for entry in entries:
                    self.tracker.ran(entry)
                    time.sleep(0.002)
                    while True:
                        try:
                            self.tracker.acked(sq.ack([entry]) == 1)
                            break
                        except Exception as error:
                            if _stale(error):
                                self.tracker.acked(False)
                                break
                            if not transient(error):
                                raise
                            self.tracker.error(error)  # ack is safe to re-send: again
                            self.stopping.wait(0.05)
        except BaseException as error:  # recorded for the test to assert on
            self.failures.append(error)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> float:
        began = time.monotonic()
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)
        took = time.monotonic() - began
        left = [t for t in self.threads if t.is_alive()]
        assert not left, f"consumer threads left running after stop: {left}"
        assert not self.failures, self.failures
        for c in self.conns:
            c.close()
        return took


class AsyncConsumers:
    """The same loop as asyncio tasks, on an event loop thread of its own (the test injects
    faults meanwhile)."""

    label = "Streams queue consumers (asyncio)"

    def __init__(self, port: int, tracker: Tracker, claim_idle: float) -> None:
        self.tracker = tracker
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port, self.claim_idle = port, claim_idle
        self.stopping = threading.Event()
        self.failures: list[BaseException] = []
        self.futures: list[Any] = []
        self.conns: list[redis.asyncio.Redis] = []

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _loop(self, i: int) -> None:
        conn = redis.asyncio.Redis(port=self.port)
        self.conns.append(conn)
        sq = StreamQueue(pyredislua.AsyncClient(conn), NAME, consumer=f"c{i}",
                         claim_idle=self.claim_idle, max_deliveries=100)
        try:
            while not self.stopping.is_set():
                began = time.monotonic()
                try:
                    entries = await sq.consume(10, timeout=WAIT)
                except Exception as error:
                    if not transient(error):
                        raise
                    self.tracker.error(error)
                    await asyncio.sleep(0.05)
                    continue
                self.tracker.consumed(began)
                for entry in entries:
                    self.tracker.ran(entry)
                    await asyncio.sleep(0.002)
                    while True:
                        try:
                            self.tracker.acked(await sq.ack([entry]) == 1)
                            break
                        except Exception as error:
                            if _stale(error):
                                self.tracker.acked(False)
                                break
                            if not transient(error):
                                raise
                            self.tracker.error(error)
                            await asyncio.sleep(0.05)
        except BaseException as error:  # recorded for the test to assert on
            self.failures.append(error)

    def start(self) -> None:
        self.futures = [asyncio.run_coroutine_threadsafe(self._loop(i), self.loop)
                        for i in range(CONSUMERS)]

    def stop(self, timeout: float = 10.0) -> float:
        began = time.monotonic()
        self.stopping.set()
        try:
            for f in self.futures:
                f.result(timeout)
            took = time.monotonic() - began
            assert not self.failures, self.failures

            async def others() -> list[asyncio.Task[Any]]:
                return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

            left = self._call(others())
            assert not left, f"tasks left running after stop: {left}"
            for c in self.conns:
                self._call(c.aclose())
            return took
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


RUNNERS: dict[str, Any] = {"threads": ThreadConsumers, "asyncio": AsyncConsumers}


def produce(port: int, payloads: Sequence[str]) -> None:
    """Produce (a fresh connection; connection errors retried: the server may be restarting)."""
    through_restarts(port, lambda client: StreamQueue(client, NAME).produce(payloads))


def stats(port: int) -> Any:
    conn = redis.Redis(port=port)
    try:
        return StreamQueue(pyredislua.Client(conn), NAME).stats()
    finally:
        conn.close()


AOF, WIPED = "restart with AOF", "restart without persistence"
PAUSE = "SIGSTOP 1.5 s (past the 1 s claim_idle)"
KILL, OOM = "CLIENT KILL", "maxmemory and back"
FAULTS = [AOF, WIPED, PAUSE, KILL, OOM]


def _inject(fault: str, server: FaultServer, tracker: Tracker) -> bool:
    """Strike while the consumers are busy; whether a produce was refused."""
    if fault in (AOF, WIPED):
        server.crash_restart()
    elif fault == PAUSE:
        server.pause_for(1.5).join()
    elif fault == KILL:
        for _ in range(3):
            done = len(tracker.acked_at) + 10
            server.kill_clients()
            wait_for(lambda n=done: len(tracker.acked_at) > n, what="acks between kills")
    elif fault == OOM:
        with server.out_of_memory() as admin:
            admin.config_set("maxmemory", 1)  # no headroom at all
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                produce(server.port, ["refused"])
            # consume and ack run out of memory (allow-oom): the consumers drain the stream
            acked = len(tracker.acked_at) + 40
            wait_for(lambda: len(tracker.acked_at) >= acked, what="acks at maxmemory")
        return True
    return False


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
@pytest.mark.parametrize("fault", FAULTS)
def test_stream_consumers_through_redis_faults(fault: str, kind: str,
                                               fault_report: FaultReport) -> None:
    with FaultServer(aof=fault == AOF) as server:
        before = [f"b{i}" for i in range(300)]
        after = [f"a{i}" for i in range(100)]
        produce(server.port, before)
        tracker = Tracker()
        consumers = RUNNERS[kind](server.port, tracker, claim_idle=1.0 if fault == PAUSE else 5.0)
        consumers.start()
        wait_for(lambda: tracker.count(before) >= 60, what="the consumers busy")
        struck = time.monotonic()
        refused = _inject(fault, server, tracker)
        end = time.monotonic()
        produce(server.port, after)  # after the fault: every one must be handled
        recovered = True
        try:
            wait_for(lambda: tracker.count(after) == len(after), timeout=15,
                     what="the entries produced after the fault to be handled")
            wait_for(lambda: (lambda s: s.length == 0 and s.pending == 0)(stats(server.port)),
                     timeout=15, what="the stream to drain")
        except AssertionError:
            recovered = False
        took = consumers.stop()
        never = [p for p in before + after if not tracker.runs[p]]
        destroyed = [p for p in never if fault == WIPED and p in before]
        lost = len(never) - len(destroyed)
        dups = tracker.duplicates()
        longest = tracker.longest_consume(struck)
        note = (f"{len(tracker.acked_at)} acked, {tracker.stale} acks refused as stale; "
                f"longest consume(timeout={WAIT}) {longest:.2f} s; stop in {took:.2f} s")
        if destroyed:
            note += f"; {len(destroyed)} entries not yet handled destroyed by the restart"
        fault_report.record(FaultOutcome(
            consumers.label, fault, recovered and lost == 0, tracker.first_ack_after(end),
            tracker.surfaced("producer: OutOfMemoryError" if refused else ""), lost, dups,
            note))
        assert recovered and lost == 0, never
        assert dups <= tracker.stale, "every entry handled twice follows an ack refused as stale"
        if fault != WIPED:
            assert tracker.stale == dups  # and every refused ack was an entry handled again
        if fault in (AOF, KILL, OOM):
            # nothing stalled past claim_idle and nothing was destroyed: each entry handled
            # once, every ack accepted
            assert (tracker.stale, dups) == (0, 0)
            assert len(tracker.acked_at) == len(before) + len(after)
        if fault == OOM:
            assert not tracker.errors  # consume and ack were never refused


# -- a blocking consume keeps its timeout -------------------------------------------------------


def _idle(client: Any) -> tuple[StreamQueue[Any], Any]:
    from pyredislua.queue import Queue

    return StreamQueue(client, "idle"), Queue(client, "idle")


def _blocking(sq: StreamQueue[Any], q: Any, what: str, timeout: float) -> Any:
    if what == "StreamQueue.consume":
        return sq.consume(1, timeout=timeout)
    return q.dequeue(1, timeout=timeout)


@pytest.mark.parametrize("socket_timeout", [None, 0.3], ids=["redis-py-defaults", "timeout-0.3"])
@pytest.mark.parametrize("what", ["StreamQueue.consume", "Queue.dequeue"])
def test_a_blocking_consume_keeps_its_timeout_on_a_paused_server(
        fault_server: FaultServer, fault_report: FaultReport, what: str,
        socket_timeout: float | None) -> None:
    """An idle consumer's consume(timeout=0.5) (or dequeue) while Redis is paused for 2 s: a
    timeout is a promise (issue 14 §4), kept to within scheduling noise whether or not the
    socket times out (it used to return when the server woke: 2-3.6 s)."""
    conn = redis.Redis(port=fault_server.port, socket_timeout=socket_timeout)
    sq, q = _idle(pyredislua.Client(conn))
    sq.produce(["warm"])
    sq.ack(sq.consume(1))
    q.enqueue("warm")
    q.ack(q.dequeue(1)[0])  # the code is loaded
    resume = fault_server.pause_for(2.0)
    began = time.monotonic()
    try:
        got = _blocking(sq, q, what, 0.5)
    finally:
        took = time.monotonic() - began
        resume.join()
    sockets = "redis-py defaults" if socket_timeout is None else "0.3 s socket timeout"
    fault_report.record(FaultOutcome(
        f"{what}(timeout=0.5), idle", f"SIGSTOP 2 s ({sockets})", True, None, "none", 0, 0,
        f"returned {got!r} after {took:.2f} s"))
    assert got == [] and took < 0.5 + 0.25, f"{what}(timeout=0.5) took {took:.2f} s"
    # the server answers again: the same consumer gets what is produced next
    sq.produce(["next"])
    q.enqueue("next")
    assert [x.text for x in _blocking(sq, q, what, 2.0)] == ["next"]
    conn.close()


@pytest.mark.parametrize("what", ["StreamQueue.consume", "Queue.dequeue"])
async def test_an_async_blocking_consume_keeps_its_timeout_on_a_paused_server(
        fault_server: FaultServer, what: str) -> None:
    conn = redis.asyncio.Redis(port=fault_server.port)
    sq, q = _idle(pyredislua.AsyncClient(conn))
    await sq.produce(["warm"])
    await sq.ack(await sq.consume(1))
    resume = fault_server.pause_for(2.0)
    began = time.monotonic()
    got = await (sq.consume(1, timeout=0.5) if what == "StreamQueue.consume"
                 else q.dequeue(1, timeout=0.5))
    took = time.monotonic() - began
    await asyncio.to_thread(resume.join)
    assert got == [] and took < 0.5 + 0.25, f"{what}(timeout=0.5) took {took:.2f} s"
    await conn.aclose()


@pytest.mark.parametrize("what", ["StreamQueue.consume", "Queue.dequeue"])
def test_a_blocking_consume_rides_out_a_restart_within_its_timeout(
        fault_server: FaultServer, fault_report: FaultReport, what: str) -> None:
    """Redis down (connection refused) for 0.5 s of a consume(timeout=3): no ConnectionError,
    and what is produced once it is back is delivered within the timeout."""
    conn = redis.Redis(port=fault_server.port)
    sq, q = _idle(pyredislua.Client(conn))
    got: list[Any] = []
    errors: list[BaseException] = []
    ended: list[float] = []

    def consume() -> None:
        try:
            got.extend(_blocking(sq, q, what, 3.0))
        except BaseException as error:  # recorded for the test to assert on
            errors.append(error)
        ended.append(time.monotonic())

    with fault_server.down():
        began = time.monotonic()
        t = threading.Thread(target=consume, daemon=True)
        t.start()
        wait_for(lambda: time.monotonic() - began >= 0.5, what="the outage")
    back = time.monotonic()
    produce_conn = redis.Redis(port=fault_server.port)
    psq, pq = _idle(pyredislua.Client(produce_conn))
    if what == "StreamQueue.consume":
        psq.produce(["after"])
    else:
        pq.enqueue("after")
    t.join(5)
    produce_conn.close()
    conn.close()
    fault_report.record(FaultOutcome(
        f"{what}(timeout=3), idle", "server down 0.5 s (connection refused)",
        not errors and len(got) == 1, ended[0] - back if ended else None,
        "; ".join(type(e).__name__ for e in errors) or "none", 0, 0,
        f"returned {len(got)} item(s) after {ended[0] - began:.2f} s" if ended else "hung"))
    assert not errors, errors
    assert [x.text for x in got] == ["after"] and ended[0] - began < 3 + 0.25
