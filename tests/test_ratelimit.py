"""Rate limiting: API behaviour through real Redis (both execution modes, sync and asyncio)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

import pyredislua
from pyredislua.engine.protocol import Call
from pyredislua.ratelimit import (
    GCRA,
    ConcurrencyLimiter,
    FixedWindow,
    Limit,
    Limiter,
    Rate,
    RateLimiterStateError,
    RateLimitExceeded,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
    check_all,
    decide_call,
    hit_all,
    reset_call,
)
from pyredislua.ratelimit.ops import acquire_call, batch_call, release_call, renew_call
from pyredislua.server import RedisServer
from tests.conftest import snapshot

pytestmark = pytest.mark.ratelimit

CLASSES = [GCRA, TokenBucket, SlidingLog, SlidingWindow, FixedWindow]
ALGO_CLASSES = {cls.algorithm: cls for cls in CLASSES}


def _all_keys_have_ttl(r: redis.Redis) -> None:
    for key in r.scan_iter():
        assert r.pttl(key) != -1, key  # -1: no TTL (-2: expired since the scan)


def _entries(r: redis.Redis, key: str) -> int:
    """Admitted units in a sliding log (its marker member, scored 0, is not one)."""
    return int(r.zcount(key, "(0", "+inf"))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_admits_up_to_the_limit_then_denies_with_retry_after(
    client: pyredislua.Client, r: redis.Redis, cls: type[Limiter[pyredislua.Client]]
) -> None:
    lim = cls(client, "api", "3/10s")
    decisions = [lim.hit("alice") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    denied = decisions[-1]
    # the sliding window counter may need part of the next window too: up to two periods
    assert 0 < denied.retry_after_ms <= (20_000 if cls is SlidingWindow else 10_000)
    assert denied.reset_after_ms > 0
    assert all(d.retry_after_ms == 0 for d in decisions[:3])
    # another identity is independent
    assert lim.hit("bob").allowed
    _all_keys_have_ttl(r)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_cost_above_limit_is_denied_forever_and_changes_nothing(
    client: pyredislua.Client, r: redis.Redis, cls: type[Limiter[pyredislua.Client]]
) -> None:
    lim = cls(client, "api", "5/s")
    assert lim.hit("u", 2).allowed
    before = snapshot(r)
    d = lim.hit("u", 6)
    assert not d.allowed and d.retry_after_ms == -1 and d.retry_after is None
    assert snapshot(r) == before
    d = lim.hit("u", 4)  # 3 left: denied, nothing consumed
    assert not d.allowed and d.retry_after_ms > 0
    assert snapshot(r) == before
    assert lim.hit("u", 3).allowed


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_check_is_read_only_and_reports_what_a_hit_would(
    client: pyredislua.Client, r: redis.Redis, cls: type[Limiter[pyredislua.Client]]
) -> None:
    lim = cls(client, "api", "4/10s")
    lim.hit("u", 3)
    before = snapshot(r)
    peek = lim.check("u", 1)
    state = lim.check("u", 0)
    assert snapshot(r) == before
    assert peek.allowed and peek.remaining == 0
    assert state.allowed and state.remaining == 1
    assert not lim.check("u", 2).allowed
    hit = lim.hit("u", 1)
    assert (hit.allowed, hit.remaining) == (peek.allowed, peek.remaining)


def test_check_runs_on_a_read_only_path(client: pyredislua.Client) -> None:
    op = client.library.operation("ratelimit.gcra_peek")
    assert op.read_only
    assert client.engine.command(GCRA(client, "x", "1/s").check_call("u")).args[0] in (
        "FCALL_RO", "EVALSHA_RO")


def test_multiple_rates_are_charged_all_or_none(client: pyredislua.Client, r: redis.Redis
                                                ) -> None:
    lim = SlidingLog(client, "api", "2/10s", "3/60s")
    keys = lim.keys("u")
    assert keys == ["prl:rl:{u}:sliding_log:api:u:10000", "prl:rl:{u}:sliding_log:api:u:60000"]
    assert lim.hit("u").allowed and lim.hit("u").allowed
    d = lim.hit("u")
    assert not d.allowed and d.binding == 0
    assert [x.allowed for x in d.limits] == [False, True]
    assert [_entries(r, k) for k in keys] == [2, 2]  # the 60 s limit was not charged either


def test_per_user_and_per_tenant_limits_under_one_tag(client: pyredislua.Client, r: redis.Redis
                                                      ) -> None:
    per_user = GCRA(client, "per-user", "2/10s")
    per_tenant = FixedWindow(client, "per-tenant", "3/60s")
    entries = [(per_user, "alice"), (per_tenant, "acme")]
    assert hit_all(client, entries, tag="acme").allowed
    assert hit_all(client, entries, tag="acme").allowed
    d = hit_all(client, entries, tag="acme")  # alice is out; acme must not be charged
    assert not d.allowed and d.binding == 0
    assert hit_all(client, [(per_user, "bob"), (per_tenant, "acme")], tag="acme").allowed
    d = hit_all(client, [(per_user, "carol"), (per_tenant, "acme")], tag="acme")
    assert not d.allowed and d.binding == 1
    assert check_all(client, [(per_user, "carol"), (per_tenant, "acme")], tag="acme").remaining == 0
    assert all(k.startswith(b"prl:rl:{acme}:") for k in r.scan_iter())
    _all_keys_have_ttl(r)


def test_reset_and_inspect(client: pyredislua.Client, r: redis.Redis) -> None:
    lim = TokenBucket(client, "api", "2/10s")
    lim.hit("u")
    [state] = lim.inspect("u")
    assert state.type == "string" and state.algorithm == "token_bucket"
    assert state.fields is not None and state.fields["period_ms"] == "10000"
    assert int(state.fields["units"]) == 1 * 10_000 and 0 < state.pttl_ms <= 5_000
    assert lim.reset("u") == 1
    assert lim.inspect("u")[0].type == "none"
    assert lim.hit("u", 2).allowed
    log = SlidingLog(client, "api", "3/10s")
    at = log.hit("u", 2).now_ms
    [state] = log.inspect("u")
    assert (state.type, state.algorithm, state.count) == ("zset", "sliding_log", 2)
    assert state.oldest == state.newest == float(at)


def test_limiter_state_of_the_wrong_kind_is_a_typed_error(client: pyredislua.Client,
                                                          r: redis.Redis) -> None:
    r.set("prl:rl:{u}:gcra:api:u:1000", "garbage")
    r.set("prl:rl:{v}:token_bucket:api:v:1000", "tb:x")
    r.hset("prl:rl:{w}:fixed_window:api:w:1000", "w", "1")
    r.zadd("prl:rl:{x}:sliding_log:api:x:1000", {"1:1": 1})  # no marker: not a sliding log
    before = snapshot(r)
    with pytest.raises(RateLimiterStateError):
        GCRA(client, "api", "1/s").hit("u")
    with pytest.raises(RateLimiterStateError):
        TokenBucket(client, "api", "1/s").check("v")
    with pytest.raises(pyredislua.WrongTypeError):
        FixedWindow(client, "api", "1/s").hit("w")
    with pytest.raises(RateLimiterStateError):
        SlidingLog(client, "api", "1/s").hit("x")
    assert snapshot(r) == before


# Issue 8 §4: limiters never read another algorithm's state.


def test_limiters_of_different_algorithms_never_share_a_key(client: pyredislua.Client,
                                                            r: redis.Redis) -> None:
    """Once, a token bucket and a sliding window of one name shared a key: one token-bucket hit
    and the sliding window denied 5 of 5. The algorithm is part of every key name."""
    limiters = [cls(client, "api", "10/s") for cls in CLASSES]
    names = {lim.keys("alice")[0] for lim in limiters}
    assert len(names) == len(CLASSES)
    assert ConcurrencyLimiter(client, "api", 5).key("alice") not in names
    assert TokenBucket(client, "api", "10/s").hit("alice").allowed
    assert [SlidingWindow(client, "api", "10/s").hit("alice").allowed
            for _ in range(5)] == [True] * 5
    for lim in limiters:
        assert lim.hit("alice").allowed, lim


ALL_OPS = ["gcra", "token_bucket", "sliding_log", "sliding_window", "fixed_window"]


def _state_call(algorithm: str, key: str, *, peek: bool = False, multi: bool = False,
                batch: bool = False) -> Call[Any]:
    limit = Limit(algorithm, Rate(5, 60_000), key)
    if batch:
        return batch_call([(limit, 1)])
    if multi:  # ratelimit.multi: the mixed-algorithm op, with a second, innocent limit
        other = Limit("gcra" if algorithm != "gcra" else "fixed_window", Rate(5, 60_000),
                      "{s}:innocent")
        return decide_call([Limit(algorithm, Rate(5, 60_000), key), other], 1, peek=peek)
    return decide_call([limit], 1 if not peek else 0, peek=peek)


PAIRS = [pytest.param(writer, reader, via, id=f"{writer}-read-by-{reader}-{via}")
         for writer in [*ALL_OPS, "concurrency"] for reader in [*ALL_OPS, "concurrency"]
         if writer != reader
         for via in (["op"] if reader == "concurrency" else ["op", "peek", "multi", "batch"])]


@pytest.mark.parametrize(("writer", "reader", "via"), PAIRS)
def test_no_algorithm_reads_another_algorithms_state(
        client: pyredislua.Client, r: redis.Redis, writer: str, reader: str, via: str) -> None:
    """Every pair of algorithms (and the concurrency limiter) pointed at one key: the second
    refuses the first one's state with a coded error (BADSTATE, or WRONGTYPE when the Redis type
    differs) and changes nothing, whichever operation reads it."""
    key = "{s}:shared"
    if writer == "concurrency":
        client.run(acquire_call(key, "lease-1", 3, 60_000))
    else:
        client.run(_state_call(writer, key))
    # A fixed window's state ends with its window (epoch-aligned): it may have milliseconds left
    r.persist(key)
    before = snapshot(r)
    if reader == "concurrency":
        calls = [acquire_call(key, "lease-2", 3, 60_000), release_call(key, "lease-1"),
                 renew_call(key, "lease-1", 60_000)]
    else:
        calls = [_state_call(reader, key, peek=via == "peek", multi=via == "multi",
                             batch=via == "batch")]
    for call in calls:
        with pytest.raises(RateLimiterStateError) as caught:  # WrongTypeError is one too
            client.run(call)
        assert caught.value.code in ("BADSTATE", "WRONGTYPE"), caught.value
        assert snapshot(r) == before, call


def test_state_without_its_marker_is_refused(client: pyredislua.Client, r: redis.Redis) -> None:
    """State in the unmarked 1.3 layout, or anyone's data of the right Redis type, is refused."""
    r.set("{s}:g", "1764000000000:0:5", px=60_000)  # a GCRA value as 1.3 wrote it
    r.set("{s}:t", "123")
    r.zadd("{s}:l", {"1764000000000:1": 1764000000000})  # a 1.3 sliding log
    r.zadd("{s}:c", {"lease": 1764000000000})  # a 1.3 concurrency zset
    before = snapshot(r)
    for call in (_state_call("gcra", "{s}:g"), _state_call("token_bucket", "{s}:t"),
                 _state_call("sliding_window", "{s}:t"), _state_call("fixed_window", "{s}:t"),
                 _state_call("sliding_log", "{s}:l"),
                 _state_call("sliding_log", "{s}:l", peek=True),
                 acquire_call("{s}:c", "x", 1, 1000), release_call("{s}:c", "lease"),
                 renew_call("{s}:c", "lease", 1000), reset_call(["{s}:t"]),
                 reset_call(["{s}:g", "{s}:nothing"])):
        with pytest.raises(RateLimiterStateError):
            client.run(call)
    assert snapshot(r) == before


