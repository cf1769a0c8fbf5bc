"""Metrics the Lua operations record themselves (docs/design/metrics-in-redis.md), against a real
Redis: what each recording operation counts, the minute ring's rollover (driven by pre-setting
a slot's stamp to an old minute: the scripts read the server's TIME only), the histograms, the
key's lifecycle, recording off, the read with FCALL_RO, and a hypothesis model of the counts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyredislua
from pyredislua.observe.series import (
    BUCKETS,
    MinuteSeries,
    bucket_bounds,
    metrics_key,
    series_call,
)
from pyredislua.queue import Queue, Worker
from pyredislua.queue.ops import ack_calls

TTL_MS = 61 * 60_000


def server_minute(r: redis.Redis) -> int:
    seconds, _ = r.time()
    return int(seconds) // 60


def in_one_minute(r: redis.Redis, action: Any) -> Any:
    """Run ``action(minute)`` so that it starts and ends in the server minute it was given
    (retried when a minute boundary falls inside it)."""
    for _ in range(5):
        minute = server_minute(r)
        result = action(minute)
        if server_minute(r) == minute:
            return result
    raise AssertionError("five minute boundaries in a row")


def totals(series: MinuteSeries) -> dict[str, int]:
    return {name: sum(values) for name, values in series.counters.items()}


# -- the queue --------------------------------------------------------------------------------


def test_queue_records_each_outcome(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "mq", metrics=True, backoff=0)
    for i in range(4):
        q.enqueue(f"j{i}")
    q.enqueue("dup", key="k")
    q.enqueue("dup again", key="k")  # an idempotent duplicate: not enqueued
    q.enqueue_many(["b1", "b2"])
    jobs = q.dequeue(count=4)
    q.ack(jobs[0])
    q.ack_many(jobs[1:2])
    q.nack(jobs[2], "boom")  # retried
    q.nack(jobs[3], "bad", action="dead")
    [again] = q.dequeue(count=1)
    q.nack(again, "", action="release")  # released: neither failed nor retried
    s = q.metrics()
    assert s.kind == "queue" and s.name == "mq"
    assert s.minute == pytest.approx(server_minute(r), abs=1)
    assert totals(s) == {"enqueued": 7, "completed": 2, "failed": 2, "retried": 1, "dead": 1}
    assert all(len(v) == 60 for v in s.counters.values())
    assert set(s.histograms) == {"wait", "run"}
    assert all(len(v) == BUCKETS for v in s.histograms.values())
    # wait: the four first deliveries (the redelivery of the retried job is not one)
    assert sum(s.histograms["wait"]) == 4 + (1 if again.attempts == 1 else 0)
    assert sum(s.histograms["run"]) == 2
    # the same figures through series_call and FCALL_RO
    assert client.run(series_call("queue", "mq")) == s
    functions = pyredislua.Client(r, mode="function")
    functions.load()
    raw = r.fcall_ro(f"{functions.library.name}_queue_metrics", 1, metrics_key("queue", "mq"))
    assert int(raw[0]) == s.minute


def test_queue_reap_counts_expired_leases(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "mq", metrics=True, backoff=0)
    q.enqueue("a")
    q.enqueue("b", max_attempts=1)
    jobs = q.dequeue(count=2, lease=0.001)
    assert len(jobs) == 2
    while int(r.time()[0]) * 1000 + int(r.time()[1]) // 1000 <= jobs[0].deadline_ms:
        pass
    assert len(q.reap()) == 2
    assert totals(q.metrics()) == {"enqueued": 2, "completed": 0, "failed": 2, "retried": 1,
                                   "dead": 1}


def test_recording_off_writes_no_metrics_key(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "plain")
    q.enqueue("a")
    [job] = q.dequeue()
    q.ack(job)
    assert not r.exists(metrics_key("queue", "plain"))
    assert q.keys.with_request(False) == q.keys.all  # the ten-key call, no metrics key
    s = q.metrics()  # reading an absent key: all zeros
    assert totals(s) == dict.fromkeys(("enqueued", "completed", "failed", "retried", "dead"), 0)
    assert all(sum(v) == 0 for v in s.histograms.values())


def test_metrics_key_lifecycle(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "mq", metrics=True)
    q.enqueue("a")
    key = metrics_key("queue", "mq")
    assert TTL_MS - 5000 < r.pttl(key) <= TTL_MS
    assert r.type(key) == b"hash"


def _slot(minute: int) -> int:
    return minute % 60


def test_a_stale_minute_is_reset_and_restamped(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "mq", metrics=True)
    key = metrics_key("queue", "mq")

    def run(minute: int) -> int:
        slot = _slot(minute)
        old = minute - 60  # the same slot, an hour ago
        r.delete(key)
        r.hset(key, mapping={f"m:{slot}": old, f"enqueued:{slot}": 40, f"completed:{slot}": 7,
                             f"dead:{slot}": 3})
        q.enqueue("a")
        return minute

    minute = in_one_minute(r, run)
    slot = _slot(minute)
    fields = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
    assert fields[f"m:{slot}"] == str(minute)  # restamped with the server's minute
    assert fields[f"enqueued:{slot}"] == "1"  # reset, then counted
    assert f"completed:{slot}" not in fields and f"dead:{slot}" not in fields
    assert TTL_MS - 5000 < r.pttl(key) <= TTL_MS  # refreshed on the restamp
    assert totals(q.metrics())["enqueued"] == 1


def test_a_fresh_minute_adds_up(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "mq", metrics=True)
    key = metrics_key("queue", "mq")

    def run(minute: int) -> int:
        slot = _slot(minute)
        r.delete(key)
        r.hset(key, mapping={f"m:{slot}": minute, f"enqueued:{slot}": 40})
        r.pexpire(key, 1_000_000)
        q.enqueue("a")
        return slot

    slot = in_one_minute(r, run)
    assert r.hget(key, f"enqueued:{slot}") == b"41"
    assert r.pttl(key) <= 1_000_000  # a fresh stamp: no TTL refresh


def test_the_read_aligns_to_the_server_minute(client: pyredislua.Client, r: redis.Redis) -> None:
    key = metrics_key("queue", "mq")

    def run(minute: int) -> MinuteSeries:
        r.delete(key)
        mapping: dict[str, int] = {}
        for back, count in ((0, 5), (1, 4), (59, 3)):  # now, a minute ago, the oldest minute
            m = minute - back
            mapping |= {f"m:{_slot(m)}": m, f"completed:{_slot(m)}": count}
        # the slot of two minutes ago, stamped an hour before that
        mapping |= {f"failed:{_slot(minute - 2)}": 9, f"m:{_slot(minute - 2)}": minute - 62}
        r.hset(key, mapping=mapping)
        series: MinuteSeries = client.run(series_call("queue", "mq"))
        return series

    s = in_one_minute(r, run)
    completed = list(s.counters["completed"])
    assert completed[-1] == 5 and completed[-2] == 4 and completed[0] == 3
    assert sum(completed) == 12
    assert sum(s.counters["failed"]) == 0  # its slot's stamp is an hour old: reads 0


def test_histogram_buckets_and_period_reset(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "mq", metrics=True)
    key = metrics_key("queue", "mq")

    def run(minute: int) -> int:
        period = minute // 5
        slot5 = period % 12
        r.delete(key)
        r.hset(key, mapping={f"p:{slot5}": period - 12, f"h:wait:3:{slot5}": 50,
                             f"h:run:16:{slot5}": 8})
        q.enqueue("a")
        q.enqueue("b")
        q.dequeue(count=2)
        return slot5

    slot5 = in_one_minute(r, run)
    fields = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
    assert f"h:run:16:{slot5}" not in fields  # the stale period's buckets went
    waits = q.metrics().histograms["wait"]
    assert sum(waits) == 2  # the 50 old samples are gone
    assert sum(waits[:5]) == 2  # enqueued and leased within 16 ms


def test_bucket_bounds() -> None:
    assert bucket_bounds(0) == (0.0, 1.0)
    assert bucket_bounds(1) == (1.0, 2.0)
    assert bucket_bounds(4) == (8.0, 16.0)
    assert bucket_bounds(16) == (32768.0, float("inf"))


INCLUDE = (Path(__file__).resolve().parents[1] / "lua" / "includes" / "metrics.lua").read_text()


def test_histogram_buckets_at_their_bounds(r: redis.Redis) -> None:
    """The include's bucket of a duration, at every bound (EVAL of the include itself)."""
    script = INCLUDE + "\nlocal out = {}\nfor i, v in ipairs(ARGV) do " \
        "out[i] = metrics_bucket(tonumber(v)) end\nreturn out"
    cases = [(0, 0), (0.5, 0), (1, 1), (1.9, 1), (2, 2), (3, 2), (4, 3), (1023, 10), (1024, 11),
             (32767, 15), (32768, 16), (10**9, 16)]
    got = r.eval(script, 0, *[str(ms) for ms, _ in cases])
    assert got == [bucket for _, bucket in cases]
    for ms, bucket in cases:
        low, high = bucket_bounds(bucket)
        assert low <= ms < high


