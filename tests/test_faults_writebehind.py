"""Write-behind flushers (threads and asyncio, into SQLite and PostgreSQL) and the cache
(cache-aside with single-flight, write-through) through real faults: Redis restarted with AOF and
without persistence, paused with SIGSTOP past the lease, its clients killed, driven to maxmemory
and back; PostgreSQL backends terminated and a table locked; sinks that raise, hang, or kill the
flusher process. Each case records a row of the README's fault table (``fault_report``)::

    PYREDISLUA_FAULT_TABLE=faults.md tools/dev test -m faults tests/test_faults_writebehind.py

Write-behind columns: *lost* counts keys whose last write Redis accepted never reached the sink,
beyond what the fault itself destroyed (a restart without persistence destroys what was not yet
flushed: given in the note); *duplicated* counts records written to the sink more than once at
the same version (at-least-once allows it; the sinks apply a version once).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

import pyredislua
from pyredislua.cache import Cache
from pyredislua.writebehind import FlushEvent, Record, StopReport, WriteBehind
from pyredislua.writebehind.sinks import SQLiteSink
from tests.faultkit import FaultOutcome, FaultReport, FaultServer, postgres_outage, wait_for

pytestmark = pytest.mark.faults

PG_DSN = os.environ.get("PYREDISLUA_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test")
KEYS = [f"k{i:03d}" for i in range(100)]
CONFIG = {"batch_size": 25, "max_delay": 0.02, "lease": 0.5, "max_attempts": 5,
          "backoff": 0.05, "max_backoff": 0.2, "unavailable_delay": 0.05}


# -- sinks -------------------------------------------------------------------------------------


class TrackingSink:
    """A real sink that counts what it applied: a (key, version) written twice is a duplicate."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.applied: collections.Counter[tuple[str, int]] = collections.Counter()
        self.guard = threading.Lock()
        self.hook: Callable[[Sequence[Record]], None] | None = None

    def write(self, records: Sequence[Record]) -> None:
        if self.hook is not None:
            self.hook(records)
        self.inner.write(records)
        with self.guard:
            for r in records:
                self.applied[(r.key, r.version)] += 1

    def duplicates(self) -> int:
        with self.guard:
            return sum(n - 1 for n in self.applied.values() if n > 1)

    def values(self) -> dict[str, bytes | None]:
        return {k: row.value for k, row in self.inner.rows().items()}


def _pg_dsn() -> str:
    psycopg = pytest.importorskip("psycopg")
    last: Exception | None = None
    for user in ("postgres", "root", None):
        dsn = PG_DSN + (f" user={user}" if user else "")
        try:
            psycopg.connect(dsn, connect_timeout=3).close()
            return dsn
        except psycopg.OperationalError as error:
            last = error
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {last}")
    pytest.skip(f"PostgreSQL is not reachable at {PG_DSN!r}: {last}")


@contextlib.contextmanager
def make_sink(kind: str, tmp_path: Path) -> Iterator[tuple[TrackingSink, str | None]]:
    """A fresh sink of ``kind``; yields it with its PostgreSQL table (schema.table) if any."""
    if kind == "sqlite":
        inner: Any = SQLiteSink(str(tmp_path / f"sink-{secrets.token_hex(3)}.db"))
        try:
            yield TrackingSink(inner), None
        finally:
            inner.close()
        return
    from pyredislua.writebehind.sinks.postgres import PostgresSink

    schema = f"prl_fault_{secrets.token_hex(5)}"
    inner = PostgresSink(_pg_dsn(), schema=schema)
    try:
        yield TrackingSink(inner), f"{schema}.prl_writebehind"
    finally:
        with contextlib.suppress(Exception):
            inner.drop()
        inner.close()


# -- flushers ------------------------------------------------------------------------------------


class Observed:
    """What a flusher reported: flush times, errors by type."""

    def __init__(self) -> None:
        self.flushes: list[tuple[float, int]] = []
        self.errors: collections.Counter[str] = collections.Counter()

    def on_flush(self, event: FlushEvent) -> None:
        self.flushes.append((time.monotonic(), event.acked))

    def on_error(self, error: BaseException) -> None:
        self.errors[type(error).__name__] += 1

    def first_flush_after(self, t: float) -> float | None:
        return next((at for at, acked in list(self.flushes) if at >= t and acked), None)


