"""Queue workers (threads and asyncio) through real faults (issue 14): Redis restarted with AOF and
without persistence, paused with SIGSTOP past the lease, its clients killed, driven to maxmemory
and back; handlers that raise, hang past their max run time, and kill the worker process; and
stop() while Redis is down. Each case records a row of the README's fault table
(``fault_report``)::

    PYREDISLUA_FAULT_TABLE=faults.md tools/dev test -m faults tests/test_faults_queue.py

Columns: *lost* counts jobs Redis accepted that never ran, beyond what the fault itself destroyed
(a restart without persistence destroys the jobs not yet run: given in the note); *duplicated*
counts extra runs of a job (at-least-once allows them only where the worker lost a lease, which
it counts: each duplicate must be matched by a ``lost`` lease). Every case also checks the
worker's counts add up (leased = acked + failed + lost + released + unsettled) and that stop()
leaves no worker thread or task behind.

The Streams queue has no worker of its own: consumers running the README's consume/ack loop
go through the same faults in ``tests/test_faults_stream.py``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

import pyredislua
from pyredislua.queue import AsyncWorker, Job, Queue, Worker, WorkerMetrics
from tests.faultkit import FaultOutcome, FaultReport, FaultServer, through_restarts, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.queue]

NAME = "faults"


class Tracker:
    """What the handlers ran (by payload) and what the worker reported."""

    def __init__(self) -> None:
        self.runs: collections.Counter[str] = collections.Counter()
        self.events: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.acked_at: list[float] = []
        self.guard = threading.Lock()

    def ran(self, job: Job) -> None:
        with self.guard:
            self.runs[job.text] += 1

    def on_event(self, event: str, job: Job | None, info: dict[str, Any]) -> None:
        with self.guard:
            self.events[event] += 1
            if event == "acked":
                self.acked_at.append(time.monotonic())
            elif event == "error":
                self.errors[info["error"].split(":", 1)[0]] += 1

    def count(self, payloads: Sequence[str]) -> int:
        with self.guard:
            return sum(1 for p in payloads if self.runs[p])

    def duplicates(self) -> int:
        with self.guard:
            return sum(n - 1 for n in self.runs.values() if n > 1)

    def first_ack_after(self, t: float) -> float | None:
        with self.guard:
            return next((at - t for at in self.acked_at if at >= t), None)

    def surfaced(self, extra: str = "") -> str:
        with self.guard:
            parts = [f"worker reported: {n}x {e}" for e, n in sorted(self.errors.items())]
        return "; ".join([*parts, *([extra] if extra else [])]) or "none"


class ThreadRunner:
    label = "worker"

    def __init__(self, port: int, tracker: Tracker,
                 handle: Callable[[Job], Any] | None = None, **options: Any) -> None:
        self.conn = redis.Redis(port=port)
        queue = Queue(pyredislua.Client(self.conn), NAME, lease=options.pop("lease", 3.0))

        def default(job: Job) -> None:
            tracker.ran(job)
            time.sleep(0.005)

        self.worker = Worker(queue, handle or default, on_event=tracker.on_event, **options)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as error:  # recorded for the test to assert on
            self.error = error

    @property
    def metrics(self) -> WorkerMetrics:
        return self.worker.metrics

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float = 10.0) -> float:
        """stop(), then wait for run() to return; how long it took."""
        began = time.monotonic()
        self.worker.stop()
        self.thread.join(timeout)
        took = time.monotonic() - began
        assert not self.thread.is_alive(), "run() did not return after stop()"
        assert self.error is None, self.error
        left = [t for t in self.worker._slots if t.is_alive()]  # abandoned ones excepted
        assert not left, f"worker threads left running: {left}"
        self.conn.close()
        return took


class AsyncRunner:
    """An AsyncWorker on its own event loop thread (the test injects faults meanwhile)."""

    label = "async worker"

    def __init__(self, port: int, tracker: Tracker,
                 handle: Callable[[Job], Any] | None = None, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        lease = options.pop("lease", 3.0)

        async def default(job: Job) -> None:
            tracker.ran(job)
            await asyncio.sleep(0.005)

        async def build() -> AsyncWorker:
            self.conn = redis.asyncio.Redis(port=port)
            queue = Queue(pyredislua.AsyncClient(self.conn), NAME, lease=lease)
            return AsyncWorker(queue, handle or default, on_event=tracker.on_event, **options)

        self.worker: AsyncWorker = self._call(build())
        self.future: Any = None

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def metrics(self) -> WorkerMetrics:
        return self.worker.metrics

    def start(self) -> None:
        self.future = asyncio.run_coroutine_threadsafe(self.worker.run(), self.loop)

    def alive(self) -> bool:
        return not self.future.done()

    def stop(self, timeout: float = 10.0) -> float:
        began = time.monotonic()
        self.worker.stop()  # from another thread: safe
        try:
            self.future.result(timeout)
            took = time.monotonic() - began
            assert not self.worker.left_running, "asyncio slots left running"

            async def others() -> list[asyncio.Task[Any]]:
                return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

            left = self._call(others())
            assert not left, f"tasks left running after stop(): {left}"
            self._call(self.conn.aclose())
            return took
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


RUNNERS: dict[str, Any] = {"threads": ThreadRunner, "asyncio": AsyncRunner}


def produce(port: int, payloads: Sequence[str], **job: Any) -> None:
    """Enqueue (a fresh connection; connection errors retried: the server may be restarting)."""

    def enqueue(client: pyredislua.Client) -> None:
        q = Queue(client, NAME)
        q.enqueue_many([q.job(p, **job) for p in payloads])

    through_restarts(port, enqueue)


def stats(port: int) -> Any:
    conn = redis.Redis(port=port)
    try:
        return Queue(pyredislua.Client(conn), NAME).stats()
    finally:
        conn.close()


def dead(port: int) -> Any:
    conn = redis.Redis(port=port)
    try:
        return Queue(pyredislua.Client(conn), NAME).dead()[1]
    finally:
        conn.close()


def _adds_up(m: WorkerMetrics) -> bool:
    return m.leased == m.acked + m.failed + m.lost + m.released + m.unsettled


def _counts(m: WorkerMetrics) -> str:
    return (f"leased {m.leased}, acked {m.acked}, failed {m.failed}, lost {m.lost}, "
            f"reaped {m.reaped}, errors {m.errors}")


# -- Redis faults --------------------------------------------------------------------------------

AOF, WIPED = "restart with AOF", "restart without persistence"
PAUSE, KILL, OOM = "SIGSTOP 1.5 s (past the 1 s lease)", "CLIENT KILL", "maxmemory and back"
READONLY = "demoted to a replica (READONLY) and back"
REDIS_FAULTS = [AOF, WIPED, PAUSE, KILL, OOM, READONLY]


def _inject(fault: str, server: FaultServer, runner: Any, tracker: Tracker) -> int:
    """Strike while the worker is busy; returns how many producer writes were refused."""
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
            try:
                produce(server.port, ["refused"])
            except redis.exceptions.OutOfMemoryError:
                pass
            else:
                raise AssertionError("an enqueue at maxmemory went through")
            # dequeue, ack and extend run out of memory: the worker drains the queue
            acked = len(tracker.acked_at) + 40
            wait_for(lambda: len(tracker.acked_at) >= acked, what="acks at maxmemory")
            assert runner.alive(), "the worker died at maxmemory"
        return 1
    elif fault == READONLY:
        with server.admin() as admin:
            admin.replicaof("127.0.0.1", 1)  # nothing listens there: a read-only replica
            try:
                wait_for(lambda: tracker.errors["ReadOnlyError"] >= 2,
                         what="the worker to report READONLY")
                assert runner.alive(), "the worker died on a read-only server"
            finally:
                admin.replicaof("no", "one")
    return 0


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
@pytest.mark.parametrize("fault", REDIS_FAULTS)
def test_workers_through_redis_faults(fault: str, kind: str, fault_report: FaultReport) -> None:
    with FaultServer(aof=fault == AOF) as server:
        before = [f"b{i}" for i in range(300)]
        after = [f"a{i}" for i in range(100)]
        produce(server.port, before)
        tracker = Tracker()
        runner = RUNNERS[kind](server.port, tracker, concurrency=4, grace=2.0,
                               lease=1.0 if fault == PAUSE else 3.0)
        runner.start()
        wait_for(lambda: tracker.count(before) >= 60, what="the worker busy")
        refused = _inject(fault, server, runner, tracker)
        end = time.monotonic()
        produce(server.port, after)  # after the fault: every one must run
        recovered = True
        try:
            wait_for(lambda: tracker.count(after) == len(after), timeout=15,
                     what="the jobs enqueued after the fault to run")
            wait_for(lambda: stats(server.port).unfinished == 0, timeout=15,
                     what="the queue to drain")
        except AssertionError:
            recovered = False
        took = runner.stop()
        m = runner.metrics
        never = [p for p in before + after if not tracker.runs[p]]
        destroyed = [p for p in never if fault == WIPED and p in before]
        lost = len(never) - len(destroyed)
        dups = tracker.duplicates()
        counters = stats(server.port).counters
        note = f"{_counts(m)}; stop() returned in {took:.2f} s"
        if destroyed:
            note += f"; {len(destroyed)} jobs not yet run destroyed by the restart"
        if refused:
            note += "; enqueue refused at maxmemory (OutOfMemoryError to the producer)"
        fault_report.record(FaultOutcome(
            runner.label, fault, recovered and lost == 0, tracker.first_ack_after(end),
            tracker.surfaced("producer: OutOfMemoryError" if refused else ""), lost, dups,
            note))
        assert recovered and lost == 0, never
        assert _adds_up(m), m
        assert dups <= m.lost, "every job run twice follows a lease the worker counted lost"
        if fault != WIPED:
            # exact (issue 14 §7): every lease counted lost was a job run again, nothing more
            # (after a restart without persistence a lost lease's job was destroyed instead)
            assert m.lost == dups, (m.lost, dups)
        if fault in (AOF, KILL, OOM, READONLY):
            # nothing expired: no lease lost, no job run twice, and the server counted
            # exactly the acks the worker did
            assert (m.lost, dups) == (0, 0), m
            assert counters["acked"] == m.acked == len(before) + len(after)
        if fault == OOM:
            assert not tracker.errors  # nothing refused it: it never had to back off
        if fault == READONLY:
            assert tracker.events["recovered"] >= 1


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
def test_a_worker_that_must_load_the_library_at_maxmemory(kind: str,
                                                          fault_report: FaultReport) -> None:
    """Issue 14 §1 where the allow-oom operations cannot help: a worker started against a full
    Redis that lacks the library (a first deploy, a new library version) has its FUNCTION LOAD
    refused. It reports OutOfMemoryError, backs off, and loads and drains once memory is back
    (it used to die with LibraryConflictError)."""
    with FaultServer() as server:
        jobs = [f"j{i}" for i in range(50)]
        produce(server.port, jobs)
        with server.admin() as admin:
            admin.function_flush()
            admin.script_flush()
        tracker = Tracker()
        with server.out_of_memory() as admin:
            admin.config_set("maxmemory", 1)  # no headroom at all
            runner = RUNNERS[kind](server.port, tracker, concurrency=2)
            runner.start()
            wait_for(lambda: tracker.errors["OutOfMemoryError"] >= 2,
                     what="the worker to report OutOfMemoryError")
            assert runner.alive(), "the worker died at maxmemory"
            assert tracker.count(jobs) == 0
        end = time.monotonic()
        recovered = True
        try:
            wait_for(lambda: tracker.count(jobs) == len(jobs), timeout=15,
                     what="the jobs to run once memory is back")
        except AssertionError:
            recovered = False
        took = runner.stop()
        m = runner.metrics
        fault_report.record(FaultOutcome(
            runner.label, "maxmemory before the library is loaded, and back", recovered,
            tracker.first_ack_after(end), tracker.surfaced(), len(jobs) - tracker.count(jobs),
            tracker.duplicates(),
            f"FUNCTION LOAD refused: backed off, then loaded; {_counts(m)}; stop() returned in "
            f"{took:.2f} s"))
        assert recovered
        assert tracker.events["recovered"] >= 1
        assert (m.acked, m.lost, tracker.duplicates()) == (len(jobs), 0, 0) and _adds_up(m)


# -- handlers that raise, hang, or kill the worker --------------------------------------------


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
def test_handlers_that_raise(kind: str, fault_report: FaultReport) -> None:
    with FaultServer() as server:
        jobs = [f"j{i}" for i in range(100)]
        bad = {p for i, p in enumerate(jobs) if i % 10 == 0}
        produce(server.port, jobs, max_attempts=2, backoff=0)
        tracker = Tracker()

        def fail(job: Job) -> None:
            tracker.ran(job)
            if job.text in bad:
                raise RuntimeError(f"cannot handle {job.text}")

        if kind == "threads":
            handle: Callable[[Job], Any] = fail
        else:
            async def handle(job: Job) -> None:
                fail(job)

        runner = RUNNERS[kind](server.port, tracker, handle, concurrency=4)
        began = time.monotonic()
        runner.start()
        wait_for(lambda: stats(server.port).unfinished == 0, what="every job settled")
        took = time.monotonic() - began
        runner.stop()
        m = runner.metrics
        rows = dead(server.port)
        fault_report.record(FaultOutcome(
            runner.label, "handler raises (10 of 100 jobs)", True, took,
            "failed events; dead letters (queue.dead())", 0, 0,
            f"{m.failed} failed attempts, {m.dead} dead letters after 2 attempts each; "
            f"{m.acked} acked"))
        assert {r.payload.decode() for r in rows} == bad
        assert all(r.reason.startswith("RuntimeError") for r in rows)
        assert (m.acked, m.failed, m.dead, m.lost, m.errors) == (90, 20, 10, 0, 0)
        assert all(tracker.runs[p] == (2 if p in bad else 1) for p in jobs)
        assert _adds_up(m)


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
def test_a_handler_that_hangs_past_its_max_run_time(kind: str,
                                                    fault_report: FaultReport) -> None:
    """One job hangs for good (max_run 0.5 s, two attempts): each attempt fails when its time
    is up, the job is dead-lettered, and the other jobs go on with the slot it held."""
    with FaultServer() as server:
        jobs = [f"j{i}" for i in range(40)]
        produce(server.port, ["hang"], max_attempts=2, backoff=0)
        produce(server.port, jobs)
        tracker = Tracker()
        release = threading.Event()

        if kind == "threads":
            def handle(job: Job) -> None:
                tracker.ran(job)
                if job.text == "hang":
                    release.wait(30)
                time.sleep(0.005)
        else:
            async def handle(job: Job) -> None:  # type: ignore[misc]
                tracker.ran(job)
                if job.text == "hang":
                    await asyncio.Event().wait()  # forever (cancelled)
                await asyncio.sleep(0.005)

        runner = RUNNERS[kind](server.port, tracker, handle, concurrency=1, prefetch=0,
                               max_run=0.5, lease=3.0)
        began = time.monotonic()
        runner.start()
        wait_for(lambda: stats(server.port).unfinished == 0, what="every job settled")
        took = time.monotonic() - began
        m = runner.metrics
        [row] = dead(server.port)
        abandoned = (len(runner.worker.abandoned_threads) if kind == "threads"
                     else m.abandoned)
        release.set()
        runner.stop()
        how = "thread abandoned (left running), a new one took the slot" if kind == "threads" \
            else "task cancelled, a new one took the slot"
        fault_report.record(FaultOutcome(
            runner.label, "handler hangs (max_run 0.5 s)", True, took,
            "timed_out and abandoned events; dead letter", 0, 0,
            f"{m.timed_out} attempts timed out: {how}; dead after 2 attempts; "
            f"{m.acked} other jobs acked with concurrency 1"))
        assert row.payload == b"hang" and row.reason == "max run time exceeded"
        assert (m.timed_out, m.failed, m.dead, m.abandoned, m.acked, m.lost) == \
            (2, 2, 1, 2, 40, 0)
        assert abandoned == 2 and tracker.runs["hang"] == 2
        assert took < 3.0  # each attempt ends at its 0.5 s limit, not at the 1.5 s renewal
        assert _adds_up(m)


WORKER_PROCESS = textwrap.dedent("""
    import asyncio, os, sys, redis, redis.asyncio, pyredislua
    from pyredislua.queue import AsyncWorker, Queue, Worker

    port, kind = int(sys.argv[1]), sys.argv[2]
    r = redis.Redis(port=port)

    def record(job):
        r.hincrby("test:runs", job.text, 1)
        if job.text == "poison":
            os._exit(3)  # the job takes the whole worker process down

    def until_drained(stats):
        return stats.unfinished == 0

    if kind == "threads":
        q = Queue(pyredislua.Client(r), "faults", lease=0.3)
        w = Worker(q, record, concurrency=4, reap_every=0.05)
        import threading, time
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        while not until_drained(q.stats()):
            time.sleep(0.02)
        w.stop()
        t.join(10)
    else:
        async def main():
            aq = Queue(pyredislua.AsyncClient(redis.asyncio.Redis(port=port)), "faults",
                            lease=0.3)

            async def handle(job):
                record(job)

            w = AsyncWorker(aq, handle, concurrency=4, reap_every=0.05)
            task = asyncio.ensure_future(w.run())
            while not until_drained(await aq.stats()):
                await asyncio.sleep(0.02)
            w.stop()
            await task
        asyncio.run(main())
