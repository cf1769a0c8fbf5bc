"""Workers under real concurrency: processes SIGKILLed mid-job lose nothing; the worker helpers'
shutdown, lease extension and events."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio

import pyredislua
from pyredislua.queue import Job, Queue
from pyredislua.queue.worker import AsyncWorker, DeadLetter, Worker, WorkerMetrics
from tests.faultkit import FaultServer

pytestmark = pytest.mark.queue

WORKER = r"""
import random, sys, time, redis, pyredislua
from pyredislua.queue import Queue
from pyredislua.queue.worker import Worker, DeadLetter
url = sys.argv[1]
r = redis.Redis.from_url(url)
q = Queue(pyredislua.Client(r, mode=sys.argv[2]), "crash", lease=0.4)
done = q.keys.base + ":test:done"
acked = q.keys.base + ":test:acked"
def handle(job):
    r.sadd(done, job.id)
    time.sleep(random.random() * 0.02)
    if job.payload.startswith(b"fail"):
        raise DeadLetter("designed to fail")
def on_event(event, job, info):
    if event == "acked":
        r.rpush(acked, job.id)
print("ready", flush=True)
Worker(q, handle, concurrency=4, reap_every=0.05, on_event=on_event).run()
"""


def _spawn(url: str, mode: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-c", WORKER, url, mode], env=env,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    return proc


@pytest.mark.perf
def test_sigkilled_workers_lose_nothing(redis_url: str, r: redis.Redis) -> None:
    client = pyredislua.Client(r)
    q = Queue(client, "crash")
    total = 3000
    specs = [q.job(f"fail-{i}" if i % 50 == 0 else f"ok-{i}", max_attempts=20, backoff=0.001)
             for i in range(total)]
    ids = [e.id for e in q.enqueue_many(specs)]
    failing = {ids[i] for i in range(total) if i % 50 == 0}
    rng = random.Random(7)
    procs = [_spawn(redis_url, "function" if i % 2 else "script") for i in range(4)]
    kills = 0
    deadline = time.monotonic() + 50
    try:
        while q.stats().unfinished > 0:
            assert time.monotonic() < deadline, f"stuck: {q.stats()}"
            if kills < 8:
                victim = rng.randrange(len(procs))
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                kills += 1
                procs[victim] = _spawn(redis_url, "function" if kills % 2 else "script")
            time.sleep(0.15)  # pacing the kills, not waiting for a result
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
    stats = q.stats()
    total_dead, dead_rows = q.dead(0, 1000)
    dead_ids = {row.id for row in dead_rows}
    assert dead_ids == failing, "only the designed failures are dead letters"
    assert stats.counters["acked"] + total_dead == total
    acked_list = [x.decode() for x in r.lrange(q.keys.base + ":test:acked", 0, -1)]
    assert len(acked_list) == len(set(acked_list)), "a job was acked twice"
    ran = {x.decode() for x in r.smembers(q.keys.base + ":test:done")}
    assert ran == set(ids), "every job ran at least once"
    assert stats.counters.get("reaped", 0) > 0, "the kills should have left leases to reap"


def test_worker_acks_retries_and_dead_letters(client: pyredislua.Client) -> None:
    q = Queue(client, "w")
    q.enqueue_many([q.job("ok"), q.job("boom", max_attempts=2, backoff=0),
                    q.job("dead")])
    events: list[tuple[str, str | None]] = []

    def handle(job: Job) -> None:
        if job.text == "boom":
            raise RuntimeError("boom")
        if job.text == "dead":
            raise DeadLetter("no")

    w = Worker(q, handle, concurrency=2,
               on_event=lambda e, j, i: events.append((e, j.text if j else None)))
    t = threading.Thread(target=w.run)
    t.start()
    deadline = time.monotonic() + 10
    while q.stats().unfinished:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    w.stop()
    t.join(10)
    assert not t.is_alive()
    m = w.metrics
    assert (m.acked, m.failed, m.dead) == (1, 3, 2)
    assert ("acked", "ok") in events and ("failed", "boom") in events
    assert {r.payload for r in q.dead()[1]} == {b"boom", b"dead"}


def test_worker_extends_long_jobs(client: pyredislua.Client) -> None:
    q = Queue(client, "long")
    q.enqueue("slow")
    release = threading.Event()
    w = Worker(q, lambda job: release.wait(10), concurrency=1, lease=0.3)
    t = threading.Thread(target=w.run)
    t.start()
    deadline = time.monotonic() + 10
    while w.metrics.extended < 3:  # the 0.3 s lease outlived several times over
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert q.stats().expired_leases == 0
    release.set()
    while w.metrics.acked < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    w.stop()
    t.join(10)
    assert w.metrics.lost == 0 and q.stats().unfinished == 0


def test_shutdown_returns_unfinished_jobs(client: pyredislua.Client) -> None:
    q = Queue(client, "stop")
    q.enqueue_many(["a", "b", "c"])
    started = threading.Semaphore(0)
    never = threading.Event()

    def handle(job: Job) -> None:
        started.release()
        never.wait(5)

    w = Worker(q, handle, concurrency=2, grace=0.2)
    t = threading.Thread(target=w.run)
    t.start()
    assert started.acquire(timeout=5) and started.acquire(timeout=5)
    w.stop()
    t.join(5)
    never.set()
    assert not t.is_alive()
    s = q.stats()
    assert (s.ready, s.active) == (3, 0)
    assert all(info.attempts == 0 for info in q.peek())  # released, the attempt not counted
    assert w.metrics.released == 3  # two running after the grace period, one buffered


async def test_async_worker_processes_and_stops(aclient: pyredislua.AsyncClient) -> None:
    q = Queue(aclient, "aw")
    seen: list[str] = []
    block = asyncio.Event()

    async def handle(job: Job) -> None:
        if job.text == "hang":
            await block.wait()
        seen.append(job.text)

    w = AsyncWorker(q, handle, concurrency=4, grace=0.2)
    task = asyncio.ensure_future(w.run())
    await q.enqueue_many([str(i) for i in range(50)])
    await q.enqueue("hang")
    deadline = time.monotonic() + 10
    while len(seen) < 50:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    late_sent = time.monotonic()
    await q.enqueue("late")  # an idle worker wakes on the marker, not a poll
    while "late" not in seen:
        assert time.monotonic() - late_sent < 1.0
        await asyncio.sleep(0.005)
    w.stop()
    await asyncio.wait_for(task, 5)
    s = await q.stats()
    assert s.active == 0 and s.ready == 1 and w.metrics.released == 1  # "hang" given back
    assert w.metrics.acked == 51




def test_worker_rides_out_dropped_connections(client: pyredislua.Client, r: redis.Redis,
                                              redis_url: str) -> None:
    q = Queue(client, "drops")
    q.enqueue_many([str(i) for i in range(300)])
    wconn = redis.Redis.from_url(redis_url, client_name="queue-worker")
    wq = Queue(pyredislua.Client(wconn), "drops", lease=0.5)
    errors: list[str] = []
    w = Worker(wq, lambda job: time.sleep(0.001), concurrency=4,
               on_event=lambda e, j, i: errors.append(i["error"]) if e == "error" else None)
    t = threading.Thread(target=w.run)
    t.start()
    deadline = time.monotonic() + 30
    kills = 0
    while q.stats().unfinished:
        assert time.monotonic() < deadline, q.stats()
        if kills < 5 and w.metrics.acked > kills * 40:
            for c in r.client_list():
                if c.get("name") == "queue-worker":
                    r.client_kill_filter(_id=c["id"])
            kills += 1
        time.sleep(0.005)
    w.stop()
    t.join(10)
    assert not t.is_alive()
    assert kills == 5 and q.stats().counters["acked"] == 300


def test_prefetch_adapts_to_job_length(client: pyredislua.Client) -> None:
    q = Queue(client, "pf")
    w = Worker(q, lambda job: None, concurrency=4)
    core = w.core
    assert core.capacity == 8  # no measurement yet: one batch ahead
    core.rtt_seconds, core.job_seconds = 0.001, 5.0  # long jobs: nothing hoarded
    assert core.capacity == 4
    core.job_seconds = 0.00001  # tiny jobs: a deep buffer, capped
    assert core.capacity == 4 + 64
    assert Worker(q, lambda job: None, concurrency=4, prefetch=0).core.capacity == 4


def test_a_jobs_max_run_travels_with_it(client: pyredislua.Client, r: redis.Redis) -> None:
    """max_run set at enqueue is stored with the job and returned by dequeue; batches carrying
    it use 7 fields per job (a chunk of 6k jobs is split), batches without it stay 6 fields."""
    q = Queue(client, "mr")
    q.enqueue("one", max_run=1.5)
    q.enqueue("none")
    sizes = (1, 5, 6, 7, 12, 13)
    for n in sizes:
        made = q.enqueue_many([q.job(f"{n}-{i}", max_run=0.25 if i % 2 else None)
                               for i in range(n)])
        assert len(made) == n and all(e.created for e in made)
    q.enqueue_many([q.job(f"plain-{i}") for i in range(7)])  # 42 fields: six per job
    jobs = q.dequeue(1000)
    assert len(jobs) == 2 + sum(sizes) + 7
    by_text = {j.text: j.max_run_ms for j in jobs}
    assert by_text["one"] == 1500 and by_text["none"] == 0
    assert all(by_text[f"{n}-{i}"] == (250 if i % 2 else 0) for n in sizes for i in range(n))
    assert all(by_text[f"plain-{i}"] == 0 for i in range(7))
    assert [info.attempts for info in q.peek("active", 1)] == [1]


# -- transient and fatal errors ------------------------------------------------------------------


def test_transient_errors_are_told_from_fatal_ones() -> None:
    from redis import exceptions as rx

    from pyredislua.engine.protocol import NotSentError
    from pyredislua.errors import BadArgumentError, StaleTokenError, transient

    for error in (rx.ConnectionError("reset"), rx.TimeoutError("slow"), OSError("refused"),
                  rx.BusyLoadingError("loading"), rx.OutOfMemoryError("oom"),
                  rx.ReadOnlyError("replica"), rx.TryAgainError("again"),
                  rx.ClusterDownError("down"), rx.MasterDownError("link down"),
                  NotSentError("not sent"), asyncio.TimeoutError(),
                  rx.ResponseError("BUSY Redis is busy running a script"),
                  rx.ResponseError("NOREPLICAS Not enough good replicas to write."),
                  rx.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
                  rx.ResponseError("UNBLOCKED force unblock from blocking operation")):
        assert transient(error), error
    for error in (rx.AuthenticationError("wrong password"), rx.NoPermissionError("no perm"),
                  rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
                  rx.ResponseError("ERR unknown command"), BadArgumentError("bad"),
                  StaleTokenError("stale"), RuntimeError("bug"), rx.DataError("bad data")):
        assert not transient(error), error


def _run_in_thread(w: Worker) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            w.run()
        except BaseException as error:  # recorded for the test to assert on
            errors.append(error)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def _wait(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _async_wait(condition: Callable[[], object], timeout: float = 10.0) -> Awaitable[None]:
    async def wait() -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.005)
    return wait()


def test_a_worker_at_maxmemory_drains_the_queue(fault_server: FaultServer) -> None:
    """Issue 14 §1 and §2: at maxmemory a worker used to die on its first cycle; dequeue, ack and
    extend now run out of memory (they settle or free state), so it drains the queue."""
    client = pyredislua.Client(redis.Redis(port=fault_server.port))
    q = Queue(client, "oom")
    q.enqueue_many([str(i) for i in range(20)])
    w = Worker(q, lambda job: None, concurrency=2)
    with fault_server.out_of_memory() as admin:
        admin.config_set("maxmemory", 1)  # no headroom at all
        t, errors = _run_in_thread(w)
        _wait(lambda: w.metrics.acked == 20)
        assert w.metrics.errors == 0 and not errors
    w.stop()
    t.join(5)
    assert not t.is_alive() and not errors
    assert (w.metrics.leased, w.metrics.lost) == (20, 0)


def test_a_worker_on_a_read_only_server_waits_and_resumes(fault_server: FaultServer) -> None:
    """A transient refusal (here READONLY: the server was demoted to a replica of an unreachable
    primary, as in a failover) is ridden out with a growing, bounded pause, reported as an
    ``error`` event, and work resumes once the server takes writes again."""
    client = pyredislua.Client(redis.Redis(port=fault_server.port))
    q = Queue(client, "readonly")
    q.enqueue_many([str(i) for i in range(20)])
    events: list[tuple[str, dict[str, Any]]] = []
    w = Worker(q, lambda job: None, concurrency=2,
               on_event=lambda e, j, i: events.append((e, i)) if j is None else None)
    admin = redis.Redis(port=fault_server.port)
    admin.replicaof("127.0.0.1", 1)  # nothing listens there: it stays a read-only replica
    try:
        t, errors = _run_in_thread(w)
        _wait(lambda: w.metrics.errors >= 3)
        assert t.is_alive() and not errors and w.metrics.acked == 0
        assert all("ReadOnlyError" in i["error"] for e, i in events if e == "error")
        pauses = [i["pause"] for e, i in events if e == "error"]
        assert pauses == sorted(pauses) and pauses[0] == 0.05  # growing, bounded
    finally:
        admin.replicaof("no", "one")
    _wait(lambda: w.metrics.acked == 20)
    assert any(e == "recovered" for e, _ in events)
    w.stop()
    t.join(5)
    assert not t.is_alive() and not errors
    assert (w.metrics.leased, w.metrics.lost) == (20, 0)


async def test_an_async_worker_at_maxmemory_drains_the_queue(fault_server: FaultServer) -> None:
    aclient = pyredislua.AsyncClient(redis.asyncio.Redis(port=fault_server.port))
    q = Queue(aclient, "oom")
    await q.enqueue_many([str(i) for i in range(20)])

    async def handle(job: Job) -> None:
        return None

    w = AsyncWorker(q, handle, concurrency=2)
    with fault_server.out_of_memory() as admin:
        admin.config_set("maxmemory", 1)
        task = asyncio.ensure_future(w.run())
        await _async_wait(lambda: w.metrics.acked == 20)
        assert w.metrics.errors == 0
    w.stop()
    await asyncio.wait_for(task, 5)
    assert (w.metrics.leased, w.metrics.lost) == (20, 0)
    await aclient.redis.aclose()


async def test_an_async_worker_on_a_read_only_server_waits_and_resumes(
        fault_server: FaultServer) -> None:
    aclient = pyredislua.AsyncClient(redis.asyncio.Redis(port=fault_server.port))
    q = Queue(aclient, "readonly")
    await q.enqueue_many([str(i) for i in range(20)])

    async def handle(job: Job) -> None:
        return None

    w = AsyncWorker(q, handle, concurrency=2)
    admin = redis.Redis(port=fault_server.port)
    admin.replicaof("127.0.0.1", 1)
    try:
        task = asyncio.ensure_future(w.run())
        await _async_wait(lambda: w.metrics.errors >= 3)
        assert not task.done() and w.metrics.acked == 0
    finally:
        admin.replicaof("no", "one")
    await _async_wait(lambda: w.metrics.acked == 20)
    w.stop()
    await asyncio.wait_for(task, 5)
    assert (w.metrics.leased, w.metrics.lost) == (20, 0)
    await aclient.redis.aclose()


def test_a_fatal_error_ends_run(client: pyredislua.Client, r: redis.Redis) -> None:
    """What retrying cannot fix (a queue key holding another type) is not ridden out."""
    q = Queue(client, "fatal")
    r.set(q.keys.ready, "not a sorted set")
    w = Worker(q, lambda job: None)
    t, errors = _run_in_thread(w)
    t.join(5)
    assert not t.is_alive() and len(errors) == 1
    assert "WRONGTYPE" in str(errors[0]) or "BADSTATE" in str(errors[0])
    assert w.metrics.errors == 0


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
def test_a_handler_error_is_never_a_worker_error(kind: str, client: pyredislua.Client,
                                                 redis_url: str) -> None:
    """Handlers raising Redis' own errors (the transient ones included) fail their job only."""
    raised: list[BaseException] = [
        redis.ConnectionError("the handler's own Redis"),
        redis.exceptions.OutOfMemoryError("the handler's own OOM"), RuntimeError("plain"),
        asyncio.CancelledError()]  # not cancelled by the worker: the job's failure
    if kind == "threads":
        raised.append(KeyboardInterrupt())  # a thread's handler may raise even this
    q = Queue(client, "herr")
    q.enqueue_many([q.job(str(i), max_attempts=1) for i in range(len(raised))] + ["ok"])

    def outcome(job: Job) -> None:
        if job.text != "ok":
            raise raised[int(job.text)]

    if kind == "threads":
        w = Worker(q, outcome)
        t, errors = _run_in_thread(w)
        _wait(lambda: q.stats().unfinished == 0)
        w.stop()
        t.join(5)
        assert not errors
        metrics = w.metrics
    else:
        async def main() -> WorkerMetrics:
            aq = Queue(pyredislua.AsyncClient(redis.asyncio.Redis.from_url(redis_url),
                                                   mode=client.mode), "herr")

            async def handle(job: Job) -> None:
                outcome(job)

            aw = AsyncWorker(aq, handle)
            task = asyncio.ensure_future(aw.run())
            await _async_wait(lambda: aw.metrics.acked + aw.metrics.failed == len(raised) + 1)
            aw.stop()
            await asyncio.wait_for(task, 5)
            await aq.client.redis.aclose()
            return aw.metrics

        metrics = asyncio.run(main())
    assert (metrics.acked, metrics.failed, metrics.dead) == (1, len(raised), len(raised))
    assert metrics.errors == 0


