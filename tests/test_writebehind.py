"""Write-behind: operations, sinks, the background flushers (thread and asyncio), PostgreSQL
end to end, and bad input."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from typing import NoReturn

import pytest
import redis

import pyredislua
from pyredislua.engine.protocol import Call
from pyredislua.writebehind import FlushEvent, Record, WriteBehind
from pyredislua.writebehind.ops import claim_call
from pyredislua.writebehind.sinks import SinkUnavailableError, SQLiteSink
from tests.conftest import snapshot

pytestmark = pytest.mark.cache

PG_DSN = os.environ.get("PYREDISLUA_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test")


def wait_for(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


@pytest.fixture
def store(client: pyredislua.Client) -> WriteBehind:
    return WriteBehind(client, "t", batch_size=10, max_delay=0.05, max_attempts=2, backoff=0)


def test_write_coalesces_and_versions_increase(store: WriteBehind) -> None:
    v1 = store.set("a", b"1")
    v2 = store.set("a", "2")
    v3 = store.delete("b")
    assert v1 < v2 < v3
    assert store.get_many(["a", "b", "zz"]) == [(b"2", v2), (None, v3), (None, 0)]
    stats = store.stats()
    assert (stats.dirty, stats.counters["coalesced"], stats.counters["writes"]) == (2, 1, 3)
    claim = store.claim()
    assert [(r.key, r.version, r.value) for r in claim.records] == [("a", v2, b"2"),
                                                                    ("b", v3, None)]
    assert claim.records[1].deleted


def test_claim_is_oldest_first_and_bounded(store: WriteBehind) -> None:
    for i in range(5):
        store.set(f"k{i}", str(i))
        time.sleep(0.002)
    first = store.claim(2)
    assert [r.key for r in first.records] == ["k0", "k1"] and first.left == 3
    assert [r.key for r in store.claim(10).records] == ["k2", "k3", "k4"]
    assert store.claim().records == []


def test_ack_only_if_unchanged_since_claim(store: WriteBehind) -> None:
    store.set("a", "1")
    store.set("b", "1")
    claim = store.claim()
    v = store.set("a", "2")  # written during the flush
    assert store.ack(claim) == [0, 1]
    again = store.claim()
    assert [(r.key, r.version, r.value) for r in again.records] == [("a", v, b"2")]
    assert store.ack(again) == [1]
    assert store.ack(again) == [2]  # repeat: already clean
    assert store.stats().pending == 0


def test_min_count_and_max_age_decide_in_the_claim(store: WriteBehind) -> None:
    store.set("a", "1")
    c = store.client.run(claim_call(store.keys, 5, 1000, min_count=5, max_age_ms=60_000))
    assert c.records == [] and 0 < c.wait_ms <= 60_000
    for i in range(4):
        store.set(f"k{i}", "x")
    c = store.client.run(claim_call(store.keys, 5, 1000, min_count=5, max_age_ms=60_000))
    assert len(c.records) == 5


def test_failures_back_off_then_dead_letter_without_blocking_others(
        client: pyredislua.Client) -> None:
    store = WriteBehind(client, "f", max_attempts=2, backoff=0.05, max_backoff=0.05)
    store.set("poison", "x")
    store.set("good", "y")
    claim = store.claim()
    poison = next(r for r in claim.records if r.key == "poison")
    assert store.fail(claim, [(poison, "boom")]) == [1]
    assert store.ack(claim, [r for r in claim.records if r.key == "good"]) == [1]
    assert store.claim().records == []  # in backoff
    wait_for(lambda: store.stats().now_ms >= 0 and bool(
        (c := store.claim()).records) and bool(store.fail(c, [(c.records[0], "boom2")]) == [2]))
    [dead] = store.dead()
    assert (dead.key, dead.attempts, dead.error) == ("poison", 2, "boom2")
    assert store.stats().dead == 1
    assert store.requeue() == 1
    assert [r.key for r in store.claim().records] == ["poison"]


def test_expired_claims_are_reaped(store: WriteBehind) -> None:
    store.set("a", "1")
    claim = store.claim(lease=0.001)
    assert claim.records
    wait_for(lambda: store.reap() == 1)
    again = store.claim()
    assert [r.key for r in again.records] == ["a"]
    assert store.fail(claim, [(claim.records[0], "late")]) == [0]  # stale token: no effect
    assert store.ack(claim) == [1]  # the version is in the sink: clean, whoever claims it


def test_release_gives_back_without_an_attempt(store: WriteBehind) -> None:
    store.set("a", "1")
    claim = store.claim()
    assert store.release(claim) == 1
    assert store.release(claim) == 0  # no longer claimed by it
    again = store.claim()
    assert [r.key for r in again.records] == ["a"] and again.token != claim.token
    assert "failed" not in store.stats().counters


def test_tombstone_is_forgotten_after_flush_and_versions_keep_rising(store: WriteBehind) -> None:
    v1 = store.delete("gone")
    sink = SQLiteSink()
    store.flush(sink)
    assert sink.rows()["gone"].deleted and sink.rows()["gone"].version == v1
    assert store.client.redis.hget(store.keys.meta, "gone") is None
    assert store.client.redis.hget(store.keys.versions, "gone") is None
    v2 = store.set("gone", "back")
    assert v2 > v1
    store.flush(sink)
    assert sink.rows()["gone"].value == b"back"


def test_sqlite_sink_is_version_conditional() -> None:
    sink = SQLiteSink()
    sink.write([Record("k", 5, b"new")])
    sink.write([Record("k", 3, b"old"), Record("j", 1, None)])
    sink.write([Record("k", 5, b"again")])
    rows = sink.rows()
    assert (rows["k"].version, rows["k"].value) == (5, b"new")
    assert rows["j"].deleted


class CountingSink:
    def __init__(self) -> None:
        self.inner = SQLiteSink()
        self.batches: list[int] = []
        self.down = False
        self.lock = threading.Lock()

    def write(self, records: Sequence[Record]) -> None:
        if self.down:
            raise SinkUnavailableError("down")
        if any(r.key.startswith("poison") for r in records):
            raise ValueError("poison")
        with self.lock:
            self.batches.append(len(records))
        self.inner.write(records)


def test_flusher_thread_batches_by_size_and_by_delay(client: pyredislua.Client) -> None:
    store = WriteBehind(client, "bg", batch_size=50, max_delay=0.3, max_attempts=2, backoff=0)
    sink = CountingSink()
    events: list[FlushEvent] = []
    with store.flusher(sink, on_flush=events.append):
        store.write_many([(f"k{i}", str(i)) for i in range(200)])
        wait_for(lambda: sink.inner.count() == 200)
        assert sink.batches[:4] == [50, 50, 50, 50]  # size-triggered, full batches
        started = time.monotonic()
        store.set("lonely", "1")
        wait_for(lambda: "lonely" in sink.inner.rows())
        waited = time.monotonic() - started
        assert 0.2 <= waited < 2.0  # flushed by the max delay, not before
        store.set("poison-1", "x")
        store.set("fine", "y")
        wait_for(lambda: store.stats().dead == 1 and "fine" in sink.inner.rows())
    assert sum(e.acked for e in events) == 202
    assert any(e.dead == 1 for e in events)
    assert max(e.lag_ms for e in events) >= 200


def test_flusher_drains_on_graceful_stop(client: pyredislua.Client) -> None:
    store = WriteBehind(client, "drain", batch_size=1000, max_delay=60)
    sink = CountingSink()
    flusher = store.flusher(sink).start()
    store.write_many([(f"k{i}", "v") for i in range(30)])
    flusher.stop()
    assert not flusher.running
    assert sink.inner.count() == 30 and store.stats().pending == 0


def test_sink_unavailable_releases_without_counting_attempts(client: pyredislua.Client) -> None:
    store = WriteBehind(client, "down", max_attempts=1, unavailable_delay=0.01)
    sink = CountingSink()
    sink.down = True
    store.set("a", "1")
    [event] = store.flush(sink)
    assert event.released == 1 and event.dead == 0
    sink.down = False
    wait_for(lambda: bool(store.flush(sink)) or sink.inner.count() == 1)
    assert sink.inner.count() == 1 and store.stats().dead == 0


async def test_async_flusher(aclient: pyredislua.AsyncClient) -> None:
    store = WriteBehind(aclient, "async", batch_size=20, max_delay=0.05)
    sink = CountingSink()
    async with store.flusher(sink) as flusher:
        await store.write_many([(f"k{i}", "v") for i in range(100)])
        await store.delete("k3")
        for _ in range(400):
            if sink.inner.rows().get("k3", None) and sink.inner.rows()["k3"].deleted:
                break
            await asyncio.sleep(0.01)
    assert flusher.totals.acked >= 100
    rows = sink.inner.rows()
    assert len(rows) == 100 and rows["k3"].deleted
    assert (await store.stats()).pending == 0


# -- PostgreSQL end to end -----------------------------------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    """PostgreSQL is required in CI (CI=true); on a developer's machine its absence skips."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(reason)


