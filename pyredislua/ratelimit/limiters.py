"""Limiter objects: one class per algorithm, bound to a sync or an asyncio client.

The logic lives once, in call specs (:mod:`.ops`); ``hit``/``check`` return a :class:`Decision`
on a :class:`~pyredislua.Client` and an awaitable of one on an :class:`~pyredislua.AsyncClient`::

    api = GCRA(client, "api", "100/s", burst=20)
    d = api.hit("user-42")     # d.allowed, d.remaining, d.retry_after_ms, d.reset_after_ms
    api = GCRA(aclient, "api", "100/s")
    d = await api.hit("user-42")

When Redis cannot decide (unreachable, or refusing writes at ``maxmemory``), a limiter fails open
by default (``on_failure="open"``: admitted, ``d.error`` set), or closed, or raises; see
:class:`~pyredislua.ratelimit.ops.Failure`.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar, overload

from ..client import AsyncClient, Client
from ..engine.protocol import Call
from ..kit import hash_tag, ms
from ..observe.series import MinuteSeries, parse_series
from .decorators import rate_limited
from .ops import (
    MAX_COST,
    MAX_SLIDING_LOG_LIMIT,
    PREFIX,
    WARNINGS,
    Decision,
    Failure,
    FailureLike,
    KeyState,
    Limit,
    Rate,
    RateLike,
    RateLimitExceeded,
    SlotDecision,
    acquire_call,
    batch_call,
    check_cost,
    decide_call,
    inspect_call,
    limiter_key,
    parse_decision,
    refused,
    release_call,
    renew_call,
    reset_call,
)

C = TypeVar("C", Client, AsyncClient)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


Peek = Callable[[], Call[Decision]]


def _recover(error: Exception, failure: Failure, fallback: Callable[[BaseException], T],
             peek: Peek | None) -> T | Call[T]:
    """What :func:`guarded` makes of ``error``: raise it, decide it, or ask ``peek()``."""
    if not failure.handles(error):
        raise error
    if peek is None or not refused(error):
        return fallback(error)
    asked = peek()

    def read(reply: Any) -> T:
        checked = asked.parse(reply)
        return checked if not checked.allowed else fallback(error)  # type: ignore[return-value]

    def unreachable(again: Exception) -> T:
        if not failure.handles(again):
            raise again
        return fallback(error)

    return Call(asked.op, asked.keys, asked.args, read, unreachable)


def guarded(call: Call[T], failure: Failure, fallback: Callable[[BaseException], T],
            peek: Peek | None = None) -> Call[T]:
    """``call`` with the failure policy: when Redis is unreachable or refuses it and ``failure``
    decides such errors, the result is ``fallback(error)`` instead. A refused call (nothing ran)
    is followed by the read-only call ``peek()`` builds (allowed at maxmemory and on replicas):
    a denial it reports is the result as is. Pure: the policy is data on the call
    (:attr:`Call.recover`), the same for sync and asyncio clients."""
    return call.recovering(lambda error: _recover(error, failure, fallback, peek))


class _Policy:
    """A limiter's failure policy for its single decisions, built once per failure mode: the
    hot path then builds one call per hit or check (no wrapped calls, no closures per check).
    Decides exactly as :func:`guarded` does."""

    __slots__ = ("failure", "fallback", "recover_check")

    def __init__(self, failure: Failure, limits: int) -> None:
        self.failure = failure
        self.fallback: Callable[[BaseException], Decision] = (
            lambda error: failure.decision(error, limits))
        # what a check's call recovers with (None: the error is raised as is)
        self.recover_check: Callable[[Exception], Decision | Call[Decision]] | None = (
            None if failure.mode == "raise" else self.check)

    def check(self, error: Exception) -> Decision | Call[Decision]:
        return _recover(error, self.failure, self.fallback, None)

    def hit(self, error: Exception, peek_op: str, keys: tuple[str, ...],
            args: tuple[int | str, ...]) -> Decision | Call[Decision]:
        return _recover(error, self.failure, self.fallback,
                        lambda: Call(peek_op, keys, args, parse_decision))


class Limiter(Generic[C]):
    """Limits per identity, with one or more rates (``"10/s", "1000/h"``) charged all or none.

    Keys: ``prl:rl:{<tag>}:<algorithm>:<name>:<identity>:<period_ms>``; the tag defaults to
    the identity. ``on_failure``: what a hit or check decides when Redis is unreachable or
    refuses it: ``"open"`` (admit; the default), ``"closed"`` (deny) or ``"raise"``, or a
    :class:`~pyredislua.ratelimit.ops.Failure`. ``metrics=True``: every hit records its decision
    (allowed or denied, per minute) in ``prl:rl:{<tag>}:metrics:<name>``, under the call's own
    hash tag (one key per tag: with the default tag, per identity); read it with
    :meth:`metrics_call` (see docs/design/metrics-in-redis.md). Checks, ``hit_many`` and
    combined calls record nothing.
    """

    algorithm: ClassVar[str] = "gcra"
    client: C

    def __init__(self, client: C, name: str, *rates: RateLike, burst: int | None = None,
                 prefix: str = PREFIX, on_failure: FailureLike = "open",
                 metrics: bool = False) -> None:
        if not rates:
            raise ValueError("a limiter needs at least one rate, e.g. '100/s'")
        if not name or "{" in name or "}" in name:
            raise ValueError(f"a limiter name must be non-empty and brace-free, got {name!r}")
        self.client = client
        self.name = name
        self.prefix = prefix
        self.failure = Failure.of(on_failure)
        self.rates = tuple(Rate.parse(r).with_burst(burst) for r in rates)
        periods = [r.period_ms for r in self.rates]
        if len(set(periods)) != len(periods):
            raise ValueError("two rates of one limiter must have different periods")
        self._check_rates()
        # precomputed for the hot path (hit_call/check_call)
        self._periods = tuple(f":{r.period_ms}" for r in self.rates)
        self._key_head = f"{prefix}:{{"
        self._key_mid = f"}}:{self.algorithm}:{name}:"
        self._tail = tuple(a for r in self.rates
                           for a in Limit(self.algorithm, r, "").args())
        self._args1 = (1, *self._tail)  # the arguments of the usual cost, 1
        self._ops = (f"ratelimit.{self.algorithm}", f"ratelimit.{self.algorithm}_peek")
        self.metrics_enabled = metrics
        self._metrics_mid = f"}}:metrics:{name}"
        self._policy: _Policy | None = None

    def _check_rates(self) -> None:
        pass

    # -- pure: keys and call specs ------------------------------------------------------------

    def limits(self, identity: str, *, tag: str | None = None) -> list[Limit]:
        return [Limit(self.algorithm, rate,
                      limiter_key(self.name, identity, rate.period_ms, algorithm=self.algorithm,
                                  tag=tag, prefix=self.prefix))
                for rate in self.rates]

    def keys(self, identity: str, *, tag: str | None = None) -> list[str]:
        return list(self._keys(identity, tag))

    def _keys(self, identity: str, tag: str | None) -> tuple[str, ...]:
        t = identity if tag is None else tag
        if not t or "{" in t or "}" in t:
            hash_tag(t)  # raises the explanatory ValueError
        periods = self._periods
        if len(periods) == 1:
            return (f"{self._key_head}{t}{self._key_mid}{identity}{periods[0]}",)
        base = f"{self._key_head}{t}{self._key_mid}{identity}"
        return tuple([base + p for p in periods])

    def metrics_key(self, identity: str, *, tag: str | None = None) -> str:
        """Where this limiter's decisions under the call's hash tag (default: the identity) are
        recorded: ``prl:rl:{<tag>}:metrics:<name>``."""
        t = identity if tag is None else tag
        hash_tag(t)  # the explanatory ValueError of a bad tag
        return f"{self._key_head}{t}{self._metrics_mid}"

    def _hit_keys(self, identity: str, tag: str | None) -> tuple[str, ...]:
        """The keys of a charging call: the limit keys, and the metrics key when recording."""
        limit_keys: tuple[str, ...] = self._keys(identity, tag)
        if self.metrics_enabled:
            return (*limit_keys, f"{self._key_head}{identity if tag is None else tag}"
                                 f"{self._metrics_mid}")
        return limit_keys

    def metrics_call(self, *, tag: str) -> Call[MinuteSeries]:
        """The decisions recorded under hash tag ``tag`` (``ratelimit.metrics``, no writes)."""
        return Call("ratelimit.metrics", (self.metrics_key(tag, tag=tag),), (),
                    parse_series("limiter", self.name))

    def _call(self, identity: str, cost: int, tag: str | None, peek: bool) -> Call[Decision]:
        if cost.__class__ is not int or not (0 if peek else 1) <= cost <= MAX_COST:
            check_cost(cost, peek)
        sent: tuple[str, ...] = (self._keys(identity, tag) if peek
                                 else self._hit_keys(identity, tag))
        return Call(self._ops[peek], sent, (cost, *self._tail), parse_decision)

    def _policy_for(self, failure: Failure) -> _Policy:
        policy = self._policy
        if policy is None or policy.failure is not failure:
            policy = _Policy(failure, len(self.rates))
            if failure is self.failure:
                self._policy = policy
        return policy

    @overload
    def metrics(self: Limiter[Client], *, tag: str) -> MinuteSeries: ...
    @overload
    def metrics(self: Limiter[AsyncClient], *, tag: str) -> Awaitable[MinuteSeries]: ...
    def metrics(self, *, tag: str) -> MinuteSeries | Awaitable[MinuteSeries]:
        """The decisions recorded under hash tag ``tag`` (with ``metrics=True``, by any client):
        allowed and denied per minute over the last hour (one read-only call)."""
        return self.client.run(self.metrics_call(tag=tag))

    def hit_call(self, identity: str, cost: int = 1, *, tag: str | None = None) -> Call[Decision]:
        return self._call(identity, cost, tag, False)

    def check_call(self, identity: str, cost: int = 1, *, tag: str | None = None
                   ) -> Call[Decision]:
        return self._call(identity, cost, tag, True)

    # -- driven ----------------------------------------------------------------------------------

    @overload
    def hit(self: Limiter[Client], identity: str, cost: int = 1, *,
            tag: str | None = None) -> Decision: ...
    @overload
    def hit(self: Limiter[AsyncClient], identity: str, cost: int = 1, *,
            tag: str | None = None) -> Awaitable[Decision]: ...
    def hit(self, identity: str, cost: int = 1, *, tag: str | None = None
            ) -> Decision | Awaitable[Decision]:
        """Charge ``cost`` if every rate admits it (one round trip); denied hits charge nothing.

        Never re-sent (``resend: once``): a hit whose reply was lost to a timeout or a dropped
        connection was charged once or not at all, and counts as Redis being unreachable (the
        ``on_failure`` mode decides, or the error is raised)."""
        return self.guarded_hit(identity, cost, tag=tag)

    def guarded_hit(self, identity: str, cost: int = 1, *, tag: str | None = None,
                    failure: Failure | None = None) -> Decision | Awaitable[Decision]:
        """:meth:`hit` with another failure mode than the limiter's (middleware, decorators)."""
        failure = failure or self.failure
        if cost.__class__ is not int or not 1 <= cost <= MAX_COST:
            check_cost(cost, False)
        keys = self._keys(identity, tag)
        hit_keys = self._hit_keys(identity, tag) if self.metrics_enabled else keys
        args = self._args1 if cost == 1 else (cost, *self._tail)
        if failure.mode == "raise":
            return self.client.run(Call(self._ops[0], hit_keys, args, parse_decision))
        policy, peek_op = self._policy_for(failure), self._ops[1]
        return self.client.run(Call(self._ops[0], hit_keys, args, parse_decision,
                                    lambda error: policy.hit(error, peek_op, keys, args)))

    @overload
    def check(self: Limiter[Client], identity: str, cost: int = 1, *,
              tag: str | None = None) -> Decision: ...
    @overload
    def check(self: Limiter[AsyncClient], identity: str, cost: int = 1, *,
              tag: str | None = None) -> Awaitable[Decision]: ...
    def check(self, identity: str, cost: int = 1, *, tag: str | None = None
              ) -> Decision | Awaitable[Decision]:
        """What a hit of ``cost`` would decide now, charging nothing (read-only; ``cost=0``
        reports the current state). Runs at maxmemory and on replicas; unreachable, the
        ``on_failure`` mode decides."""
        if cost.__class__ is not int or not 0 <= cost <= MAX_COST:
            check_cost(cost, True)
        policy = self._policy
        if policy is None or policy.failure is not self.failure:
            policy = self._policy_for(self.failure)
        return self.client.run(Call(self._ops[1], self._keys(identity, tag),
                                    self._args1 if cost == 1 else (cost, *self._tail),
                                    parse_decision, policy.recover_check))

    @overload
    def reset(self: Limiter[Client], identity: str, *, tag: str | None = None) -> int: ...
    @overload
    def reset(self: Limiter[AsyncClient], identity: str, *,
              tag: str | None = None) -> Awaitable[int]: ...
    def reset(self, identity: str, *, tag: str | None = None) -> int | Awaitable[int]:
        """Forget an identity's state (back to full); returns how many keys existed. Runs at
        maxmemory (``allow-oom``); raises when Redis is unreachable."""
        return self.client.run(reset_call(self.keys(identity, tag=tag)))

    @overload
    def inspect(self: Limiter[Client], identity: str, *, tag: str | None = None
                ) -> list[KeyState]: ...
    @overload
    def inspect(self: Limiter[AsyncClient], identity: str, *, tag: str | None = None
                ) -> Awaitable[list[KeyState]]: ...
    def inspect(self, identity: str, *, tag: str | None = None
                ) -> list[KeyState] | Awaitable[list[KeyState]]:
        """The raw state of each of the identity's keys (one pipelined round trip)."""
        calls = [inspect_call(k) for k in self.keys(identity, tag=tag)]
        return self.client.run_many(calls)

    def hit_many_call(self, identities: Sequence[str], cost: int = 1, *, tag: str
                      ) -> Call[list[Decision]]:
        """Independent hits for many identities under one hash tag, in one script call."""
        if len(self.rates) != 1:
            raise ValueError("hit_many needs a limiter with a single rate")
        return batch_call([(lim, cost) for identity in identities
                           for lim in self.limits(identity, tag=tag)])

    @overload
    def hit_many(self: Limiter[Client], identities: Sequence[str], cost: int = 1, *,
                 tag: str) -> list[Decision]: ...
    @overload
    def hit_many(self: Limiter[AsyncClient], identities: Sequence[str], cost: int = 1, *,
                 tag: str) -> Awaitable[list[Decision]]: ...
    def hit_many(self, identities: Sequence[str], cost: int = 1, *, tag: str
                 ) -> list[Decision] | Awaitable[list[Decision]]:
        """One decision per identity (each on its own, not all-or-none) in one round trip and one
        script call; all keys under ``tag`` (e.g. the tenant). For identities with different
        tags, pipeline ``hit_call``s with ``client.run_many``. Every key is read and checked
        before the first is charged (an error charges none). Not re-sent, like :meth:`hit`;
        when Redis cannot decide, the ``on_failure`` mode decides for every identity."""
        call = self.hit_many_call(identities, cost, tag=tag)
        if self.failure.mode == "raise":
            return self.client.run(call)
        n = len(identities)
        return self.client.run(guarded(call, self.failure,
                                       lambda e: [self.failure.decision(e) for _ in range(n)]))

    def limit(self, key: str | Callable[..., str], *, cost: int | Callable[..., int] = 1,
              tag: str | Callable[..., str] | None = None) -> Callable[[F], F]:
        """Decorator: charge before each call, raise :class:`RateLimitExceeded` when denied.
        Works on sync functions (sync client) and ``async def`` ones (asyncio client)."""
        return rate_limited(self, key, cost=cost, tag=tag)

    def __repr__(self) -> str:
        rates = ", ".join(str(r) for r in self.rates)
        return f"<{type(self).__name__} {self.name!r} {rates}>"