# -- exact metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
def test_an_ack_due_with_its_extension_counts_once(kind: str, fault_server: FaultServer) -> None:
    """Issue 14 §7: a job that finishes while its renewal is due (here: Redis paused across
    both) used to be acked and then counted lost by its own extension's STALE reply."""
    q_args = {"lease": 4.0}  # renewed at 2 s
    started = threading.Event()
    if kind == "threads":
        q = Queue(pyredislua.Client(redis.Redis(port=fault_server.port)), "once", **q_args)
        q.enqueue("a")

        def handle(job: Job) -> None:
            started.set()
            time.sleep(2.6)  # the job's own length

        w = Worker(q, handle)
        t, errors = _run_in_thread(w)
        assert started.wait(5)
        time.sleep(1.6)  # pacing: the pause covers the renewal (2 s) and the end (2.6 s)
        fault_server.pause_for(1.4).join()
        _wait(lambda: w.metrics.acked + w.metrics.lost >= 1)
        w.stop()
        t.join(5)
        assert not errors
        metrics = w.metrics
    else:
        async def main() -> WorkerMetrics:
            aq = Queue(pyredislua.AsyncClient(redis.asyncio.Redis(port=fault_server.port)),
                            "once", **q_args)
            await aq.enqueue("a")

            async def handle(job: Job) -> None:
                started.set()
                await asyncio.sleep(2.6)

            aw = AsyncWorker(aq, handle)
            task = asyncio.ensure_future(aw.run())
            await _async_wait(started.is_set)
            await asyncio.sleep(1.6)
            resume = fault_server.pause_for(1.4)
            await _async_wait(lambda: not resume.is_alive())
            await _async_wait(lambda: aw.metrics.acked + aw.metrics.lost >= 1)
            aw.stop()
            await asyncio.wait_for(task, 5)
            await aq.client.redis.aclose()
            return aw.metrics

        metrics = asyncio.run(main())
    counters = Queue(pyredislua.Client(redis.Redis(port=fault_server.port)), "once").stats()
    assert (metrics.leased, metrics.acked, metrics.lost) == (1, 1, 0)
    assert counters.counters["acked"] == 1 and counters.unfinished == 0


