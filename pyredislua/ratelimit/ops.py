"""Call specs for the ``ratelimit.*`` Lua operations: pure descriptions, no I/O.

Every decision comes back in one reply: allowed, remaining, retry-after and reset-after (ms), the
server time of the decision, which limit decided, and the same figures per limit.

Key naming: every key of one call must share one hash tag (one cluster slot). A limiter's key is
``prl:rl:{<tag>}:<algorithm>:<limiter name>:<identity>:<period_ms>``; the tag defaults to the
identity, so one user's limits share a slot, and the algorithm is part of the name, so two
limiters of different algorithms never share state. To charge per-user and per-tenant limits in
one call, the caller picks one tag for all of them (e.g. the tenant id):
``prl:rl:{tenant-7}:gcra:per-user:alice:1000`` and
``prl:rl:{tenant-7}:fixed_window:per-tenant:tenant-7:1000``. The stored state also carries its
algorithm, checked by every operation before use (``BADSTATE``, nothing changed).

When Redis cannot be reached or refuses a write (:class:`Failure`), a limiter fails open (admits,
the default), closed (denies) or raises, as configured; such decisions carry the error.
"""

from __future__ import annotations

import builtins
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from redis import exceptions as rx

from ..engine.protocol import Call
from ..errors import BadStateError, OperationError, PyRedisLuaError
from ..kit import as_text, hash_tag

ALGORITHMS = ("gcra", "token_bucket", "sliding_log", "sliding_window", "fixed_window")
PREFIX = "prl:rl"
MAX_LIMIT = 1_000_000
MAX_PERIOD_MS = 2_678_400_000  # 31 days
MAX_SLIDING_LOG_LIMIT = 10_000
MAX_KEYS = 16
MAX_COST = 1_000_000


# BADSTATE: a key holds something other than the limiter's state. Nothing was changed.
RateLimiterStateError = BadStateError


class RateLimitExceeded(PyRedisLuaError):
    """A request was denied by a rate limit (raised by decorators and ``enforce``)."""

    def __init__(self, decision: Decision | SlotDecision, what: str = "rate limit exceeded"
                 ) -> None:
        self.decision = decision
        retry = decision.retry_after
        when = "never (cost above the limit)" if retry is None else f"in {retry:.3f}s"
        if decision.error is not None:
            what = f"{what} (the rate limiter is unavailable and fails closed: {decision.error})"
        super().__init__(f"{what}; retry {when}")


_UNITS_MS = {
    "ms": 1, "millisecond": 1, "milliseconds": 1,
    "s": 1000, "sec": 1000, "second": 1000, "seconds": 1000,
    "m": 60_000, "min": 60_000, "minute": 60_000, "minutes": 60_000,
    "h": 3_600_000, "hour": 3_600_000, "hours": 3_600_000,
    "d": 86_400_000, "day": 86_400_000, "days": 86_400_000,
}
_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d*)\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Rate:
    """``limit`` units per ``period_ms``; ``burst`` (GCRA, token bucket) how many at once
    (default: the limit)."""

    limit: int
    period_ms: int
    burst: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be in 1..{MAX_LIMIT}, got {self.limit}")
        if not 1 <= self.period_ms <= MAX_PERIOD_MS:
            raise ValueError(f"period must be 1 ms..31 days, got {self.period_ms} ms")
        if self.burst is not None and not 1 <= self.burst <= MAX_LIMIT:
            raise ValueError(f"burst must be in 1..{MAX_LIMIT}, got {self.burst}")

    @classmethod
    def parse(cls, value: RateLike) -> Rate:
        """``Rate`` from ``"100/s"``, ``"10/100ms"``, ``"1000 per hour"``, ``(100, 1000)``."""
        if isinstance(value, Rate):
            return value
        if isinstance(value, tuple):
            return cls(int(value[0]), int(value[1]))
        m = _RATE.match(value.lower())
        if not m or m.group(3) not in _UNITS_MS:
            raise ValueError(f"cannot read rate {value!r}; write e.g. '100/s', '10/100ms', "
                             "'1000/hour'")
        count = int(m.group(2)) if m.group(2) else 1
        return cls(int(m.group(1)), count * _UNITS_MS[m.group(3)])

    def with_burst(self, burst: int | None) -> Rate:
        return self if burst is None else Rate(self.limit, self.period_ms, burst)

    def __str__(self) -> str:
        return f"{self.limit}/{self.period_ms}ms"