def test_marked_state_that_cannot_be_used_is_refused(client: pyredislua.Client,
                                                     r: redis.Redis) -> None:
    """A GCRA limit or a token-bucket period of 0 in stored state would be divided by: refused
    (BADSTATE, naming it malformed), on the one-limit and the generic path, nothing changed."""
    r.set("{s}:g", "gcra:99999999999999:1:0", px=60_000)
    r.set("{s}:t", "tb:1:1:0", px=60_000)
    before = snapshot(r)
    for call in (_state_call("gcra", "{s}:g"), _state_call("gcra", "{s}:g", peek=True),
                 _state_call("token_bucket", "{s}:t"),
                 decide_call([Limit("gcra", Rate(5, 1000), "{s}:g"),
                              Limit("token_bucket", Rate(5, 1000), "{s}:t")], 1)):
        with pytest.raises(RateLimiterStateError, match="malformed"):
            client.run(call)
    assert snapshot(r) == before


def test_reset_deletes_only_limiter_state(client: pyredislua.Client, r: redis.Redis) -> None:
    keys = ["{s}:a", "{s}:b", "{s}:c", "{s}:d"]
    client.run(_state_call("gcra", keys[0]))
    client.run(_state_call("sliding_log", keys[1]))
    client.run(acquire_call(keys[2], "l", 1, 60_000))
    r.set("{s}:user-data", "precious")
    with pytest.raises(RateLimiterStateError):
        client.run(reset_call([*keys, "{s}:user-data"]))
    assert r.exists(*keys[:3]) == 3  # all or none
    assert client.run(reset_call(keys)) == 3
    assert r.exists(*keys) == 0 and r.get("{s}:user-data") == b"precious"


