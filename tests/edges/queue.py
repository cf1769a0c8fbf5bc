"""Edge scenarios of the priority queue: every operation, and every writing path worth
protecting — enqueue (ready, delayed, with a new idempotency key, a duplicate, on a fresh queue,
re-sent), batches, dequeue (ready jobs, promoting due delayed jobs, a job from before per-job
tokens, empty, re-sent), ack, nack (retry with backoff, retry at once, release, dead-letter by
request and by attempts), extend, reap of expired leases, requeue, purge (duplicated ids), and the
read-only operations. Calls are built by hand (the exact FCALL contract); leases and delays are
long, so a path does not change while the suite tampers with a key and calls again."""

from __future__ import annotations

from typing import Any

import pyredislua
from pyredislua.engine.protocol import Call
from tests.edges import Scenario, run_all

NAMES = ("ready", "delayed", "active", "dead", "jobs", "payloads", "idem", "prio", "stats",
         "marker")
BASE = "prl:q:{edge}"
ALL = tuple(f"{BASE}:{n}" for n in NAMES)
REQUEST = f"{BASE}:req:edge-1"
REQ = (*ALL, REQUEST)
METRICS = f"{BASE}:metrics"
MET = (*REQ, METRICS)  # recording: the metrics key after the request record
MINUTE = 60_000


def _job(payload: str = "p", priority: int = 0, delay_ms: int = 0, max_attempts: int = 3,
         backoff_ms: int = 1000, key: str = "") -> tuple[Any, ...]:
    return (payload, priority, delay_ms, max_attempts, backoff_ms, key)


def _enqueue(*job: Any) -> Call[Any]:
    return Call("queue.enqueue", ALL, job)


def _dequeue(count: int = 1, lease_ms: int = MINUTE) -> Call[Any]:
    return Call("queue.dequeue", ALL, (count, lease_ms))


def _server_ms(client: pyredislua.Client) -> int:
    seconds, micros = client.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _until(client: pyredislua.Client, ms: int) -> None:
    """Wait until the server clock is past ``ms`` (a 1 ms delay or lease, so this is short)."""
    while _server_ms(client) <= ms:
        pass


def _setup(*calls: Call[Any]) -> Any:
    def setup(client: pyredislua.Client) -> None:
        run_all(client, list(calls))
    return setup


def _in_use(client: pyredislua.Client) -> None:
    """Two ready jobs and a delayed one holding an idempotency key."""
    run_all(client, [_enqueue(*_job("a", 1)), _enqueue(*_job("a2", 1)),
                     _enqueue(*_job("b", 2, MINUTE, key="kb"))])


PIN = """
for i, id in ipairs(ARGV) do
  local m = cmsgpack.unpack(redis.call('HGET', KEYS[1], id))
  m.t = tostring(m.d)
  redis.call('HSET', KEYS[1], id, cmsgpack.pack(m))
end
"""


def _pin_tokens(client: pyredislua.Client, ids: list[str]) -> None:
    """Lease tokens carry the server time of their lease; the scenarios' arguments are fixed,
    so the live tokens of these jobs are set to their bare delivery counts ("1")."""
    client.redis.eval(PIN, 1, dict(zip(NAMES, ALL))["jobs"], *ids)


def _leased(client: pyredislua.Client) -> list[tuple[str, str]]:
    """Two leased jobs (priorities 1 and 2, the second with an idempotency key), one waiting."""
    run_all(client, [_enqueue(*_job("a", 1)), _enqueue(*_job("b", 2, key="kb")),
                     _enqueue(*_job("c", 3))])
    got = client.run(_dequeue(2))
    ids = [j[0].decode() for j in got[2]]
    _pin_tokens(client, ids)
    return [(i, "1") for i in ids]


LEASED = [("0000000000000001", "1"), ("0000000000000002", "1")]


def _leased_setup(client: pyredislua.Client) -> None:
    assert _leased(client) == LEASED


