"""Call specs and plans for optimistic concurrency: pure descriptions, no I/O.

Two ways to update data others may update at the same time, without a lock:

* **compare-and-set** on versioned values (the ``optimistic.*`` Lua operations): a value is
  stored with a version; a write names the version it read and is refused when someone wrote in
  between, the refusal carrying the current value and version, so the retry needs no read;
* **WATCH/MULTI/EXEC** for any read-modify-write on plain Redis data: one attempt is a driver
  call (it must hold one connection throughout), the retries are :func:`transaction_plan`.

Both retry with exponential backoff and full jitter (:class:`Backoff`) up to a bound of
attempts, count their conflicts, and never retry a write whose reply was lost after it was sent
(:class:`~pyredislua.errors.AmbiguousWriteError`): that could apply it twice.

Keys: a versioned value of namespace ``accounts`` named ``alice`` lives at
``prl:opt:accounts:{alice}``; a name that carries a ``{tag}`` keeps it
(``{order-7}:lines`` -> ``prl:opt:accounts:{order-7}:lines``), so values updated together share
a slot.
"""

from __future__ import annotations

import random
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..client import WatchAttempt
from ..engine.protocol import Call, Do, Engine, NotSentError, NotSentTimeoutError, Plan, Sleep
from ..errors import AmbiguousWriteError, TooManyConflictsError
from ..kit import as_bytes, ms, tagged_name

T = TypeVar("T")

PREFIX = "prl:opt"
MAX_VERSION = 2**53 - 1
MAX_VALUE_BYTES = 8 * 1024 * 1024
MAX_TTL_MS = 31_536_000_000
MAX_SET_MANY = 64
MAX_GET_MANY = 128

KEEP: Literal["keep"] = "keep"
# ``ttl=``: seconds (> 0) to set the TTL, KEEP to keep the key's TTL (none for a new key), None
# to remove it
TTL: TypeAlias = "float | Literal['keep'] | None"


def ttl_arg(ttl: TTL) -> int:
    """``ttl=`` as the operations' ``ttl_ms`` argument: 0 keep, -1 remove, else milliseconds."""
    if ttl == KEEP:
        return 0
    if ttl is None:
        return -1
    if isinstance(ttl, str):
        raise ValueError(f"ttl must be seconds, None or 'keep', got {ttl!r}")
    value = ms(ttl, "ttl")
    if value > MAX_TTL_MS:
        raise ValueError(f"ttl must be at most 365 days, got {ttl!r} s")
    return value


def item_key(namespace: str, name: str, prefix: str = PREFIX) -> str:
    """The Redis key of the value ``name`` of ``namespace``."""
    if not namespace or "{" in namespace or "}" in namespace:
        raise ValueError(f"a namespace must be non-empty and brace-free, got {namespace!r}")
    return f"{prefix}:{namespace}:{tagged_name(name)}"


def one_slot(keys: Sequence[str]) -> None:
    """Refuse keys that do not share a cluster slot (a multi-key call must be under one tag)."""
    if len({key_slot(k.encode()) for k in keys}) > 1:
        raise ValueError("values updated together must share a hash tag (one cluster slot): name "
                         f"them e.g. '{{order-7}}:lines' and '{{order-7}}:total'; got {list(keys)}")


def new_request_id() -> str:
    return secrets.token_hex(8)


# -- replies --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A versioned value as read: ``value`` (None when absent), ``version`` (0 when absent),
    ``ttl_ms`` (None: no expiry, or absent)."""

    value: bytes | None
    version: int
    ttl_ms: int | None = None

    @property
    def exists(self) -> bool:
        return self.version > 0


ABSENT = Entry(None, 0, None)


def parse_entry(reply: Any) -> Entry:
    version, value, pttl = int(reply[0]), reply[1], int(reply[2])
    if version == 0:
        return ABSENT
    return Entry(as_bytes(value), version, pttl if pttl >= 0 else None)


@dataclass(frozen=True)
class Written:
    """The outcome of a conditional write. ``ok``: it was applied, and ``version`` is the new one
    (0 after a delete). Else the version did not match: ``version`` is the current one (0: the
    key does not exist) and ``current`` the current state, to retry from without reading."""

    ok: bool
    version: int
    current: Entry | None = None

    def __bool__(self) -> bool:
        return self.ok


def parse_written(reply: Any) -> Written:
    if int(reply[0]) == 1:
        return Written(True, int(reply[1]))
    current = parse_entry(reply[1:])
    return Written(False, current.version, current)


@dataclass(frozen=True)
class WrittenMany:
    """The outcome of :func:`set_many_call`, by name. ``ok``: every version matched and all were
    written; ``versions`` are the new ones. Else nothing was written: ``versions`` are the
    current ones and ``current`` every value's current state."""

    ok: bool
    versions: dict[str, int]
    current: dict[str, Entry] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok


def _many_parser(names: Sequence[str]) -> Callable[[Any], WrittenMany]:
    def parse(reply: Any) -> WrittenMany:
        if int(reply[0]) == 1:
            return WrittenMany(True, {n: int(v) for n, v in zip(names, reply[1])})
        current = {n: parse_entry(r) for n, r in zip(names, reply[1])}
        return WrittenMany(False, {n: e.version for n, e in current.items()}, current)

    return parse


# -- calls ----------------------------------------------------------------------------------------


def get_call(key: str) -> Call[Entry]:
    return Call("optimistic.get", (key,), (), parse_entry)


def get_many_call(keys: Sequence[str], names: Sequence[str] | None = None
                  ) -> Call[dict[str, Entry]]:
    if not 1 <= len(keys) <= MAX_GET_MANY:
        raise ValueError(f"get_many reads 1..{MAX_GET_MANY} values, got {len(keys)}")
    labels = list(names if names is not None else keys)

    def parse(reply: Any) -> dict[str, Entry]:
        return {n: parse_entry(r) for n, r in zip(labels, reply)}

    return Call("optimistic.get_many", tuple(keys), (), parse)


def _check_version(version: int, lo: int = 0) -> int:
    if isinstance(version, bool) or not isinstance(version, int) \
            or not lo <= version <= MAX_VERSION:
        raise ValueError(f"a version is an integer in {lo}..2^53-1 (0: the key must not "
                         f"exist), got {version!r}")
    return version


def _value(value: bytes | str) -> bytes:
    data = as_bytes(value)
    if len(data) > MAX_VALUE_BYTES:
        raise ValueError(f"a value holds at most 8 MiB, got {len(data)} bytes")
    return data


def set_call(key: str, value: bytes | str, version: int, ttl_ms: int = 0,
             request_id: str = "") -> Call[Written]:
    """Store ``value`` if the version is still ``version`` (0: the key must not exist)."""
    return Call("optimistic.set", (key,),
                (_check_version(version), _value(value), ttl_ms, request_id), parse_written)


def delete_call(key: str, version: int) -> Call[Written]:
    return Call("optimistic.delete", (key,), (_check_version(version, 1),), parse_written)


def set_many_call(items: Sequence[tuple[str, int, bytes | str]], ttl_ms: int = 0,
                  request_id: str = "", names: Sequence[str] | None = None
                  ) -> Call[WrittenMany]:
    """Store every ``(key, expected version, value)`` if all versions still match, else none."""
    if not 1 <= len(items) <= MAX_SET_MANY:
        raise ValueError(f"set_many writes 1..{MAX_SET_MANY} values, got {len(items)}")
    keys = [k for k, _, _ in items]
    if len(set(keys)) != len(keys):
        raise ValueError("set_many names a value twice")
    one_slot(keys)
    args: list[str | int | bytes] = [ttl_ms, request_id]
    for _, version, value in items:
        args += [_check_version(version), _value(value)]
    return Call("optimistic.set_many", tuple(keys), tuple(args),
                _many_parser(list(names if names is not None else keys)))


# -- writes whose reply was lost ------------------------------------------------------------

_LOST = (RedisConnectionError, RedisTimeoutError)
_NOT_SENT = (NotSentError, NotSentTimeoutError)


def _applied(written: Written | WrittenMany, what: str, error: BaseException,
             attempts: int = 1, conflicts: int = 0) -> Any:
    if written.ok:
        return written
    raise AmbiguousWriteError(what, attempts, conflicts) from error


def resent(call: Call[T], what: str) -> Call[T]:
    """``call`` (a conditional write carrying a request id) with its failure policy: after a
    connection error once it was sent, it is sent again, once. The script recognises its own
    request id: a success means it was applied (now or the first time); a mismatch cannot tell
    "never applied" from "applied, then overwritten", and raises AmbiguousWriteError."""

    def recover(error: Exception) -> T | Call[T]:
        if not isinstance(error, _LOST):
            raise error
        if isinstance(error, _NOT_SENT):  # it did not run: a plain second try
            return Call(call.op, call.keys, call.args, call.parse)
        return Call(call.op, call.keys, call.args,
                    lambda reply: _applied(call.parse(reply), what, error))  # type: ignore[arg-type]

    return call.recovering(recover)