def test_decorator_sync(client: pyredislua.Client) -> None:
    lim = FixedWindow(client, "calls", "2/60s")

    @lim.limit(key=lambda user: user)
    def work(user: str) -> str:
        return f"done {user}"

    assert work("a") == "done a" and work("a") == "done a"
    with pytest.raises(RateLimitExceeded) as caught:
        work("a")
    assert caught.value.decision.retry_after_ms > 0
    assert work("b") == "done b"


async def test_decorator_async_and_async_limiter(aclient: pyredislua.AsyncClient) -> None:
    lim = GCRA(aclient, "calls", "2/60s")
    calls = []

    @lim.limit(key="k", cost=lambda n: n)
    async def work(n: int) -> int:
        calls.append(n)
        return n

    assert await work(1) == 1
    with pytest.raises(RateLimitExceeded):
        await work(2)
    assert await work(1) == 1
    assert calls == [1, 1]
    d = await lim.check("k", 0)
    assert d.remaining == 0
    results = await asyncio.gather(*(lim.hit(f"u{i}") for i in range(5)))
    assert all(x.allowed for x in results)


def test_decorator_refuses_a_client_of_the_other_kind(client: pyredislua.Client) -> None:
    lim = GCRA(client, "calls", "2/60s")
    with pytest.raises(TypeError):
        @lim.limit(key="k")
        async def work() -> None: ...