@pytest.mark.parametrize(("ms", "bucket"), [(1500, 11), (3000, 12), (20_000, 15), (40_000, 16)])
def test_histogram_bucket_of_a_run_time(client: pyredislua.Client, r: redis.Redis, ms: int,
                                        bucket: int) -> None:
    """The run time of a job whose lease began ``ms`` ago lands in ``bucket``."""
    q = Queue(client, "mq", metrics=True)
    q.enqueue("a")
    [job] = q.dequeue(lease=3600)
    # move the lease's start back by ms: the lease token ('<deliveries>.<server ms>') is the
    # source of the sample
    script = """
    local m = cmsgpack.unpack(redis.call('HGET', KEYS[1], ARGV[1]))
    local d, at = string.match(m.t, '^(%d+)%.(%d+)$')
    m.t = d .. '.' .. string.format('%d', tonumber(at) - tonumber(ARGV[2]))
    redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(m))
    return m.t
    """
    token = r.eval(script, 1, q.keys.jobs, job.id, ms).decode()
    [ack] = ack_calls(q.keys, [(job.id, token)])
    assert client.run(ack) == 1
    run = q.metrics().histograms["run"]
    assert run[bucket] == 1 and sum(run) == 1


def test_a_garbage_counter_never_fails_the_operation(client: pyredislua.Client,
                                                     r: redis.Redis) -> None:
    q = Queue(client, "mq", metrics=True)
    key = metrics_key("queue", "mq")

    def run(minute: int) -> None:
        r.delete(key)
        r.hset(key, mapping={f"m:{_slot(minute)}": minute, f"enqueued:{_slot(minute)}": "x"})
        q.enqueue("a")

    in_one_minute(r, run)
    assert q.stats().ready == 1  # enqueued; the garbage counter was skipped
    assert totals(q.metrics())["enqueued"] == 0