def _write_plan(engine: Engine, call: Call[T], what: str, attempts: int, conflicts: int
                ) -> Plan[T]:
    """Run a conditional write inside a plan, with :func:`resent`'s policy."""
    try:
        return (yield from engine.run_one(call))
    except _LOST as error:
        first = error
    try:
        again = yield from engine.run_one(call)
    except _LOST as error:
        raise AmbiguousWriteError(what, attempts, conflicts) from error
    if isinstance(first, _NOT_SENT):
        return again
    result: T = _applied(again, what, first, attempts, conflicts)  # type: ignore[arg-type]
    return result


# -- retries ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """How an optimistic update retries: at most ``attempts`` tries; before try n+1 it sleeps a
    uniformly random time in [0, min(cap, base * 2^(n-1))] seconds ("full jitter": contenders
    spread out instead of colliding again in step)."""

    attempts: int = 32
    base: float = 0.001
    cap: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) \
                or self.attempts < 1:
            raise ValueError(f"attempts must be a positive integer, got {self.attempts!r}")
        if not 0 <= self.base <= self.cap:
            raise ValueError(f"backoff needs 0 <= base <= cap, got base={self.base!r}, "
                             f"cap={self.cap!r}")

    def delay(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        """The sleep after ``failures`` failed tries."""
        return float(rng() * min(self.cap, self.base * 2.0 ** min(failures - 1, 62)))


@dataclass
class Stats:
    """Counters of a façade's updates, across threads or tasks: ``committed`` updates,
    ``conflicts`` (tries that found the data changed), ``interrupted`` (tries cut off before
    writing: a dropped connection, a slot that moved), ``gave_up`` (TooManyConflictsError) and
    ``unknown`` (AmbiguousWriteError)."""

    committed: int = 0
    conflicts: int = 0
    interrupted: int = 0
    gave_up: int = 0
    unknown: int = 0
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._guard:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    @property
    def retries_per_success(self) -> float:
        """Extra tries per committed update."""
        return (self.conflicts + self.interrupted) / self.committed if self.committed else 0.0


@dataclass(frozen=True)
class Updated:
    """A read-modify-write that went through: the ``value`` written at ``version``, after
    ``attempts`` tries of which ``conflicts`` found the value changed."""

    value: bytes
    version: int
    attempts: int
    conflicts: int


@dataclass(frozen=True)
class UpdatedMany:
    """:class:`Updated` for several values written together."""

    values: dict[str, bytes]
    versions: dict[str, int]
    attempts: int
    conflicts: int


@dataclass(frozen=True)
class Transacted(Generic[T]):
    """A WATCH/MULTI/EXEC transaction that committed: ``value`` (what the function returned),
    ``replies`` (EXEC's), after ``attempts`` tries of which ``conflicts`` found a watched key
    changed."""

    value: T
    replies: list[Any]
    attempts: int
    conflicts: int


def _pause(backoff: Backoff, failures: int, rng: Callable[[], float]) -> Plan[bool]:
    """Sleep the backoff after ``failures`` failed tries; whether it slept."""
    seconds = backoff.delay(failures, rng)
    if seconds > 0:
        yield Sleep(seconds)
    return seconds > 0


def _after_refusal(backoff: Backoff, conflicts: int, rng: Callable[[], float]) -> Plan[bool]:
    """Between compare-and-set tries: back off as the WATCH helper does; whether it slept. The
    state the refusal carried is fresh only if no time passed: after a sleep it is read again
    (retrying a version held through a sleep widens the window in which others win, and
    starved the waiting processes in the benchmark). With a zero backoff the retry goes at once,
    from the refusal's state, with no read."""
    return (yield from _pause(backoff, conflicts, rng))


def update_plan(engine: Engine, key: str, fn: Callable[[bytes | None], Any], *, ttl_ms: int,
                backoff: Backoff, rng: Callable[[], float], stats: Stats) -> Plan[Updated]:
    """Read, ``fn(value)`` (None when absent) -> new value, compare-and-set; on a conflict,
    back off, read again and run ``fn`` again (with a zero backoff: at once, on the value the
    refusal carried, no read; see :func:`_after_refusal`)."""
    what = f"update of {key}"
    entry: Entry = yield from engine.run_one(get_call(key))
    conflicts = 0
    for attempt in range(1, backoff.attempts + 1):
        new = _value((yield Do(fn, (entry.value,))))
        call = set_call(key, new, entry.version, ttl_ms, new_request_id())
        try:
            written: Written = yield from _write_plan(engine, call, what, attempt, conflicts)
        except AmbiguousWriteError:
            stats.add(conflicts=conflicts, unknown=1)
            raise
        if written.ok:
            stats.add(committed=1, conflicts=conflicts)
            return Updated(new, written.version, attempt, conflicts)
        conflicts += 1
        assert written.current is not None
        entry = written.current
        if attempt < backoff.attempts and (yield from _after_refusal(backoff, conflicts, rng)):
            entry = yield from engine.run_one(get_call(key))
    stats.add(conflicts=conflicts, gave_up=1)
    raise TooManyConflictsError(what, backoff.attempts, conflicts)


def update_many_plan(engine: Engine, keys: Mapping[str, str],
                     fn: Callable[[dict[str, bytes | None]], Any], *, ttl_ms: int,
                     backoff: Backoff, rng: Callable[[], float], stats: Stats
                     ) -> Plan[UpdatedMany]:
    """:func:`update_plan` for several values under one hash tag (``keys``: name -> key), read
    together and written together (all or none): ``fn({name: value})`` returns a new value for
    every name."""
    names = list(keys)
    what = f"update of {', '.join(keys.values())}"
    entries: dict[str, Entry] = yield from engine.run_one(
        get_many_call([keys[n] for n in names], names))
    conflicts = 0
    for attempt in range(1, backoff.attempts + 1):
        new = yield Do(fn, ({n: e.value for n, e in entries.items()},))
        if not isinstance(new, Mapping) or set(new) != set(names):
            raise ValueError(f"the update function must return a new value for each of {names}, "
                             f"got {new!r}")
        values = {n: _value(new[n]) for n in names}
        call = set_many_call([(keys[n], entries[n].version, values[n]) for n in names],
                             ttl_ms, new_request_id(), names)
        try:
            written: WrittenMany = yield from _write_plan(engine, call, what, attempt, conflicts)
        except AmbiguousWriteError:
            stats.add(conflicts=conflicts, unknown=1)
            raise
        if written.ok:
            stats.add(committed=1, conflicts=conflicts)
            return UpdatedMany(values, written.versions, attempt, conflicts)
        conflicts += 1
        entries = written.current
        if attempt < backoff.attempts and (yield from _after_refusal(backoff, conflicts, rng)):
            entries = yield from engine.run_one(get_many_call([keys[n] for n in names], names))
    stats.add(conflicts=conflicts, gave_up=1)
    raise TooManyConflictsError(what, backoff.attempts, conflicts)


def transaction_plan(attempt: Callable[..., Any], fn: Callable[[Any], Any], keys: Sequence[Any],
                     *, backoff: Backoff, rng: Callable[[], float], stats: Stats
                     ) -> Plan[Transacted[Any]]:
    """Retry WATCH/MULTI/EXEC attempts (``attempt(fn, keys)``: the client's
    ``watch_attempt``, one held connection each) until one commits: after a conflict or an
    interruption (nothing written), back off and try again; a lost EXEC reply raises
    AmbiguousWriteError (EXEC may have run); more than ``backoff.attempts`` tries raise
    TooManyConflictsError (or, when no try conflicted, the last interruption's error)."""
    what = f"transaction on {', '.join(map(str, keys))}"
    conflicts = interrupted = 0
    last: WatchAttempt | None = None
    for n in range(1, backoff.attempts + 1):
        got: WatchAttempt = yield Do(attempt, (fn, keys))
        if got.outcome == "committed":
            stats.add(committed=1, conflicts=conflicts, interrupted=interrupted)
            return Transacted(got.value, got.replies, n, conflicts)
        if got.outcome == "unknown":
            stats.add(conflicts=conflicts, interrupted=interrupted, unknown=1)
            raise AmbiguousWriteError(what, n, conflicts) from got.error
        if got.outcome == "conflict":
            conflicts += 1
        else:
            interrupted += 1
        last = got
        if n < backoff.attempts:
            yield from _pause(backoff, n, rng)
    stats.add(conflicts=conflicts, interrupted=interrupted, gave_up=1)
    assert last is not None
    if conflicts == 0 and last.error is not None:
        raise last.error
    raise TooManyConflictsError(what, backoff.attempts, conflicts) from last.error