# -- max run time ----------------------------------------------------------------------------------


def test_a_hung_thread_handler_is_abandoned_and_its_job_retried_then_dead(
        client: pyredislua.Client) -> None:
    """Issue 14 §8: past max_run the lease is no longer extended, the attempt fails (retry,
    then dead letter), the thread is abandoned and another takes its slot; the hung handler's
    late return changes nothing."""
    q = Queue(client, "hang", lease=2.0)  # renewed at 1 s, then the limit
    q.enqueue_many([q.job("hang", max_attempts=2, backoff=0), *[q.job(f"ok{i}") for i in
                                                                range(5)]])
    release = threading.Event()
    events: list[tuple[str, str | None, dict[str, Any]]] = []

    def handle(job: Job) -> None:
        if job.text == "hang":
            release.wait(30)

    w = Worker(q, handle, concurrency=1, max_run=1.5, prefetch=0,
               on_event=lambda e, j, i: events.append(
                   (e, j.text if j else None, {**i, "at": time.monotonic()})))
    t, errors = _run_in_thread(w)
    try:
        # the worker's own counts (the server's settle lands before the worker reads it)
        _wait(lambda: w.metrics.acked == 5 and w.metrics.dead == 1)
        m = w.metrics
        assert (m.timed_out, m.failed, m.dead, m.abandoned, m.acked) == (2, 2, 1, 2, 5)
        assert len(w.abandoned_threads) == 2  # each attempt's thread still hangs
        [(total, [dead])] = [q.dead()]
        assert total == 1 and dead.payload == b"hang"
        assert dead.reason == "max run time exceeded"
        assert [i["how"] for e, _, i in events if e == "abandoned"] == ["left running"] * 2
        assert any(e == "lease_extended" and j == "hang" for e, j, _ in events)  # until max_run
        started = [i["at"] for e, j, i in events if e == "started" and j == "hang"]
        timed_out = [i["at"] for e, j, i in events if e == "timed_out"]
        assert all(0 < t - s < 1.5 + 1.0 for s, t in zip(started, timed_out))  # on time
        release.set()  # the hung handlers return now: too late, ignored
        _wait(lambda: not w.abandoned_threads)
    finally:
        release.set()
        w.stop()
        t.join(5)
    assert not t.is_alive() and not errors
    assert (w.metrics.acked, w.metrics.lost, w.metrics.failed) == (5, 0, 2)
    assert not [th for th in threading.enumerate() if th.name.startswith("pyredislua-worker")]