def test_a_metrics_key_of_another_type_fails_before_writing(client: pyredislua.Client,
                                                            r: redis.Redis) -> None:
    q = Queue(client, "mq", metrics=True)
    r.set(metrics_key("queue", "mq"), "x")
    with pytest.raises(pyredislua.OperationError) as err:
        q.enqueue("a")
    assert err.value.code == "WRONGTYPE"
    assert r.keys("prl:q:*") == [metrics_key("queue", "mq").encode()]


async def test_async_queue_records(aclient: pyredislua.AsyncClient) -> None:
    q = Queue(aclient, "amq", metrics=True)
    await q.enqueue("a")
    s = await aclient.run(series_call("queue", "amq"))
    assert totals(s)["enqueued"] == 1


def test_worker_records_through_its_queue(client: pyredislua.Client) -> None:
    q = Queue(client, "wq", metrics=True)
    for i in range(3):
        q.enqueue(str(i))
    done: list[bytes] = []

    def handle(job: Any) -> None:
        done.append(job.payload)
        if len(done) == 3:
            worker.stop()

    worker = Worker(q, handle, concurrency=1, prefetch=0)
    worker.run()
    assert len(done) == 3
    s = q.metrics()
    assert totals(s)["completed"] == 3 and sum(s.histograms["run"]) == 3


# -- a model: counts of random operation sequences --------------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("enqueue"), st.integers(1, 3)),
    st.tuples(st.just("dequeue"), st.integers(1, 3)),
    st.tuples(st.just("ack"), st.integers(0, 5)),
    st.tuples(st.just("retry"), st.integers(0, 5)),
    st.tuples(st.just("dead"), st.integers(0, 5)),
    st.tuples(st.just("release"), st.integers(0, 5)),
), max_size=25)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_counts_match_a_model(r: redis.Redis, ops: list[tuple[str, int]]) -> None:
    r.flushall()
    client = pyredislua.Client(r)
    q = Queue(client, "model", metrics=True, backoff=0, max_attempts=3)
    model = dict.fromkeys(("enqueued", "completed", "failed", "retried", "dead"), 0)
    waits = runs = 0
    held: list[Any] = []
    for op, n in ops:
        if op == "enqueue":
            q.enqueue_many([f"p{i}" for i in range(n)])
            model["enqueued"] += n
        elif op == "dequeue":
            got = q.dequeue(count=n, lease=600)
            waits += sum(1 for job in got if job.attempts == 1)
            held.extend(got)
        elif held:
            job = held.pop(n % len(held))
            if op == "ack":
                q.ack(job)
                model["completed"] += 1
                runs += 1
            elif op == "release":
                q.nack(job, "", action="release")
            else:
                settled = q.nack(job, "x", action="dead" if op == "dead" else "retry")
                model["failed"] += 1
                model["dead" if settled.outcome == "dead" else "retried"] += 1
    s = q.metrics()
    assert totals(s) == model
    assert sum(s.histograms["wait"]) == waits
    assert sum(s.histograms["run"]) == runs