class GCRA(Limiter[C]):
    """Generic cell rate algorithm (the default): one key per rate holding the theoretical arrival
    time. ``limit`` per ``period`` sustained, ``burst`` at once (default: the limit). Exact: over
    any interval of d ms it admits at most ``burst + d*limit/period`` units."""

    algorithm = "gcra"


class TokenBucket(Limiter[C]):
    """Token bucket of capacity ``burst`` (default: the limit) refilled with ``limit`` tokens per
    ``period``, continuously. Same envelope as GCRA; stores tokens and a timestamp."""

    algorithm = "token_bucket"


def _no_burst(rates: Sequence[Rate]) -> None:
    if any(r.burst is not None for r in rates):
        raise ValueError("burst applies to GCRA and TokenBucket only")


class SlidingLog(Limiter[C]):
    """Sliding log: exact, never more than ``limit`` in any window of ``period`` ms. Memory and
    work grow with the limit (at most 10,000)."""

    algorithm = "sliding_log"

    def _check_rates(self) -> None:
        for r in self.rates:
            if r.limit > MAX_SLIDING_LOG_LIMIT:
                raise ValueError(f"a sliding log limit must be at most {MAX_SLIDING_LOG_LIMIT}")
        _no_burst(self.rates)


class SlidingWindow(Limiter[C]):
    """Sliding window counter: approximate and cheap (one small hash). Each aligned window
    admits at most ``limit``; a window straddling two aligned ones starting at offset ``o``
    admits at most ``limit * (1 + o/period)`` (< 2x, and close to the limit for even traffic)."""

    algorithm = "sliding_window"

    def _check_rates(self) -> None:
        _no_burst(self.rates)


