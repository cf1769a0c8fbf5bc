"""A model-checked compare-and-set: three clients, each remembering the versions it last saw,
interleave reads, conditional writes and deletes (single and several values at once), re-sent
writes, read-modify-write updates and real expiry, against a model of what is stored.

What is checked at every step: a write succeeds exactly when the version it names is the current
one (0: absent); a refusal changes nothing and reports the current state; every new version is
above every version the value ever had, across deletes and expiry (no ABA); several values are
written all or none; reads agree with the model; nothing but well-formed values is left."""

from __future__ import annotations

import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import pyredislua
from pyredislua.optimistic import (
    Backoff,
    Versioned,
    delete_call,
    get_call,
    get_many_call,
    item_key,
    set_call,
    set_many_call,
)
from tests.faultkit import wait_for

pytestmark = pytest.mark.optimistic

CLIENTS = 3
NAMES = ("{m}a", "{m}b", "{m}c")
KEYS = {n: item_key("model", n) for n in NAMES}

clients = st.integers(0, CLIENTS - 1)
names = st.sampled_from(NAMES)
values = st.binary(max_size=8)
ttls = st.sampled_from([0, -1, 60_000])  # keep, remove, set


class CasMachine(RuleBasedStateMachine):
    url: str = ""
    mode: str = "function"

    @initialize()
    def setup(self) -> None:
        self.admin = redis.Redis.from_url(self.url)
        self.admin.flushall()
        self.conns = [redis.Redis.from_url(self.url) for _ in range(CLIENTS)]
        self.clients = [pyredislua.Client(c, mode=self.mode)  # type: ignore[arg-type]
                        for c in self.conns]
        self.seen = [dict.fromkeys(NAMES, 0) for _ in range(CLIENTS)]
        # the model
        self.value: dict[str, bytes | None] = dict.fromkeys(NAMES)
        self.version = dict.fromkeys(NAMES, 0)
        self.has_ttl = dict.fromkeys(NAMES, False)
        self.highest = dict.fromkeys(NAMES, 0)  # every version the value ever had is <= this
        self.requests = 0

    def teardown(self) -> None:
        for c in [*getattr(self, "conns", []), getattr(self, "admin", None)]:
            if c is not None:
                c.close()

    def _made(self, name: str, version: int, value: bytes, ttl_ms: int) -> None:
        assert version > self.highest[name], "a new version must exceed every earlier one"
        self.version[name] = self.highest[name] = version
        self.value[name] = value
        self.has_ttl[name] = ttl_ms > 0 or (ttl_ms == 0 and self.has_ttl[name])

    def _check_entry(self, name: str, version: int, value: bytes | None, ttl: int | None
                     ) -> None:
        assert (version, value) == (self.version[name], self.value[name])
        assert (ttl is not None) == self.has_ttl[name]

    @rule(c=clients, name=names)
    def read(self, c: int, name: str) -> None:
        e = self.clients[c].run(get_call(KEYS[name]))
        self._check_entry(name, e.version, e.value, e.ttl_ms)
        self.seen[c][name] = e.version

    @rule(c=clients)
    def read_all(self, c: int) -> None:
        got = self.clients[c].run(get_many_call([KEYS[n] for n in NAMES], NAMES))
        for name, e in got.items():
            self._check_entry(name, e.version, e.value, e.ttl_ms)
            self.seen[c][name] = e.version

    @rule(c=clients, name=names, value=values, ttl_ms=ttls, resend=st.booleans())
    def write(self, c: int, name: str, value: bytes, ttl_ms: int, resend: bool) -> None:
        expected = self.seen[c][name]
        self.requests += 1
        call = set_call(KEYS[name], value, expected, ttl_ms, f"req-{self.requests}")
        w = self.clients[c].run(call)
        if expected == self.version[name]:
            assert w.ok
            self._made(name, w.version, value, ttl_ms)
            if resend:  # as after a lost reply: recognised, applied once
                again = self.clients[c].run(call)
                assert again.ok and again.version == w.version
        else:
            assert not w.ok and w.version == self.version[name]
            assert w.current is not None
            self._check_entry(name, w.current.version, w.current.value, w.current.ttl_ms)
        self.seen[c][name] = w.version

    @rule(c=clients, name=names)
    def delete(self, c: int, name: str) -> None:
        expected = self.seen[c][name]
        if expected == 0:
            return
        w = self.clients[c].run(delete_call(KEYS[name], expected))
        if expected == self.version[name]:
            assert w.ok and w.version == 0
            self.version[name], self.value[name], self.has_ttl[name] = 0, None, False
        else:
            assert not w.ok and w.version == self.version[name]
        self.seen[c][name] = w.version

    @rule(c=clients, chosen=st.lists(names, min_size=1, max_size=3, unique=True),
          value=values, ttl_ms=ttls)
    def write_several(self, c: int, chosen: list[str], value: bytes, ttl_ms: int) -> None:
        items = [(KEYS[n], self.seen[c][n], value + n.encode()) for n in chosen]
        w = self.clients[c].run(set_many_call(items, ttl_ms, "", chosen))
        if all(self.seen[c][n] == self.version[n] for n in chosen):
            assert w.ok
            for n in chosen:
                self._made(n, w.versions[n], value + n.encode(), ttl_ms)
        else:
            assert not w.ok
            for n in chosen:
                e = w.current[n]
                self._check_entry(n, e.version, e.value, e.ttl_ms)
        for n in chosen:
            self.seen[c][n] = w.versions[n]

    @rule(c=clients, name=names, suffix=values)
    def update(self, c: int, name: str, suffix: bytes) -> None:
        store = Versioned(self.clients[c], "model", backoff=Backoff(attempts=2, base=0, cap=0))
        done = store.update(name, lambda v: (v or b"") + suffix)
        assert (done.attempts, done.conflicts) == (1, 0)  # nobody else runs meanwhile
        self._made(name, done.version, (self.value[name] or b"") + suffix, 0)
        self.seen[c][name] = done.version

    @rule(name=names)
    def expire(self, name: str) -> None:
        if self.version[name] == 0:
            return
        self.admin.pexpire(KEYS[name], 1)
        wait_for(lambda: self.admin.exists(KEYS[name]) == 0, what="the value expired")
        self.version[name], self.value[name], self.has_ttl[name] = 0, None, False

    @invariant()
    def only_well_formed_values(self) -> None:
        if not hasattr(self, "admin"):
            return
        present = {k.decode() for k in self.admin.scan_iter(count=100)}
        assert present == {KEYS[n] for n in NAMES if self.version[n] > 0}
        for name in NAMES:
            if self.version[name]:
                stored = self.admin.hgetall(KEYS[name])
                assert stored[b"t"] == b"prl:optimistic"
                assert int(stored[b"n"]) == self.version[name]


@pytest.mark.parametrize("mode", ["function", "script"])
def test_compare_and_set_state_machine(redis_url: str, mode: str) -> None:
    machine = type(f"CasMachine_{mode}", (CasMachine,), {"url": redis_url, "mode": mode})
    machine.TestCase().runTest()