# -- locks --------------------------------------------------------------------------------------


LOCK_COUNTERS = ("acquired", "contended", "handoffs", "expired")


def _until(condition: Any, timeout: float = 10.0) -> None:
    import time
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


def test_lock_records_acquisitions_and_handoffs(client: pyredislua.Client,
                                                r: redis.Redis) -> None:
    import threading

    from pyredislua.lock import Lock

    a = Lock(client, "ml", metrics=True, auto_renew=False)
    b = Lock(client, "ml", metrics=True, auto_renew=False)
    assert a.acquire()
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(bool(b.acquire(timeout=10))))
    t.start()
    _until(lambda: r.zscore(a.keys.waiters, b.token) is not None)
    a.release()  # granted to the registered waiter
    t.join(10)
    assert got == [True]
    b.release()
    assert a.acquire(blocking=False)  # free again
    assert not b.acquire(blocking=False)  # busy, not a waiter: nothing counted
    a.release()
    s = a.metrics()
    assert s.kind == "lock" and set(s.histograms) == {"wait"}
    assert sum(s.histograms["wait"]) == 1  # the one waiter's wait, ended by the grant
    assert totals(s) == {"acquired": 3, "contended": 1, "handoffs": 1, "expired": 0}
    assert not [f for f in r.hkeys(a.keys.metrics_key) if f.startswith(b"ws:")]


def test_lock_wait_histogram_measures_the_wait_with_the_server_clock(
        client: pyredislua.Client, r: redis.Redis) -> None:
    """A waiter's wait runs from its first registration to its grant (or acquisition) by the
    server's clock; a waiter that gives up leaves no sample and no mark."""
    import threading

    from pyredislua.lock import Lock

    a = Lock(client, "mw", metrics=True, auto_renew=False)
    b = Lock(client, "mw", metrics=True, auto_renew=False)
    assert a.acquire()
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(bool(b.acquire(timeout=10))))
    t.start()
    _until(lambda: r.zscore(a.keys.waiters, b.token) is not None)
    registered = time.monotonic()
    while time.monotonic() - registered < 0.2:  # the wait this test measures: 200 ms or more
        time.sleep(0.01)
    a.release()
    t.join(10)
    assert got == [True]
    wait = a.metrics().histograms["wait"]
    assert sum(wait) == 1
    bucket = wait.index(1)
    assert 8 <= bucket <= 10  # [128, 256) ms, or a little more on a loaded machine
    # a waiter that gives up: no sample, and no mark left behind
    c = Lock(client, "mw", metrics=True, auto_renew=False)
    assert not c.acquire(timeout=0.2)
    b.release()
    assert sum(a.metrics().histograms["wait"]) == 1
    assert not [f for f in r.hkeys(a.keys.metrics_key) if f.startswith(b"ws:")]


def test_lock_records_leases_found_expired(client: pyredislua.Client, r: redis.Redis) -> None:
    from pyredislua.lock import Lock, LockKeys, extend_call, release_call

    a = Lock(client, "ml", metrics=True, auto_renew=False, ttl=0.05)
    assert a.acquire()
    _until(lambda: not r.exists(a.keys.lock))
    keys = LockKeys("ml", metrics=True)
    assert client.run(release_call(keys, a.token)) == 0
    assert client.run(extend_call(keys, a.token, 1000)) is False
    s = client.run(series_call("lock", "ml"))
    assert totals(s) == {"acquired": 1, "contended": 0, "handoffs": 0, "expired": 2}