def _pg_sink_or_skip(schema: str) -> object:
    try:
        import psycopg
    except ImportError:
        _unavailable('psycopg is not installed (pip install "psycopg[binary]")')
    for user in ("postgres", "root", None):
        dsn = PG_DSN + (f" user={user}" if user else "")
        try:
            psycopg.connect(dsn, connect_timeout=3).close()
        except psycopg.OperationalError as error:
            last = error
            continue
        from pyredislua.writebehind.sinks.postgres import PostgresSink

        return PostgresSink(dsn, schema=schema)
    _unavailable(f"PostgreSQL is not reachable at {PG_DSN!r}: {last}")


@pytest.fixture
def pg_sink() -> Iterator[object]:
    sink = _pg_sink_or_skip(f"prl_test_{secrets.token_hex(6)}")
    yield sink
    sink.drop()  # type: ignore[attr-defined]
    sink.close()  # type: ignore[attr-defined]


class CrashingSink:
    """Wraps a real sink: crash (BaseException) after the n-th write, before the ack."""

    def __init__(self, inner: object, crash_after: set[int]) -> None:
        self.inner = inner
        self.crash_after = crash_after
        self.calls = 0

    def write(self, records: Sequence[Record]) -> None:
        self.calls += 1
        self.inner.write(records)  # type: ignore[attr-defined]
        if self.calls in self.crash_after:
            raise KeyboardInterrupt  # a BaseException: kills the flusher between write and ack


