"""The one-limit fast paths (``ratelimit.<algorithm>`` with one key) decide exactly as the generic
multi-limit path (``ratelimit.multi`` with one key, which runs the generic per-algorithm
decisions): for random traffic on short periods, when both run at the same server millisecond,
every reply and the stored value are equal, and the expiry is within the millisecond that the
command's own clock may tick between them. Both calls run in one MULTI; a step whose two calls
straddle a millisecond is put back (both keys restored) and run again."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

import pyredislua
from pyredislua.engine.protocol import Call

pytestmark = pytest.mark.ratelimit

ALGORITHMS = ["gcra", "token_bucket", "sliding_log", "sliding_window", "fixed_window"]
FAST, GENERIC = "{fp}:fast", "{fp}:generic"


@pytest.fixture
def fc(r: redis.Redis) -> Iterator[pyredislua.Client]:
    client = pyredislua.Client(r, mode="function")
    client.load()
    yield client


State = tuple[bytes | None, int]


def _states(r: redis.Redis) -> tuple[State, State]:
    """Both keys' value and expiry, read atomically (short periods: keys expire as we look)."""
    pipe = r.pipeline(transaction=True)
    for key in (FAST, GENERIC):
        pipe.dump(key)
        pipe.pexpiretime(key)
    fd, fa, gd, ga = pipe.execute()
    return (fd, fa), (gd, ga)


def _restore(r: redis.Redis, key: str, state: State) -> None:
    dump, at = state
    r.delete(key)
    if dump is not None:
        r.restore(key, at if at > 0 else 0, dump, absttl=at > 0)


step = st.tuples(st.integers(0, 4), st.booleans(), st.integers(0, 25))


@settings(deadline=None)
@given(algorithm=st.sampled_from(ALGORITHMS), limit=st.integers(1, 6),
       period=st.integers(20, 120), burst=st.integers(0, 8),
       steps=st.lists(step, min_size=1, max_size=25))
def test_fast_path_decides_as_the_generic_path(
        fc: pyredislua.Client, r: redis.Redis, algorithm: str, limit: int, period: int,
        burst: int, steps: list[tuple[int, bool, int]]) -> None:
    if algorithm not in ("gcra", "token_bucket"):
        burst = 0
    r.delete(FAST, GENERIC)
    fast = fc.engine.library.operation(f"ratelimit.{algorithm}").function
    for cost, peek, pause_ms in steps:
        if peek or cost == 0:
            op_fast, op_generic = f"ratelimit.{algorithm}_peek", "ratelimit.multi_peek"
        else:
            op_fast, op_generic = f"ratelimit.{algorithm}", "ratelimit.multi"
        assert fast
        calls = [Call(op_fast, (FAST,), (cost, limit, period, burst)),
                 Call(op_generic, (GENERIC,), (cost, algorithm, limit, period, burst))]
        before, other = _states(r)
        assert before == other
        for _attempt in range(50):
            pipe = r.pipeline(transaction=True)
            for call in calls:
                pipe.execute_command(*fc.engine.args(call))
            a, b = pipe.execute()
            if a[4] == b[4]:
                break
            _restore(r, FAST, before)  # the two straddled a millisecond: run the step again
            _restore(r, GENERIC, before)
        else:
            pytest.fail("50 tries never ran both calls within one server millisecond")
        assert a == b, (op_fast, cost, a, b)
        (fast_value, fast_at), (generic_value, generic_at) = _states(r)
        if (fast_value is None) != (generic_value is None):
            # the two expiries may be a millisecond apart (below), so a short period's keys can
            # be read just between them: the one still there must be ending that millisecond
            left_at = fast_at if fast_value is not None else generic_at
            [now_s, now_us] = r.time()
            assert left_at - (now_s * 1000 + now_us // 1000) <= 1
            r.delete(FAST, GENERIC)
            continue
        assert fast_value == generic_value
        # PX and PEXPIRE count from the command's own clock, which may tick between the two calls
        assert abs(fast_at - generic_at) <= 1
        if fast_at != generic_at:
            _restore(r, GENERIC, (fast_value, fast_at))
        if pause_ms:
            time.sleep(pause_ms / 1000)  # let windows roll and buckets refill
