"""The reliable priority queue at work: priorities, a crashed consumer recovered, retries into
the dead-letter set, and a worker draining the rest."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pyredislua
from pyredislua.queue import Job, Queue
from pyredislua.queue.worker import Worker

ORDER = 20


def demo(client: pyredislua.Client, say: Callable[[str], None]) -> None:
    q = Queue(client, "demo-emails")
    q.enqueue_many([q.job("newsletter", priority=5), q.job("welcome email", priority=2),
                    q.job("invoice", priority=1), q.job("flaky webhook", priority=3,
                                                        max_attempts=2, backoff=0)])
    again = q.enqueue("password reset", key="reset:alice")
    dup = q.enqueue("password reset (double click)", key="reset:alice")
    say(f"enqueued 5 jobs; a double-clicked enqueue with the same idempotency key returned the "
        f"first job's id ({dup.id}, created={dup.created}) and added nothing")
    assert again.id == dup.id
    jobs = q.dequeue(3, lease=0.05)
    say("dequeued by priority: " + ", ".join(f"{j.text} (p{j.priority})" for j in jobs))
    say("...and that consumer crashes holding all three leases")
    done = threading.Event()
    done.wait(0.1)  # let the 50 ms leases run out
    back = q.reap()
    say(f"a reap returned {len(back)} expired leases to the queue: nothing lost")
    handled: list[str] = []

    def handle(job: Job) -> None:
        if job.text == "flaky webhook":
            raise RuntimeError("HTTP 503")
        handled.append(job.text)

    worker = Worker(q, handle, concurrency=2)
    t = threading.Thread(target=worker.run)
    t.start()
    while q.stats().unfinished:
        done.wait(0.01)
    worker.stop()
    t.join()
    say(f"a worker ran {len(handled)} jobs: {', '.join(handled)}")
    _, dead = q.dead()
    for row in dead:
        say(f"dead letter: {row.payload.decode()!r} after {row.attempts} attempts ({row.reason})")
    say(f"requeued from the dead-letter set: {', '.join(q.requeue())} (ready again; "
        f"{q.stats().ready} waiting)")
