"""Edge scenarios of the rate-limit operations: every algorithm's writing paths (a fresh key,
existing state, a sliding log near its limit with expired entries, all-or-none over several
keys), the read-only checks, the mixed-algorithm and batch operations, and the concurrency
limiter's acquire, renew and release. Periods are long (minutes to an hour), so a path does not
change while the suite tampers with its keys and calls it again."""

from __future__ import annotations

from typing import Any

import pyredislua
from pyredislua.engine.protocol import Call
from pyredislua.ratelimit.ops import acquire_call
from tests.edges import Scenario, run_all

ALGORITHMS = ("gcra", "token_bucket", "sliding_log", "sliding_window", "fixed_window")
HOUR = 3_600_000
K1, K2, K3 = "{rl}:a", "{rl}:b", "{rl}:c"
SLOTS = "{rl}:slots"
METRICS = "prl:rl:{rl}:metrics:edge"


def _limit(limit: int = 5, period: int = HOUR) -> tuple[Any, ...]:
    return (limit, period, 0)


def _charge(algorithm: str, key: str, cost: int = 1, limit: int = 5,
            period: int = HOUR) -> Call[Any]:
    return Call(f"ratelimit.{algorithm}", (key,), (cost, *_limit(limit, period)))


def _state(*charges: tuple[str, str, int]) -> Any:
    """Setup: charge (algorithm, key, cost) in order."""
    def setup(client: pyredislua.Client) -> None:
        run_all(client, [_charge(a, k, c) for a, k, c in charges])
    return setup


def _log_with_expired_entries(client: pyredislua.Client) -> None:
    """A sliding log (limit 3 per 200 ms) holding 3 entries that have all left the window: the
    next hit is admitted only after its rank read finds them expired."""
    import time

    first = client.run(Call("ratelimit.sliding_log", (K1,), (3, 3, 200, 0)))
    while True:  # on the server clock: the entries have left the window
        now = client.run(Call("ratelimit.sliding_log_peek", (K1,), (0, 3, 200, 0)))[4]
        if now > first[4] + 200:
            return
        time.sleep(0.01)


def _per_algorithm() -> list[Scenario]:
    out = []
    for a in ALGORITHMS:
        out += [
            Scenario(f"ratelimit.{a}", "fresh key, admitted", (K1,), (1, *_limit())),
            Scenario(f"ratelimit.{a}", "existing state, admitted", (K1,), (1, *_limit()),
                     _state((a, K1, 2))),
            Scenario(f"ratelimit.{a}", "denied", (K1,), (1, *_limit()), _state((a, K1, 5)),
                     writes=False),
            Scenario(f"ratelimit.{a}", "two limits, admitted: all or none", (K1, K2),
                     (1, *_limit(), *_limit(10, 2 * HOUR)), _state((a, K1, 1), (a, K2, 1))),
            # recording: one more key than limits, the last the metrics key
            Scenario(f"ratelimit.{a}", "admitted, records metrics", (K1, METRICS),
                     (1, *_limit()), _state((a, K1, 2)), trailing=1),
            Scenario(f"ratelimit.{a}", "denied, records metrics", (K1, METRICS),
                     (1, *_limit()), _state((a, K1, 5)), trailing=1),
            Scenario(f"ratelimit.{a}", "two limits, records metrics", (K1, K2, METRICS),
                     (1, *_limit(), *_limit(10, 2 * HOUR)), _state((a, K1, 1), (a, K2, 1)),
                     trailing=1),
            Scenario(f"ratelimit.{a}_peek", "existing state", (K1, K2),
                     (1, *_limit(), *_limit(10, 2 * HOUR)), _state((a, K1, 2), (a, K2, 1)),
                     writes=False),
        ]
    return out


MIXED = (1, "gcra", *_limit(), "sliding_log", *_limit(), "fixed_window", *_limit())


def _mixed_state(client: pyredislua.Client) -> None:
    run_all(client, [_charge("gcra", K1), _charge("sliding_log", K2), _charge("fixed_window", K3)])


def _held(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(SLOTS, "holder", 3, 60_000)])


SCENARIOS = [
    *_per_algorithm(),
    Scenario("ratelimit.sliding_log", "near the limit, expired entries: admitted", (K1,),
             (1, 3, 200, 0), _log_with_expired_entries),
    Scenario("ratelimit.sliding_log", "cost 2 denied: counted", (K1,), (2, *_limit()),
             _state(("sliding_log", K1, 4)), writes=False),
    Scenario("ratelimit.multi", "three algorithms, admitted", (K1, K2, K3), MIXED, _mixed_state),
    Scenario("ratelimit.multi", "fresh keys, admitted", (K1, K2, K3), MIXED),
    Scenario("ratelimit.multi_peek", "three algorithms", (K1, K2, K3), MIXED, _mixed_state,
             writes=False),
    Scenario("ratelimit.batch", "three algorithms, each admitted", (K1, K2, K3),
             ("gcra", *_limit(), 1, "sliding_log", *_limit(), 1, "token_bucket", *_limit(), 1),
             _state(("gcra", K1, 1), ("sliding_log", K2, 1), ("token_bucket", K3, 1))),
    Scenario("ratelimit.batch", "one denied, the others admitted", (K1, K2, K3),
             ("gcra", *_limit(), 1, "fixed_window", *_limit(), 1, "sliding_window", *_limit(), 1),
             _state(("gcra", K1, 1), ("fixed_window", K2, 5), ("sliding_window", K3, 1))),
    Scenario("ratelimit.acquire", "fresh key", (SLOTS,), ("me", 3, 60_000)),
    Scenario("ratelimit.acquire", "a slot is free", (SLOTS,), ("me", 3, 60_000), _held),
    Scenario("ratelimit.acquire", "repeat by the holder: renews", (SLOTS,),
             ("holder", 3, 90_000), _held),
    Scenario("ratelimit.acquire", "all slots taken", (SLOTS,), ("me", 1, 60_000), _held,
             writes=False),
    Scenario("ratelimit.renew", "held", (SLOTS,), ("holder", 90_000), _held),
    Scenario("ratelimit.release", "held", (SLOTS,), ("holder",), _held),
    Scenario("ratelimit.reset", "limiters of every kind", (K1, K2, SLOTS), (),
             lambda c: (_state(("token_bucket", K1, 1), ("sliding_log", K2, 1))(c), _held(c))),
    Scenario("ratelimit.metrics", "recorded", (METRICS,), (),
             lambda client: run_all(client, [Call("ratelimit.gcra", (K1, METRICS),
                                                  (1, *_limit()))]), writes=False),
    Scenario("ratelimit.inspect", "a sliding log", (K1,), (), _state(("sliding_log", K1, 2)),
             writes=False),
]
