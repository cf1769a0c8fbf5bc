"""A model-checked lock: three clients, each on its own connection, interleave acquire (plain, as a
registering waiter, or as a waiter giving up), popping grants, extend, release (handing over, or
carrying the lock for the releaser within its turn), passing a carry on, turns running out, and
lease expiry.

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
TURN = 60_000  # a turn never runs out by itself during a run (the `age_turn` rule ends one)


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
        # the registration the grant that made the current lock hash consumed (and its score)
        self.consumed: tuple[str, float] | None = None
        # registered waiter tokens and their scores (when the registration ends, server ms)
        self.waiters: dict[str, float] = {}
        # the lock hash records a turn (its first carry), and that turn is over
        self.turn_started = False
        self.turn_over = False

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

    def _score(self, token: str) -> float:
        score = self.admin.zscore(self.keys.waiters, token)
        assert score is not None, f"{token} should be registered"
        return float(score)

    @rule(c=st.integers(0, CLIENTS - 1), wait=st.sampled_from([None, 0, LONG]),
          use_grant=st.booleans())
    def acquire(self, c: int, wait: int | None, use_grant: bool) -> None:
        """wait: None a plain try (not a waiter), 0 a waiter giving up, LONG a waiter."""
        token = self._token(c, use_grant)
        result = self.clients[c].run(acquire_call(self.keys, token, LONG, wait))
        if self.owner == token:
            assert result.acquired and result.fence == self.owner_fence  # idempotent retry
            return
        if self.owner == f"carry:{token}":
            # its release kept the lock for it: the next hold, with the next fence
            assert result.acquired
            self.owner_fence = self._new_fence(result.fence)
            self.owner = token
            if wait is not None:
                self.waiters.pop(token, None)
            return
        registered = wait is not None and token in self.waiters
        consumed = self.consumed[0] if self.consumed else None
        takeover = self.grant_unpopped and (
            bool(wait) or (token != self.granted_by and (token == consumed or registered)))
        if self.owner is None or takeover:
            assert result.acquired, "a free lock (or an unclaimed grant, for a waiter) is granted"
            if takeover:
                # nobody held with the unpopped grant's fence: the taker gets it
                assert result.fence == self.owner_fence
                if self.consumed and consumed != token and consumed not in self.waiters:
                    self.waiters[self.consumed[0]] = self.consumed[1]  # it keeps its place
            else:
                self.owner_fence = self._new_fence(result.fence)
            self.consumed = None  # a fresh lock hash
            self.owner = token
            self.grant_unpopped = False
            if wait is not None:
                self.waiters.pop(token, None)
            return
        assert not result.acquired, "mutual exclusion: the lock belongs to another owner"
        if wait:
            self.waiters[token] = self._score(token)
        elif wait == 0:
            self.waiters.pop(token, None)

    @rule(c=st.integers(0, CLIENTS - 1), use_grant=st.booleans(), requeue=st.booleans(),
          turn=st.booleans())
    def release(self, c: int, use_grant: bool, requeue: bool, turn: bool) -> None:
        token = self._token(c, use_grant)
        waiter = self.tokens[c] if token != self.tokens[c] else ""
        self._release(c, token, waiter, requeue, turn)

    @rule(c=st.integers(0, CLIENTS - 1))
    def pass_on(self, c: int) -> None:
        """A carrier that will not acquire again passes the lock on (release of carry:<token>)."""
        self._release(c, f"carry:{self.tokens[c]}", self.tokens[c], False, False)

    @precondition(lambda self: self.turn_started and not self.turn_over)
    @rule()
    def age_turn(self) -> None:
        """The turn ran out (its start moved far into the past)."""
        self.admin.hset(self.keys.lock, "ts", "1")
        self.turn_over = True

    def _release(self, c: int, token: str, waiter: str, requeue: bool, turn: bool) -> None:
        before = snapshot(self.admin)
        released = self.clients[c].run(
            release_call(self.keys, token, LONG, 60_000, waiter, LONG if requeue else 0,
                         TURN if turn else 0))
        if self.owner != token:
            assert released == 0
            assert snapshot(self.admin) == before, "a non-owner's release must change nothing"
            return
        # A grant holder naming its waiter token: if its grant consumed another registration,
        # its own stands in for that one, which is put back.
        standing = bool(waiter) and self.consumed is not None and \
            self.consumed[0] != waiter and waiter in self.waiters
        restore = self.consumed if standing and self.consumed and \
            self.consumed[0] not in self.waiters else None
        others = sorted((score, w) for w, score in self.waiters.items()
                        if w != token and not (standing and w == waiter))
        if restore:
            others = sorted([*others, (restore[1], restore[0])])
        if not others:
            assert released == 1
            self.owner = None
            self.waiters.clear()  # what is left is the releaser's own registration
            self.turn_started = self.turn_over = False
            return
        me = waiter or token
        if turn and not standing and not self.turn_over:
            assert released == 3, "within its turn, the releaser keeps the lock"
            self.owner = f"carry:{me}"
            self.turn_started = True
            return
        assert released == 2
        self.turn_started = self.turn_over = False  # the grantee's turn starts afresh
        # the grant consumes the longest-standing registration (whoever pops it)
        score, consumed = others[0]
        self.consumed = (consumed, score)
        self.waiters.pop(consumed, None)
        self.waiters.pop(token, None)
        if standing:
            del self.waiters[waiter]
        if restore and restore[0] != consumed:
            self.waiters[restore[0]] = restore[1]
        fence = self.last_fence + 1
        self.owner, self.owner_fence = f"grant:{fence}:{LONG}", fence
        self.last_fence = fence
        self.grant_unpopped = True
        self.granted_by = me
        if requeue:
            self.waiters[me] = self._score(me)

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
        self.owner, self.grant_unpopped, self.consumed = None, False, None
        self.turn_started = self.turn_over = False

    @invariant()
    def server_agrees_with_model(self) -> None:
        if not hasattr(self, "keys"):
            return
        state = self.clients[0].run(inspect_call(self.keys))
        assert state.held == (self.owner is not None)
        assert state.owner == self.owner
        assert state.fence == (self.owner_fence if self.owner is not None else self.last_fence)
        assert state.waiters == len(self.waiters)
        assert (self.admin.hget(self.keys.lock, "ts") is not None) == self.turn_started
        if self.grant_unpopped:  # the grant and its lock end at the same instant
            assert self.admin.pexpiretime(self.keys.signal) == \
                self.admin.pexpiretime(self.keys.lock)


@pytest.mark.parametrize("mode", ["function", "script"])
def test_lock_state_machine(redis_url: str, mode: str) -> None:
    machine = type(f"LockMachine_{mode}", (LockMachine,), {"url": redis_url, "mode": mode})
    machine.TestCase().runTest()