def test_concurrency_limiter_leases(client: pyredislua.Client, r: redis.Redis) -> None:
    lim = ConcurrencyLimiter(client, "jobs", 2, ttl=10)
    a, b, c = (lim.acquire("u") for _ in range(3))
    assert a.acquired and b.acquired and not c.acquired
    assert c.decision.in_flight == 2 and 0 < c.decision.retry_after_ms <= 10_001  # 1 ms slack
    assert lim.acquire("u", lease=a.lease).acquired  # a retry by a holder takes no second slot
    assert lim.release(a) and not lim.release(a)
    d = lim.acquire("u")
    assert d.acquired and d.decision.in_flight == 2
    assert lim.renew(b) and lim.renew(d, ttl=5)
    _all_keys_have_ttl(r)
    with pytest.raises(RateLimitExceeded), lim.hold("u"):
        pass
    lim.release(b)
    with lim.hold("u") as slot:
        assert slot.acquired and r.zscore(slot.key, slot.lease) is not None
    assert r.zscore(slot.key, slot.lease) is None


def test_a_dead_holders_lease_expires(client: pyredislua.Client, r: redis.Redis) -> None:
    lim = ConcurrencyLimiter(client, "jobs", 1, ttl=0.05)
    dead = lim.acquire("u")
    assert dead.acquired
    denied = lim.acquire("u")
    assert not denied.acquired
    # wait on the server's clock for the lease to end, then the slot is free
    due = denied.decision.now_ms + denied.decision.retry_after_ms
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        slot = lim.acquire("u")
        if slot.acquired:
            assert slot.decision.now_ms >= due
            break
        assert slot.decision.now_ms < due
    else:
        pytest.fail("the lease did not end")
    assert not lim.renew(dead)


async def test_concurrency_limiter_async(aclient: pyredislua.AsyncClient) -> None:
    lim = ConcurrencyLimiter(aclient, "jobs", 1, ttl=10)
    async with lim.hold("u") as slot:
        assert slot.acquired
        assert not (await lim.acquire("u")).acquired
    assert (await lim.acquire("u")).acquired


# -- bad input -----------------------------------------------------------------------------------

GOOD = ("1", "1000", "0")

BAD_LIMITS = [
    pytest.param(("0", "1000", "0"), id="limit-zero"),
    pytest.param(("1000001", "1000", "0"), id="limit-too-big"),
    pytest.param(("x", "1000", "0"), id="limit-text"),
    pytest.param(("1", "0", "0"), id="period-zero"),
    pytest.param(("1", "2678400001", "0"), id="period-too-long"),
    pytest.param(("1", "1.5", "0"), id="period-fraction"),
    pytest.param(("1", "1000", "-1"), id="burst-negative"),
    pytest.param(("1", "1000", "1000001"), id="burst-too-big"),
    pytest.param(("1", "1000"), id="missing-burst"),
    pytest.param(("1", "1000", "0", "5"), id="one-too-many"),
]
OPS = ["gcra", "token_bucket", "sliding_log", "sliding_window", "fixed_window"]


