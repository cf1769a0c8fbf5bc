"""A model-checked read-write lock: four clients, each on its own connection, interleave
non-blocking acquires, registering as waiters, asking again (claiming grants), giving up,
extending, releasing and lease expiry, in both modes. After every step the server must agree
with a plain Python model of the FIFO queue: never a writer with anyone else, readers share,
grants in arrival order (one writer, or the run of readers at the head), fences strictly
increasing. Expiry is made to happen on the server (the lease set to end in the past), not
simulated."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import pyredislua
from pyredislua.rwlock import Mode, RWLockKeys, acquire_call, extend_call, release_call
from tests.conftest import snapshot

pytestmark = pytest.mark.lock

CLIENTS = 4
LONG = 600_000  # leases and registrations never lapse by themselves during a run
HANDOFF = 60_000  # nor do grants
MODES: tuple[Mode, ...] = ("read", "write")


@dataclass
class Model:
    writer: str | None = None
    fence: int = 0  # the last fence issued
    readers: set[str] = field(default_factory=set)
    queue: list[tuple[Mode, str]] = field(default_factory=list)

    def holds(self, token: str, mode: Mode) -> bool:
        return self.writer == token if mode == "write" else token in self.readers

    def _grant_writer(self, token: str) -> None:
        self.fence += 1
        self.writer = token

    def promote(self) -> None:
        """What a promotion grants: the first waiting writer when nobody holds, or the waiting
        readers before the first waiting writer when no writer holds. Grantees stay in the
        queue until they claim."""
        if self.writer is not None:
            return
        for mode, token in self.queue:
            if mode == "write":
                if not self.readers:
                    self._grant_writer(token)
                break
            self.readers.add(token)

    def _claim(self, token: str, mode: Mode) -> bool:
        if (mode, token) in self.queue:
            self.queue.remove((mode, token))
        return True

    def acquire(self, token: str, mode: Mode, wait: int | None) -> bool:
        if self.holds(token, mode):
            return self._claim(token, mode)
        if not self.queue:
            if mode == "write" and self.writer is None and not self.readers:
                self._grant_writer(token)
                return True
            if mode == "read" and self.writer is None:
                self.readers.add(token)
                return True
            if wait:
                self.queue.append((mode, token))
            return False
        if (mode, token) not in self.queue:
            self.queue.append((mode, token))
        self.promote()
        if self.holds(token, mode):
            return self._claim(token, mode)
        if not wait:
            self.queue.remove((mode, token))
            if mode == "write":
                self.promote()
        return False

    def release(self, token: str, mode: Mode) -> bool:
        if not self.holds(token, mode):
            return False
        if mode == "write":
            self.writer = None
        else:
            self.readers.discard(token)
        if self.queue:
            self.promote()
        return True


class RWLockMachine(RuleBasedStateMachine):
    url: str = ""
    mode: str = "function"

    @initialize()
    def setup(self) -> None:
        self.admin = redis.Redis.from_url(self.url)
        self.admin.flushall()
        self.conns = [redis.Redis.from_url(self.url) for _ in range(CLIENTS)]
        self.clients = [pyredislua.Client(c, mode=self.mode) for c in self.conns]  # type: ignore[arg-type]
        self.keys = RWLockKeys("model")
        self.tokens = [f"c{i}" for i in range(CLIENTS)]
        self.model = Model()
        # what each client does: None idle, ("wait", mode), ("hold", mode)
        self.doing: list[tuple[str, Mode] | None] = [None] * CLIENTS
        self.fences_seen: list[int] = []
        self.log: list[object] = []  # the last steps, shown when an assertion fails

    def teardown(self) -> None:
        for c in [*getattr(self, "conns", []), getattr(self, "admin", None)]:
            if c is not None:
                c.close()

    def _acquire(self, c: int, mode: Mode, wait: int | None) -> None:
        token = self.tokens[c]
        expected = self.model.acquire(token, mode, wait)
        result = self.clients[c].run(acquire_call(self.keys, token, mode, LONG, wait, HANDOFF))
        self.log.append((c, mode, wait, result.acquired))
        assert result.acquired == expected, (c, mode, wait, self.model, self.log[-6:])
        if result.acquired:
            self.doing[c] = ("hold", mode)
            if mode == "write":
                assert result.fence == self.model.fence
                if not self.fences_seen or self.fences_seen[-1] != result.fence:
                    self.fences_seen.append(result.fence)
        elif wait:
            self.doing[c] = ("wait", mode)
        else:
            self.doing[c] = None

    @precondition(lambda self: None in self.doing)
    @rule(data=st.data(), mode=st.sampled_from(MODES), waits=st.booleans())
    def acquire(self, data: st.DataObject, mode: Mode, waits: bool) -> None:
        c = data.draw(st.sampled_from([i for i, d in enumerate(self.doing) if d is None]))
        self._acquire(c, mode, LONG if waits else None)

    @precondition(lambda self: any(d and d[0] == "wait" for d in self.doing))
    @rule(data=st.data(), give_up=st.booleans())
    def ask_again(self, data: st.DataObject, give_up: bool) -> None:
        c = data.draw(st.sampled_from(
            [i for i, d in enumerate(self.doing) if d and d[0] == "wait"]))
        doing = self.doing[c]
        assert doing is not None
        self._acquire(c, doing[1], 0 if give_up else LONG)

    @precondition(lambda self: any(d and d[0] == "hold" for d in self.doing))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(
            [i for i, d in enumerate(self.doing) if d and d[0] == "hold"]))
        doing = self.doing[c]
        assert doing is not None
        expected = self.model.release(self.tokens[c], doing[1])
        released = self.clients[c].run(release_call(self.keys, self.tokens[c], doing[1], HANDOFF))
        self.log.append(("release", c, doing[1], released))
        assert released == (1 if expected else 0)
        self.doing[c] = None

    @rule(c=st.integers(0, CLIENTS - 1), mode=st.sampled_from(MODES))
    def extend(self, c: int, mode: Mode) -> None:
        token = self.tokens[c]
        before = snapshot(self.admin)
        extended = self.clients[c].run(extend_call(self.keys, token, mode, LONG))
        assert extended == self.model.holds(token, mode)
        if not extended:
            assert snapshot(self.admin) == before, "a non-holder's extend must change nothing"

    @precondition(lambda self: self.model.writer is not None or self.model.readers)
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        """A holder's lease (or a grant) runs out on the server."""
        holders = sorted(self.model.readers) + (
            [self.model.writer] if self.model.writer is not None else [])
        token = data.draw(st.sampled_from(holders))
        if token == self.model.writer:
            self.admin.pexpire(self.keys.rwlock, 1)
            while self.admin.exists(self.keys.rwlock):
                time.sleep(0.001)
            self.model.writer = None
            mode: Mode = "write"
        else:
            self.admin.zadd(self.keys.readers, {token: 1}, xx=True)  # ended long ago
            self.model.readers.discard(token)
            mode = "read"
        c = self.tokens.index(token)
        self.log.append(("expire", c, mode))
        if self.doing[c] == ("hold", mode):
            self.doing[c] = None

    @invariant()
    def server_agrees_with_model(self) -> None:
        if not hasattr(self, "keys"):
            return
        r, k, m = self.admin, self.keys, self.model
        writer = r.hget(k.rwlock, "owner")
        seconds, micros = r.time()
        now = seconds * 1000 + micros // 1000
        readers = {t.decode() for t in r.zrangebyscore(k.readers, now, "+inf")}
        assert writer is None or not readers, "a writer and readers at once"
        assert (writer.decode() if writer else None) == m.writer
        assert readers == m.readers
        queue = [t.decode() for t in r.zrange(k.queue, 0, -1)]
        assert queue == [f"{mode[0]}:{token}" for mode, token in m.queue], "FIFO order"
        if m.writer is not None:
            assert int(r.hget(k.rwlock, "fence") or 0) == m.fence
        assert int(r.get(k.fence) or 0) == m.fence
        assert self.fences_seen == sorted(set(self.fences_seen)), "fences strictly increase"


@pytest.mark.parametrize("mode", ["function", "script"])
def test_rwlock_state_machine(redis_url: str, mode: str) -> None:
    machine = type(f"RWLockMachine_{mode}", (RWLockMachine,), {"url": redis_url, "mode": mode})
    machine.TestCase().runTest()