def test_lock_recording_off_writes_no_metrics_key(client: pyredislua.Client,
                                                  r: redis.Redis) -> None:
    from pyredislua.lock import Lock

    a = Lock(client, "plain", auto_renew=False)
    assert a.acquire()
    a.extend()
    a.release()
    assert not r.exists(metrics_key("lock", "plain"))
    assert totals(a.metrics()) == dict.fromkeys(LOCK_COUNTERS, 0)


# -- rate limiters ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["GCRA", "TokenBucket", "FixedWindow", "SlidingWindow",
                                       "SlidingLog"])
def test_limiter_records_decisions_under_the_calls_tag(client: pyredislua.Client,
                                                       r: redis.Redis, algorithm: str) -> None:
    from pyredislua import ratelimit

    cls = getattr(ratelimit, algorithm)
    one = cls(client, "api", "3/h", metrics=True)
    two = cls(client, "api2", "3/h", "10/d", metrics=True)
    outcomes = [one.hit("alice").allowed for _ in range(5)]
    assert outcomes == [True, True, True, False, False]
    one.check("alice")  # a peek records nothing
    assert [two.hit("bob", tag="team").allowed for _ in range(4)] == [True] * 3 + [False]
    s = one.metrics(tag="alice")
    assert s.kind == "limiter" and s.name == "api" and s.histograms == {}
    assert totals(s) == {"allowed": 3, "denied": 2}
    assert totals(client.run(series_call("limiter", "api2", tag="team"))) == {
        "allowed": 3, "denied": 1}
    assert r.exists("prl:rl:{alice}:metrics:api", "prl:rl:{team}:metrics:api2") == 2
    assert 0 < r.pttl("prl:rl:{team}:metrics:api2") <= TTL_MS


def test_limiter_recording_off_writes_no_metrics_key(client: pyredislua.Client,
                                                     r: redis.Redis) -> None:
    from pyredislua.ratelimit import GCRA

    lim = GCRA(client, "api", "3/h")
    lim.hit("alice")
    assert lim.hit_call("alice").keys == tuple(lim.keys("alice"))
    assert not r.keys("prl:rl:*:metrics:*")


# -- write-behind -------------------------------------------------------------------------------