def _seed(r: redis.Redis) -> dict[bytes, tuple[bytes | None, bool]]:
    r.set("{t}:bystander", "x")
    r.set("{t}:a", "1:0:1", px=60_000)
    return snapshot(r)


@pytest.mark.parametrize("op", [*OPS, *(o + "_peek" for o in OPS)])
@pytest.mark.parametrize("limit_args", BAD_LIMITS)
def test_bad_per_limit_arguments(client: pyredislua.Client, r: redis.Redis, op: str,
                                 limit_args: tuple[str, ...]) -> None:
    before = _seed(r)
    with pytest.raises(pyredislua.BadArgumentError):
        # a good first limit, then a bad second one: nothing may be charged for the first
        client.run(Call(f"ratelimit.{op}", ("{t}:b", "{t}:c"), ("1", *GOOD, *limit_args)))
    assert snapshot(r) == before


@pytest.mark.parametrize(("op", "keys", "args"), [
    pytest.param("ratelimit.gcra", (), ("1",), id="no-keys"),
    pytest.param("ratelimit.gcra", tuple(f"{{t}}:{i}" for i in range(17)), ("1", *GOOD * 17),
                 id="17-keys"),
    pytest.param("ratelimit.gcra", ("{t}:b", "{t}:b"), ("1", *GOOD, *GOOD), id="duplicate-key"),
    pytest.param("ratelimit.sliding_log", ("{t}:b",), ("1", "10001", "1000", "0"),
                 id="sliding-log-limit-too-big"),
    pytest.param("ratelimit.sliding_log", ("{t}:b",), ("1", "5", "1000", "3"),
                 id="burst-on-a-window"),
    pytest.param("ratelimit.fixed_window", ("{t}:b",), ("1", "5", "1000", "3"),
                 id="burst-on-fixed-window"),
    pytest.param("ratelimit.gcra", ("{t}:b",), ("0", *GOOD), id="cost-zero-on-hit"),
    pytest.param("ratelimit.multi", ("{t}:b",), ("1", "leaky", *GOOD), id="bad-algorithm"),
    pytest.param("ratelimit.multi", ("{t}:b", "{t}:c"), ("1", "gcra", *GOOD, *GOOD),
                 id="multi-missing-algorithm"),
    pytest.param("ratelimit.reset", (), (), id="reset-no-keys"),
    pytest.param("ratelimit.acquire", ("{t}:b",), ("", "1", "1000"), id="acquire-empty-lease"),
    pytest.param("ratelimit.acquire", ("{t}:b",), ("l", "0", "1000"), id="acquire-limit-zero"),
    pytest.param("ratelimit.acquire", ("{t}:b",), ("l", "1", "86400001"), id="acquire-ttl"),
    pytest.param("ratelimit.renew", ("{t}:b",), ("l", "0"), id="renew-ttl-zero"),
    pytest.param("ratelimit.release", ("{t}:b",), ("x" * 129,), id="release-lease-too-long"),
])
def test_bad_calls_change_nothing(client: pyredislua.Client, r: redis.Redis, op: str,
                                  keys: tuple[str, ...], args: tuple[str, ...]) -> None:
    before = _seed(r)
    with pytest.raises(pyredislua.BadArgumentError):
        client.run(Call(op, keys, args))
    assert snapshot(r) == before


def test_one_limit_argument_checks_hold_after_warm_calls(client: pyredislua.Client,
                                                         r: redis.Redis) -> None:
    """The one-limit paths remember argument strings they have checked (per kind: limit, period,
    burst). A string accepted as one kind is checked afresh as another; the checks after the
    cache (sliding-log limit, burst on a window) still apply; leading zeros are accepted and
    written canonically; and past the cache's size every call still decides as the first."""
    def run(op: str, key: str, *args: str) -> Any:
        return client.run(Call(f"ratelimit.{op}", (f"{{t}}:{key}",), ("1", *args)))

    run("gcra", "warm", "20000", "2678400000", "5")  # remembered, each as its kind
    run("gcra", "warm2", "1000", "1000", "0")
    r.delete("{t}:warm", "{t}:warm2")  # (short periods: they expire while we look)
    before = _seed(r)
    for op, args in [  # every string below was remembered, as some kind
        ("gcra", ("2678400000", "1000", "0")),  # a good period is no good limit
        ("gcra", ("1000", "1000", "2678400000")),  # ... nor a good burst
        ("gcra", ("0", "1000", "0")),  # a good burst is no good limit
        ("sliding_log", ("20000", "1000", "0")),  # a remembered limit, too big for a log
        ("fixed_window", ("1000", "1000", "5")),  # a remembered burst, on a window
        ("sliding_window", ("20000", "2678400000", "5")),
    ]:
        with pytest.raises(pyredislua.BadArgumentError):
            run(op, "b", *args)
    assert snapshot(r) == before
    run("gcra", "z", "0005", "01000", "0")
    run("gcra", "z", "5", "1000", "0")
    assert r.get("{t}:z").split(b":")[-1] == b"5"  # limit written as 5, not 0005
    for limit in range(1, 1200):  # more distinct limits than the cache keeps
        assert run("fixed_window", f"n{limit % 3}", str(limit), "60000", "0")[0] == 1
    with pytest.raises(pyredislua.BadArgumentError):
        run("fixed_window", "b", "1000001", "60000", "0")