""")


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
def test_a_job_that_kills_the_worker_process(kind: str, tmp_path: Path,
                                             fault_report: FaultReport) -> None:
    """os._exit in a handler: the jobs the process held are reaped and run again by the next
    process (a supervisor restarts it); the poison job is dead-lettered after its attempts."""
    with FaultServer() as server:
        jobs = [f"j{i}" for i in range(200)]
        produce(server.port, ["poison"], max_attempts=3, backoff=0)
        produce(server.port, jobs, max_attempts=20, backoff=0)  # held through every crash
        script = tmp_path / "worker.py"
        script.write_text(WORKER_PROCESS)
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        began = time.monotonic()
        crashes = 0
        for _ in range(8):  # a supervisor restarting the worker process
            code = subprocess.run([sys.executable, str(script), str(server.port), kind],
                                  env=env, timeout=30).returncode
            if code == 0:
                break
            assert code == 3
            crashes += 1
        took = time.monotonic() - began
        admin = server.admin()
        runs = {k.decode(): int(v) for k, v in admin.hgetall("test:runs").items()}
        admin.close()
        rows = dead(server.port)
        s = stats(server.port)
        dups = sum(n - 1 for p, n in runs.items() if p != "poison" and n > 1)
        never = [p for p in jobs if not runs.get(p)]
        fault_report.record(FaultOutcome(
            f"{'worker' if kind == 'threads' else 'async worker'} (process)",
            "a job kills the worker process (os._exit)", not never and len(rows) == 1, took,
            "dead letter (queue.dead())", len(never), dups,
            f"{crashes} process crashes; the held jobs reaped and run again; poison dead "
            f"after {rows[0].attempts if rows else '-'} attempts "
            f"({rows[0].reason if rows else '-'})"))
        assert not never and crashes == 3
        assert [r.payload for r in rows] == [b"poison"] and rows[0].reason == "lease expired"
        assert s.unfinished == 0 and s.counters["acked"] == len(jobs)


# -- stop() with Redis down ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
def test_stop_while_redis_is_down(kind: str, fault_report: FaultReport) -> None:
    """stop() keeps its bound when the jobs cannot be given back: run() returns after the grace
    period plus settle_timeout, reporting them unsettled; they return when their lease ends."""
    with FaultServer() as server:
        produce(server.port, [f"j{i}" for i in range(20)])
        tracker = Tracker()
        gate = threading.Event()

        if kind == "threads":
            def handle(job: Job) -> None:
                tracker.ran(job)
                gate.wait(10)
        else:
            async def handle(job: Job) -> None:  # type: ignore[misc]
                tracker.ran(job)
                while not gate.is_set():
                    await asyncio.sleep(0.01)

        runner = RUNNERS[kind](server.port, tracker, handle, concurrency=2, prefetch=0,
                               grace=0.5, settle_timeout=1.0, lease=2.0)
        runner.start()
        wait_for(lambda: sum(tracker.runs.values()) == 2, what="two jobs running")
        with server.down():
            took = runner.stop(timeout=10)
            gate.set()
        m = runner.metrics
        fault_report.record(FaultOutcome(
            runner.label, "stop() while Redis is down", took < 3.0, took,
            f"unsettled events ({m.unsettled})", 0, 0,
            f"grace 0.5 s + settle_timeout 1 s; {m.abandoned} handlers abandoned; the held "
            "jobs return to the queue when their lease ends"))
        assert took < 3.0 and m.unsettled == 2 and m.abandoned == 2 and _adds_up(m)
