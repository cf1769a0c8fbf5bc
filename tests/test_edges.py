"""Every operation at its edges: an error reply means nothing changed.

Redis does not roll back a script that fails halfway, so every operation must read and check
everything (key types, stored state, arguments) before its first write. This suite enforces
that shape for every operation, driven by the contract headers (declared keys and their types)
and by the scenarios in ``tests/edges/<area>.py`` (a state in which the operation takes a given
path, and the exact call):

* **wrong type**: each declared key in turn is pre-set to every Redis type other than its
  declared one (string, hash, list, set, zset, stream). The call must reply a
  ``PYREDISLUA:<CODE>`` error (not INTERNAL) and leave every key byte-identical (``DUMP`` and
  expiry), or — only when this path does not use that key — succeed, leave it untouched and
  change exactly the keys the untampered call changes.
* **malformed state**: each key of a declared type is rewritten with garbage of that type
  (hash values, list items, set and zset members, a string, a stream entry). The call may
  succeed (garbage can be valid state) but an error must carry a code (not INTERNAL) and change
  nothing.
* **maxmemory** (``noeviction``, at the limit): an operation flagged ``allow-oom`` runs and
  writes what it writes otherwise; a read-only one runs; any other is refused before writing.

Adding an operation: add at least one scenario to its area's module (the coverage test fails
until then), one per writing path worth protecting. A scenario whose path writes nothing says
``writes=False``. An area module may list ``KNOWN_FAILURES`` (test ids, as pytest prints them
inside the brackets) while a fix is under way: they run as strict xfails, so a fixed case fails
until it is removed from the list.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import pyredislua
import tests.edges
from pyredislua.engine.header import key_spec_at
from tests.edges import Scenario

pytestmark = pytest.mark.edges

LIBRARY = pyredislua.render_library()
TYPES = ("string", "hash", "list", "set", "zset", "stream")
GARBAGE = "edge:garbage"


def _modules() -> tuple[dict[str, list[Scenario]], set[str]]:
    found, known = {}, set()
    for info in pkgutil.iter_modules(tests.edges.__path__):
        module = importlib.import_module(f"tests.edges.{info.name}")
        found[info.name] = list(module.SCENARIOS)
        known |= set(getattr(module, "KNOWN_FAILURES", ()))
    return found, known


AREAS, KNOWN_FAILURES = _modules()
_XFAIL = pytest.mark.xfail(strict=True, reason="known: listed in its area's KNOWN_FAILURES")
SCENARIOS = [s for scenarios in AREAS.values() for s in scenarios]

State = dict[bytes, tuple[bytes | None, int]]


def _state(r: redis.Redis) -> State:
    """Every key's serialized value and absolute expiry (ms; -1 none): equal states, no write."""
    keys = sorted(r.scan_iter(count=1000))
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pexpiretime(key)
    replies = pipe.execute()
    return {key: (replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(keys)}


def _changed(before: State, after: State) -> set[bytes]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def _set_type(r: redis.Redis, key: str, kind: str) -> None:
    r.delete(key)
    if kind == "string":
        r.set(key, GARBAGE)
    elif kind == "hash":
        r.hset(key, "f", GARBAGE)
    elif kind == "list":
        r.rpush(key, GARBAGE)
    elif kind == "set":
        r.sadd(key, GARBAGE)
    elif kind == "zset":
        r.zadd(key, {GARBAGE: 1})
    else:
        r.xadd(key, {"f": GARBAGE})


def _malform(r: redis.Redis, key: str, kind: str) -> None:
    """Rewrite the key's content with garbage of its own type, keeping its expiry."""
    expiry = r.pexpiretime(key)
    if kind == "string":
        r.set(key, GARBAGE)
    elif kind == "hash":
        fields = r.hkeys(key) or [b"f"]
        r.hset(key, mapping={f: GARBAGE for f in fields})
    elif kind == "list":
        n = r.llen(key)
        r.delete(key)
        r.rpush(key, *([GARBAGE] * max(n, 1)))
    elif kind == "set":
        n = r.scard(key)
        r.delete(key)
        r.sadd(key, *[f"{GARBAGE}:{i}" for i in range(max(n, 1))])
    elif kind == "zset":
        scores = [score for _, score in r.zrange(key, 0, -1, withscores=True)] or [1.0]
        r.delete(key)
        r.zadd(key, {f"{GARBAGE}:{i}": score for i, score in enumerate(scores)})
    elif kind == "stream":
        r.xadd(key, {GARBAGE: GARBAGE})
    if expiry > 0:
        r.pexpireat(key, expiry)


def _outcome(client: pyredislua.Client, scenario: Scenario) -> Any:
    """The reply, or the exception the call raised."""
    try:
        return client.run(scenario.call())
    except redis.RedisError as error:
        return error


def _fresh(client: pyredislua.Client, r: redis.Redis, scenario: Scenario) -> None:
    r.flushall()
    scenario.setup(client)


def _baseline(client: pyredislua.Client, r: redis.Redis, scenario: Scenario) -> set[bytes]:
    """Run the untampered call: it must succeed (and write, unless the path says it does not).
    Returns the keys it changed."""
    _fresh(client, r, scenario)
    before = _state(r)
    reply = _outcome(client, scenario)
    assert not isinstance(reply, Exception), f"{scenario.id}: the scenario itself fails: {reply}"
    changed = _changed(before, _state(r))
    if scenario.writes and not LIBRARY.operation(scenario.op).read_only:
        assert changed, f"{scenario.id}: the call wrote nothing; say writes=False if intended"
    return changed


def _cases() -> Iterator[Any]:
    for scenario in SCENARIOS:
        header = LIBRARY.operation(scenario.op).header
        for position in range(1, len(scenario.keys) + 1):
            spec = key_spec_at(header, position, len(scenario.keys), scenario.trailing)
            kind, name = spec.type, spec.name
            case_id = f"{scenario.id}-{position}:{name}:{kind}"
            marks = [_XFAIL] if case_id in KNOWN_FAILURES else []
            yield pytest.param(scenario, position, kind, id=case_id, marks=marks)


def _check_error(problems: list[str], what: str, reply: Exception, before: State,
                 after: State) -> None:
    if not isinstance(reply, pyredislua.OperationError):
        problems.append(f"{what}: error without a PYREDISLUA code: {reply!r}")
    elif reply.code == "INTERNAL":
        problems.append(f"{what}: INTERNAL (the state was not checked): {reply}")
    changed = _changed(before, after)
    if changed:
        problems.append(f"{what}: error reply after writing {sorted(changed)}: {reply}")


@pytest.mark.parametrize(("scenario", "position", "declared"), list(_cases()))
def test_a_tampered_key_is_rejected_before_any_write(
        r: redis.Redis, scenario: Scenario, position: int, declared: str) -> None:
    client = pyredislua.Client(r, mode="function")
    client.load()
    baseline = _baseline(client, r, scenario)
    key = scenario.keys[position - 1]
    problems: list[str] = []
    variants = [(f"{t} instead of {declared}", t, False) for t in TYPES if t != declared]
    if declared != "any":
        variants.append((f"malformed {declared}", declared, True))
    for what, kind, malformed in variants:
        _fresh(client, r, scenario)
        if malformed:
            _malform(r, key, kind)
        else:
            _set_type(r, key, kind)
        before = _state(r)
        reply = _outcome(client, scenario)
        after = _state(r)
        if isinstance(reply, Exception):
            _check_error(problems, what, reply, before, after)
        elif not malformed and declared != "any":
            changed = _changed(before, after)
            if key.encode() in baseline:
                problems.append(f"{what}: succeeded although this path writes the key")
            elif changed != baseline:
                problems.append(f"{what}: succeeded changing {sorted(changed)}, "
                                f"the untampered call changes {sorted(baseline)}")
    assert not problems, f"{scenario.id}, KEYS[{position}] {key}:\n" + "\n".join(problems)


@pytest.mark.parametrize("mode", ["function", "script"])
@pytest.mark.parametrize("scenario", [
    pytest.param(s, id=s.id, marks=[_XFAIL] if f"{s.id}-maxmemory" in KNOWN_FAILURES else [])
    for s in SCENARIOS])
def test_at_maxmemory_only_what_may_run_runs(r: redis.Redis, scenario: Scenario,
                                             mode: str) -> None:
    client = pyredislua.Client(r, mode=mode)  # type: ignore[arg-type]
    client.load()
    baseline = _baseline(client, r, scenario)
    header = LIBRARY.operation(scenario.op).header
    _fresh(client, r, scenario)
    before = _state(r)
    r.config_set("maxmemory", 1)  # far below what is used: every write is refused (noeviction)
    try:
        reply = _outcome(client, scenario)
    finally:
        r.config_set("maxmemory", 0)
    after = _state(r)
    if header.read_only or "allow-oom" in header.flags:
        assert not isinstance(reply, Exception), f"refused at maxmemory: {reply}"
        assert _changed(before, after) == baseline
    else:
        assert isinstance(reply, redis.exceptions.OutOfMemoryError), reply
        assert _changed(before, after) == set()


def test_every_area_module_covers_all_its_operations() -> None:
    for area, scenarios in AREAS.items():
        ops = {name for name, op in LIBRARY.operations.items() if op.header.area == area}
        missing = ops - {s.op for s in scenarios}
        assert not missing, f"tests/edges/{area}.py has no scenario for {sorted(missing)}"
        unknown = {s.op for s in scenarios} - set(LIBRARY.operations)
        assert not unknown, f"tests/edges/{area}.py names unknown operations {sorted(unknown)}"


def test_every_area_has_a_scenario_module() -> None:
    areas = {op.header.area for op in LIBRARY.operations.values()}
    assert areas <= set(AREAS), f"no tests/edges module for {sorted(areas - set(AREAS))}"
