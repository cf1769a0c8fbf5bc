"""The priority queue through the Python API: ordering, delays, leases, retries, dead letters,
idempotency, blocking, recovery, bad input and asyncio."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

import pyredislua
from pyredislua.engine.protocol import Call
from pyredislua.queue import JobSpec, Queue, ops
from pyredislua.queue.ops import QueueKeys
from tests.conftest import snapshot

pytestmark = pytest.mark.queue


def server_ms(r: redis.Redis) -> int:
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def test_priority_then_fifo_order(client: pyredislua.Client) -> None:
    q = Queue(client, "jobs")
    ids = {}
    for i, prio in enumerate([5, 1, 5, 0, 1, -3, 5]):
        ids[i] = q.enqueue(f"j{i}", priority=prio).id
    got = q.dequeue(10)
    assert [j.text for j in got] == ["j5", "j3", "j1", "j4", "j0", "j2", "j6"]
    assert all(j.attempts == 1 for j in got)


def test_fifo_holds_at_size_and_extreme_priorities(client: pyredislua.Client) -> None:
    q = Queue(client, "big")
    lo, hi = -(2**31), 2**31 - 1
    specs = [JobSpec(str(i), priority=(hi if i % 3 == 0 else lo if i % 3 == 1 else 0))
             for i in range(3000)]
    q.enqueue_many(specs)
    order = [int(j.text) for _ in range(3) for j in q.dequeue(1000)]
    expected = sorted(range(3000), key=lambda i: (specs[i].priority, i))
    assert order == expected


def test_ids_are_fixed_width_sequence(client: pyredislua.Client) -> None:
    q = Queue(client, "ids")
    a, b = q.enqueue("a").id, q.enqueue("b").id
    assert len(a) == len(b) == 16 and a < b and int(b) == int(a) + 1


def test_delayed_never_early(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "later")
    q.enqueue("soon", delay=0.2)
    due = q.peek("delayed")[0].score
    assert q.dequeue(timeout=0) == []
    [job] = q.dequeue(timeout=5)
    assert job.leased_at_ms >= due
    assert server_ms(r) >= due


def test_blocking_dequeue_wakes_on_enqueue(client: pyredislua.Client, redis_url: str) -> None:
    q = Queue(client, "wake")
    other = Queue(pyredislua.Client(redis.Redis.from_url(redis_url)), "wake")
    got: list[object] = []
    t = threading.Thread(target=lambda: got.extend(q.dequeue(timeout=10)))
    t.start()
    deadline = time.monotonic() + 5
    while not any(c.get("cmd") == "blpop" for c in client.redis.client_list()):
        assert time.monotonic() < deadline  # waits until the consumer is blocked
    sent = time.monotonic()
    other.enqueue("hello")
    t.join(5)
    assert [j.text for j in got] == ["hello"]  # type: ignore[attr-defined]
    assert time.monotonic() - sent < 1.0


@pytest.mark.parametrize("timeout", [0.05, 0.4])
def test_blocking_dequeue_waits_out_its_timeout(client: pyredislua.Client, timeout: float
                                                ) -> None:
    """The wait goes through engine/waiting.py: never shorter than the timeout (a stretch under
    Redis' timer grain is slept locally), and not much longer."""
    q = Queue(client, "idle")
    sent = time.monotonic()
    assert q.dequeue(timeout=timeout) == []
    assert timeout <= time.monotonic() - sent < timeout + 1.0


async def test_blocking_dequeue_on_asyncio_wakes_for_a_delayed_job(
        aclient: pyredislua.AsyncClient) -> None:
    q = Queue(aclient, "adelay")
    sent = time.monotonic()
    await q.enqueue("soon", delay=0.3)
    due = (await q.peek("delayed"))[0].score
    [job] = await q.dequeue(timeout=5)
    assert job.text == "soon" and job.leased_at_ms >= due  # never early (server time)
    assert time.monotonic() - sent < 2.0  # woken when due, not at the timeout


def test_lease_ack_and_stale_tokens_change_nothing(client: pyredislua.Client,
                                                   r: redis.Redis) -> None:
    q = Queue(client, "lease")
    q.enqueue("x", backoff=0)
    [job] = q.dequeue(lease=30)
    before = snapshot(r)
    for bad in [(job.id, "nope"), ("0000000000000099", job.token)]:
        with pytest.raises(pyredislua.StaleTokenError):
            q.ack(bad)
        with pytest.raises(pyredislua.StaleTokenError):
            q.extend(bad, 10)
        with pytest.raises(pyredislua.StaleTokenError):
            q.nack(bad)
    assert snapshot(r) == before
    q.nack(job, "again")  # backoff 0: straight back to ready
    [again] = q.dequeue()
    assert again.id == job.id and again.attempts == 2 and again.token != job.token
    with pytest.raises(pyredislua.StaleTokenError):
        q.ack(job)  # the first delivery's token is stale now
    q.ack(again)
    assert q.get(job.id) is None
    assert q.stats().counters["acked"] == 1


def test_batch_ack_is_all_or_nothing(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "batch")
    q.enqueue_many(["a", "b", "c"])
    jobs = q.dequeue(3)
    before = snapshot(r)
    with pytest.raises(pyredislua.StaleTokenError):
        q.ack_many([jobs[0], (jobs[1].id, "stale"), jobs[2]])
    assert snapshot(r) == before
    assert q.ack_many(jobs) == 3


def test_expired_lease_is_stale_and_extend_never_resurrects(client: pyredislua.Client,
                                                            r: redis.Redis) -> None:
    q = Queue(client, "expire")
    q.enqueue("x")
    [job] = q.dequeue(lease=0.001)
    while server_ms(r) <= job.deadline_ms:
        pass
    with pytest.raises(pyredislua.StaleTokenError):
        q.extend(job, 60)
    with pytest.raises(pyredislua.StaleTokenError):
        q.ack(job)
    assert q.stats().expired_leases == 1


def test_extend_moves_the_deadline(client: pyredislua.Client) -> None:
    q = Queue(client, "ext")
    q.enqueue("x")
    [job] = q.dequeue(lease=1)
    deadline = q.extend(job, 100)
    assert deadline >= job.deadline_ms + 98_000
    assert q.peek("active")[0].score == deadline


def test_retries_back_off_then_dead_letter(client: pyredislua.Client) -> None:
    q = Queue(client, "retry")
    q.enqueue("x", max_attempts=3, backoff=10)
    outcomes = []
    for attempt in range(1, 4):
        [job] = q.dequeue(timeout=0) or [None]  # type: ignore[list-item]
        if job is None:  # in backoff: requeue it at once to keep the test fast
            info = q.peek("delayed")[0]
            assert info.attempts == attempt - 1
            # the backoff is 10 s * 2^(n-1) with equal jitter: between half and all of it
            step = 10_000 * 2 ** (attempt - 2)
            assert outcomes[-1].at_ms - step <= info.score
            client.redis.zadd(q.keys.delayed, {info.id: 0})
            [job] = q.dequeue()
        assert job.attempts == attempt
        outcomes.append(q.nack(job, f"failure {attempt}"))
    assert [o.outcome for o in outcomes] == ["delayed", "delayed", "dead"]
    total, dead = q.dead()
    assert total == 1 and dead[0].reason == "failure 3" and dead[0].attempts == 3


def test_backoff_is_exponential_with_jitter(client: pyredislua.Client) -> None:
    q = Queue(client, "jitter")
    for attempt, step in [(1, 1000), (2, 2000), (3, 4000)]:
        delays = []
        for _ in range(12):
            q.enqueue("x", max_attempts=10, backoff=1)
            [job] = q.dequeue()
            if attempt > 1:  # fake the earlier attempts by re-delivering at once
                for _ in range(attempt - 1):
                    q.nack(job, delay=0)
                    [job] = q.dequeue()
            assert job.attempts == attempt
            settled = q.nack(job)
            delays.append(settled.at_ms - job.leased_at_ms)
            q.purge()
        # equal jitter: between half the step and the whole step (plus the call's own time)
        assert all(step // 2 <= d <= step + 50 for d in delays), delays
        assert len(set(delays)) > 3, delays


def test_dead_letters_requeue_and_purge(client: pyredislua.Client) -> None:
    q = Queue(client, "dlq")
    q.enqueue_many([q.job(str(i), max_attempts=1) for i in range(5)])
    for job in q.dequeue(5):
        q.nack(job, "bad")
    total, rows = q.dead()
    assert total == 5 and all(r.reason == "bad" and r.attempts == 1 for r in rows)
    assert q.requeue([rows[0].id, "0000000000000999"]) == [rows[0].id]
    [job] = q.dequeue()
    assert job.id == rows[0].id and job.attempts == 1
    assert q.purge([rows[1].id]) == 1
    assert q.purge(limit=2) == 2
    assert q.dead()[0] == 1
    assert q.requeue() == [rows[4].id]
    assert q.stats().dead == 0


def test_idempotency_key(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "idem")
    first = q.enqueue("a", key="order-1")
    before = snapshot(r)
    again = q.enqueue("b", key="order-1", priority=-5)
    assert not again.created and again.id == first.id
    assert snapshot(r) == before
    dup = q.enqueue_many([JobSpec("c", key="order-2"), JobSpec("d", key="order-2")])
    assert dup[0].created and not dup[1].created and dup[0].id == dup[1].id
    [job] = q.dequeue()
    q.ack(job)
    fresh = q.enqueue("e", key="order-1")  # finished: the key is free again
    assert fresh.created and fresh.id != first.id


def test_reap_recovers_a_dead_consumer(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "reap")
    q.enqueue_many([q.job("a", backoff=0), q.job("b", backoff=0, max_attempts=1)])
    jobs = q.dequeue(2, lease=0.001)  # the consumer "dies" holding both
    while server_ms(r) <= max(j.deadline_ms for j in jobs):
        pass
    got = {s.id: s.outcome for s in q.reap()}
    assert got == {jobs[0].id: "ready", jobs[1].id: "dead"}
    assert q.dead()[1][0].reason == "lease expired"
    [again] = q.dequeue()
    assert again.id == jobs[0].id and again.attempts == 2
    assert q.reap() == []


def test_stats_peek_get(client: pyredislua.Client) -> None:
    q = Queue(client, "intro")
    q.enqueue_many([q.job("a", priority=2), q.job("b", priority=1), q.job("c", delay=60),
                    q.job("d", priority=2)])
    [job] = q.dequeue()
    s = q.stats()
    assert (s.ready, s.delayed, s.active, s.dead, s.unfinished) == (2, 1, 1, 0, 4)
    by = {p.priority: (p.unfinished, p.ready) for p in s.priorities or []}
    assert by == {0: (1, 0), 1: (1, 0), 2: (2, 2)}
    assert [i.payload for i in q.peek()] == [b"a", b"d"]
    info = q.get(job.id)
    assert info is not None and info.state == "active" and info.attempts == 1
    assert q.get("0000000000000042") is None
    assert q.get_by_key("nobody") is None


def test_get_by_key_finds_the_unfinished_holder(client: pyredislua.Client) -> None:
    q = Queue(client, "bykey")
    first = q.enqueue("a", key="order-7")
    assert first.created
    held = q.get_by_key("order-7")
    assert held is not None and held.id == first.id and held.state == "ready"
    assert held.key == "order-7" and held.payload == b"a"
    [job] = q.dequeue()
    held = q.get_by_key("order-7")
    assert held is not None and (held.id, held.state, held.attempts) == (job.id, "active", 1)
    q.nack(job, "bad input", action="dead")
    assert q.get_by_key("order-7") is None  # a dead job releases its key
    q.requeue([job.id])
    held = q.get_by_key("order-7")
    assert held is not None and (held.id, held.state) == (job.id, "ready")


def test_read_only_ops_are_flagged_no_writes() -> None:
    lib = pyredislua.render_library()
    ro = {n for n, op in lib.operations.items() if n.startswith("queue.") and op.read_only}
    assert ro == {"queue.stats", "queue.peek", "queue.get", "queue.get_by_key", "queue.dead",
                  "queue.metrics"}


def test_survives_function_and_script_flush(client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "flush")
    q.enqueue("a")
    r.function_flush()
    r.script_flush()
    q.enqueue("b")
    assert len(q.dequeue(2)) == 2


def test_keys_share_one_hash_tag() -> None:
    keys = QueueKeys("orders")
    assert all(k.startswith("prl:q:{orders}:") for k in keys.all)
    assert QueueKeys("a{x}b").all[0] == "prl:q:a{x}b:ready"


# -- bad input: typed errors, nothing changed ------------------------------------------------

BAD_BATCHES = [
    pytest.param(["x", "0", "0", "1", "0"], id="short-group"),
    pytest.param(["x", "1.5", "0", "1", "0", ""], id="fractional-priority"),
    pytest.param(["x", "2147483648", "0", "1", "0", ""], id="priority-too-big"),
    pytest.param(["x", "0", "-1", "1", "0", ""], id="negative-delay"),
    pytest.param(["x", "0", "0", "0", "0", ""], id="zero-attempts"),
    pytest.param(["x", "0", "0", "1", "-5", ""], id="negative-backoff"),
    pytest.param(["ok", "0", "0", "1", "0", "", "x", "0", "-1", "1", "0", ""],
                 id="second-job-bad"),
    pytest.param(["x", "0", "0", "1", "0", "k" * 513], id="key-too-long"),
]


@pytest.mark.parametrize("args", BAD_BATCHES)
def test_bad_batch_changes_nothing(client: pyredislua.Client, r: redis.Redis,
                                   args: list[str]) -> None:
    q = Queue(client, "bad")
    q.enqueue("seed")
    before = snapshot(r)
    with pytest.raises(pyredislua.BadArgumentError):
        client.run(Call("queue.enqueue_batch", q.keys.all, tuple(args)))
    assert snapshot(r) == before


@pytest.mark.parametrize(("op", "args"), [
    ("queue.ack", ("0000000000000001",)),
    ("queue.ack", ("0000000000000001", "1", "0000000000000001", "1")),
    ("queue.ack", ("", "1")),
    ("queue.requeue", ("1", "")),
    ("queue.purge", ("1", *(["x"] * 1001))),
    ("queue.dequeue", ("0",)),
    ("queue.dequeue", ("1001",)),
    ("queue.nack", ("0000000000000001", "1", "", "explode")),
    ("queue.enqueue", ("x", "0", "-1")),
])
def test_bad_arguments_change_nothing(client: pyredislua.Client, r: redis.Redis, op: str,
                                      args: tuple[str, ...]) -> None:
    q = Queue(client, "bad")
    q.enqueue("seed")
    q.dequeue()
    before = snapshot(r)
    with pytest.raises(pyredislua.BadArgumentError):
        client.run(Call(op, q.keys.all, args))
    with pytest.raises(pyredislua.BadArgumentError):
        client.run(Call(op, q.keys.all[:-1], args))  # wrong key count
    assert snapshot(r) == before


def test_python_side_rejects_bad_durations(client: pyredislua.Client) -> None:
    q = Queue(client, "py")
    with pytest.raises(ValueError):
        q.enqueue("x", delay=-1)
    with pytest.raises(ValueError):
        q.dequeue(lease=0)
    with pytest.raises(ValueError):
        q.dequeue(timeout=-1)
    with pytest.raises(pyredislua.BadArgumentError):
        q.enqueue("x", priority=2**31)
    with pytest.raises(pyredislua.BadArgumentError):
        q.dequeue(0)


# -- asyncio ----------------------------------------------------------------------------------


async def test_async_queue_roundtrip(aclient: pyredislua.AsyncClient) -> None:
    q = Queue(aclient, "async")
    await q.enqueue_many(["b", q.job("a", priority=-1)])
    waiter = asyncio.ensure_future(q.dequeue(3, timeout=5))
    jobs = await waiter
    assert [j.text for j in jobs] == ["a", "b"]
    await q.ack(jobs[0])
    s = await q.nack(jobs[1], "nope", action="dead")
    assert s.outcome == "dead"
    assert (await q.dead())[0] == 1
    assert await q.requeue() == [jobs[1].id]
    assert (await q.stats()).ready == 1
    blocked = asyncio.ensure_future(q.dequeue(1, timeout=5))
    [job] = await blocked
    assert await q.extend(job, 5) > 0
    await q.ack_many([job])
    late = asyncio.ensure_future(q.dequeue(1, timeout=5))
    await asyncio.sleep(0.05)
    await q.enqueue("late")
    assert [j.text for j in await late] == ["late"]
    assert (await q.peek("ready")) == [] and await q.get(job.id) is None
    assert await q.purge() == 0 and await q.reap() == []


# -- errors carry codes; -0; duplicated ids; malformed state ----------------------------------


@pytest.mark.parametrize(("op", "args"), [
    ("queue.dead", ("-0",)),
    ("queue.dead", ("0", "-0")),
    ("queue.enqueue", ("x", "-0")),
    ("queue.enqueue_batch", ("x", "-0", "0", "1", "0", "")),
    ("queue.nack", ("0000000000000001", "1", "", "retry", "-0")),
])
def test_negative_zero_is_not_an_integer(client: pyredislua.Client, r: redis.Redis, op: str,
                                         args: tuple[str, ...]) -> None:
    q = Queue(client, "zero")
    q.enqueue("seed")
    before = snapshot(r)
    with pytest.raises(pyredislua.BadArgumentError, match="must be an integer"):
        client.run(Call(op, q.keys.all, args))
    assert snapshot(r) == before
    assert {p.priority for p in q.stats().priorities or []} == {0}


def test_purge_counts_a_duplicated_id_once(client: pyredislua.Client) -> None:
    q = Queue(client, "dup")
    q.enqueue_many([q.job(str(i), max_attempts=1) for i in range(3)])
    for job in q.dequeue(3):
        q.nack(job, action="dead")
    _, rows = q.dead()
    assert q.purge([rows[0].id, rows[0].id, rows[1].id, rows[0].id]) == 2
    assert q.stats().counters["purged"] == 2 and q.dead()[0] == 1
    assert q.requeue([rows[2].id, rows[2].id]) == [rows[2].id]
    assert q.stats().counters["requeued"] == 1


def test_a_malformed_job_record_is_badstate_and_changes_nothing(client: pyredislua.Client,
                                                                r: redis.Redis) -> None:
    q = Queue(client, "garbage")
    job_id = q.enqueue("x").id
    r.hset(q.keys.jobs, job_id, b"\x93\x01\x02\x03")  # valid msgpack, not a job record
    before = snapshot(r)
    for call in (lambda: q.get(job_id), lambda: q.peek(), lambda: q.dequeue()):
        with pytest.raises(pyredislua.BadStateError):
            call()
    assert snapshot(r) == before


def test_dequeue_with_active_of_another_type_loses_no_job(client: pyredislua.Client,
                                                          r: redis.Redis) -> None:
    """Issue 8: the job used to leave ready and never reach active."""
    q = Queue(client, "lost")
    job_id = q.enqueue("x").id
    r.set(q.keys.active, "oops")
    with pytest.raises(pyredislua.WrongTypeError):
        q.dequeue()
    r.delete(q.keys.active)
    [job] = q.dequeue()
    assert job.id == job_id


def test_enqueue_with_a_bad_marker_enqueues_nothing(client: pyredislua.Client,
                                                    r: redis.Redis) -> None:
    """Issue 8: the job used to be enqueued while the caller got an error (a retry: twice)."""
    q = Queue(client, "marker")
    r.set(q.keys.marker, "oops")
    with pytest.raises(pyredislua.WrongTypeError):
        q.enqueue("x")
    assert q.stats().ready == 0 and q.stats().counters == {}


def test_lease_tokens_are_per_job_and_never_repeat(client: pyredislua.Client) -> None:
    q = Queue(client, "tokens", backoff=0)
    q.enqueue("x")
    tokens = []
    for action in ("retry", "release", "retry"):
        [job] = q.dequeue()
        tokens.append(job.token)
        q.nack(job, action=action)  # type: ignore[arg-type]
    [job] = q.dequeue()
    tokens.append(job.token)
    # the delivery count, then the server time of the lease (opaque to callers)
    assert [t.split(".")[0] for t in tokens] == ["1", "2", "3", "4"]
    assert len(set(tokens)) == 4
    with pytest.raises(pyredislua.StaleTokenError):
        q.ack((job.id, tokens[1]))  # the released delivery's token stays stale
    q.ack(job)


def test_a_job_record_with_a_non_numeric_field_is_badstate(client: pyredislua.Client,
                                                           r: redis.Redis) -> None:
    """Every numeric field of a job record is checked when it is read (max_run_ms included)."""
    q = Queue(client, "fields")
    job_id = q.enqueue("x").id
    record = r.eval("local m = cmsgpack.unpack(redis.call('HGET', KEYS[1], ARGV[1])) "
                    "m.x = 'soon' return cmsgpack.pack(m)", 1, q.keys.jobs, job_id)
    r.hset(q.keys.jobs, job_id, record)
    before = snapshot(r)
    with pytest.raises(pyredislua.BadStateError):
        q.dequeue()
    assert snapshot(r) == before


# A job as library versions before 1.28 stored it: its record (no `j`) under its id in the jobs
# hash, its payload in the payloads hash.
OLD_LAYOUT = """
redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack({p = 0, a = 0, m = 3, b = 0, e = 1, d = 0}))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'seq', 1)
redis.call('HINCRBY', KEYS[5], '0', 1)
"""


def _old_job(r: redis.Redis, q: Queue, job_id: str, payload: bytes, *,
             due_at: int | None = None) -> None:
    """An old job, ready (priority 0), or delayed until server time ``due_at`` (ms)."""
    k = q.keys
    into, score = (k.ready, 0) if due_at is None else (k.delayed, due_at)
    r.eval(OLD_LAYOUT, 5, k.jobs, k.payloads, into, k.stats, k.prio, job_id, payload, score)


def test_a_payload_is_kept_beside_its_record_and_one_read_serves_both(
        client: pyredislua.Client, r: redis.Redis) -> None:
    q = Queue(client, "layout")
    job_id = q.enqueue(b"body").id
    q.enqueue_many([q.job(b"second")])
    assert r.hgetall(q.keys.jobs).keys() >= {job_id.encode(), f"{job_id}:p".encode()}
    assert r.hget(q.keys.jobs, f"{job_id}:p") == b"body"
    assert r.exists(q.keys.payloads) == 0  # nothing goes to the payloads hash any more
    [job] = q.dequeue()
    q.ack(job)
    assert r.hexists(q.keys.jobs, job_id) == 0 and r.hexists(q.keys.jobs, f"{job_id}:p") == 0
    [job] = q.dequeue()
    q.nack(job, action="dead")
    q.purge([job.id])
    assert r.exists(q.keys.jobs) == 0  # record and payload both went


def test_jobs_enqueued_before_1_28_keep_their_payloads_in_the_payloads_hash(
        client: pyredislua.Client, r: redis.Redis) -> None:
    """Queues written by earlier versions go on working: every reader finds an old job's
    payload in the payloads hash, and finishing it deletes it there."""
    q = Queue(client, "older", backoff=0)
    _old_job(r, q, "0000000000000001", b"old one")
    _old_job(r, q, "0000000000000002", b"old two")
    new_id = q.enqueue(b"new").id
    assert [j.payload for j in q.peek()] == [b"old one", b"old two", b"new"]
    assert q.get("0000000000000001").payload == b"old one"  # type: ignore[union-attr]
    jobs = q.dequeue(3)
    assert [j.payload for j in jobs] == [b"old one", b"old two", b"new"]
    q.ack(jobs[0])  # one old job alone
    assert r.hget(q.keys.payloads, "0000000000000001") is None
    q.nack(jobs[1], action="dead")
    assert q.dead()[1][0].payload == b"old two"
    q.ack(jobs[2])
    assert q.requeue(["0000000000000002"]) == ["0000000000000002"]
    [again] = q.dequeue()
    assert again.payload == b"old two"
    q.ack(again)
    assert r.exists(q.keys.payloads, q.keys.jobs) == 0
    assert r.hget(q.keys.jobs, f"{new_id}:p") is None
    # old and new together in one ack, and a purge of an old dead job
    _old_job(r, q, "0000000000000010", b"old")
    q.enqueue(b"new")
    both = q.dequeue(2)
    assert q.ack_many(both) == 2
    _old_job(r, q, "0000000000000020", b"dead")
    [job] = q.dequeue()
    q.nack(job, action="dead")
    assert q.purge() == 1
    assert r.exists(q.keys.payloads, q.keys.jobs) == 0


def test_an_old_delayed_job_ranked_among_ready_ones_keeps_its_payload(
        client: pyredislua.Client, r: redis.Redis) -> None:
    """A due delayed job is ranked among the ready ones (the dequeue path that reads payloads
    apart from records): an old one's payload comes from the payloads hash."""
    q = Queue(client, "older-delayed")
    _old_job(r, q, "0000000000000001", b"old, due", due_at=server_ms(r) - 1)
    q.enqueue(b"new", priority=1)
    jobs = q.dequeue(2)
    assert [j.payload for j in jobs] == [b"old, due", b"new"]
    assert q.ack_many(jobs) == 2
    assert r.exists(q.keys.payloads, q.keys.jobs) == 0


def test_a_payload_field_is_never_taken_for_a_job(client: pyredislua.Client,
                                                  r: redis.Redis) -> None:
    q = Queue(client, "fields-only")
    job = q.enqueue(b"x")
    assert q.get(f"{job.id}:p") is None
    [leased] = q.dequeue()
    before = snapshot(r)
    with pytest.raises(pyredislua.StaleTokenError):
        q.ack((f"{leased.id}:p", leased.token))
    assert snapshot(r) == before


@pytest.mark.parametrize("stored", [b"007", b"-0", b"+1", b"1.0"])
def test_a_priority_count_redis_would_not_increment_is_badstate_before_any_write(
        client: pyredislua.Client, r: redis.Redis, stored: bytes) -> None:
    """Enqueue and ack move a priority's count with HINCRBY after reading and checking it: a
    count HINCRBY refuses must be refused by the check, before the first write."""
    q = Queue(client, "counts")
    q.enqueue("x")
    [job] = q.dequeue()
    r.hset(q.keys.prio, "0", stored)
    before = snapshot(r)
    for call in (lambda: q.enqueue("y"), lambda: q.ack(job)):
        with pytest.raises(pyredislua.BadStateError, match="the count of priority 0"):
            call()
        assert snapshot(r) == before


@pytest.mark.parametrize("count", [1, 6, 7, 12, 42])
def test_a_batch_with_max_run_times_is_one_call_whatever_its_size(
        client: pyredislua.Client, count: int) -> None:
    """queue.enqueue_jobs is told the fields per job, so no job count is ambiguous: one call
    (all checked before the first is added) however many jobs carry a max run time."""
    q = Queue(client, "widths")
    specs = [JobSpec(f"j{i}", priority=i, max_run=5) for i in range(count)]
    calls = ops.enqueue_batch_calls(q.keys, specs)
    assert len(calls) == 1 and calls[0].op == "queue.enqueue_jobs"
    assert [e.created for e in q.enqueue_many(specs)] == [True] * count
    jobs = q.dequeue(count)
    assert sorted(j.payload for j in jobs) == sorted(f"j{i}".encode() for i in range(count))
    assert {j.max_run_ms for j in jobs} == {5000}


def test_enqueue_batch_guesses_the_width_and_enqueue_jobs_is_told(client: pyredislua.Client,
                                                                  r: redis.Redis) -> None:
    """Six jobs of seven fields are 42 values, which queue.enqueue_batch reads as seven jobs of
    six (its documented rule): refused, nothing changed. queue.enqueue_jobs takes them."""
    keys = QueueKeys("guess")
    items = tuple(f for i in range(6) for f in (f"p{i}", i, 0, 3, 1000, "", 5000))
    before = snapshot(r)
    with pytest.raises(pyredislua.BadArgumentError):
        client.run(Call("queue.enqueue_batch", keys.all, items, lambda x: x))
    assert snapshot(r) == before
    reply = client.run(Call("queue.enqueue_jobs", keys.all, (7, *items), lambda x: x))
    assert len(reply) == 12  # six (id, created) pairs