class FixedWindow(Limiter[C]):
    """Fixed window aligned on multiples of ``period`` since the epoch: at most ``limit`` per
    window, but up to ``2*limit`` in a period straddling a boundary."""

    algorithm = "fixed_window"

    def _check_rates(self) -> None:
        _no_burst(self.rates)


ALGORITHM_CLASSES: dict[str, type[Limiter[Any]]] = {
    cls.algorithm: cls for cls in (GCRA, TokenBucket, SlidingLog, SlidingWindow, FixedWindow)
}


# -- several limiters in one decision ----------------------------------------------------------


def combined_call(entries: Sequence[tuple[Limiter[Any], str]], cost: int = 1, *, tag: str,
                  peek: bool = False) -> Call[Decision]:
    """One all-or-none decision over several limiters (any algorithms), e.g. per user and per
    tenant: ``[(per_user, "alice"), (per_tenant, "acme")]`` with ``tag="acme"``: every key is
    named under that one tag, so they share a cluster slot."""
    limits = [lim for limiter, identity in entries for lim in limiter.limits(identity, tag=tag)]
    return decide_call(limits, cost, peek=peek)


def _all(client: Client | AsyncClient, entries: Sequence[tuple[Limiter[Any], str]], cost: int,
         tag: str, peek: bool, on_failure: FailureLike | None) -> Decision | Awaitable[Decision]:
    call = combined_call(entries, cost, tag=tag, peek=peek)
    failure = entries[0][0].failure if on_failure is None else Failure.of(on_failure)
    if failure.mode == "raise":
        return client.run(call)
    n = len(call.keys)
    return client.run(guarded(
        call, failure, lambda e: failure.decision(e, n),
        None if peek else lambda: combined_call(entries, cost, tag=tag, peek=True)))