RateLike: TypeAlias = "Rate | str | tuple[int, int]"


@dataclass(slots=True)
class LimitDecision:
    allowed: bool
    remaining: int
    retry_after_ms: int  # 0 when allowed; -1 when the cost can never be admitted
    reset_after_ms: int


class Decision:
    """The outcome of a hit (or of a check: what a hit would decide).

    allowed; remaining (what is left to spend now, after this hit's charge if allowed);
    retry_after_ms (0 when allowed, -1 when the cost exceeds a limit: never admitted);
    reset_after_ms (until every limit is back to full); now_ms (the server time of the
    decision); binding (index of the limit that decided: the tightest, or the longest denial);
    limits (the same figures per limit).

    ``error`` is None for a decision Redis made. When Redis could not be reached or refused the
    hit, and the limiter fails open or closed (:class:`Failure`), the decision was made locally:
    ``error`` is what happened, ``allowed`` is the failure mode's answer, nothing is known about
    what remains (``remaining`` 0) and ``now_ms`` is the client's clock.
    """

    # The figures are read from the reply when asked for: building a decision is two stores
    # (this is on every hit's and check's path).
    __slots__ = ("_reply", "error")

    def __init__(self, reply: list[int], error: BaseException | None = None) -> None:
        self._reply = reply
        self.error = error

    @property
    def allowed(self) -> bool:
        return self._reply[0] == 1

    @property
    def remaining(self) -> int:
        return self._reply[1]

    @property
    def retry_after_ms(self) -> int:
        return self._reply[2]

    @property
    def reset_after_ms(self) -> int:
        return self._reply[3]

    @property
    def now_ms(self) -> int:
        return self._reply[4]

    @property
    def binding(self) -> int:
        return self._reply[5] - 1

    @property
    def limits(self) -> tuple[LimitDecision, ...]:
        v = self._reply
        return tuple([LimitDecision(v[i] == 1, v[i + 1], v[i + 2], v[i + 3])
                      for i in range(6, len(v), 4)])

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait before a retry can succeed (0.0 when allowed, None: never)."""
        return None if self.retry_after_ms < 0 else self.retry_after_ms / 1000

    @property
    def reset_after(self) -> float:
        return self.reset_after_ms / 1000

    @property
    def degraded(self) -> bool:
        """Made locally by the failure mode, not by Redis (see ``error``)."""
        return self.error is not None

    def __bool__(self) -> bool:
        return self._reply[0] == 1

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Decision) and other._reply == self._reply
                and other.error is self.error)

    def __hash__(self) -> int:
        return hash(tuple(self._reply))

    def __repr__(self) -> str:
        return (f"Decision(allowed={self.allowed}, remaining={self.remaining}, "
                f"retry_after_ms={self.retry_after_ms}, reset_after_ms={self.reset_after_ms}, "
                f"now_ms={self.now_ms}, binding={self.binding}, limits={self.limits}"
                + (f", error={self.error!r})" if self.error is not None else ")"))


def parse_decision(reply: Any) -> Decision:
    # integer replies arrive as Python ints (RESP2 and RESP3): no conversion on the hot path
    return Decision(reply if type(reply) is list else list(map(int, reply)))


# -- when Redis cannot decide ---------------------------------------------------------------------

FailureMode: TypeAlias = Literal["open", "closed", "raise"]
FAILURE_MODES: tuple[FailureMode, ...] = ("open", "closed", "raise")
# error replies (no redis-py class of their own) by which Redis refuses to run a write
_REFUSALS = frozenset({"MISCONF", "NOREPLICAS", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN"})
log = logging.getLogger("pyredislua.ratelimit")


def unreachable(error: BaseException) -> bool:
    """Redis could not be reached or did not answer in time: the call may or may not have run
    (a charging call is never re-sent, so it ran at most once). Authentication failures are
    configuration errors, not outages."""
    if isinstance(error, (rx.AuthenticationError, rx.AuthorizationError)):
        return False
    return isinstance(error, (rx.ConnectionError, rx.TimeoutError, builtins.TimeoutError))


def refused(error: BaseException) -> bool:
    """Redis refused to run the call, so nothing ran: out of memory (``noeviction``), a
    read-only replica, a cluster without the slot, a failed RDB save (``MISCONF``), ..."""
    if isinstance(error, (rx.OutOfMemoryError, rx.ReadOnlyError, rx.ClusterDownError,
                          rx.TryAgainError)):
        return True
    return (isinstance(error, rx.ResponseError) and not isinstance(error, OperationError)
            and str(error).split(" ", 1)[0] in _REFUSALS)


class _Warnings:
    """One log warning per 10 s at most, with how many were held back: an outage hits every
    request, and a log line per request would bury the logs."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last = -math.inf
        self.held = 0
        self.lock = threading.Lock()

    def warn(self, error: BaseException, mode: str) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self.last < self.every:
                self.held += 1
                return
            held, self.last, self.held = self.held, now, 0
        more = f" ({held} more since the last warning)" if held else ""
        log.warning("rate limiter failing %s: Redis %s: %s%s", mode,
                    "refused the call" if refused(error) else "unreachable", error, more)