def _last_attempt(client: pyredislua.Client) -> None:
    """A job on its last attempt (max_attempts 1), with an idempotency key."""
    run_all(client, [_enqueue(*_job("a", 4, max_attempts=1, key="ka")), _dequeue()])
    _pin_tokens(client, ["0000000000000001"])


def _due_and_ready(client: pyredislua.Client) -> None:
    """A delayed job due now (priority 5) beside a ready one (priority 0)."""
    run_all(client, [_enqueue(*_job("later", 5, 1)), _enqueue(*_job("now", 0))])
    _until(client, _server_ms(client) + 2)


def _only_due(client: pyredislua.Client) -> None:
    run_all(client, [_enqueue(*_job("later", 5, 1)), _enqueue(*_job("later2", 6, 1))])
    _until(client, _server_ms(client) + 2)


LEGACY = """
local m = {p = 0, a = 0, m = 3, b = 1000, e = 1}
redis.call('HSET', KEYS[1], '0000000000000001', cmsgpack.pack(m))
redis.call('HSET', KEYS[2], '0000000000000001', 'old')
redis.call('ZADD', KEYS[3], 0, '0000000000000001')
redis.call('HSET', KEYS[4], 'seq', 1, 'enqueued', 1, 'tokens', 41)
redis.call('HSET', KEYS[5], '0', 1)
"""


def _legacy(client: pyredislua.Client) -> None:
    """A job enqueued before lease tokens were per job (no `d` in its record; the old shared
    token counter at 41)."""
    k = dict(zip(NAMES, ALL))
    client.redis.eval(LEGACY, 5, k["jobs"], k["payloads"], k["ready"], k["stats"], k["prio"])


def _expired(client: pyredislua.Client) -> None:
    """Three expired leases: one goes back to ready (no backoff), one waits out its backoff,
    one is dead (its last attempt, with an idempotency key)."""
    run_all(client, [_enqueue(*_job("r", 1, backoff_ms=0)), _enqueue(*_job("d", 2)),
                     _enqueue(*_job("x", 3, max_attempts=1, key="kx"))])
    got = client.run(_dequeue(3, 1))
    _until(client, int(got[2][0][2]))


def _dead(client: pyredislua.Client) -> None:
    """Three dead jobs, the second with an idempotency key."""
    run_all(client, [_enqueue(*_job("a", 1, max_attempts=1)),
                     _enqueue(*_job("b", 2, max_attempts=1, key="kb")),
                     _enqueue(*_job("c", 3, max_attempts=1))])
    for job_id, token in [(j[0], j[1]) for j in client.run(_dequeue(3))[2]]:
        client.run(Call("queue.nack", ALL, (job_id, token, "boom", "dead")))


def _dead_key_taken(client: pyredislua.Client) -> None:
    """A dead job whose idempotency key another job holds now."""
    _dead(client)
    run_all(client, [_enqueue(*_job("again", 0, key="kb"))])


def _again(call: Call[Any], before: Any = None) -> Any:
    """Setup for a re-sent call: the same call (same request key) ran once already."""
    def setup(client: pyredislua.Client) -> None:
        if before is not None:
            before(client)
        client.run(call)
    return setup


BATCH = (*_job("a", 1), *_job("b", 2, MINUTE), *_job("c", 0, key="kc"), *_job("d", 0, key="kc"))
ACK_ONE = (*LEASED[0],)
ACK_TWO = (*LEASED[0], *LEASED[1])