class ThreadFlusher:
    label = "threads"

    def __init__(self, port: int, name: str, sink: Any, seen: Observed, **config: Any) -> None:
        self.conn = redis.Redis(port=port)
        store = WriteBehind(pyredislua.Client(self.conn), name, **{**CONFIG, **config})
        self.flusher = store.flusher(sink, workers=2, on_flush=seen.on_flush,
                                     on_error=seen.on_error)

    def start(self) -> None:
        self.flusher.start()

    def stop(self, timeout: float = 10) -> StopReport:
        try:
            return self.flusher.stop(timeout)
        finally:
            self.conn.close()


class AsyncFlusher:
    """An AsyncFlusher on its own event loop thread (the test drives faults meanwhile)."""

    label = "asyncio"

    def __init__(self, port: int, name: str, sink: Any, seen: Observed, **config: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def build() -> Any:
            self.conn = redis.asyncio.Redis(port=port)
            store = WriteBehind(pyredislua.AsyncClient(self.conn), name,
                                **{**CONFIG, **config})
            return store.flusher(sink, workers=2, on_flush=seen.on_flush,
                                 on_error=seen.on_error)

        self.flusher = self._run(build())

    def _run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        async def start() -> None:
            self.flusher.start()
        self._run(start())

    def stop(self, timeout: float = 10) -> StopReport:
        try:
            report: StopReport = self._run(self.flusher.stop(timeout), timeout + 5)
            self._run(self.conn.aclose())
            return report
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


FLUSHERS = {"threads": ThreadFlusher, "asyncio": AsyncFlusher}


# -- the application writing -----------------------------------------------------------------


class Writer:
    """The application: writes rounds of values and remembers what Redis accepted. A write that
    raised a connection error is sent again until accepted (what an application does); one Redis
    refused (out of memory) is dropped, and the error counted as surfaced."""

    def __init__(self, port: int, name: str) -> None:
        self.conn = redis.Redis(port=port)
        self.store = WriteBehind(pyredislua.Client(self.conn), name, **CONFIG)
        self.accepted: dict[str, tuple[float, bytes]] = {}
        self.errors: collections.Counter[str] = collections.Counter()
        self.refused = 0

    def write(self, keys: Sequence[str], value: bytes, deadline: float = 20.0) -> None:
        until = time.monotonic() + deadline
        for i in range(0, len(keys), 25):
            chunk = list(keys[i:i + 25])
            while True:
                try:
                    self.store.write_many([(k, value) for k in chunk])
                    at = time.monotonic()
                    for k in chunk:
                        self.accepted[k] = (at, value)
                    break
                except redis.exceptions.OutOfMemoryError as error:
                    self.errors[type(error).__name__] += 1
                    self.refused += len(chunk)
                    break
                except (redis.ConnectionError, redis.TimeoutError) as error:
                    self.errors[type(error).__name__] += 1
                    assert time.monotonic() < until, "the writer never got through"
                    time.sleep(0.05)

    def close(self) -> None:
        self.conn.close()


def _surfaced(writer: Writer, seen: Observed) -> str:
    parts = [f"writer: {n}x {name}" for name, n in sorted(writer.errors.items())]
    parts += [f"flusher reported: {n}x {name}" for name, n in sorted(seen.errors.items())]
    return "; ".join(parts) or "none"


def _converged(sink: TrackingSink, writer: Writer, keys: Sequence[str]) -> bool:
    values = sink.values()
    return all(values.get(k) == writer.accepted[k][1] for k in keys if k in writer.accepted)


# -- write-behind through Redis faults ------------------------------------------------------------


def _redis_fault(fault: str, server: FaultServer, writer: Writer,
                 drained: Callable[[], bool]) -> tuple[float, float]:
    """Inject ``fault`` right after the writer wrote round 1; returns the fault's (start, end)
    on the monotonic clock."""
    start = time.monotonic()
    if fault in ("restart with AOF", "restart without persistence"):
        server.crash_restart()
    elif fault == "SIGSTOP 1 s (past the 0.5 s lease)":
        server.pause_for(1.0).join()
    elif fault == "CLIENT KILL":
        for _ in range(3):
            server.kill_clients()
            writer.write(KEYS[:10], b"during")
    elif fault == "maxmemory and back":
        with server.out_of_memory() as admin:
            admin.config_set("maxmemory", 1)  # no headroom left at all
            writer.write(KEYS[:50], b"refused")  # refused, surfaced to the writer
            # the flusher drains what was accepted while Redis is out of memory
            wait_for(drained, what="the flusher to drain at maxmemory")
    else:
        raise AssertionError(fault)
    return start, time.monotonic()


REDIS_FAULTS = ["restart with AOF", "restart without persistence",
                "SIGSTOP 1 s (past the 0.5 s lease)", "CLIENT KILL", "maxmemory and back"]


@pytest.mark.parametrize("sink_kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("flusher_kind", ["threads", "asyncio"])
@pytest.mark.parametrize("fault", REDIS_FAULTS)
def test_write_behind_through_redis_faults(fault: str, flusher_kind: str, sink_kind: str,
                                          tmp_path: Path, fault_report: FaultReport) -> None:
    aof = fault == "restart with AOF"
    with FaultServer(aof=aof) as server, make_sink(sink_kind, tmp_path) as (sink, _):
        name = "faults"
        seen = Observed()
        flusher = FLUSHERS[flusher_kind](server.port, name, sink, seen)
        writer = Writer(server.port, name)
        flusher.start()
        writer.write(KEYS, b"round0")
        wait_for(lambda: _converged(sink, writer, KEYS), what="round 0 in the sink")
        writer.write(KEYS, b"round1")  # in flight when the fault strikes
        _start, end = _redis_fault(fault, server, writer,
                                  lambda: _converged(sink, writer, KEYS))
        writer.write(KEYS[:50], b"round2")  # after the fault: must all reach the sink
        recovered = True
        try:
            wait_for(lambda: _converged(sink, writer, KEYS[:50]), timeout=15,
                     what="the writes after the fault in the sink")
            # what was accepted before the fault reaches the sink too, unless the fault
            # destroyed it (a restart without persistence loses what was not yet flushed)
            if fault != "restart without persistence":
                wait_for(lambda: _converged(sink, writer, KEYS), timeout=15,
                         what="every accepted write in the sink")
        except AssertionError:
            recovered = False
        report = flusher.stop()
        values = sink.values()
        missing = [k for k in KEYS if values.get(k) != writer.accepted[k][1]]
        destroyed = [k for k in missing if fault == "restart without persistence"
                     and writer.accepted[k][0] < end]
        lost = len(missing) - len(destroyed)
        first = seen.first_flush_after(end)
        note = f"stop: drained={report.drained}"
        if destroyed:
            note += f"; {len(destroyed)} unflushed writes destroyed by the restart"
        if writer.refused:
            note += f"; {writer.refused} writes refused at maxmemory"
        fault_report.record(FaultOutcome(
            f"write-behind flusher ({flusher.label}) -> {sink_kind}", fault,
            recovered and lost == 0, None if first is None else max(0.0, first - end),
            _surfaced(writer, seen), lost, sink.duplicates(), note))
        writer.close()
        assert recovered and lost == 0, (missing, destroyed)
        assert report.drained and report.claimed == 0 and report.workers_left == 0
        if fault == "maxmemory and back":
            assert writer.refused > 0 and "OutOfMemoryError" not in seen.errors


# -- PostgreSQL unavailable ---------------------------------------------------------------------


@pytest.mark.parametrize("flusher_kind", ["threads", "asyncio"])
@pytest.mark.parametrize("outage", ["backends terminated", "table locked 1 s"])
def test_write_behind_through_postgres_outages(outage: str, flusher_kind: str, tmp_path: Path,
                                              fault_report: FaultReport) -> None:
    with FaultServer() as server, make_sink("postgresql", tmp_path) as (sink, table):
        seen = Observed()
        flusher = FLUSHERS[flusher_kind](server.port, "pg", sink, seen, lease=5.0)
        writer = Writer(server.port, "pg")
        flusher.start()
        writer.write(KEYS, b"round0")
        wait_for(lambda: _converged(sink, writer, KEYS), what="round 0 in the sink")
        start = time.monotonic()
        with postgres_outage(_pg_dsn(), table if outage == "table locked 1 s" else None):
            writer.write(KEYS, b"round1")
            if outage == "table locked 1 s":
                time.sleep(1.0)  # the lock is held this long: sink writes wait on it
        end = time.monotonic()
        recovered = True
        try:
            wait_for(lambda: _converged(sink, writer, KEYS), timeout=15,
                     what="every accepted write in the sink")
        except AssertionError:
            recovered = False
        report = flusher.stop()
        values = sink.values()
        lost = sum(1 for k in KEYS if values.get(k) != writer.accepted[k][1])
        first = seen.first_flush_after(end)
        fault_report.record(FaultOutcome(
            f"write-behind flusher ({flusher.label}) -> postgresql", f"PostgreSQL {outage}",
            recovered and lost == 0, None if first is None else max(0.0, first - end),
            _surfaced(writer, seen), lost, sink.duplicates(),
            f"outage {end - start:.1f} s; stop: drained={report.drained}"))
        writer.close()
        assert recovered and lost == 0 and report.drained


# -- sinks that raise, hang, or kill the flusher --------------------------------------------------


@pytest.mark.parametrize("flusher_kind", ["threads", "asyncio"])
def test_a_sink_that_raises_dead_letters_only_the_bad_record(
        flusher_kind: str, tmp_path: Path, fault_report: FaultReport) -> None:
    with FaultServer() as server, make_sink("sqlite", tmp_path) as (sink, _):

        def reject(records: Sequence[Record]) -> None:
            if any(r.key == "poison" for r in records):
                raise ValueError("the sink rejects this record")

        sink.hook = reject
        seen = Observed()
        flusher = FLUSHERS[flusher_kind](server.port, "raise", sink, seen, max_attempts=2)
        writer = Writer(server.port, "raise")
        flusher.start()
        start = time.monotonic()
        writer.write([*KEYS, "poison"], b"v")
        store = writer.store
        wait_for(lambda: _converged(sink, writer, KEYS) and store.stats().dead == 1,
                 what="the good records flushed, the bad one dead-lettered")
        report = flusher.stop()
        [dead] = store.dead()
        fault_report.record(FaultOutcome(
            f"write-behind flusher ({flusher.label}) -> sqlite", "sink raises on one record",
            True, time.monotonic() - start, "dead letter (store.dead())", 0, sink.duplicates(),
            f"dead: {dead.key} after {dead.attempts} attempts; others flushed"))
        writer.close()
        assert dead.key == "poison" and report.drained


@pytest.mark.parametrize("flusher_kind", ["threads", "asyncio"])
def test_a_sink_that_hangs_past_the_lease(flusher_kind: str, tmp_path: Path,
                                          fault_report: FaultReport) -> None:
    """One write hangs for 1 s (the lease is 0.5 s): the other worker reaps the claim and
    writes it again; the hung write returns later, and its ack changes nothing."""
    with FaultServer() as server, make_sink("sqlite", tmp_path) as (sink, _):
        hung = threading.Event()

        def hang(records: Sequence[Record]) -> None:
            if any(r.key == "slow" for r in records) and not hung.is_set():
                hung.set()
                time.sleep(1.0)  # the hang itself

        sink.hook = hang
        seen = Observed()
        flusher = FLUSHERS[flusher_kind](server.port, "hang", sink, seen, lease=0.5)
        writer = Writer(server.port, "hang")
        flusher.start()
        writer.write(["slow", *KEYS], b"v")
        wait_for(hung.is_set, what="the hang")
        start = time.monotonic()
        wait_for(lambda: _converged(sink, writer, ["slow", *KEYS]), what="everything flushed")
        took = time.monotonic() - start
        report = flusher.stop()
        fault_report.record(FaultOutcome(
            f"write-behind flusher ({flusher.label}) -> sqlite", "sink hangs 1 s (lease 0.5 s)",
            report.drained, took, "none", 0, sink.duplicates(),
            "the claim expired (an attempt) and another worker wrote it again"))
        writer.close()
        assert report.drained and report.workers_left == 0


@pytest.mark.parametrize("flusher_kind", ["threads", "asyncio"])
def test_stop_keeps_its_timeout_when_a_sink_hangs_for_good(
        flusher_kind: str, tmp_path: Path, fault_report: FaultReport) -> None:
    with FaultServer() as server, make_sink("sqlite", tmp_path) as (sink, _):
        release = threading.Event()

        def stuck(records: Sequence[Record]) -> None:
            if any(r.key == "stuck" for r in records):
                release.wait(30)

        sink.hook = stuck
        seen = Observed()
        flusher = FLUSHERS[flusher_kind](server.port, "stuck", sink, seen, batch_size=1)
        writer = Writer(server.port, "stuck")
        flusher.start()
        writer.write(["stuck"], b"v")
        wait_for(lambda: writer.store.stats().claimed == 1, what="the stuck write")
        started = time.monotonic()
        report = flusher.stop(timeout=1.0)
        took = time.monotonic() - started
        release.set()  # let the abandoned write finish (the test must not leak the thread)
        fault_report.record(FaultOutcome(
            f"write-behind flusher ({flusher.label}) -> sqlite", "sink hangs for good",
            took < 2.5, took, f"stop() reports workers_left={report.workers_left}, "
            f"unsettled={report.unsettled}", 0, 0,
            "stop(timeout=1) returns in time; the claim expires and is retried (an attempt)"))
        writer.close()
        assert took < 2.5 and not report.drained and report.workers_left >= 1


FLUSHER_PROCESS = textwrap.dedent("""
    import os, sys, time, redis, pyredislua
    from pyredislua.writebehind.sinks import SQLiteSink
    from pyredislua.writebehind import WriteBehind

    port, db = int(sys.argv[1]), sys.argv[2]
    sink = SQLiteSink(db)

    class Deadly:
        def write(self, records):
            if any(r.key == "poison" for r in records):
                os._exit(3)  # the record takes the whole flusher process down
            sink.write(records)

    store = WriteBehind(pyredislua.Client(redis.Redis(port=port)), "deadly", batch_size=50,
                        max_delay=0.01, lease=0.3, max_attempts=3)
    flusher = store.flusher(Deadly()).start()
    deadline = time.monotonic() + 10
    while store.stats().pending and time.monotonic() < deadline:
        time.sleep(0.02)
    sys.exit(0 if flusher.stop().drained else 1)
""")


def test_a_record_that_kills_the_flusher_process_is_dead_lettered(
        tmp_path: Path, fault_report: FaultReport) -> None:
    with FaultServer() as server:
        writer = Writer(server.port, "deadly")
        writer.write([*KEYS, "poison"], b"v")
        db = str(tmp_path / "deadly.db")
        script = tmp_path / "flusher.py"
        script.write_text(FLUSHER_PROCESS)
        started = time.monotonic()
        crashes = 0
        for _ in range(8):  # a supervisor restarting the flusher process
            code = subprocess.run([sys.executable, str(script), str(server.port), db],
                                  timeout=30).returncode
            if code == 0:
                break
            assert code == 3
            crashes += 1
        took = time.monotonic() - started
        rows = SQLiteSink(db).rows()
        dead = writer.store.dead()
        fault_report.record(FaultOutcome(
            "write-behind flusher (process) -> sqlite", "a record kills the flusher process",
            len(dead) == 1 and len(rows) == 100, took, "dead letter (store.dead())", 0, 0,
            f"{crashes} process crashes, then {dead[0].key if dead else '-'} dead-lettered "
            f"after {dead[0].attempts if dead else '-'} attempts"))
        writer.close()
        assert [d.key for d in dead] == ["poison"] and "claim expired" in dead[0].error
        assert crashes == 3 and sorted(rows) == KEYS  # one batch crash, then two alone


# -- the cache ----------------------------------------------------------------------------------


def _cache_fault(fault: str, server: FaultServer, during: Callable[[], None]) -> float:
    if fault in ("restart with AOF", "restart without persistence"):
        server.crash_restart()
        during()
    elif fault == "SIGSTOP 1 s":
        resume = server.pause_for(1.0)
        during()  # the callers block meanwhile
        resume.join()
    elif fault == "CLIENT KILL":
        for _ in range(3):
            server.kill_clients()
            during()
    elif fault == "maxmemory and back":
        with server.out_of_memory() as admin:
            admin.config_set("maxmemory", 1)  # no headroom left at all
            during()
    return time.monotonic()


CACHE_FAULTS = ["restart with AOF", "restart without persistence", "SIGSTOP 1 s",
                "CLIENT KILL", "maxmemory and back"]


@pytest.mark.parametrize("fault", CACHE_FAULTS)
def test_cache_aside_with_single_flight_through_faults(fault: str,
                                                       fault_report: FaultReport) -> None:
    with FaultServer(aof=fault == "restart with AOF") as server:
        conn = redis.Redis(port=server.port)
        cache = Cache(pyredislua.Client(conn), "faults", ttl=30, lock_ttl=5)
        running: collections.Counter[str] = collections.Counter()
        overlaps = 0
        guard = threading.Lock()
        errors: collections.Counter[str] = collections.Counter()

        def compute(key: str) -> str:
            nonlocal overlaps
            with guard:
                running[key] += 1
                overlaps += running[key] > 1  # two computes of one key at once
            time.sleep(0.05)
            with guard:
                running[key] -= 1
            return f"value of {key}"

        def callers(keys: Sequence[str], n: int = 4) -> list[Any]:
            results: list[Any] = []

            def one(key: str) -> None:
                try:
                    results.append(cache.get_or_compute(key, lambda: compute(key)))
                except redis.RedisError as error:
                    with guard:
                        errors[type(error).__name__] += 1

            threads = [threading.Thread(target=one, args=(k,)) for k in keys for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            return results

        callers([f"c{i}" for i in range(5)])
        end = _cache_fault(fault, server, lambda: callers([f"d{i}" for i in range(3)]))
        results = callers([f"e{i}" for i in range(5)])
        recovered = sorted(results) == sorted(f"value of e{i}" for i in range(5)
                                              for _ in range(4))
        after = time.monotonic() - end
        fault_report.record(FaultOutcome(
            "cache-aside (single-flight)", fault, recovered, after,
            ", ".join(f"{n}x {e}" for e, n in sorted(errors.items())) or "none", 0, overlaps,
            f"computes {cache.stats.computes}, not stored {cache.stats.not_stored}, "
            f"locks skipped {cache.stats.lock_timeouts}; duplicated = overlapping computes"))
        conn.close()
        assert recovered
        if fault in ("maxmemory and back", "CLIENT KILL", "restart with AOF"):
            assert not errors  # served, computed without storing, or retried by redis-py


@pytest.mark.parametrize("fault", CACHE_FAULTS)
def test_write_through_through_faults(fault: str, fault_report: FaultReport) -> None:
    with FaultServer(aof=fault == "restart with AOF") as server:
        conn = redis.Redis(port=server.port)
        cache = Cache(pyredislua.Client(conn), "wt", ttl=30, lock_ttl=5)
        db: dict[str, Any] = {}
        errors: collections.Counter[str] = collections.Counter()

        def update(round_: int) -> None:
            for i in range(10):
                key = f"k{i}"
                try:
                    cache.write_through(key, round_, lambda k, v: db.__setitem__(k, v))
                except (redis.RedisError, TimeoutError) as error:
                    errors[type(error).__name__] += 1

        update(0)
        end = _cache_fault(fault, server, lambda: update(1))
        update(2)
        stale = 0
        for i in range(10):
            entry = cache.get(f"k{i}")
            if entry.found and cache.codec.loads(entry.value or b"null") != db[f"k{i}"]:
                stale += 1
        recovered = stale == 0 and all(db[f"k{i}"] == 2 for i in range(10))
        fault_report.record(FaultOutcome(
            "cache write-through", fault, recovered, time.monotonic() - end,
            ", ".join(f"{n}x {e}" for e, n in sorted(errors.items())) or "none", stale, 0,
            f"lost = cache entries stale against the database; not stored "
            f"{cache.stats.not_stored}"))
        conn.close()
        assert recovered