@overload
def hit_all(client: Client, entries: Sequence[tuple[Limiter[Any], str]], cost: int = 1, *,
            tag: str, on_failure: FailureLike | None = None) -> Decision: ...
@overload
def hit_all(client: AsyncClient, entries: Sequence[tuple[Limiter[Any], str]], cost: int = 1, *,
            tag: str, on_failure: FailureLike | None = None) -> Awaitable[Decision]: ...
def hit_all(client: Client | AsyncClient, entries: Sequence[tuple[Limiter[Any], str]],
            cost: int = 1, *, tag: str, on_failure: FailureLike | None = None
            ) -> Decision | Awaitable[Decision]:
    """Charge every limiter in ``entries`` or none of them, in one call (never re-sent).
    ``on_failure`` defaults to the first limiter's mode."""
    return _all(client, entries, cost, tag, False, on_failure)


@overload
def check_all(client: Client, entries: Sequence[tuple[Limiter[Any], str]], cost: int = 1, *,
              tag: str, on_failure: FailureLike | None = None) -> Decision: ...
@overload
def check_all(client: AsyncClient, entries: Sequence[tuple[Limiter[Any], str]], cost: int = 1,
              *, tag: str, on_failure: FailureLike | None = None) -> Awaitable[Decision]: ...
def check_all(client: Client | AsyncClient, entries: Sequence[tuple[Limiter[Any], str]],
              cost: int = 1, *, tag: str, on_failure: FailureLike | None = None
              ) -> Decision | Awaitable[Decision]:
    return _all(client, entries, cost, tag, True, on_failure)


