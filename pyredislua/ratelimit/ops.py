"""Call specs for the ``ratelimit.*`` Lua operations: pure descriptions, no I/O.

Every decision comes back in one reply: allowed, remaining, retry-after and reset-after (ms), the
server time of the decision, which limit decided, and the same figures per limit.

Key naming: every key of one call must share one hash tag (one cluster slot). A limiter's key is
``prl:rl:{<tag>}:<limiter name>:<identity>:<period_ms>``; the tag defaults to the identity, so one
user's limits share a slot. To charge per-user and per-tenant limits in one call, the caller picks
one tag for all of them (e.g. the tenant id): ``prl:rl:{tenant-7}:per-user:alice:1000`` and
``prl:rl:{tenant-7}:per-tenant:tenant-7:1000``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from ..engine.protocol import Call, text
from ..errors import BadStateError, PyRedisLuaError

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
    """

    __slots__ = ("_reply", "allowed", "binding", "now_ms", "remaining", "reset_after_ms",
                 "retry_after_ms")

    def __init__(self, reply: list[int]) -> None:
        self._reply = reply
        self.allowed = reply[0] == 1
        self.remaining = reply[1]
        self.retry_after_ms = reply[2]
        self.reset_after_ms = reply[3]
        self.now_ms = reply[4]
        self.binding = reply[5] - 1

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

    def __bool__(self) -> bool:
        return self.allowed

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decision) and other._reply == self._reply

    def __hash__(self) -> int:
        return hash(tuple(self._reply))

    def __repr__(self) -> str:
        return (f"Decision(allowed={self.allowed}, remaining={self.remaining}, "
                f"retry_after_ms={self.retry_after_ms}, reset_after_ms={self.reset_after_ms}, "
                f"now_ms={self.now_ms}, binding={self.binding}, limits={self.limits})")


def parse_decision(reply: Any) -> Decision:
    # integer replies arrive as Python ints (RESP2 and RESP3): no conversion on the hot path
    return Decision(reply if type(reply) is list else list(map(int, reply)))


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
    type: str  # none | string | hash | zset
    pttl_ms: int
    now_ms: int
    value: str | None = None  # string keys (GCRA: "tat_ms:frac:limit")
    fields: dict[str, str] | None = None  # hash keys (token bucket, windows)
    count: int | None = None  # zset keys (sliding log, concurrency)
    oldest: float | None = None
    newest: float | None = None


def inspect_call(key: str) -> Call[KeyState]:
    def parse(reply: Any) -> KeyState:
        kind, pttl, now = text(reply[0]), int(reply[1]), int(reply[2])
        rest = reply[3:]
        if kind == "string":
            return KeyState(key, kind, pttl, now, value=text(rest[0]))
        if kind == "hash":
            pairs = {text(rest[i]): text(rest[i + 1]) for i in range(0, len(rest) - 1, 2)}
            return KeyState(key, kind, pttl, now, fields=pairs)
        if kind == "zset":
            def score(x: Any) -> float | None:
                return None if x is None else float(text(x))
            return KeyState(key, kind, pttl, now, count=int(rest[0]), oldest=score(rest[1]),
                            newest=score(rest[2]))
        return KeyState(key, kind, pttl, now)

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


def hash_tag(tag: str) -> str:
    if not tag:
        raise ValueError("a hash tag must not be empty")
    if "{" in tag or "}" in tag:
        raise ValueError(f"a hash tag must not contain braces, got {tag!r}")
    return "{" + tag + "}"


def limiter_key(name: str, identity: str, period_ms: int | None = None, *, tag: str | None = None,
                prefix: str = PREFIX) -> str:
    """``prl:rl:{tag}:name:identity[:period_ms]`` (tag defaults to the identity)."""
    base = f"{prefix}:{hash_tag(identity if tag is None else tag)}:{name}:{identity}"
    return base if period_ms is None else f"{base}:{period_ms}"


def ms(seconds: float) -> int:
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be a positive number of seconds, got {seconds!r}")
    return max(1, math.ceil(seconds * 1000 - 1e-9))