async def test_a_hung_async_handler_is_cancelled_and_its_job_retried(
        aclient: pyredislua.AsyncClient) -> None:
    q = Queue(aclient, "ahang", lease=3.0)
    await q.enqueue_many([q.job("hang", max_attempts=3, backoff=0),
                          *[q.job(f"ok{i}") for i in range(5)]])
    cancelled = 0
    gate = asyncio.Event()

    async def handle(job: Job) -> None:
        nonlocal cancelled
        if job.text == "hang" and job.attempts < 3:
            try:
                await gate.wait()
            except asyncio.CancelledError:
                cancelled += 1
                raise

    w = AsyncWorker(q, handle, concurrency=1, max_run=0.6, prefetch=0)
    task = asyncio.ensure_future(w.run())
    await _async_wait(lambda: w.metrics.acked == 6)
    w.stop()
    await asyncio.wait_for(task, 5)
    m = w.metrics
    assert (m.timed_out, m.failed, m.dead, m.abandoned, m.acked, m.lost) == (2, 2, 0, 2, 6, 0)
    assert cancelled == 2 and not w.left_running
    assert (await q.stats()).unfinished == 0


def test_a_jobs_own_max_run_wins_over_the_workers(client: pyredislua.Client) -> None:
    q = Queue(client, "own")
    q.enqueue_many([q.job("short", max_run=0.2, max_attempts=1),
                    q.job("long", max_run=5.0, max_attempts=1),
                    q.job("default", max_attempts=1)])

    released = threading.Event()

    def handle(job: Job) -> None:
        # "long" ends well inside its own 5 s limit; the others run until the test ends, so a
        # stalled host cannot let them finish first and be acked (their limits are 0.2, 0.5 s)
        if job.text == "long":
            time.sleep(1.5)
        else:
            released.wait(30)

    w = Worker(q, handle, concurrency=3, max_run=0.5)
    t, errors = _run_in_thread(w)
    try:
        _wait(lambda: q.stats().unfinished == 0)
        w.stop()
        t.join(5)
    finally:
        released.set()
    assert not errors
    _, dead = q.dead()
    assert sorted(d.payload for d in dead) == [b"default", b"short"]  # 0.2 s and 0.5 s limits
    assert (w.metrics.acked, w.metrics.timed_out) == (1, 2)  # "long": its own 5 s limit