# -- concurrency -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """A concurrency lease: ``acquired`` tells whether it holds a slot."""

    key: str
    lease: str
    decision: SlotDecision

    @property
    def acquired(self) -> bool:
        return self.decision.allowed

    def __bool__(self) -> bool:
        return self.decision.allowed


class ConcurrencyLimiter(Generic[C]):
    """At most ``limit`` requests in flight per identity. Each holds a lease that ends after
    ``ttl`` seconds unless released (by lease id) or renewed, so a holder that dies frees its slot
    within ``ttl``. ``with limiter.hold("user-1"): ...`` (``async with`` on an asyncio client).

    Key: ``prl:rl:{<tag>}:concurrency:<name>:<identity>``. Lease ids are chosen by the client
    (random unless given), so acquire, renew and release are all safe to re-send: a repeated
    acquire renews its own lease, a repeated release or renew changes nothing more.

    ``on_failure``: what :meth:`acquire` decides when Redis is unreachable or refuses it (out
    of memory): ``"open"`` (a slot that is not recorded anywhere; the default), ``"closed"``
    (no slot) or ``"raise"``. Release and renew run at maxmemory (``allow-oom``); unreachable,
    they raise, except when leaving :meth:`hold`, where the lease is left to run out (logged).
    """

    client: C

    def __init__(self, client: C, name: str, limit: int, *, ttl: float = 30.0,
                 prefix: str = PREFIX, on_failure: FailureLike = "open") -> None:
        if not 1 <= limit <= 100_000:
            raise ValueError(f"limit must be in 1..100000, got {limit}")
        if not name or "{" in name or "}" in name:
            raise ValueError(f"a limiter name must be non-empty and brace-free, got {name!r}")
        self.client = client
        self.name = name
        self.limit_ = limit
        self.ttl_ms = ms(ttl)
        if self.ttl_ms > 86_400_000:
            raise ValueError("a lease ttl must be at most one day")
        self.prefix = prefix
        self.failure = Failure.of(on_failure)

    def key(self, identity: str, *, tag: str | None = None) -> str:
        return limiter_key(self.name, identity, algorithm="concurrency", tag=tag,
                           prefix=self.prefix)

    def acquire_call(self, identity: str, *, lease: str | None = None, tag: str | None = None
                     ) -> Call[Slot]:
        key = self.key(identity, tag=tag)
        lease_id = lease or secrets.token_hex(12)
        inner = acquire_call(key, lease_id, self.limit_, self.ttl_ms)
        return Call(inner.op, inner.keys, inner.args,
                    lambda reply: Slot(key, lease_id, inner.parse(reply)))

    @overload
    def acquire(self: ConcurrencyLimiter[Client], identity: str, *, lease: str | None = None,
                tag: str | None = None) -> Slot: ...
    @overload
    def acquire(self: ConcurrencyLimiter[AsyncClient], identity: str, *,
                lease: str | None = None, tag: str | None = None) -> Awaitable[Slot]: ...
    def acquire(self, identity: str, *, lease: str | None = None, tag: str | None = None
                ) -> Slot | Awaitable[Slot]:
        """Try to take a slot (never waits); check ``slot.acquired``."""
        call = self.acquire_call(identity, lease=lease, tag=tag)
        if self.failure.mode == "raise":
            return self.client.run(call)
        key, lease_id = call.keys[0], str(call.args[0])
        return self.client.run(guarded(call, self.failure,
                                       lambda e: Slot(key, lease_id, self.failure.slot(e))))

    @overload
    def release(self: ConcurrencyLimiter[Client], slot: Slot) -> bool: ...
    @overload
    def release(self: ConcurrencyLimiter[AsyncClient], slot: Slot) -> Awaitable[bool]: ...
    def release(self, slot: Slot) -> bool | Awaitable[bool]:
        """Free the slot; False when the lease had already ended (or was released before: a
        re-sent release replies False). A slot granted by the failure mode holds nothing:
        False without a call."""
        call = _release(slot)
        if call is None:
            return _done(self.client, False)
        return self.client.run(call)

    @overload
    def renew(self: ConcurrencyLimiter[Client], slot: Slot, ttl: float | None = None
              ) -> bool: ...
    @overload
    def renew(self: ConcurrencyLimiter[AsyncClient], slot: Slot, ttl: float | None = None
              ) -> Awaitable[bool]: ...
    def renew(self, slot: Slot, ttl: float | None = None) -> bool | Awaitable[bool]:
        """Extend a live lease; False when it already ended (its slot may be someone else's).
        A slot granted by the failure mode holds nothing: False without a call."""
        if slot.decision.error is not None:
            return _done(self.client, False)
        inner = renew_call(slot.key, slot.lease, self.ttl_ms if ttl is None else ms(ttl))
        return self.client.run(Call(inner.op, inner.keys, inner.args,
                                    lambda r: inner.parse(r)[0]))

    def hold(self, identity: str, *, tag: str | None = None) -> _Hold[C]:
        """Context manager: take a slot or raise :class:`RateLimitExceeded`; release on exit."""
        return _Hold[C](self, identity, tag)