WARNINGS = _Warnings()


@dataclass(frozen=True)
class Failure:
    """What a limiter decides when Redis cannot: it is unreachable (connection refused or lost,
    timed out, loading after a restart) or refuses the call (``OOM`` at ``maxmemory`` with
    ``noeviction``, ``READONLY`` on a replica, ``MISCONF``, ...).

    ``mode``: ``"open"`` (the default) admits, so an outage of Redis does not become an outage
    of the service it protects; ``"closed"`` denies, with ``retry_after_ms`` as the suggested
    wait; ``"raise"`` raises the redis-py error. Such decisions carry the error
    (``Decision.error``) and are logged (``pyredislua.ratelimit``, at most one warning per 10 s).
    A refused hit first asks Redis what it would decide, read-only (allowed at ``maxmemory`` and
    on replicas): a denial is exact and returned as is; only an admission that could not be
    charged falls to the mode. Errors that are not outages (bad arguments, ``BADSTATE``,
    ``WRONGTYPE``, authentication, permissions) always raise.
    """

    mode: FailureMode = "open"
    retry_after_ms: int = 1000

    def __post_init__(self) -> None:
        if self.mode not in FAILURE_MODES:
            raise ValueError(f"on_failure must be one of {', '.join(FAILURE_MODES)}, "
                             f"got {self.mode!r}")
        if not 0 <= self.retry_after_ms <= MAX_PERIOD_MS:
            raise ValueError(f"retry_after_ms must be in 0..{MAX_PERIOD_MS}")

    @classmethod
    def of(cls, value: FailureLike) -> Failure:
        return value if isinstance(value, Failure) else cls(value)

    def handles(self, error: BaseException) -> bool:
        """Whether this error is decided by the mode (else it is raised)."""
        return self.mode != "raise" and (unreachable(error) or refused(error))

    def decision(self, error: BaseException, limits: int = 1) -> Decision:
        """The local decision for a call over ``limits`` limits that Redis could not make."""
        WARNINGS.warn(error, self.mode)
        a, retry = (1, 0) if self.mode == "open" else (0, self.retry_after_ms)
        now = int(time.time() * 1000)
        return Decision([a, 0, retry, 0, now, 1, *([a, 0, retry, 0] * limits)], error)

    def slot(self, error: BaseException) -> SlotDecision:
        """The local decision for a concurrency slot Redis could not grant or deny."""
        WARNINGS.warn(error, self.mode)
        ok = self.mode == "open"
        return SlotDecision(ok, 0, 0 if ok else self.retry_after_ms, 0,
                            int(time.time() * 1000), 0, error)


