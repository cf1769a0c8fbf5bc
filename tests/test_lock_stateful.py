"""A model-checked lock: three clients, each on its own connection, interleave acquire (plain or
as a registered waiter), redeeming hand-off tickets, extend, release and lease expiry.

Expiry is made to happen by the server (PEXPIRE 1, then waiting until the key is gone), not
simulated: the scripts see exactly what a lapsed lease looks like.
"""

from __future__ import annotations

import time

import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import pyredislua
from pyredislua.lock import LockKeys, acquire_call, extend_call, inspect_call, release_call
from tests.conftest import snapshot

pytestmark = pytest.mark.lock

CLIENTS = 3
LONG = 600_000  # leases and waits never lapse by themselves during a run


class LockMachine(RuleBasedStateMachine):
    url: str = ""
    mode: str = "function"

    @initialize()
    def setup(self) -> None:
        self.admin = redis.Redis.from_url(self.url)
        self.admin.flushall()
        self.conns = [redis.Redis.from_url(self.url) for _ in range(CLIENTS)]
        self.clients = [pyredislua.Client(c, mode=self.mode) for c in self.conns]  # type: ignore[arg-type]
        self.keys = LockKeys("model")
        self.tokens = [f"client-{i}" for i in range(CLIENTS)]
        # the model
        self.holder: int | None = None
        self.holder_fence = 0
        self.last_fence = 0
        self.reserved: str | None = None  # hand-off ticket the lock is reserved for
        self.ticket_in_list = False
        self.waiters: set[int] = set()
        self.tickets: list[str] = [""] * CLIENTS  # ticket each client popped

    def teardown(self) -> None:
        for c in [*getattr(self, "conns", []), getattr(self, "admin", None)]:
            if c is not None:
                c.close()

    def _take(self, c: int, fence: int | None) -> None:
        assert fence is not None and fence > self.last_fence, "fences must strictly increase"
        self.last_fence = fence
        self.holder, self.holder_fence = c, fence
        self.reserved, self.ticket_in_list = None, False
        self.waiters.discard(c)

    @rule(c=st.integers(0, CLIENTS - 1), wait=st.booleans(), use_ticket=st.booleans())
    def acquire(self, c: int, wait: bool, use_ticket: bool) -> None:
        ticket = self.tickets[c] if use_ticket else ""
        result = self.clients[c].run(
            acquire_call(self.keys, self.tokens[c], LONG, LONG if wait else 0, ticket))
        if self.holder == c:
            assert result.acquired and result.fence == self.holder_fence  # idempotent retry
            return
        if self.holder is None and (
            self.reserved is None
            or ticket == self.reserved
            or (self.ticket_in_list and c in self.waiters)
        ):
            assert result.acquired, "a free lock (or one handed to this waiter) must be granted"
            self._take(c, result.fence)
            return
        assert not result.acquired, "mutual exclusion: the lock is held or reserved for another"
        if wait:
            self.waiters.add(c)
        else:
            self.waiters.discard(c)

    @rule(c=st.integers(0, CLIENTS - 1))
    def release(self, c: int) -> None:
        before = snapshot(self.admin)
        released = self.clients[c].run(release_call(self.keys, self.tokens[c], 60_000))
        if self.holder != c:
            assert not released
            assert snapshot(self.admin) == before, "a non-owner's release must change nothing"
            return
        assert released
        self.holder = None
        if self.waiters:
            self.reserved, self.ticket_in_list = f"h{self.holder_fence}", True
            self.tickets = ["" if t == self.reserved else t for t in self.tickets]

    @rule(c=st.integers(0, CLIENTS - 1))
    def pop_ticket(self, c: int) -> None:
        popped = self.conns[c].lpop(self.keys.signal)
        if self.ticket_in_list and self.reserved is not None:
            assert popped == self.reserved.encode()
            self.tickets[c] = self.reserved
            self.ticket_in_list = False
        else:
            assert popped is None

    @rule(c=st.integers(0, CLIENTS - 1))
    def extend(self, c: int) -> None:
        before = snapshot(self.admin)
        extended = self.clients[c].run(extend_call(self.keys, self.tokens[c], LONG))
        assert extended == (self.holder == c)
        if not extended:
            assert snapshot(self.admin) == before, "a non-owner's extend must change nothing"

    @precondition(lambda self: self.holder is not None or self.reserved is not None)
    @rule()
    def expire(self) -> None:
        for key in (self.keys.lock, self.keys.signal):
            self.admin.pexpire(key, 1)
        while self.admin.exists(self.keys.lock, self.keys.signal):
            time.sleep(0.001)
        self.holder, self.reserved, self.ticket_in_list = None, None, False

    @invariant()
    def server_agrees_with_model(self) -> None:
        if not hasattr(self, "keys"):
            return
        state = self.clients[0].run(inspect_call(self.keys))
        assert state.held == (self.holder is not None)
        assert state.owner == (None if self.holder is None else self.tokens[self.holder])
        assert state.fence == (self.holder_fence if self.holder is not None else self.last_fence)
        assert state.waiters == len(self.waiters)


@pytest.mark.parametrize("mode", ["function", "script"])
def test_lock_state_machine(redis_url: str, mode: str) -> None:
    machine = type(f"LockMachine_{mode}", (LockMachine,), {"url": redis_url, "mode": mode})
    machine.TestCase().runTest()
