"""The Streams-based queue: delivery, tokens, claims of stalled entries, dead-lettering by
delivery count, blocking, bad input, a model-based test and SIGKILLed consumer processes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import pyredislua
from pyredislua.engine.protocol import Call
from pyredislua.stream import Entry, StreamQueue
from tests.conftest import snapshot

pytestmark = pytest.mark.queue


def _stall(r: redis.Redis, sq: StreamQueue, entry_id: str, consumer: str) -> None:
    """Make a delivered entry look stalled (idle for a day), as if its consumer had died long
    ago: the stand-in for waiting out claim_idle."""
    r.xclaim(sq.keys.stream, sq.group, consumer, 0, [entry_id], idle=86_400_000, justid=True)


def test_produce_consume_ack(client: pyredislua.Client) -> None:
    sq = StreamQueue(client, "ev")
    ids = sq.produce(["a", "b", "c"])
    got = sq.consume(2)
    assert [e.id for e in got] == ids[:2] and all(e.deliveries == 1 for e in got)
    assert sq.ack(got) == 2
    s = sq.stats()
    assert (s.length, s.pending, s.dead) == (1, 0, 0)
    [c] = sq.consume(5)
    assert c.text == "c"


def test_stale_tokens_change_nothing(client: pyredislua.Client, r: redis.Redis) -> None:
    a = StreamQueue(client, "ev", consumer="a")
    b = StreamQueue(client, "ev", consumer="b")
    a.produce(["x"])
    [e] = a.consume()
    _stall(r, a, e.id, "a")
    [again] = b.consume()
    assert again.id == e.id and again.deliveries == 2 and again.consumer == "b"
    before = snapshot(r)
    for call in (lambda: a.ack([e]), lambda: a.nack(e), lambda: a.extend(e),
                 lambda: b.ack([Entry(e.id, 1, b"", "b")])):
        with pytest.raises(pyredislua.StaleTokenError):
            call()
    assert snapshot(r) == before
    assert b.ack([again]) == 1
    with pytest.raises(pyredislua.StaleTokenError):
        b.ack([again])


def test_dead_letter_by_delivery_count(client: pyredislua.Client, r: redis.Redis) -> None:
    sq = StreamQueue(client, "ev", consumer="w", max_deliveries=2)
    [entry_id] = sq.produce(["poison"])
    for n in (1, 2):
        [e] = sq.consume()
        assert e.deliveries == n
        _stall(r, sq, e.id, "w")
    assert sq.consume() == []
    [dead] = sq.dead()
    assert dead.original_id == entry_id and dead.deliveries == 2 and dead.payload == b"poison"
    s = sq.stats()
    assert (s.length, s.pending, s.dead) == (0, 0, 1)


def test_nack_retry_and_dead(client: pyredislua.Client) -> None:
    sq = StreamQueue(client, "ev", consumer="w", max_deliveries=5)
    sq.produce(["a", "b"])
    a, b = sq.consume(2)
    assert sq.nack(a, "later") == "retry"
    assert sq.nack(b, "broken", action="dead") == "dead"
    [again] = sq.consume(2)
    assert again.id == a.id and again.deliveries == 2
    assert [d.reason for d in sq.dead()] == ["broken"]


def test_extend_keeps_an_entry_from_being_claimed(client: pyredislua.Client) -> None:
    a = StreamQueue(client, "ev", consumer="a", claim_idle=0.2)
    b = StreamQueue(client, "ev", consumer="b", claim_idle=0.2)
    a.produce(["x"])
    [e] = a.consume()
    for _ in range(3):
        time.sleep(0.1)  # lets idle time accumulate: the thing under test
        a.extend(e)
        assert b.consume() == []
    assert a.ack([e]) == 1


def test_blocking_consume_wakes_on_produce(client: pyredislua.Client, redis_url: str) -> None:
    sq = StreamQueue(client, "ev")
    sq.produce(["first"])
    sq.ack(sq.consume())  # the group exists now
    other = StreamQueue(pyredislua.Client(redis.Redis.from_url(redis_url)), "ev")
    got: list[Entry] = []
    t = threading.Thread(target=lambda: got.extend(sq.consume(timeout=10)))
    t.start()
    while not any(c.get("cmd") == "xread" for c in client.redis.client_list()):
        pass
    sent = time.monotonic()
    other.produce(["hello"])
    t.join(5)
    assert [e.text for e in got] == ["hello"] and time.monotonic() - sent < 1.0


def test_blocking_consume_waits_out_its_timeout(client: pyredislua.Client) -> None:
    """The XREAD BLOCK wait (engine/waiting.py's wait_for_entry) ends by the timeout, on a
    stream that does not exist yet and on one whose group delivered everything."""
    sq = StreamQueue(client, "idle")
    for _ in range(2):
        sent = time.monotonic()
        assert sq.consume(timeout=0.3) == []
        assert 0.3 <= time.monotonic() - sent < 1.5
        sq.produce(["x"])
        sq.ack(sq.consume())


@pytest.mark.parametrize(("op", "args"), [
    ("stream.produce", ("g",)),
    ("stream.produce", ("", "x")),
    ("stream.ack", ("g", "c", "1-0")),
    ("stream.ack", ("g", "c", "nope", "1")),
    ("stream.ack", ("g", "c", "1-0", "0")),
    ("stream.nack", ("g", "c", "nope", "1")),
    ("stream.consume", ("g", "c", "0")),
    ("stream.consume", ("g", "c", "1", "0")),
])
def test_stream_bad_input_changes_nothing(client: pyredislua.Client, r: redis.Redis, op: str,
                                          args: tuple[str, ...]) -> None:
    sq = StreamQueue(client, "bad", group="g")
    sq.produce(["seed"])
    keys = (*sq.keys.all, sq.keys.cursors) if op == "stream.consume" else sq.keys.all
    before = snapshot(r)
    with pytest.raises(pyredislua.BadArgumentError):
        client.run(Call(op, keys, args))
    with pytest.raises(pyredislua.BadArgumentError):
        client.run(Call(op, keys[:1], args))
    assert snapshot(r) == before


async def test_async_stream_queue(aclient: pyredislua.AsyncClient) -> None:
    sq = StreamQueue(aclient, "aev", max_deliveries=1)
    await sq.produce(["a", "b"])
    got = await sq.consume(2)
    assert [e.text for e in got] == ["a", "b"]
    await sq.extend(got[0])
    assert await sq.ack([got[0]]) == 1
    assert await sq.nack(got[1], "x", action="dead") == "dead"
    assert len(await sq.dead()) == 1
    late = asyncio.ensure_future(sq.consume(1, timeout=5))
    await asyncio.sleep(0.05)
    await sq.produce(["late"])
    assert [e.text for e in await late] == ["late"]
    assert (await sq.stats()).pending == 1


# -- model-based ------------------------------------------------------------------------------

MAX_DELIVERIES = 3


def sid(entry_id: str) -> tuple[int, int]:
    ms_part, seq = entry_id.split("-")
    return int(ms_part), int(seq)


@dataclass
class MEntry:
    id: str
    payload: bytes
    state: str = "new"  # new | pending | dead
    holder: str | None = None
    deliveries: int = 0
    stalled: bool = False


class StreamMachine(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.admin = redis.Redis.from_url(self.url)
        self.admin.flushall()
        self.conns = [redis.Redis.from_url(self.url) for _ in range(3)]
        self.consumers = [
            StreamQueue(pyredislua.Client(c, mode="function" if i % 2 else "script"), "m",
                        consumer=f"c{i}", claim_idle=3600, max_deliveries=MAX_DELIVERIES)
            for i, c in enumerate(self.conns)]
        self.entries: dict[str, MEntry] = {}
        self.cursor: tuple[int, int] = (0, 0)  # where the group's next XAUTOCLAIM scan starts
        self.stale: list[Entry] = []
        self.live: dict[str, Entry] = {}

    def teardown(self) -> None:
        for c in self.conns:
            c.close()
        self.admin.close()

    @initialize()
    def start(self) -> None:
        self.admin.flushall()

    @rule(payloads=st.lists(st.binary(max_size=4), min_size=1, max_size=4), p=st.integers(0, 2))
    def produce(self, payloads: list[bytes], p: int) -> None:
        for entry_id, payload in zip(self.consumers[p].produce(payloads), payloads):
            self.entries[entry_id] = MEntry(entry_id, payload)

    @rule(c=st.integers(0, 2), count=st.integers(1, 4))
    def consume(self, c: int, count: int) -> None:
        q = self.consumers[c]
        got = q.consume(count)
        expected: list[tuple[str, int]] = []
        # XAUTOCLAIM: from the cursor, look at up to 10 x count pending entries in id order,
        # claiming the stalled ones (up to count); the next cursor follows the last one looked at.
        pel = sorted((e for e in self.entries.values() if e.state == "pending"
                      and sid(e.id) >= self.cursor), key=lambda e: sid(e.id))
        stalled: list[MEntry] = []
        looked = 0
        for e in pel:
            if looked == 10 * count or len(stalled) == count:
                break
            looked += 1
            if e.stalled:
                stalled.append(e)
        self.cursor = sid(pel[looked].id) if looked < len(pel) else (0, 0)
        for e in stalled:
            self._retire(e)
            e.deliveries += 1
            if e.deliveries > MAX_DELIVERIES:
                e.state = "dead"
            else:
                e.holder, e.stalled = q.consumer, False
                expected.append((e.id, e.deliveries))
        fresh = sorted((e for e in self.entries.values() if e.state == "new"),
                       key=lambda e: sid(e.id))[:count - len(expected)]
        for e in fresh:
            e.state, e.holder, e.deliveries = "pending", q.consumer, 1
            expected.append((e.id, 1))
        assert [(e.id, e.deliveries) for e in got] == expected
        for e in got:
            assert e.payload == self.entries[e.id].payload
            self.live[e.id] = e

    def _retire(self, e: MEntry) -> None:
        old = self.live.pop(e.id, None)
        if old is not None:
            self.stale.append(old)

    def _live(self) -> list[str]:
        return sorted(self.live)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        entry_id = data.draw(st.sampled_from(self._live()))
        entry = self.live.pop(entry_id)
        q = next(q for q in self.consumers if q.consumer == entry.consumer)
        assert q.ack([entry]) == 1
        self.stale.append(entry)
        del self.entries[entry_id]

    @precondition(lambda self: self.live)
    @rule(data=st.data(), action=st.sampled_from(["retry", "dead"]))
    def nack(self, data: st.DataObject, action: str) -> None:
        entry_id = data.draw(st.sampled_from(self._live()))
        entry = self.live[entry_id]
        q = self.consumers[0]
        assert q.nack(entry, "no", action) == action  # type: ignore[arg-type]
        e = self.entries[entry_id]
        if action == "dead":
            self._retire(e)
            e.state = "dead"
        else:
            e.stalled = True  # still this holder's until claimed

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def stall(self, data: st.DataObject) -> None:
        """Its consumer crashed or hangs: the entry's idle time passes claim_idle."""
        entry_id = data.draw(st.sampled_from(self._live()))
        entry = self.live[entry_id]
        _stall(self.admin, self.consumers[0], entry_id, entry.consumer)
        self.entries[entry_id].stalled = True

    @precondition(lambda self: self.stale)
    @rule(data=st.data(), op=st.sampled_from(["ack", "nack", "extend"]))
    def stale_token(self, data: st.DataObject, op: str) -> None:
        entry = data.draw(st.sampled_from(self.stale))
        q = self.consumers[1]
        before = snapshot(self.admin)
        with pytest.raises(pyredislua.StaleTokenError):
            if op == "ack":
                q.ack([entry])
            elif op == "nack":
                q.nack(entry)
            else:
                q.extend(entry)
        assert snapshot(self.admin) == before

    @invariant()
    def server_matches_model(self) -> None:
        s = self.consumers[0].stats()
        unfinished = [e for e in self.entries.values() if e.state != "dead"]
        assert s.length == len(unfinished), "an entry was lost or duplicated"
        pending = [e for e in unfinished if e.state == "pending"]
        assert s.pending in (len(pending), -1 if not self.entries else len(pending))
        assert s.dead == sum(e.state == "dead" for e in self.entries.values())
        for e in self.entries.values():
            assert e.deliveries <= MAX_DELIVERIES + (e.state == "dead")


def test_stream_state_machine(redis_url: str) -> None:
    StreamMachine.url = redis_url
    StreamMachine.TestCase().runTest()


# -- SIGKILLed consumer processes -------------------------------------------------------------

CONSUMER = r"""
import random, sys, time, redis, pyredislua
from pyredislua.stream import StreamQueue
r = redis.Redis.from_url(sys.argv[1])
q = StreamQueue(pyredislua.Client(r), "crash", consumer=sys.argv[2], claim_idle=0.3,
                max_deliveries=20)
print("ready", flush=True)
while True:
    for e in q.consume(4, timeout=1):
        r.sadd("prl:sq:{crash}:test:done", e.id)
        time.sleep(random.random() * 0.02)
        q.ack([e])
        r.rpush("prl:sq:{crash}:test:acked", e.id)
"""


@pytest.mark.perf
def test_sigkilled_stream_consumers_lose_nothing(redis_url: str, r: redis.Redis) -> None:
    sq = StreamQueue(pyredislua.Client(r), "crash")
    ids = sq.produce([f"job-{i}" for i in range(1500)])
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    serial = 0

    def spawn() -> subprocess.Popen[bytes]:
        nonlocal serial
        serial += 1
        p = subprocess.Popen([sys.executable, "-c", CONSUMER, redis_url, f"w{serial}"],
                             env=env, stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        return p

    procs = [spawn() for _ in range(4)]
    rng = random.Random(3)
    kills = 0
    deadline = time.monotonic() + 50
    try:
        while sq.stats().length > 0:
            assert time.monotonic() < deadline, f"stuck: {sq.stats()}"
            if kills < 6:
                i = rng.randrange(len(procs))
                procs[i].send_signal(signal.SIGKILL)
                procs[i].wait()
                kills += 1
                procs[i] = spawn()
            time.sleep(0.15)  # pacing the kills
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
    s = sq.stats()
    assert (s.length, s.dead) == (0, 0)
    acked = [x.decode() for x in r.lrange("prl:sq:{crash}:test:acked", 0, -1)]
    assert len(acked) == len(set(acked)), "an entry was acked twice"
    assert {x.decode() for x in r.smembers("prl:sq:{crash}:test:done")} == set(ids)


@pytest.mark.parametrize("op", ["ack", "nack", "extend"])
@pytest.mark.parametrize("stream_exists", [True, False], ids=["stream", "no-stream"])
def test_an_unknown_group_is_notfound_and_changes_nothing(
        client: pyredislua.Client, r: redis.Redis, op: str, stream_exists: bool) -> None:
    """Issue 8: these used to reply Redis' raw NOGROUP."""
    if stream_exists:
        StreamQueue(client, "ng", group="real").produce(["x"])
    sq = StreamQueue(client, "ng", group="missing", consumer="c")
    entry = Entry("1-0", 1, b"", "c")
    before = snapshot(r)
    with pytest.raises(pyredislua.NotFoundError, match="no consumer group"):
        if op == "ack":
            sq.ack([entry])
        elif op == "nack":
            sq.nack(entry)
        else:
            sq.extend(entry)
    assert snapshot(r) == before