FailureLike: TypeAlias = "Failure | FailureMode"


@dataclass(frozen=True)
class Limit:
    """One limit of a call: an algorithm, a rate, and the key holding its state."""

    algorithm: str
    rate: Rate
    key: str

    def args(self) -> tuple[int, int, int]:
        burst = 0
        if self.algorithm in ("gcra", "token_bucket") and self.rate.burst is not None:
            burst = self.rate.burst
        return (self.rate.limit, self.rate.period_ms, burst)


def check_cost(cost: int, peek: bool) -> None:
    low = 0 if peek else 1
    if not isinstance(cost, int) or isinstance(cost, bool) or not low <= cost <= MAX_COST:
        raise ValueError(f"cost must be an integer in {low}..{MAX_COST}, got {cost!r}")


def decide_call(limits: Sequence[Limit], cost: int = 1, *, peek: bool = False) -> Call[Decision]:
    """One decision over ``limits`` (all keys under one hash tag), charged all or none.

    Uses the algorithm's own operation when all limits share one algorithm, else
    ``ratelimit.multi``. ``peek``: report what a hit would decide, without charging (read-only).
    """
    check_cost(cost, peek)
    if not 1 <= len(limits) <= MAX_KEYS:
        raise ValueError(f"a decision takes 1..{MAX_KEYS} limits, got {len(limits)}")
    algorithms = {lim.algorithm for lim in limits}
    suffix = "_peek" if peek else ""
    keys = tuple(lim.key for lim in limits)
    if len(algorithms) == 1:
        (algorithm,) = algorithms
        args: list[int | str] = [cost]
        for lim in limits:
            args.extend(lim.args())
        return Call(f"ratelimit.{algorithm}{suffix}", keys, tuple(args), parse_decision)
    args = [cost]
    for lim in limits:
        args.append(lim.algorithm)
        args.extend(lim.args())
    return Call(f"ratelimit.multi{suffix}", keys, tuple(args), parse_decision)


MAX_BATCH = 256


def _parse_batch(reply: Any) -> list[Decision]:
    v = list(map(int, reply))
    now = v[0]
    out = []
    for i in range(1, len(v), 4):
        a, rem, retry, reset = v[i], v[i + 1], v[i + 2], v[i + 3]
        out.append(Decision([a, rem, retry, reset, now, 1, a, rem, retry, reset]))
    return out


def batch_call(items: Sequence[tuple[Limit, int]]) -> Call[list[Decision]]:
    """Independent decisions for up to 256 (limit, cost) items in one script call; every key
    under one hash tag (e.g. one tenant's users). Each item is admitted or denied on its own."""
    if not 1 <= len(items) <= MAX_BATCH:
        raise ValueError(f"a batch takes 1..{MAX_BATCH} items, got {len(items)}")
    args: list[str | int] = []
    for lim, cost in items:
        check_cost(cost, False)
        args.extend((lim.algorithm, *lim.args(), cost))
    return Call("ratelimit.batch", tuple(lim.key for lim, _ in items), tuple(args),
                _parse_batch)


def reset_call(keys: Sequence[str]) -> Call[int]:
    return Call("ratelimit.reset", tuple(keys), (), int)


@dataclass(frozen=True)
class KeyState:
    """The raw state of one limiter key (``ratelimit.inspect``)."""

    key: str
    type: str  # none | string | zset (a limiter's), or any other Redis type
    pttl_ms: int
    now_ms: int
    # what the key holds: an algorithm name, "concurrency", "unknown" (not a limiter's), or None
    algorithm: str | None = None
    value: str | None = None  # string keys, e.g. "gcra:<tat_ms>:<frac>:<limit>"
    fields: dict[str, str] | None = None  # a limiter string's fields, or a hash's
    count: int | None = None  # zset keys (sliding log, concurrency): entries, marker excluded
    oldest: float | None = None
    newest: float | None = None