SCENARIOS = [
    # enqueue
    Scenario("queue.enqueue", "ready, queue in use", REQ, _job("p", 1), _in_use),
    Scenario("queue.enqueue", "ready, fresh queue", REQ, _job("p", 1)),
    Scenario("queue.enqueue", "ready, no request record", ALL, _job("p", 1), _in_use),
    Scenario("queue.enqueue", "delayed", REQ, _job("p", 1, MINUTE), _in_use),
    Scenario("queue.enqueue", "new idempotency key", REQ, _job("p", 1, key="k1"), _in_use),
    Scenario("queue.enqueue", "idempotent duplicate", REQ, _job("p", 1, key="kb"), _in_use,
             writes=False),
    Scenario("queue.enqueue", "re-sent", REQ, _job("p", 1),
             _again(Call("queue.enqueue", REQ, _job("p", 1)), _in_use), writes=False),
    Scenario("queue.enqueue_batch", "ready, delayed, keyed, duplicate key", REQ, BATCH, _in_use),
    Scenario("queue.enqueue_batch", "only duplicates", REQ, (*_job("x", key="kb"),), _in_use,
             writes=False),
    Scenario("queue.enqueue_batch", "re-sent", REQ, BATCH,
             _again(Call("queue.enqueue_batch", REQ, BATCH), _in_use), writes=False),
    Scenario("queue.enqueue_jobs", "6 fields: ready, delayed, keyed, duplicate key", REQ,
             (6, *BATCH), _in_use),
    Scenario("queue.enqueue_jobs", "7 fields: six jobs with a max run time", REQ,
             (7, *[f for i in range(6) for f in (*_job(f"r{i}", i), 5000)]), _in_use),
    Scenario("queue.enqueue_jobs", "8 fields: with a trace context", REQ,
             (8, *_job("t", 1), 0, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
             _in_use),
    Scenario("queue.enqueue_jobs", "only duplicates", REQ, (6, *_job("x", key="kb")), _in_use,
             writes=False),
    Scenario("queue.enqueue_jobs", "re-sent", REQ, (6, *BATCH),
             _again(Call("queue.enqueue_jobs", REQ, (6, *BATCH)), _in_use), writes=False),
    # dequeue
    Scenario("queue.dequeue", "jobs ready, more left", REQ, (1, MINUTE), _in_use),
    Scenario("queue.dequeue", "jobs ready, all taken", REQ, (5, MINUTE),
             _setup(_enqueue(*_job("a", 1)), _enqueue(*_job("b", 0)))),
    Scenario("queue.dequeue", "promotes a due job, leases a ready one", REQ, (1, MINUTE),
             _due_and_ready),
    Scenario("queue.dequeue", "leases a due job", REQ, (1, MINUTE), _only_due),
    Scenario("queue.dequeue", "a job from before per-job tokens", REQ, (1, MINUTE), _legacy),
    Scenario("queue.dequeue", "no request record", ALL, (1, MINUTE), _in_use),
    Scenario("queue.dequeue", "empty, a delayed job later", REQ, (1, MINUTE),
             _setup(_enqueue(*_job("later", 0, MINUTE))), writes=False),
    Scenario("queue.dequeue", "empty, clears wake-ups left behind", REQ, (1, MINUTE),
             _setup(_enqueue(*_job("a")), _enqueue(*_job("b")), _dequeue(2))),
    Scenario("queue.dequeue", "re-sent", REQ, (1, MINUTE),
             _again(Call("queue.dequeue", REQ, (1, MINUTE)), _in_use), writes=False),
    # ack
    Scenario("queue.ack", "one leased job", REQ, ACK_ONE, _leased_setup),
    Scenario("queue.ack", "two jobs, two priorities, an idempotency key", REQ, ACK_TWO,
             _leased_setup),
    Scenario("queue.ack", "no request record", ALL, ACK_TWO, _leased_setup),
    Scenario("queue.ack", "re-sent", REQ, ACK_TWO,
             _again(Call("queue.ack", REQ, ACK_TWO), _leased_setup), writes=False),
    # nack
    Scenario("queue.nack", "retry with backoff", REQ, (*LEASED[0], "boom"), _leased_setup),
    Scenario("queue.nack", "retry at once", REQ, (*LEASED[0], "boom", "retry", 0),
             _leased_setup),
    Scenario("queue.nack", "release", REQ, (*LEASED[1], "", "release"), _leased_setup),
    Scenario("queue.nack", "dead-letter now, idempotency key", REQ, (*LEASED[1], "bad", "dead"),
             _leased_setup),
    Scenario("queue.nack", "attempts used up: dead", REQ, ("0000000000000001", "1", "boom"),
             _last_attempt),
    Scenario("queue.nack", "re-sent", REQ, (*LEASED[0], "boom"),
             _again(Call("queue.nack", REQ, (*LEASED[0], "boom")), _leased_setup),
             writes=False),
    # extend, reap
    Scenario("queue.extend", "leased", ALL, (*LEASED[0], 2 * MINUTE), _leased_setup),
    Scenario("queue.reap", "expired leases: ready, delayed, dead", ALL, (100,), _expired),
    Scenario("queue.reap", "nothing expired", ALL, (100,), _leased_setup, writes=False),
    # requeue, purge
    Scenario("queue.requeue", "by id, idempotency key free", REQ,
             (100, "0000000000000002", "0000000000000003"), _dead),
    Scenario("queue.requeue", "by id, idempotency key taken", REQ, (100, "0000000000000002"),
             _dead_key_taken),
    Scenario("queue.requeue", "the oldest", REQ, (2,), _dead),
    Scenario("queue.requeue", "re-sent", REQ, (2,), _again(Call("queue.requeue", REQ, (2,)),
                                                              _dead), writes=False),
    Scenario("queue.purge", "by id, one listed twice", REQ,
             (100, "0000000000000001", "0000000000000001", "0000000000000003"), _dead),
    Scenario("queue.purge", "the oldest", REQ, (2,), _dead),
    Scenario("queue.purge", "re-sent", REQ, (2,), _again(Call("queue.purge", REQ, (2,)), _dead),
             writes=False),
    # read-only
    Scenario("queue.stats", "jobs in every state", ALL, (), _leased_setup, writes=False),
    Scenario("queue.peek", "ready", ALL, ("ready", 10), _in_use, writes=False),
    Scenario("queue.peek", "active", ALL, ("active", 10), _leased_setup, writes=False),
    Scenario("queue.get", "a leased job", ALL, ("0000000000000002",), _leased_setup,
             writes=False),
    Scenario("queue.get_by_key", "a leased job's idempotency key", ALL, ("kb",), _leased_setup,
             writes=False),
    Scenario("queue.get_by_key", "a delayed job's idempotency key", ALL, ("kb",), _in_use,
             writes=False),
    Scenario("queue.dead", "dead jobs", ALL, (0, 10), _dead, writes=False),
    # recording metrics (the trailing metrics key), on a fresh hash and on one in use
    Scenario("queue.enqueue", "records metrics", MET, _job("p", 1), _in_use),
    Scenario("queue.enqueue", "records metrics, metrics in use", MET, _job("p", 1),
             _again(Call("queue.enqueue", (*ALL, f"{BASE}:req:edge-0", METRICS), _job("q")),
                    _in_use)),
    Scenario("queue.enqueue_batch", "records metrics", MET, BATCH, _in_use),
    Scenario("queue.enqueue_jobs", "records metrics", MET, (6, *BATCH), _in_use),
    Scenario("queue.dequeue", "records metrics", MET, (2, MINUTE), _in_use),
    Scenario("queue.dequeue", "records metrics, promotes a due job", MET, (1, MINUTE),
             _due_and_ready),
    Scenario("queue.ack", "records metrics", MET, ACK_TWO, _leased_setup),
    Scenario("queue.ack", "records metrics, one job", MET, ACK_ONE, _leased_setup),
    Scenario("queue.nack", "records metrics: retry", MET, (*LEASED[0], "boom"), _leased_setup),
    Scenario("queue.nack", "records metrics: dead", MET, (*LEASED[1], "bad", "dead"),
             _leased_setup),
    Scenario("queue.reap", "records metrics", (*ALL, METRICS), (100,), _expired),
    # (its own request record: the cluster conformance suite deletes only a case's keys)
    Scenario("queue.metrics", "recorded", (METRICS,), (),
             _again(Call("queue.enqueue", (*ALL, f"{BASE}:req:edge-m", METRICS), _job("p"))),
             writes=False),
]