def test_python_side_validation(client: pyredislua.Client) -> None:
    with pytest.raises(ValueError):
        Rate.parse("100 per fortnight")
    with pytest.raises(ValueError):
        GCRA(client, "api")
    with pytest.raises(ValueError):
        GCRA(client, "a{b}", "1/s")
    with pytest.raises(ValueError):
        SlidingLog(client, "api", "10001/s")
    with pytest.raises(ValueError):
        FixedWindow(client, "api", "1/s", burst=3)
    with pytest.raises(ValueError):
        GCRA(client, "api", "1/s", "2/1000ms")
    with pytest.raises(ValueError):
        GCRA(client, "api", "1/s").hit("u", 0)
    with pytest.raises(ValueError):
        decide_call([], 1)
    with pytest.raises(ValueError):
        decide_call([Limit("gcra", Rate(1, 1000), f"{{t}}:{i}") for i in range(17)], 1)
    assert Rate.parse("10/100ms") == Rate(10, 100)
    assert Rate.parse("1000 per hour") == Rate(1000, 3_600_000)
    assert Rate.parse("5/2s") == Rate(5, 2000)


def test_cli_inspect_check_hit_reset(redis_url: str, r: redis.Redis,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from pyredislua.cli import main

    key = "prl:rl:{u}:gcra:api:u:1000"
    assert main(["ratelimit", "hit", "--url", redis_url, key, "--rate", "2/s"]) == 0
    assert main(["ratelimit", "check", "--url", redis_url, key, "--rate", "2/s",
                 "--cost", "2"]) == 2
    assert main(["ratelimit", "inspect", "--url", redis_url, key]) == 0
    out = capsys.readouterr().out
    assert "allowed: remaining 1" in out and "denied" in out and "gcra tat_ms=" in out
    assert main(["ratelimit", "reset", "--url", redis_url, key]) == 0
    assert r.exists(key) == 0


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_hit_many_decides_each_key_on_its_own(client: pyredislua.Client, r: redis.Redis,
                                              cls: type[Limiter[pyredislua.Client]]) -> None:
    lim = cls(client, "api", "2/10s")
    lim.hit("b", 2, tag="acme")
    decisions = lim.hit_many(["a", "b", "c"], tag="acme")
    assert [d.allowed for d in decisions] == [True, False, True]
    assert decisions[1].retry_after_ms > 0 and decisions[0].remaining == 1
    assert [d.allowed for d in lim.hit_many(["a", "c"], 2, tag="acme")] == [False, False]
    assert lim.check("a", 1, tag="acme").allowed
    _all_keys_have_ttl(r)


@pytest.mark.parametrize(("keys", "args"), [
    pytest.param(("{t}:b",), ("gcra", "1", "1000", "0"), id="missing-cost"),
    pytest.param(("{t}:b",), ("gcra", "1", "1000", "0", "0"), id="cost-zero"),
    pytest.param(("{t}:b", "{t}:c"), ("gcra", "1", "1000", "0", "1", "lru", "1", "1000", "0", "1"),
                 id="bad-algorithm-second"),
    pytest.param(("{t}:b", "{t}:b"), ("gcra", "1", "1000", "0", "1") * 2, id="duplicate"),
    pytest.param(("{t}:b", "{t}:c"), ("sliding_log", "10000", "1000", "0", "6000",
                                      "sliding_log", "10000", "1000", "0", "6000"),
                 id="sliding-log-units-above-10000"),
    pytest.param(tuple(f"{{t}}:{i}" for i in range(257)), ("gcra", "1", "1000", "0", "1") * 257,
                 id="257-keys"),
])
def test_bad_batches_change_nothing(client: pyredislua.Client, r: redis.Redis,
                                    keys: tuple[str, ...], args: tuple[str, ...]) -> None:
    before = _seed(r)
    with pytest.raises(pyredislua.BadArgumentError):
        client.run(Call("ratelimit.batch", keys, args))
    assert snapshot(r) == before


def _wait_server_ms(client: pyredislua.Client, lim: Limiter[pyredislua.Client], due: int) -> None:
    deadline = time.monotonic() + 5
    while lim.check("u", 0).now_ms < due:
        assert time.monotonic() < deadline, "the server clock did not advance"
        time.sleep(0.002)


@pytest.mark.parametrize("how", ["alone", "denied-by-another", "batch"])
def test_sliding_log_counts_exactly_with_expired_entries(client: pyredislua.Client,
                                                         r: redis.Redis, how: str) -> None:
    """A sliding-log hit counts its entries with the ZREVRANK of its marker (all entries, expired
    ones too) and, when even that total leaves room, learns the exact live count from the trim:
    what it reports must be exact whichever way the call ends."""
    log = SlidingLog(client, "api", "5/100ms")
    first = log.hit("u", 2)
    _wait_server_ms(client, log, first.now_ms + 100)  # both entries have left the window
    if how == "alone":
        d = log.hit("u")
        assert d.allowed and d.remaining == 4
    elif how == "batch":
        [d] = log.hit_many(["u"], tag="u")
        assert d.allowed and d.remaining == 4
    else:
        gone = GCRA(client, "gone", "1/60s")
        assert gone.hit("u").allowed
        d = hit_all(client, [(log, "u"), (gone, "u")], tag="u")
        assert not d.allowed and d.binding == 1
        assert (d.limits[0].allowed, d.limits[0].remaining) == (True, 4)  # was 2: a bound
    assert log.check("u", 0).remaining == (4 if how != "denied-by-another" else 5)


# Issue 8 §1: an error reply changes nothing, in multi-key operations too.


@pytest.mark.parametrize("bad", ["another-algorithm", "garbage", "wrong-type"])
@pytest.mark.parametrize("op", ["batch", "multi", "hit_all"])
def test_a_bad_later_key_charges_no_earlier_one(client: pyredislua.Client, r: redis.Redis,
                                                op: str, bad: str) -> None:
    """Once, ratelimit.batch charged the first keys and then failed on a later one: every retry
    charged them again. Every key is now read and checked before the first is charged."""
    lims = [cls(client, f"n{i}", "10/60s") for i, cls in enumerate(CLASSES)]
    limits = [lim.limits("x", tag="t")[0] for lim in lims]
    for lim in lims:  # existing state, so 'unchanged' means something
        assert lim.hit("x", tag="t").allowed
    last = limits[-1].key
    r.delete(last)
    if bad == "another-algorithm":
        client.run(decide_call([Limit("gcra", Rate(10, 60_000), last)], 1))
    elif bad == "garbage":
        r.set(last, "fw:not-a-count")
    else:
        r.lpush(last, "x")
    before = snapshot(r)
    for _ in range(3):  # a caller retrying the failed call
        with pytest.raises(RateLimiterStateError):
            if op == "batch":
                client.run(batch_call([(lim, 1) for lim in limits]))
            elif op == "multi":
                client.run(decide_call(limits, 1))
            else:
                hit_all(client, [(lim, "x") for lim in lims], tag="t")
        assert snapshot(r) == before


# Issue 14 item 2: when Redis cannot decide, the failure mode does.


def _unreachable() -> redis.Redis:
    from pyredislua.server import free_port

    return redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=None)


