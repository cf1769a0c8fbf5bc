"""Every key the queues write has a lifecycle (issue 8 §3): a queue and a Streams queue are run
through every operation to the end of their work, and only the keys the README lists as durable
remain (each with its reason); request records are the only other keys, and they expire.

* Priority queue: ``prl:q:{name}:stats`` (the job sequence, which must never go back, and the
  running totals). Everything else empties and disappears with the work; the wake-up list goes
  at the first dequeue that finds nothing to do.
* Streams queue: ``prl:sq:{name}:stream`` (empty, it holds the consumer group and its position),
  ``:dead`` (dead letters, kept until you delete them) and ``:consumers`` (the consumers seen
  within ``forget_idle``: the others, holding nothing, are deleted from the group a few per
  consume). Consumers with random names, some killed holding entries, do not pile up.
"""

from __future__ import annotations

import pytest
import redis

import pyredislua
from pyredislua.queue import Queue, StreamQueue
from pyredislua.queue.ops import REQUEST_TTL
from tests.faultkit import wait_for

pytestmark = pytest.mark.queue


def _left(r: redis.Redis) -> set[str]:
    """The keys left, request records apart (each checked to expire within REQUEST_TTL)."""
    left = set()
    for key in r.scan_iter(count=1000):
        name = key.decode()
        if ":req:" in name:
            assert 0 < r.pttl(key) <= REQUEST_TTL * 1000, f"{name} does not expire"
        else:
            left.add(name)
    return left


def test_a_queue_run_to_its_end_leaves_only_its_counters(client: pyredislua.Client,
                                                         r: redis.Redis) -> None:
    q = Queue(client, "life", backoff=0)
    q.enqueue_many([q.job(f"job-{i}", priority=i % 3, key=f"k{i}" if i % 2 else None)
                    for i in range(30)])
    q.enqueue("poison", max_attempts=2, key="poison")
    q.enqueue("later", delay=0.05)
    q.enqueue("k1-again", key="k1")  # a duplicate: no job
    jobs = q.dequeue(10)
    q.ack_many(jobs[:5])
    q.nack(jobs[5], "retry")
    q.nack(jobs[6], "dead now", action="dead")
    q.nack(jobs[7], action="release")
    q.extend(jobs[8], 10)
    q.ack(jobs[8])
    q.ack(jobs[9])
    [expiring] = q.dequeue(1, lease=0.001)
    wait_for(lambda: q.stats().expired_leases == 1, what="a lease to run out")
    assert [s.id for s in q.reap()] == [expiring.id]
    assert q.requeue() == [jobs[6].id]
    while q.stats().unfinished:
        for job in q.dequeue(10, timeout=1):
            if job.text == "poison":
                q.nack(job, "poison")
            else:
                q.ack(job)
    assert q.dead()[0] == 1 and q.purge() == 1
    assert q.dequeue() == []  # what an idle consumer does next
    assert _left(r) == {q.keys.stats}
    s = q.stats()
    assert s.counters["seq"] == 32 and s.counters["acked"] == 31 and s.priorities == []


def test_a_stream_queue_run_to_its_end_leaves_only_its_stream_and_live_consumers(
        client: pyredislua.Client, r: redis.Redis) -> None:
    producer = StreamQueue(client, "life")
    producer.produce([*(f"e{i}" for i in range(40)), "poison"])
    # five consumers with random names; the first dies holding entries (never acks them)
    consumers = [StreamQueue(client, "life", claim_idle=0.05, max_deliveries=3,
                             forget_idle=0.2) for _ in range(5)]
    assert len(consumers[0].consume(4)) == 4
    workers = consumers[1:]

    def work() -> bool:
        for c in workers:
            for e in c.consume(3):
                if e.text == "poison":
                    c.nack(e, "poison", action="dead")
                else:
                    c.ack([e])
        return producer.stats().length == 0

    wait_for(work, what="the work to be done (the dead consumer's entries claimed)")
    last = workers[-1]
    members = r.xinfo_consumers(last.keys.stream, last.group)
    # up to five (an idle one may already be forgotten on a slow machine), the last among them
    assert 1 <= len(members) <= 5 and last.consumer in [m["name"].decode() for m in members]

    def forgotten() -> bool:
        assert last.consume() == []  # the last consumer stays; the others are forgotten
        return [m["name"].decode() for m in r.xinfo_consumers(last.keys.stream,
                                                               last.group)] == [last.consumer]

    wait_for(forgotten, what="idle consumers with nothing pending to be deleted")
    assert r.zrange(last.keys.consumers, 0, -1) == [
        f"{len(last.group)}:{last.group}{last.consumer}".encode()]
    assert _left(r) == {last.keys.stream, last.keys.dead, last.keys.consumers}
    s = last.stats()
    assert (s.length, s.pending, s.dead) == (0, 0, 1)