def test_postgres_end_to_end(client: pyredislua.Client, pg_sink: object) -> None:
    store = WriteBehind(client, "pg", batch_size=25, max_delay=0.05, lease=0.2,
                        max_attempts=2, backoff=0)
    last: dict[str, bytes | None] = {}
    for round_ in range(4):
        items: list[tuple[str, bytes | None]] = []
        for i in range(60):
            key = f"key{(i * 7 + round_) % 40}"
            value = None if (i + round_) % 11 == 0 else f"{round_}:{i}".encode()
            items.append((key, value))
            last[key] = value
        store.write_many(items)
    store.set("bad\x00key", "x")  # PostgreSQL rejects NUL in text: a poison record
    # a flusher that crashes after writing its first batch, before acking it
    crashing = CrashingSink(pg_sink, {1})
    with pytest.raises(KeyboardInterrupt):
        store.flush(crashing)
    with store.flusher(pg_sink):
        wait_for(lambda: store.stats().pending == 0, timeout=20)
    rows = pg_sink.rows()  # type: ignore[attr-defined]
    for key, value in last.items():
        assert rows[key].value == value and rows[key].deleted == (value is None)
    live = [k for k, v in last.items() if v is not None]  # flushed tombstones are forgotten
    versions = {k: v for k, (_, v) in zip(live, store.get_many(live))}
    assert {k: rows[k].version for k in live} == versions
    [dead] = store.dead()
    assert dead.key == "bad\x00key" and dead.attempts == 2


# -- bad input -----------------------------------------------------------------------------------


BAD_CALLS = [
    ("writebehind.write", ("0",)),  # no records
    ("writebehind.write", ("0", "set", "k")),  # not a triple
    ("writebehind.write", ("0", "put", "k", "v")),  # bad op
    ("writebehind.write", ("0", "set", "", "v")),  # empty key
    ("writebehind.write", ("0", "set", "k" * 1025, "v")),
    ("writebehind.write", ("0", "set", "ok", "v", "del", "", "")),  # second record bad
    ("writebehind.ack", ("1",)),
    ("writebehind.ack", ("1", "k", "x")),
    ("writebehind.ack", ("1", "k", "0")),
    ("writebehind.ack", ("1", "k", "1", "j")),
    ("writebehind.fail", ("1", "3", "0", "0", "k", "1")),
    ("writebehind.fail", ("1", "3", "0", "0", "k", "1", "e" * 4097)),
    ("writebehind.release", ("1", "0")),
    ("writebehind.release", ("1", "0", "")),
    ("writebehind.requeue", ("10", "")),
]


@pytest.mark.parametrize(("op", "args"), BAD_CALLS, ids=[f"{o}-{i}" for i, (o, _) in
                                                         enumerate(BAD_CALLS)])
def test_bad_records_are_rejected_and_change_nothing(
        store: WriteBehind, r: redis.Redis, op: str, args: tuple[str, ...]) -> None:
    store.set("existing", "1")
    claim = store.claim(lease=30)
    assert claim.records
    before = snapshot(r)
    with pytest.raises(pyredislua.BadArgumentError):
        store.client.run(Call(op, store.keys.all, args))
    assert snapshot(r) == before