def test_unreachable_redis_fails_open_by_default_or_closed_or_raises() -> None:
    conn = _unreachable()
    client = pyredislua.Client(conn, mode="function")
    d = GCRA(client, "api", "5/s", "100/h").hit("u")
    assert d.allowed and d.degraded and isinstance(d.error, redis.ConnectionError)
    assert len(d.limits) == 2 and "error=" in repr(d)
    d = GCRA(client, "api", "5/s", on_failure="closed").hit("u")
    assert not d.allowed and d.retry_after_ms == 1000 and d.degraded
    closed = pyredislua.ratelimit.Failure("closed", retry_after_ms=250)
    assert FixedWindow(client, "api", "5/s", on_failure=closed).hit("u").retry_after_ms == 250
    with pytest.raises(redis.ConnectionError):
        GCRA(client, "api", "5/s", on_failure="raise").hit("u")
    assert SlidingLog(client, "api", "5/s").check("u").degraded
    assert all(d.allowed and d.degraded for d in GCRA(client, "a", "5/s").hit_many(
        ["u", "v"], tag="t"))
    per_user, per_tenant = GCRA(client, "u", "5/s"), FixedWindow(client, "t", "50/s")
    assert hit_all(client, [(per_user, "a"), (per_tenant, "t")], tag="t").degraded
    assert not hit_all(client, [(per_user, "a"), (per_tenant, "t")], tag="t",
                       on_failure="closed").allowed
    with pytest.raises(ValueError):
        GCRA(client, "api", "5/s", on_failure="maybe")  # type: ignore[arg-type]
    conn.close()