class _PoisonSink:
    """Takes every record but those whose key starts with "poison" (rejected, each time)."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, records: Any) -> None:
        if any(r.key.startswith("poison") for r in records):
            raise ValueError("poison")
        self.written.extend(r.key for r in records)


def test_store_records_writes_flushes_failures_and_lag(client: pyredislua.Client,
                                                       r: redis.Redis) -> None:
    from pyredislua.writebehind import WriteBehind

    store = WriteBehind(client, "ws", metrics=True, max_attempts=1, backoff=0, max_delay=0)
    store.set("a", b"1")
    store.write_many([("b", "2"), ("poison", "x")])
    store.delete("c")
    sink = _PoisonSink()
    store.flush(sink)
    assert sorted(sink.written) == ["a", "b", "c"]
    s = store.metrics()
    assert s.kind == "store" and set(s.histograms) == {"lag"}
    assert totals(s) == {"written": 4, "flushed": 3, "failed": 1, "dead": 1}
    assert sum(s.histograms["lag"]) == 3
    assert client.run(series_call("store", "ws")) == s
    assert 0 < r.pttl(metrics_key("store", "ws")) <= TTL_MS


def test_store_records_expired_claims(client: pyredislua.Client, r: redis.Redis) -> None:
    from pyredislua.writebehind import WriteBehind
    from pyredislua.writebehind.ops import claim_call, reap_call

    store = WriteBehind(client, "ws", metrics=True, max_attempts=1)
    store.set("a", b"1")
    claim = client.run(claim_call(store.keys, 10, 1))
    assert len(claim.records) == 1
    _until(lambda: client.run(reap_call(store.keys, 100, 1)) == 1)
    assert totals(store.metrics()) == {"written": 1, "flushed": 0, "failed": 1, "dead": 1}


def test_store_recording_off_writes_no_metrics_key(client: pyredislua.Client,
                                                   r: redis.Redis) -> None:
    from pyredislua.writebehind import WriteBehind

    store = WriteBehind(client, "plain", max_delay=0)
    store.set("a", b"1")
    store.flush(_PoisonSink())
    assert not r.exists(metrics_key("store", "plain"))


# -- cache --------------------------------------------------------------------------------------


def test_cache_records_lookups_and_recomputes(client: pyredislua.Client, r: redis.Redis) -> None:
    from pyredislua.cache import Cache

    cache = Cache(client, "mc", metrics=True, beta=0, ttl=0.05, grace=60)
    computed: list[str] = []

    def compute(key: str) -> Any:
        def run() -> Any:
            computed.append(key)
            return None if key == "none" else {"k": key}
        return run

    assert cache.get_or_compute("a", compute("a")) == {"k": "a"}  # miss, recompute
    assert cache.get_or_compute("none", compute("none")) is None  # miss, recompute (not-found)
    _until(lambda: cache.get("a").status == 3)  # expired, in grace (Cache.get counts nothing)
    assert cache.get_or_compute("a", compute("a")) == {"k": "a"}  # stale: recomputed
    long = Cache(client, "mc", metrics=True, beta=0, ttl=600)
    long.get_or_compute("b", compute("b"))  # miss, recompute
    assert long.get_or_compute("b", compute("b")) == {"k": "b"}  # hit
    assert computed == ["a", "none", "a", "b"]
    s = cache.metrics()
    assert s.kind == "cache" and s.name == "mc" and s.histograms == {}
    assert totals(s) == {"hits": 1, "misses": 3, "stale": 1, "recomputes": 4}
    assert client.run(series_call("cache", "mc")) == s


def test_cache_recording_off_writes_no_metrics_key(client: pyredislua.Client,
                                                   r: redis.Redis) -> None:
    from pyredislua.cache import Cache

    cache = Cache(client, "plain", beta=0)
    cache.get_or_compute("a", lambda: 1)
    cache.get_or_compute("a", lambda: 1)
    assert not r.exists(metrics_key("cache", "plain"))


# -- the ring against a model -------------------------------------------------------------------

RING = st.dictionaries(st.integers(0, 59), st.tuples(st.integers(0, 2), st.integers(0, 1000),
                                                     st.integers(0, 1000)), max_size=12)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ring=RING)
def test_the_minute_ring_matches_a_model(r: redis.Redis,
                                         ring: dict[int, tuple[int, int, int]]) -> None:
    """Slots pre-set with stamps 0, 1 or 2 hours behind the minute that slot last stood for:
    the read shows exactly the live ones, aligned by age; a recording resets a stale current
    slot and adds to a live one; the other slots are untouched."""
    r.flushall()
    client = pyredislua.Client(r)
    q = Queue(client, "ring", metrics=True)
    key = metrics_key("queue", "ring")

    def run(minute: int) -> tuple[MinuteSeries, MinuteSeries]:
        r.delete(key)
        mapping: dict[str, int] = {}
        for slot, (hours, completed, enqueued) in ring.items():
            stamp = minute - (minute - slot) % 60 - 60 * hours
            mapping |= {f"m:{slot}": stamp, f"completed:{slot}": completed,
                        f"enqueued:{slot}": enqueued}
        if mapping:
            r.hset(key, mapping=mapping)
        before = q.metrics()
        q.enqueue("x")
        return before, q.metrics()

    before, after = in_one_minute(r, run)
    minute = before.minute
    expected = [0] * 60
    for slot, (hours, completed, _) in ring.items():
        if hours == 0:
            expected[59 - (minute - slot) % 60] = completed
    assert list(before.counters["completed"]) == expected
    current = ring.get(minute % 60)
    live = current is not None and current[0] == 0
    assert after.counters["enqueued"][-1] == (current[2] + 1 if live and current else 1)
    assert after.counters["completed"][-1] == (current[1] if live and current else 0)
    assert list(after.counters["completed"])[:-1] == expected[:-1]


def test_the_memory_report_counts_metrics_keys_apart(client: pyredislua.Client,
                                                     r: redis.Redis) -> None:
    """A limiter's and a cache's metrics keys are not limiter keys or cache tags; a queue's is
    one of its keys; all of them expire (no key without a TTL)."""
    from pyredislua.cache import Cache
    from pyredislua.observe.memory import measure
    from pyredislua.ratelimit import GCRA

    GCRA(client, "api", "10/h", metrics=True).hit("alice")
    Cache(client, "cat", metrics=True).get_or_compute("k", lambda: 1)
    Queue(client, "q", metrics=True).enqueue("x")
    report = measure(r)
    areas = {a.area: a for a in report.areas}
    assert areas["ratelimit"].instances_seen == 1
    assert areas["cache tags"].instances_seen == 0
    assert areas["recorded metrics"].instances_seen == 2
    assert areas["queue"].by_role["metrics"][0] == 1
    assert report.no_ttl == [] and not report.other_keys
