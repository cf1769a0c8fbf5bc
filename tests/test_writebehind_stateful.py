"""Write-behind against a model: several writers and flushers, a sink that rejects poison
records or crashes before writing / after writing but before the ack, leases that expire and
reaps. After quiescence the sink holds the last write of every key; applied versions never go
backwards; every acked record is in the sink; poison records are dead-lettered and the others
still flush; a record whose claims expired max_attempts times is dead-lettered too."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import pyredislua
from pyredislua.writebehind import Claim, Record, WriteBehind
from pyredislua.writebehind.core import flush_claim_plan
from pyredislua.writebehind.sinks import SQLiteSink

pytestmark = pytest.mark.cache

KEYS = ["a", "b", "c", "d", "p0"]  # p0 is poison: the sink always rejects it
POISON = {"p0"}
FLUSHERS = 3
SHORT_MS, LONG_MS = 1, 250
VALUES = st.one_of(st.none(), st.binary(max_size=6))


class Crash(BaseException):
    """The flusher process dies (not an Exception: nothing in the flush flow catches it)."""


class FaultySink:
    """A real SQLite sink that rejects poison keys and can crash after writing."""

    def __init__(self) -> None:
        self.inner = SQLiteSink(":memory:")
        self.crash_after_write = False
        self.applied: dict[str, list[int]] = {}

    def write(self, records: Sequence[Record]) -> None:
        bad = [r.key for r in records if r.key in POISON]
        if bad:
            raise ValueError(f"poison record {bad[0]}")
        before = self.inner.rows()
        self.inner.write(records)
        after = self.inner.rows()
        for key, row in after.items():
            old = before.get(key)
            if old is None or old.version != row.version:
                self.applied.setdefault(key, []).append(row.version)
        if self.crash_after_write:
            raise Crash()


class WriteBehindMachine(RuleBasedStateMachine):
    url = ""
    mode = "function"

    def __init__(self) -> None:
        super().__init__()
        self.r = redis.Redis.from_url(self.url)
        self.r.flushall()
        self.client = pyredislua.Client(self.r, mode=self.mode)  # type: ignore[arg-type]
        self.store = WriteBehind(self.client, "sm", batch_size=3, max_attempts=2, backoff=0,
                                 max_backoff=0, lease=LONG_MS / 1000)
        self.sink = FaultySink()
        self.last: dict[str, tuple[int, bytes | None]] = {}
        self.claims: dict[int, Claim] = {}
        self.acked: list[tuple[str, int]] = []

    @initialize()
    def load(self) -> None:
        self.client.load()

    def _wait_server_past(self, ms: int) -> None:
        while True:  # a 1 ms lease: wait for the server clock to pass its deadline
            sec, usec = self.r.time()
            if sec * 1000 + usec // 1000 > ms:
                return
            time.sleep(0.0005)

    @rule(key=st.sampled_from(KEYS), value=VALUES)
    def write(self, key: str, value: bytes | None) -> None:
        version = self.store.write_many([(key, value)])[0]
        assert key not in self.last or version > self.last[key][0]
        self.last[key] = (version, value)

    @rule(items=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=6))
    def write_batch(self, items: list[tuple[str, bytes | None]]) -> None:
        versions = self.store.write_many(items)
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
        for (key, value), version in zip(items, versions):
            self.last[key] = (version, value)

    @rule(flusher=st.integers(0, FLUSHERS - 1), short=st.booleans(),
          count=st.integers(1, 4))
    def claim(self, flusher: int, short: bool, count: int) -> None:
        if flusher in self.claims:
            return
        claim = self.store.claim(count, lease=(SHORT_MS if short else LONG_MS) / 1000)
        for rec in claim.records:
            version, value = self.last[rec.key]
            assert rec.version <= version
            if rec.version == version:
                assert rec.value == value
        if claim.records:
            self.claims[flusher] = claim
            if short:
                self._wait_server_past(claim.now_ms + SHORT_MS)

    @rule(flusher=st.integers(0, FLUSHERS - 1),
          crash=st.sampled_from(["none", "none", "before-write", "after-write"]))
    def flush(self, flusher: int, crash: str) -> None:
        claim = self.claims.pop(flusher, None)
        if claim is None or crash == "before-write":
            return
        self.sink.crash_after_write = crash == "after-write"
        try:
            event = self.client.drive(flush_claim_plan(
                self.store.engine, self.store.keys, self.sink, claim, self.store.config))
        except Crash:
            return
        finally:
            self.sink.crash_after_write = False
        assert event.acked + event.changed <= len(claim.records)
        rows = self.sink.inner.rows()
        for rec in claim.records:
            if rec.key not in POISON:
                assert rows[rec.key].version >= rec.version  # acked means in the sink
                self.acked.append((rec.key, rec.version))

    @rule()
    def reap(self) -> None:
        self.store.reap()

    @invariant()
    def states_are_disjoint(self) -> None:
        k = self.store.keys
        sets = [set(self.r.zrange(name, 0, -1)) for name in (k.dirty, k.retry, k.claimed,
                                                              k.dead)]
        for i in range(len(sets)):
            for j in range(i + 1, len(sets)):
                assert not (sets[i] & sets[j])

    @invariant()
    def sink_never_ahead_and_monotonic(self) -> None:
        for key, versions in self.sink.applied.items():
            assert versions == sorted(versions) and len(set(versions)) == len(versions)
            assert versions[-1] <= self.last[key][0]

    def teardown(self) -> None:
        try:
            self._quiesce()
        finally:
            self.sink.inner.close()
            self.r.close()

    def _quiesce(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            self.store.flush(self.sink)
            stats = self.store.stats()
            if stats.pending == 0:
                break
            assert time.monotonic() < deadline, stats
            if stats.claimed:  # crashed flushers' claims: wait for the server to pass them
                [(_, claim_id)] = self.r.zrange(self.store.keys.claimed, -1, -1,
                                                withscores=True)
                self._wait_server_past(int(claim_id) // 1000)  # id = deadline ms * 1000 + seq
        rows = self.sink.inner.rows()
        dead = {d.key: d for d in self.store.dead()}
        for key, (version, value) in self.last.items():
            if key in dead:
                # poison, or claims that expired max_attempts times (crashed or slow flushers
                # count an attempt each): dead-lettered at its last version, not in the sink
                assert dead[key].version == version and dead[key].attempts == 2
                assert "poison" in dead[key].error or "claim expired" in dead[key].error
                assert key in POISON or "claim expired" in dead[key].error
                assert key not in rows or rows[key].version <= version
                continue
            assert key not in POISON
            row = rows[key]
            assert row.version == version
            assert row.deleted == (value is None)
            assert row.value == value
        for key, version in self.acked:
            assert rows[key].version >= version


@pytest.mark.parametrize("mode", ["function", "script"])
def test_write_behind_state_machine(redis_url: str, mode: str) -> None:
    class Machine(WriteBehindMachine):
        pass

    Machine.url = redis_url
    Machine.mode = mode
    run_state_machine_as_test(Machine)