def test_the_decorator_and_the_concurrency_limiter_follow_the_failure_mode() -> None:
    conn = _unreachable()
    client = pyredislua.Client(conn, mode="function")
    calls = []

    @GCRA(client, "api", "5/s").limit(key="u")
    def admitted() -> None:
        calls.append(1)

    @GCRA(client, "api", "5/s", on_failure="closed").limit(key="u")
    def refused() -> None:
        calls.append(2)

    admitted()
    with pytest.raises(RateLimitExceeded, match="unavailable and fails closed"):
        refused()
    assert calls == [1]
    jobs = ConcurrencyLimiter(client, "jobs", 2)
    slot = jobs.acquire("t")
    assert slot.acquired and slot.decision.degraded
    assert not jobs.release(slot) and not jobs.renew(slot)  # nothing was recorded: no call
    with jobs.hold("t"):  # an unrecorded slot: nothing to release on the way out
        pass
    with pytest.raises(RateLimitExceeded), ConcurrencyLimiter(
            client, "jobs", 2, on_failure="closed").hold("t"):
        pass
    conn.close()


def test_errors_that_are_not_outages_always_raise(client: pyredislua.Client,
                                                  r: redis.Redis) -> None:
    r.set("prl:rl:{u}:sliding_log:api:u:1000", "x")
    with pytest.raises(pyredislua.WrongTypeError):
        SlidingLog(client, "api", "5/s").hit("u")  # fails open, yet a wrong key is no outage
    with pytest.raises(ValueError):
        GCRA(client, "api", "5/s").hit("u", 0)


def test_leaving_hold_after_redis_went_away_leaves_the_lease_to_run_out(
        own_server: RedisServer) -> None:
    conn = redis.Redis(port=own_server.port, socket_connect_timeout=0.2, retry=None)
    jobs = ConcurrencyLimiter(pyredislua.Client(conn, mode="function"), "jobs", 2, ttl=5)
    with jobs.hold("t") as slot:
        assert slot.acquired and not slot.decision.degraded
        own_server.stop()
    # no exception: the lease ends on its own within ttl (the server is gone anyway)
    conn.close()


# Issue 8 §3: every key the rate limiters write has a lifecycle.


def test_lifecycle_every_key_ends_on_its_own(client: pyredislua.Client, r: redis.Redis) -> None:
    """Every operation that writes, on every algorithm (several rates, mixed limits, batches,
    re-sent hits, limits lowered and raised, a concurrency holder that never releases): once
    each limiter has idled past its reset (at most two periods; a lease's ttl), no key is left.
    The rate limiters keep no durable key (README: rate limiting, lifecycle)."""
    from tests.faultkit import wait_for

    period = "4/150ms"
    limiters = [cls(client, "life", period, "10/300ms") for cls in CLASSES]
    for lim in limiters:
        for identity in ("a", "b"):
            for _ in range(6):
                lim.hit(identity)
            lim.hit(identity, 2, tag="tenant")
    singles = [cls(client, "single", period) for cls in CLASSES]
    for lim in singles:
        lim.hit_many(["c", "d", "e"], tag="tenant")
        type(lim)(client, "single", "2/150ms").hit("c", tag="tenant")  # a lowered limit
    hit_all(client, [(singles[0], "a"), (singles[2], "t"), (singles[4], "t")], tag="t")
    jobs = ConcurrencyLimiter(client, "life", 3, ttl=0.2)
    kept, crashed = jobs.acquire("t"), jobs.acquire("t")
    assert jobs.renew(kept, 0.3) and jobs.release(kept)
    assert crashed.acquired  # never released: its holder "died"
    _all_keys_have_ttl(r)
    wait_for(lambda: not list(r.scan_iter()), 5, "every rate-limit key to expire")