def test_bad_get_keys(store: WriteBehind) -> None:
    with pytest.raises(pyredislua.BadArgumentError):
        store.client.run(Call("writebehind.get", (store.keys.values, store.keys.versions), ()))
    with pytest.raises(ValueError):
        store.set("", "x")
    with pytest.raises(TypeError):
        store.set("k", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WriteBehind(store.client, "x", batch_size=0)
    with pytest.raises(ValueError):
        WriteBehind(store.client, "x", max_delay=-1)


class AsyncSink:
    def __init__(self) -> None:
        self.inner = SQLiteSink()

    async def write(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(0)
        self.inner.write(records)


async def test_async_flusher_awaits_an_async_sink(aclient: pyredislua.AsyncClient) -> None:
    store = WriteBehind(aclient, "asink", batch_size=5, max_delay=0.01)
    sink = AsyncSink()
    flusher = store.flusher(sink).start()
    await store.write_many([(f"k{i}", "v") for i in range(12)])
    await flusher.stop()
    assert sink.inner.count() == 12 and flusher.totals.acked == 12


class FlakySink:
    """A real SQLite sink that fails a fraction of batches, at random, before writing."""

    def __init__(self, seed: int) -> None:
        import random

        self.inner = SQLiteSink()
        self.rng = random.Random(seed)
        self.guard = threading.Lock()
        self.calls = 0

    def write(self, records: Sequence[Record]) -> None:
        with self.guard:
            self.calls += 1
            # the first two calls fail for sure (one unavailable, one rejected), then at random
            roll = {1: 0.0, 2: 0.2}.get(self.calls, self.rng.random())
        if roll < 0.15:
            raise SinkUnavailableError("flaky")
        if roll < 0.25:
            raise ValueError("rejected")  # the flusher splits the batch; the halves retry
        self.inner.write(records)


def test_concurrent_writers_and_flusher_workers_converge(client: pyredislua.Client) -> None:
    store = WriteBehind(client, "conc", batch_size=20, max_delay=0.02, max_attempts=1000,
                        backoff=0.001, max_backoff=0.01, unavailable_delay=0.001, lease=5)
    sink = FlakySink(seed=11)
    last: dict[str, tuple[int, bytes | None]] = {}
    guard = threading.Lock()

    def writer(n: int) -> None:
        import random

        rng = random.Random(n)
        for i in range(150):
            key = f"k{rng.randrange(30)}"
            value = None if rng.random() < 0.1 else f"{n}:{i}".encode()
            [version] = store.write_many([(key, value)])
            with guard:
                if key not in last or version > last[key][0]:
                    last[key] = (version, value)

    with store.flusher(sink, workers=3) as flusher:
        writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        wait_for(lambda: store.stats().pending == 0, timeout=30)
    rows = sink.inner.rows()
    for key, (version, value) in last.items():
        assert (rows[key].version, rows[key].value, rows[key].deleted) == (
            version, value, value is None)
    assert flusher.totals.released > 0 and store.stats().dead == 0


def test_the_store_key_set_is_declared_once() -> None:
    """The nine keys come from lua/keysets/writebehind.keys: the operations that take them say
    `keys: keyset writebehind`, StoreKeys is built from the same file, and the include's name
    table (wb_K, which the helpers look keys up in by name) lists them in the same order."""
    import re
    from pathlib import Path

    from pyredislua.engine.render import load_keysets, lua_root, render_library
    from pyredislua.writebehind import StoreKeys

    names = [k.name for k in load_keysets()["writebehind"].keys]
    keys = StoreKeys("orders")
    assert keys.all == tuple(f"prl:wb:{{orders}}:{n}" for n in names)
    lib = render_library()
    takers = {op.name for op in lib.operations.values() if op.header.keyset == "writebehind"}
    assert takers == {f"writebehind.{n}" for n in (
        "ack", "claim", "dead", "fail", "reap", "release", "requeue", "stats", "write")}
    include = (Path(lua_root()) / "includes" / "writebehind.lua").read_text()
    body = re.search(r"local function wb_K\(keys\)\s*return \{(.*?)\}\s*end", include, re.S)
    assert body is not None
    table = re.findall(r"(\w+) = keys\[(\d+)\]", body.group(1))
    assert [name for name, _ in sorted(table, key=lambda t: int(t[1]))] == names
