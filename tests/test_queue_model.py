"""The priority queue against a model: several producers and consumers, each on its own
connection (half of them in function mode, half in script mode), with enqueue, batch enqueue,
dequeue, ack, nack, extend, lease expiry, consumer crashes, reap, requeue and purge.

Checked after every step: every job is in exactly one state and the server's sets equal the
model's; nothing is lost; each dequeue returns exactly the model's minimum (priority, enqueue
order) among ready and due jobs; stale tokens fail with STALE and change nothing; attempts never
exceed the maximum; delayed jobs never run early; idempotency keys hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import pyredislua
from pyredislua.queue import JobSpec, Queue
from tests.conftest import snapshot

pytestmark = pytest.mark.queue

FAR = 3600.0  # a delay or backoff that never runs out during a test
NEAR = 0.005  # a delay that runs out at once: the test waits for it on the server clock


@dataclass
class MJob:
    id: str
    priority: int
    payload: bytes
    max_attempts: int
    backoff: float
    key: str | None
    state: str = "ready"  # ready | delayed | active | dead
    ready_at: int = 0  # server ms, for delayed
    attempts: int = 0
    token: str | None = None
    expired: bool = False
    holder: int | None = None


def server_ms(r: redis.Redis) -> int:
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


class QueueMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.admin = redis.Redis.from_url(self.url)
        self.admin.flushall()
        self.conns: list[redis.Redis] = []
        self.producers: list[Queue] = []
        self.consumers: list[Queue] = []
        for i in range(5):
            conn = redis.Redis.from_url(self.url)
            self.conns.append(conn)
            client = pyredislua.Client(conn, mode="function" if i % 2 else "script")
            (self.producers if i < 2 else self.consumers).append(Queue(client, "model"))
        self.jobs: dict[str, MJob] = {}
        self.keys: dict[str, str] = {}  # idempotency key -> live job id
        self.stale: list[tuple[str, str]] = []  # (id, token) pairs that are no longer live
        self.finished: set[str] = set()
        self.last_id = ""

    def teardown(self) -> None:
        for c in self.conns:
            c.close()
        self.admin.close()

    # -- helpers ------------------------------------------------------------------------------

    def _added(self, spec: JobSpec, job_id: str, created: bool) -> None:
        if spec.key is not None and spec.key in self.keys:
            assert not created and job_id == self.keys[spec.key], "idempotency key did not hold"
            return
        assert created
        assert job_id > self.last_id, "job ids must grow in enqueue order"
        self.last_id = job_id
        job = MJob(job_id, spec.priority, spec.payload if isinstance(spec.payload, bytes)
                   else spec.payload.encode(), spec.max_attempts, spec.backoff, spec.key)
        if spec.delay > 0:
            info = self.producers[0].get(job_id)
            assert info is not None and info.state == "delayed"
            job.state, job.ready_at = "delayed", info.score
            if spec.delay == NEAR:
                # Hypothesis needs each step to be deterministic: wait (on the server clock)
                # until the job is due, so the next dequeue must promote it.
                while server_ms(self.admin) < info.score:
                    pass
        self.jobs[job_id] = job
        if spec.key is not None:
            self.keys[spec.key] = job_id

    def _finish(self, job: MJob) -> None:
        if job.key is not None and self.keys.get(job.key) == job.id:
            del self.keys[job.key]

    def _retire_token(self, job: MJob) -> None:
        if job.token is not None:
            self.stale.append((job.id, job.token))
        job.token, job.expired, job.holder = None, False, None

    def _live(self) -> list[MJob]:
        return [j for j in self.jobs.values() if j.state == "active" and not j.expired
                and j.holder is not None]

    def _settled(self, job: MJob, outcome: str, at_ms: int) -> None:
        self._retire_token(job)
        if outcome == "dead":
            job.state = "dead"
            self._finish(job)
        elif outcome == "delayed":
            job.state, job.ready_at = "delayed", at_ms
        else:
            assert outcome == "ready"
            job.state = "ready"

    # -- rules --------------------------------------------------------------------------------

    specs = st.builds(
        JobSpec,
        payload=st.binary(max_size=8),
        priority=st.integers(-2, 2),
        delay=st.sampled_from([0.0, 0.0, 0.0, NEAR, FAR]),
        max_attempts=st.integers(1, 3),
        backoff=st.sampled_from([0.0, 0.0, FAR]),
        key=st.none() | st.sampled_from(["a", "b", "c"]),
    )

    @initialize()
    def start(self) -> None:
        self.admin.flushall()

    @rule(p=st.integers(0, 1), spec=specs)
    def enqueue(self, p: int, spec: JobSpec) -> None:
        q = self.producers[p]
        got = q.enqueue(spec.payload, priority=spec.priority, delay=spec.delay,
                        max_attempts=spec.max_attempts, backoff=spec.backoff, key=spec.key)
        self._added(spec, got.id, got.created)

    @rule(p=st.integers(0, 1), specs=st.lists(specs, min_size=1, max_size=5))
    def enqueue_many(self, p: int, specs: list[JobSpec]) -> None:
        for spec, got in zip(specs, self.producers[p].enqueue_many(specs)):
            self._added(spec, got.id, got.created)

    @rule(c=st.integers(0, 2), count=st.integers(1, 3), short=st.booleans())
    def dequeue(self, c: int, count: int, short: bool) -> None:
        q = self.consumers[c]
        jobs = q.dequeue(count, lease=0.001 if short else 60.0)
        now = jobs[0].leased_at_ms if jobs else server_ms(self.admin)
        candidates = sorted(
            (j for j in self.jobs.values()
             if j.state == "ready" or (j.state == "delayed" and j.ready_at <= now)),
            key=lambda j: (j.priority, j.id))
        if not jobs:
            # the reply carries no clock: a job due between its now and ours is excused
            assert not [j for j in candidates if j.state == "ready"], "a ready job was not served"
            return
        expected = [j.id for j in candidates[:count]]
        assert [j.id for j in jobs] == expected, "dequeue did not return the model's minimum"
        for got in jobs:
            job = self.jobs[got.id]
            if job.state == "delayed":
                assert job.ready_at <= got.leased_at_ms, "a delayed job ran early"
            job.attempts += 1
            assert got.attempts == job.attempts <= job.max_attempts
            assert got.payload == job.payload and got.priority == job.priority
            job.state, job.token, job.holder, job.expired = "active", got.token, c, False
        if short:
            deadline = max(j.deadline_ms for j in jobs)
            while server_ms(self.admin) <= deadline:  # wait on the server clock, not a sleep
                pass
            for got in jobs:
                self.jobs[got.id].expired = True

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._live()))
        assert job.holder is not None and job.token is not None
        self.consumers[job.holder].ack((job.id, job.token))
        self._retire_token(job)
        del self.jobs[job.id]
        self._finish(job)
        self.finished.add(job.id)

    @precondition(lambda self: self._live())
    @rule(data=st.data(), action=st.sampled_from(["retry", "dead", "release"]),
          delay=st.sampled_from([None, 0.0, FAR]))
    def nack(self, data: st.DataObject, action: str, delay: float | None) -> None:
        job = data.draw(st.sampled_from(self._live()))
        assert job.holder is not None and job.token is not None
        got = self.consumers[job.holder].nack((job.id, job.token), "boom", action=action,
                                              delay=delay)  # type: ignore[arg-type]
        if action == "release":
            assert got.outcome == "ready"
            job.attempts -= 1
        elif action == "dead" or job.attempts >= job.max_attempts:
            assert got.outcome == "dead"
        else:
            wait = job.backoff if delay is None else delay
            assert got.outcome == ("ready" if wait == 0 else "delayed")
        assert got.attempts == job.attempts
        self._settled(job, got.outcome, got.at_ms)

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def extend(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._live()))
        assert job.holder is not None and job.token is not None
        self.consumers[job.holder].extend((job.id, job.token), 60.0)

    @precondition(lambda self: self.stale or any(j.expired for j in self.jobs.values()))
    @rule(data=st.data(), op=st.sampled_from(["ack", "nack", "extend"]))
    def stale_token_changes_nothing(self, data: st.DataObject, op: str) -> None:
        refs = list(self.stale) + [(j.id, j.token) for j in self.jobs.values()
                                   if j.expired and j.token is not None]
        ref = data.draw(st.sampled_from(refs))
        q = self.consumers[0]
        before = snapshot(self.admin)
        with pytest.raises(pyredislua.StaleTokenError):
            if op == "ack":
                q.ack(ref)
            elif op == "nack":
                q.nack(ref, "late")
            else:
                q.extend(ref, 60.0)
        assert snapshot(self.admin) == before

    @precondition(lambda self: any(j.holder is not None for j in self.jobs.values()))
    @rule(c=st.integers(0, 2))
    def crash(self, c: int) -> None:
        """Consumer c vanishes: its leases are never acked; long ones stay active (until they
        would expire), short ones are recovered by reap."""
        for job in self.jobs.values():
            if job.holder == c:
                job.holder = None
        old = self.conns[2 + c]
        conn = redis.Redis.from_url(self.url)
        self.conns[2 + c] = conn
        self.consumers[c] = Queue(pyredislua.Client(conn, mode="function" if c % 2 else "script"),
                                  "model")
        old.close()

    @rule()
    def reap(self) -> None:
        got = self.consumers[0].reap(limit=1000)
        expired = {j.id for j in self.jobs.values() if j.state == "active" and j.expired}
        assert {s.id for s in got} == expired, "reap must return exactly the expired leases"
        for s in got:
            job = self.jobs[s.id]
            assert s.attempts == job.attempts
            if job.attempts >= job.max_attempts:
                assert s.outcome == "dead"
            else:
                assert s.outcome == ("ready" if job.backoff == 0 else "delayed")
            self._settled(job, s.outcome, s.at_ms)

    @precondition(lambda self: any(j.state == "dead" for j in self.jobs.values()))
    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        dead = sorted(j.id for j in self.jobs.values() if j.state == "dead")
        ids = data.draw(st.lists(st.sampled_from(dead), min_size=1, max_size=3, unique=True))
        pick = [self.jobs[i] for i in ids]
        got = self.consumers[1].requeue(ids)
        assert sorted(got) == sorted(j.id for j in pick)
        for job in pick:
            job.state, job.attempts = "ready", 0
            if job.key is not None:
                if job.key in self.keys:
                    job.key = None  # another job holds the key now
                else:
                    self.keys[job.key] = job.id

    @precondition(lambda self: any(j.state == "dead" for j in self.jobs.values()))
    @rule()
    def purge(self) -> None:
        dead = sorted((j for j in self.jobs.values() if j.state == "dead"), key=lambda j: j.id)
        assert self.consumers[2].purge(limit=1000) == len(dead)
        for job in dead:
            del self.jobs[job.id]

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def server_matches_model(self) -> None:
        q = self.producers[1]
        seen: dict[str, str] = {}
        for state in ("ready", "delayed", "active", "dead"):
            for info in q.peek(state, 1000):  # type: ignore[arg-type]
                assert info.id not in seen, f"job {info.id} is in two states"
                seen[info.id] = state
        model = {}
        for job in self.jobs.values():
            # a due delayed job may still sit in the delayed set until a dequeue promotes it
            model[job.id] = "waiting" if job.state in ("ready", "delayed") else job.state
        server = {i: ("waiting" if s in ("ready", "delayed") else s) for i, s in seen.items()}
        assert server == model, "a job was lost, duplicated or is in the wrong state"
        assert not (set(seen) & self.finished), "an acked job came back"
        stats = q.stats()
        assert stats.dead == sum(j.state == "dead" for j in self.jobs.values())
        unfinished = [j for j in self.jobs.values() if j.state != "dead"]
        assert sum(p.unfinished for p in stats.priorities or []) == len(unfinished)
        assert {k: v for k, v in self.keys.items()} == {
            k.decode(): v.decode() for k, v in self.admin.hgetall(q.keys.idem).items()}


@pytest.mark.queue
def test_queue_state_machine(redis_url: str) -> None:
    QueueMachine.url = redis_url
    QueueMachine.TestCase().runTest()
