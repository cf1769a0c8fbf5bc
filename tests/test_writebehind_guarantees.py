"""Write-behind at its edges (issues 8 and 14): an expired claim counts as an attempt and a record
that keeps killing its flusher ends in the dead letters; a claim re-sent after a lost reply
returns the same records (nothing left claimed by no flusher); versions keep rising across a
Redis that lost the store, so the sinks keep taking new writes; the flusher rides out maxmemory;
a graceful stop reports what waits out a backoff; a full lifecycle leaves only the documented
durable keys."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import ConstantBackoff
from redis.retry import Retry

import pyredislua
from pyredislua.writebehind import Record, WriteBehind
from pyredislua.writebehind.ops import claim_call, release_call
from pyredislua.writebehind.sinks import SQLiteSink
from tests.faultkit import FaultServer, wait_for

pytestmark = pytest.mark.cache

PG_DSN = os.environ.get("PYREDISLUA_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test")


def _server_past(r: redis.Redis, ms: int) -> None:
    """Wait until the server clock passes ``ms`` (a lease deadline)."""
    def past() -> bool:
        sec, usec = r.time()
        return sec * 1000 + usec // 1000 > ms
    wait_for(past, timeout=5, what="the server clock to pass a lease", interval=0.001)


def _expire(store: WriteBehind, claim: Any) -> None:
    """The flusher holding ``claim`` died: let its lease run out."""
    _server_past(store.client.redis, claim.token // 1000)


# -- an expired claim is an attempt (issue 8 §3) -------------------------------------------------


def test_an_expired_claim_counts_an_attempt_and_dead_letters_after_max_attempts(
        client: pyredislua.Client) -> None:
    store = WriteBehind(client, "crash", batch_size=10, max_attempts=3)
    store.write_many([(f"k{i}", b"v") for i in range(9)] + [("poison", b"kills the flusher")])
    crashed = store.claim(lease=0.001)  # the flusher claims a batch and dies writing it
    assert len(crashed.records) == 10
    _expire(store, crashed)
    sink = SQLiteSink()
    deaths = 0
    for _ in range(30):
        claim = store.claim(lease=0.001)
        if not claim.records:
            break
        # records back from an expired claim come alone: one crash costs one record
        assert len(claim.records) == 1
        if claim.records[0].key == "poison":
            deaths += 1
            _expire(store, claim)  # it kills the flusher again
        else:
            sink.write(claim.records)
            assert store.ack(claim) == [1]
    assert store.stats().pending == 0
    [dead] = store.dead()
    assert (dead.key, dead.attempts) == ("poison", 3) and "claim expired" in dead.error
    assert deaths == 2  # attempt 1 was the batch's crash, then two crashes alone
    assert sorted(sink.rows()) == [f"k{i}" for i in range(9)]
    counters = store.stats().counters
    assert counters["dead"] == 1 and counters["reaped"] == 12


def test_reap_counts_the_attempt_too_and_a_new_write_revives_a_dead_record(
        client: pyredislua.Client) -> None:
    store = WriteBehind(client, "reap", max_attempts=1)
    store.set("a", b"1")
    claim = store.claim(lease=0.001)
    _expire(store, claim)
    assert store.reap() == 1
    [dead] = store.dead()
    assert dead.key == "a" and dead.attempts == 1
    store.set("a", b"2")  # a new value gets fresh attempts, still flushed alone
    again = store.claim(count=100)
    assert [r.value for r in again.records] == [b"2"]
    assert store.ack(again) == [1] and store.stats().pending == 0


def test_suspects_come_alone_until_the_sink_answered_for_them(
        client: pyredislua.Client) -> None:
    store = WriteBehind(client, "clear", max_attempts=5, backoff=0)
    store.write_many([("a", b"1"), ("b", b"1"), ("c", b"1")])
    _expire(store, store.claim(lease=0.001))
    first = store.claim()
    assert [r.key for r in first.records] == ["a"] and store.ack(first) == [1]
    second = store.claim()
    assert [r.key for r in second.records] == ["b"]
    store.release(second)  # the sink was down: no attempt, b is still a suspect
    third = store.claim()
    assert [r.key for r in third.records] == ["b"] and store.ack(third) == [1]
    fourth = store.claim()
    assert [r.key for r in fourth.records] == ["c"]
    assert store.fail(fourth, [(fourth.records[0], "rejected")]) == [1]  # answered, no crash
    store.set("d", b"1")
    assert sorted(r.key for r in store.claim().records) == ["c", "d"]  # batched again


# -- re-sending (issue 14 item 5) ----------------------------------------------------------------


def test_a_claim_sent_twice_returns_the_same_records(client: pyredislua.Client) -> None:
    store = WriteBehind(client, "twice", max_attempts=5)
    store.write_many([(f"k{i}", b"v") for i in range(30)])
    call = claim_call(store.keys, 10, 60_000)
    first = client.run(call)
    again = client.run(call)  # what redis-py sends when the first reply was lost
    assert again.token == first.token and again.records == first.records
    stats = store.stats()
    assert stats.claimed == 10 and stats.dirty == 20 and stats.counters["claims"] == 1
    assert [f for f in client.redis.hkeys(store.keys.stats) if b":" in f]  # the request id
    assert store.ack(first) == [1] * 10
    assert not [f for f in client.redis.hkeys(store.keys.stats) if b":" in f]  # forgotten


def test_ack_fail_and_release_sent_twice_change_nothing_more(client: pyredislua.Client) -> None:
    store = WriteBehind(client, "settle", max_attempts=5, backoff=60)
    store.write_many([("a", b"1"), ("b", b"1"), ("c", b"1")])
    claim = store.claim()
    a, b, _c = claim.records
    assert store.ack(claim, [a]) == [1]
    assert store.ack(claim, [a]) == [2]
    assert store.fail(claim, [(b, "boom")]) == [1]
    assert store.fail(claim, [(b, "boom")]) == [0]
    release = release_call(store.keys, claim.token, ["c"])
    assert client.run(release) == 1 and client.run(release) == 0
    stats = store.stats()
    assert (stats.dirty, stats.retry, stats.claimed, stats.counters["failed"],
            stats.counters["released"], stats.counters["acked"]) == (1, 1, 0, 1, 1, 1)
    assert client.redis.hgetall(store.keys.stats).keys() == {
        b"seq", b"writes", b"claims", b"claimed", b"acked", b"failed", b"released"}


def test_a_late_ack_leaves_no_request_id_behind(client: pyredislua.Client) -> None:
    """A flusher stalls past its lease; its records come back and another flusher claims one
    (alone) and dies; the first flusher's late ack cleans the record: no claim is left holding
    nothing under a remembered request id."""
    store = WriteBehind(client, "late", max_attempts=5)
    store.write_many([("a", b"1"), ("b", b"1")])
    stalled = client.run(claim_call(store.keys, 10, 1, request_id=111))
    _expire(store, stalled)
    dying = client.run(claim_call(store.keys, 10, 60_000, request_id=222))
    assert [r.key for r in dying.records] == ["a"]  # a suspect, alone
    assert store.ack(stalled) == [1, 1]  # the stalled flusher's write went through after all
    assert store.stats().pending == 0
    assert not [f for f in client.redis.hkeys(store.keys.stats) if b":" in f]


@pytest.fixture
def slow_redis(fault_server: FaultServer) -> Iterator[redis.Redis]:
    """Times out after 0.2 s and re-sends (3 times, 0.3 s apart), like redis-py's default policy
    with a short socket timeout."""
    conn = redis.Redis(port=fault_server.port, socket_timeout=0.2,
                       retry=Retry(ConstantBackoff(0.3), 3))
    yield conn
    conn.close()


@pytest.mark.parametrize("mode", ["function", "script"])
def test_a_claim_redis_py_resends_after_a_timeout_leaves_nothing_orphaned(
        fault_server: FaultServer, slow_redis: redis.Redis, mode: str) -> None:
    client = pyredislua.Client(slow_redis, mode=mode)  # type: ignore[arg-type]
    client.load()
    store = WriteBehind(client, "resent", batch_size=5)
    store.write_many([(f"k{i}", b"v") for i in range(20)])
    stat = "cmdstat_fcall" if mode == "function" else "cmdstat_evalsha"
    with fault_server.admin() as admin:
        sent = admin.info("commandstats")[stat]["calls"]
        resume = fault_server.pause_for(0.8)
        claim = store.claim()  # sent, timed out, re-sent (the first send runs on resume)
        resume.join()
        wait_for(lambda: admin.info("commandstats")[stat]["calls"] - sent >= 2,
                 what="the claim and its re-send to run")
    assert len(claim.records) == 5
    stats = store.stats()
    assert stats.claimed == 5 and stats.dirty == 15 and stats.counters["claims"] == 1
    assert store.ack(claim) == [1] * 5 and store.stats().claimed == 0


def _flaky_pauses(server: FaultServer, n: int, seconds: float) -> None:
    for _ in range(n):
        server.pause_for(seconds).join()
        time.sleep(0.1)


class SlowSink:
    """A real SQLite sink that takes a little while per batch, so pauses land mid-flush."""

    def __init__(self) -> None:
        self.inner = SQLiteSink()
        self.batches = 0

    def write(self, records: Sequence[Record]) -> None:
        time.sleep(0.02)
        self.inner.write(records)
        self.batches += 1


def test_flusher_stop_leaves_nothing_claimed_when_calls_are_resent(
        fault_server: FaultServer, slow_redis: redis.Redis) -> None:
    client = pyredislua.Client(slow_redis, mode="function")
    store = WriteBehind(client, "stop", batch_size=10, max_delay=0.01, lease=30)
    store.write_many([(f"k{i}", b"v") for i in range(400)])
    sink = SlowSink()
    flusher = store.flusher(sink, workers=2).start()
    wait_for(lambda: sink.batches >= 2, what="flushing to start")
    _flaky_pauses(fault_server, 3, 0.5)
    report = flusher.stop(timeout=20)
    with fault_server.admin() as admin:
        assert admin.zcard(store.keys.claimed) == 0  # nothing claimed by no flusher
    assert len(sink.inner.rows()) == 400
    assert report.drained and report.claimed == 0 and report.dirty == 0


async def test_async_flusher_stop_leaves_nothing_claimed_when_calls_are_resent(
        fault_server: FaultServer) -> None:
    conn = redis.asyncio.Redis(port=fault_server.port, socket_timeout=0.2,
                               retry=redis.asyncio.retry.Retry(ConstantBackoff(0.3), 3))
    store = WriteBehind(pyredislua.AsyncClient(conn, mode="function"), "astop",
                        batch_size=10, max_delay=0.01, lease=30)
    await store.write_many([(f"k{i}", b"v") for i in range(300)])
    sink = SlowSink()
    flusher = store.flusher(sink, workers=2).start()
    while sink.batches < 2:
        await asyncio.sleep(0.01)
    await asyncio.to_thread(_flaky_pauses, fault_server, 3, 0.5)
    report = await flusher.stop(timeout=20)
    with fault_server.admin() as admin:
        assert admin.zcard(store.keys.claimed) == 0  # nothing claimed by no flusher
    assert len(sink.inner.rows()) == 300
    assert report.drained and report.claimed == 0 and not flusher.running
    await conn.aclose()


# -- versions across a Redis that lost the store (issue 14 item 6) --------------------------------


def _pg_sink(schema: str) -> Any:
    psycopg = pytest.importorskip("psycopg")
    for user in ("postgres", "root", None):
        dsn = PG_DSN + (f" user={user}" if user else "")
        try:
            psycopg.connect(dsn, connect_timeout=3).close()
        except psycopg.OperationalError as error:
            last = error
            continue
        from pyredislua.writebehind.sinks.postgres import PostgresSink

        return PostgresSink(dsn, schema=schema)
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {last}")
    pytest.skip(f"PostgreSQL is not reachable at {PG_DSN!r}: {last}")


@pytest.fixture(params=["sqlite", "postgresql"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        s: Any = SQLiteSink(str(tmp_path / "sink.db"))
        yield s
        s.close()
        return
    s = _pg_sink(f"prl_test_{secrets.token_hex(6)}")
    yield s
    s.drop()
    s.close()


@pytest.mark.parametrize("aof", [False, True], ids=["no-persistence", "aof"])
def test_new_writes_reach_the_sink_after_a_restart(sink: Any, aof: bool) -> None:
    with FaultServer(aof=aof) as server:
        conn = redis.Redis(port=server.port)
        store = WriteBehind(pyredislua.Client(conn), "restart", batch_size=100)
        keys = [f"k{i}" for i in range(300)]
        before = store.write_many([(k, b"old") for k in keys])
        store.write_many([(k, None) for k in keys[:50]])  # tombstones, forgotten once flushed
        store.flush(sink)
        server.crash_restart()
        after = store.write_many([(k, b"new") for k in keys])
        assert min(after) > max(before)
        events = store.flush(sink)
        assert sum(e.acked for e in events) == 300
        rows = sink.rows()
        stale = [k for k in keys if rows[k].value != b"new" or rows[k].deleted]
        assert stale == []
        conn.close()


# -- maxmemory (issue 14 item 2) -----------------------------------------------------------------


def test_the_flusher_drains_at_maxmemory_and_writes_are_refused_before_writing(
        fault_server: FaultServer) -> None:
    conn = redis.Redis(port=fault_server.port)
    store = WriteBehind(pyredislua.Client(conn), "oom", batch_size=20, max_delay=0.01)
    store.write_many([(f"k{i}", b"v" * 100) for i in range(200)])
    sink = SQLiteSink()
    errors: list[BaseException] = []
    with fault_server.out_of_memory() as admin:
        refused = None
        for i in range(1000):  # the kit leaves a little room: fill it
            try:
                store.set(f"extra{i}", b"x" * 4096)
            except redis.exceptions.OutOfMemoryError:
                refused = f"extra{i}"
                break
        assert refused is not None, "writes were never refused"
        assert admin.hget(store.keys.values, refused) is None  # refused before writing
        assert admin.hget(store.keys.versions, refused) is None
        written = int(refused[5:])
        flusher = store.flusher(sink, on_error=errors.append).start()
        wait_for(lambda: len(sink.rows()) == 200 + written, what="the drain at maxmemory")
        assert store.stats().pending == 0
    store.set("after", b"x")  # memory is back: writes flow again
    wait_for(lambda: "after" in sink.rows(), what="a write after maxmemory")
    report = flusher.stop()
    assert report.drained and errors == []


# -- graceful stop (issue 8 §3) ------------------------------------------------------------------


class RejectOnce:
    """Rejects each ``bad*`` record once when it is written alone (the flusher isolates it by
    splitting the batches that hold it), then takes it."""

    def __init__(self) -> None:
        self.inner = SQLiteSink()
        self.rejected: set[str] = set()

    def write(self, records: Sequence[Record]) -> None:
        for r in records:
            if r.key.startswith("bad") and (len(records) > 1 or r.key not in self.rejected):
                if len(records) == 1:
                    self.rejected.add(r.key)
                raise ValueError(f"rejected {r.key}")
        self.inner.write(records)


def test_stop_reports_records_waiting_out_a_backoff(client: pyredislua.Client) -> None:
    store = WriteBehind(client, "backoff", batch_size=10, max_delay=0.01, backoff=60)
    sink = RejectOnce()
    flusher = store.flusher(sink).start()
    store.write_many([("good", b"1"), ("bad1", b"1"), ("bad2", b"1")])
    wait_for(lambda: "good" in sink.inner.rows() and store.stats().retry == 2)
    report = flusher.stop()
    assert report.drained and report.workers_left == 0 and report.unsettled == 0
    assert report.in_backoff == 2 and report.dirty == 0 and report.claimed == 0
    assert report.next_retry_ms is not None and 55_000 < report.next_retry_ms <= 60_000
    assert flusher.stop_report is report


# -- lifecycle (issue 8 §3) ----------------------------------------------------------------------

# Keys of a store that stay once everything is flushed, with why (README, write-behind section).
DURABLE = {
    "values": "the current value of every live record: the application reads through the store",
    "versions": "the version of every live record: the next write must be newer",
    "stats": "the counters and the version clock (seq)",
}


def test_a_full_lifecycle_leaves_only_the_documented_durable_keys(
        client: pyredislua.Client) -> None:
    r = client.redis
    store = WriteBehind(client, "life", batch_size=20, max_delay=0.01, max_attempts=2,
                        backoff=0.01, max_backoff=0.01)
    sink = RejectOnce()
    with store.flusher(sink, workers=2):
        store.write_many([(f"k{i}", b"v") for i in range(100)] + [("bad1", b"v")])
        store.write_many([(f"k{i}", None) for i in range(50)])  # deleted: forgotten once flushed
        store.claim(lease=0.001)  # a flusher that died holding a claim (if it got any)
        wait_for(lambda: store.stats().pending == 0, what="everything flushed")
    store.requeue()  # whatever was dead-lettered (bad1, if the crashed claim took it)
    store.flush(sink)
    assert store.stats().pending == 0 and store.stats().dead == 0
    assert "bad1" in sink.inner.rows()
    names = {k: k.rsplit(":", 1)[1] for k in store.keys.all}
    wait_for(lambda: all(r.pttl(k) == -1 for k in r.scan_iter("prl:wb:*")),
             what="the keys with a TTL (flusher wake-ups) to expire")
    left = {names[k.decode()] for k in r.scan_iter("prl:wb:*")}
    assert left == set(DURABLE)
    assert r.hlen(store.keys.values) == 51 and r.hlen(store.keys.versions) == 51
    assert not [f for f in r.hkeys(store.keys.stats) if b":" in f]  # no claim's request id


def test_stop_keeps_its_timeout_while_redis_is_down(fault_server: FaultServer) -> None:
    conn = redis.Redis(port=fault_server.port)
    store = WriteBehind(pyredislua.Client(conn), "down", batch_size=10, max_delay=0.01)
    sink = SQLiteSink()
    flusher = store.flusher(sink).start()
    store.write_many([(f"k{i}", b"v") for i in range(20)])
    wait_for(lambda: len(sink.rows()) == 20, what="the flush")
    with fault_server.down():
        started = time.monotonic()
        report = flusher.stop(timeout=1.0)
        took = time.monotonic() - started
    assert took < 2.0  # the timeout is kept; what is left is reported
    assert report.dirty is None or report.dirty == 0
    conn.close()