def _release(slot: Slot) -> Call[bool] | None:
    if slot.decision.error is not None:
        return None  # granted locally by the failure mode: nothing to release
    inner = release_call(slot.key, slot.lease)
    return Call(inner.op, inner.keys, inner.args, lambda r: inner.parse(r)[0])


def _done(client: Client | AsyncClient, value: T) -> T | Awaitable[T]:
    """``value``, or an awaitable of it on an asyncio client."""
    if isinstance(client, AsyncClient):
        async def ready() -> T:
            return value
        return ready()
    return value


class _Hold(Generic[C]):
    def __init__(self, limiter: ConcurrencyLimiter[C], identity: str, tag: str | None) -> None:
        self.limiter: ConcurrencyLimiter[C] = limiter
        self.identity = identity
        self.tag = tag
        self.slot: Slot | None = None

    def _take(self, slot: Slot) -> Slot:
        if not slot.acquired:
            raise RateLimitExceeded(slot.decision, f"{self.limiter.name}: all slots in use")
        self.slot = slot
        return slot

    def _leave(self) -> Call[bool] | None:
        assert self.slot is not None
        slot, self.slot = self.slot, None
        call = _release(slot)
        return None if call is None else call.recovering(self._unreleased)

    def _unreleased(self, error: Exception) -> bool:
        # the lease ends on its own within ttl; raising here would hide the block's own outcome
        if not self.limiter.failure.handles(error):
            raise error
        WARNINGS.warn(error, "open: a lease was left to run out")
        return False

    def __enter__(self) -> Slot:
        limiter = self.limiter
        assert isinstance(limiter.client, Client), "use 'async with' on an asyncio client"
        return self._take(limiter.acquire(self.identity, tag=self.tag))

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        client = self.limiter.client
        assert isinstance(client, Client)
        call = self._leave()
        if call is not None:
            client.run(call)

    async def __aenter__(self) -> Slot:
        limiter = self.limiter
        assert isinstance(limiter.client, AsyncClient), "use 'with' on a sync client"
        slot = await limiter.acquire(self.identity, tag=self.tag)
        return self._take(slot)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        client = self.limiter.client
        assert isinstance(client, AsyncClient)
        call = self._leave()
        if call is not None:
            await client.run(call)


def enforce(decision: Decision, what: str = "rate limit exceeded") -> Decision:
    """Return an allowed decision, raise :class:`RateLimitExceeded` for a denied one."""
    if not decision.allowed:
        raise RateLimitExceeded(decision, what)
    return decision