# the fields of each string state, after its marker ("gcra:..." -> tat_ms, frac, limit)
_STATE_FIELDS = {
    "gcra": ("tat_ms", "frac", "limit"),
    "token_bucket": ("units", "ts_ms", "period_ms"),
    "fixed_window": ("window", "count"),
    "sliding_window": ("window", "count", "previous"),
}


def inspect_call(key: str) -> Call[KeyState]:
    def parse(reply: Any) -> KeyState:
        kind, pttl, now = as_text(reply[0]), int(reply[1]), int(reply[2])
        rest = reply[3:]
        if kind == "string":
            value, algorithm = as_text(rest[0]), as_text(rest[1])
            names = _STATE_FIELDS.get(algorithm)
            fields = None
            if names is not None:
                fields = dict(zip(names, value.split(":")[1:], strict=False))
            return KeyState(key, kind, pttl, now, algorithm, value=value, fields=fields)
        if kind == "hash":
            pairs = {as_text(rest[i]): as_text(rest[i + 1]) for i in range(0, len(rest) - 1, 2)}
            return KeyState(key, kind, pttl, now, "unknown", fields=pairs)
        if kind == "zset":
            def score(x: Any) -> float | None:
                return None if x is None else float(as_text(x))
            return KeyState(key, kind, pttl, now, as_text(rest[3]), count=int(rest[0]),
                            oldest=score(rest[1]), newest=score(rest[2]))
        return KeyState(key, kind, pttl, now, None if kind == "none" else "unknown")

    return Call("ratelimit.inspect", (key,), (), parse)


# -- concurrency ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotDecision:
    allowed: bool
    remaining: int
    retry_after_ms: int  # upper bound: when the oldest lease ends (a release frees one sooner)
    reset_after_ms: int
    now_ms: int
    in_flight: int
    error: BaseException | None = None  # see Decision.error: decided locally by a Failure mode

    @property
    def degraded(self) -> bool:
        return self.error is not None

    @property
    def retry_after(self) -> float:
        return self.retry_after_ms / 1000

    def __bool__(self) -> bool:
        return self.allowed


def _parse_slot(reply: Any) -> SlotDecision:
    v = [int(x) for x in reply]
    return SlotDecision(bool(v[0]), v[1], v[2], v[3], v[4], v[5])


def acquire_call(key: str, lease: str, limit: int, ttl_ms: int) -> Call[SlotDecision]:
    return Call("ratelimit.acquire", (key,), (lease, limit, ttl_ms), _parse_slot)


def release_call(key: str, lease: str) -> Call[tuple[bool, int]]:
    return Call("ratelimit.release", (key,), (lease,),
                lambda r: (bool(int(r[0])), int(r[1])))


def renew_call(key: str, lease: str, ttl_ms: int) -> Call[tuple[bool, int]]:
    return Call("ratelimit.renew", (key,), (lease, ttl_ms),
                lambda r: (bool(int(r[0])), int(r[1])))


def limiter_key(name: str, identity: str, period_ms: int | None = None, *, algorithm: str,
                tag: str | None = None, prefix: str = PREFIX) -> str:
    """``prl:rl:{tag}:algorithm:name:identity[:period_ms]`` (tag defaults to the identity).

    ``algorithm``: one of :data:`ALGORITHMS`, or ``concurrency``. It is part of the name so that
    limiters of different algorithms never share a key."""
    if algorithm not in ALGORITHMS and algorithm != "concurrency":
        raise ValueError(f"unknown algorithm {algorithm!r}")
    base = f"{prefix}:{hash_tag(identity if tag is None else tag)}:{algorithm}:{name}:{identity}"
    return base if period_ms is None else f"{base}:{period_ms}"
