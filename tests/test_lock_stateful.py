"""A model-checked lock: three clients, each on its own connection, interleave acquire (plain or
as a registered waiter), popping grants, extend, release and lease expiry.

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
        self.grants: list[str | None] = [None] * CLIENTS  # the grant each client popped
        # the model
        self.owner: str | None = None
        self.owner_fence = 0
        self.last_fence = 0
        self.grant_unpopped = False  # the owner is a grant still sitting in the signal list
        self.granted_by: str | None = None  # the waiter token of the release that granted it
        self.waiters: set[str] = set()  # registered waiter tokens

    def teardown(self) -> None:
        for c in [*getattr(self, "conns", []), getattr(self, "admin", None)]:
            if c is not None:
                c.close()

    def _token(self, c: int, use_grant: bool) -> str:
        grant = self.grants[c]
        return grant if (use_grant and grant is not None) else self.tokens[c]

    def _new_fence(self, fence: int | None) -> int:
        assert fence is not None and fence > self.last_fence, "fences must strictly increase"
        self.last_fence = fence
        return fence

    @rule(c=st.integers(0, CLIENTS - 1), wait=st.booleans(), use_grant=st.booleans())
    def acquire(self, c: int, wait: bool, use_grant: bool) -> None:
        token = self._token(c, use_grant)
        result = self.clients[c].run(acquire_call(self.keys, token, LONG, LONG if wait else 0))
        if self.owner == token:
            assert result.acquired and result.fence == self.owner_fence  # idempotent retry
            return
        takeover = self.grant_unpopped and token in self.waiters and token != self.granted_by
        if self.owner is None or takeover:
            assert result.acquired, "a free lock (or an unclaimed grant, for a waiter) is granted"
            self.owner, self.owner_fence = token, self._new_fence(result.fence)
            self.grant_unpopped = False
            self.waiters.discard(token)
            return
        assert not result.acquired, "mutual exclusion: the lock belongs to another owner"
        if wait:
            self.waiters.add(token)
        else:
            self.waiters.discard(token)

    @rule(c=st.integers(0, CLIENTS - 1), use_grant=st.booleans(), requeue=st.booleans())
    def release(self, c: int, use_grant: bool, requeue: bool) -> None:
        token = self._token(c, use_grant)
        unregister = self.tokens[c] if token != self.tokens[c] else ""
        before = snapshot(self.admin)
        released = self.clients[c].run(
            release_call(self.keys, token, LONG, 60_000, unregister, LONG if requeue else 0))
        if self.owner != token:
            assert released == 0
            assert snapshot(self.admin) == before, "a non-owner's release must change nothing"
            return
        me = unregister or token
        self.waiters.discard(me)  # the releaser's own registration, if any, is dropped
        if self.waiters:
            assert released == 2
            fence = self.last_fence + 1
            self.owner, self.owner_fence = f"grant:{fence}:{LONG}", fence
            self.last_fence = fence
            self.grant_unpopped = True
            self.granted_by = me
            if requeue:
                self.waiters.add(me)
        else:
            assert released == 1
            self.owner = None

    @rule(c=st.integers(0, CLIENTS - 1))
    def pop_grant(self, c: int) -> None:
        popped = self.conns[c].lpop(self.keys.signal)
        if self.grant_unpopped:
            assert self.owner is not None and popped == self.owner.encode()
            self.grants[c] = self.owner
            self.grant_unpopped = False
        else:
            assert popped is None

    @rule(c=st.integers(0, CLIENTS - 1), use_grant=st.booleans())
    def extend(self, c: int, use_grant: bool) -> None:
        token = self._token(c, use_grant)
        before = snapshot(self.admin)
        extended = self.clients[c].run(extend_call(self.keys, token, LONG))
        assert extended == (self.owner == token)
        if not extended:
            assert snapshot(self.admin) == before, "a non-owner's extend must change nothing"

    @precondition(lambda self: self.owner is not None)
    @rule()
    def expire(self) -> None:
        for key in (self.keys.lock, self.keys.signal):
            self.admin.pexpire(key, 1)
        while self.admin.exists(self.keys.lock, self.keys.signal):
            time.sleep(0.001)
        self.owner, self.grant_unpopped = None, False

    @invariant()
    def server_agrees_with_model(self) -> None:
        if not hasattr(self, "keys"):
            return
        state = self.clients[0].run(inspect_call(self.keys))
        assert state.held == (self.owner is not None)
        assert state.owner == self.owner
        assert state.fence == (self.owner_fence if self.owner is not None else self.last_fence)
        assert state.waiters == len(self.waiters)


@pytest.mark.parametrize("mode", ["function", "script"])
def test_lock_state_machine(redis_url: str, mode: str) -> None:
    machine = type(f"LockMachine_{mode}", (LockMachine,), {"url": redis_url, "mode": mode})
    machine.TestCase().runTest()
