"""Server cost per operation: microseconds inside Redis and Redis commands per call, every area,
beside the peers doing the same job (redis-py Lock, python-redis-lock, limits, BullMQ).

Redis runs every script on its one main thread, so the time an operation spends inside Redis
bounds what one Redis serves for all clients together. Each row is one operation on one named
path in steady state: N independent instances are put on the path first (unmeasured), then
``CONFIG RESETSTAT``, then the measured calls, pipelined, then ``INFO commandstats``. The time
is the commandstats time of the call itself (``cmdstat_fcall``/``_ro``, or ``cmdstat_evalsha``
in script mode), which includes the commands it runs inside, so nothing is counted twice; the
commands column counts those inner commands (``redis.call``) per operation.

Peers are measured the same way: each one's API runs once per instance against Redis while its
commands are recorded, then the state is rebuilt by replaying the recorded setup and the
recorded operation is replayed pipelined, so peers and pyredislua are both measured back to
back on a warm server. A peer's time is the sum over the commands it sends (a script's inner
commands are inside its script's time); its commands column counts every command it makes Redis
run, its own and those inside its scripts, scripts themselves not counted.

Each round measures in chunks of 100 operations, each between its own reset and read, and keeps
the median chunk; every figure is the median over ``--rounds`` rounds (the spread is the lowest
and highest round), the cases interleaved round by round, so load on a shared machine hits every
row alike.
``--against DIR`` renders another checkout's ``lua/`` into a second library name and measures it
in the same rounds, alternating with this tree's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from ..client import Client
from ..engine.protocol import Call, Command
from ..engine.render import Library, render_library
from ._common import server_url

# commands the harness itself sends between a reset and the read
_ADMIN = ("cmdstat_config|resetstat", "cmdstat_config", "cmdstat_info", "cmdstat_ping")
_SCRIPT_VERBS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
_CHUNK = 100  # calls per pipelined round trip while measuring

# Targets of issue 10 (µs per operation on the server), by row label.
TARGETS: dict[str, float] = {
    "lock.acquire + lock.release": 14.0,
    "queue.enqueue": 18.0,
    "queue.dequeue": 20.0,
    "queue.ack": 14.0,
    **{f"ratelimit.{a}": 10.0 for a in ("gcra", "token_bucket", "sliding_window",
                                        "fixed_window")},
    **{f"ratelimit.{a}_peek": 10.0 for a in ("gcra", "token_bucket", "sliding_window",
                                             "fixed_window")},
    "ratelimit.sliding_log": 14.0,
    "ratelimit.sliding_log_peek": 14.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=300,
                        help="instances (= measured operations) per case and round (default 300)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds; each figure is the median (default 5)")
    parser.add_argument("--mode", choices=("function", "script"), default="function",
                        help="FCALL (default) or EVALSHA")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="another checkout (its lua/) measured side by side")
    parser.add_argument("--only", metavar="PREFIX", action="append",
                        help="only rows whose operation starts with PREFIX (repeatable), "
                        "e.g. ratelimit. or lock.")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers")
    parser.add_argument("--no-bullmq", action="store_true",
                        help="skip BullMQ (run with Node.js when node and npm are on PATH)")
    parser.add_argument("--node-dir", type=Path, default=None,
                        help="where BullMQ is installed on first use (default: "
                        "$XDG_CACHE_HOME/pyredislua/bench-node)")


# -- the cases ---------------------------------------------------------------------------------

Measured = Sequence["Call[Any] | Command"]


@dataclass(frozen=True)
class Case:
    """One operation on one path. ``setup(client, name)`` puts instance ``name`` on the path
    (unmeasured; any API) and returns what ``measure`` needs; ``measure(client, name, ctx)``
    returns the measured calls of that instance (call specs, or the commands a plan yields
    first). ``label`` names composite rows (several calls per instance)."""

    op: str
    path: str
    measure: Callable[[Client, str, Any], Measured]
    setup: Callable[[Client, str], Any] = lambda client, name: None
    label: str | None = None

    @property
    def row(self) -> str:
        return self.label or self.op

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.row.split("+"))


def _lock_cases() -> list[Case]:
    from ..lock import LockKeys, acquire_call, extend_call, inspect_call, release_call

    def held(c: Client, n: str) -> Any:
        return c.run(acquire_call(LockKeys(n), "holder", 30_000))

    def used(c: Client, n: str) -> Any:  # the fence counter exists, as for any lock used before
        c.run_many([acquire_call(LockKeys(n), "before", 30_000), release_call(LockKeys(n),
                                                                              "before")])

    def waited(c: Client, n: str) -> Any:
        held(c, n)
        return c.run(acquire_call(LockKeys(n), "waiter", 30_000, 2_250))

    return [
        Case("lock.acquire", "free (used before)", setup=used,
             measure=lambda c, n, _: [acquire_call(LockKeys(n), "me", 30_000)]),
        Case("lock.release", "held, nobody waiting", setup=held,
             measure=lambda c, n, _: [release_call(LockKeys(n), "holder")]),
        Case("lock.acquire", "uncontended cycle: acquire a free lock, release it", setup=used,
             label="lock.acquire + lock.release",
             measure=lambda c, n, _: [acquire_call(LockKeys(n), "me", 30_000),
                                      release_call(LockKeys(n), "me")]),
        Case("lock.acquire", "busy: registers as a waiter", setup=held,
             measure=lambda c, n, _: [acquire_call(LockKeys(n), "me", 30_000, 2_250)]),
        Case("lock.release", "grants to a registered waiter", setup=waited,
             measure=lambda c, n, _: [release_call(LockKeys(n), "holder")]),
        Case("lock.release", "a turn (turn_ms): release carries, acquire takes the carry",
             setup=waited, label="lock.release + lock.acquire",
             measure=lambda c, n, _: [
                 release_call(LockKeys(n), "holder", 30_000, 100, "", 0, 10_000),
                 acquire_call(LockKeys(n), "holder", 30_000)]),
        Case("lock.extend", "held", setup=held,
             measure=lambda c, n, _: [extend_call(LockKeys(n), "holder", 30_000)]),
        Case("lock.inspect", "held", setup=held,
             measure=lambda c, n, _: [inspect_call(LockKeys(n))]),
    ]



def _enqueue_batch_of_ten(keys: Any, payload: bytes | str) -> Call[Any]:
    """``queue.enqueue_batch``, the form that tells the fields per job by their count."""
    from ..queue import ops as q

    one: tuple[str | int | bytes, ...] = q.JobSpec(payload).wire()
    return Call("queue.enqueue_batch", keys.with_request(False), one * 10, lambda r: r)

def _queue_cases() -> list[Case]:
    from ..queue import ops as q

    payload = b"x" * 100

    def k(n: str) -> q.QueueKeys:
        return q.QueueKeys(n)

    # The rows without "request record" make the ten-key calls of the FCALL contract (no
    # request record), so --against an older tree compares like with like; the Python API
    # adds a request record to each writing call, measured in the rows that say so.
    def enqueued(c: Client, n: str) -> Any:
        return c.run(q.enqueue_call(k(n), q.JobSpec(payload), False))

    def leased(c: Client, n: str) -> Any:
        enqueued(c, n)
        enqueued(c, n)
        return c.run(q.dequeue_call(k(n), 1, 30_000, False)).jobs[0]

    def dead(c: Client, n: str) -> Any:
        job = leased(c, n)
        c.run(q.nack_call(k(n), job.id, job.token, "boom", "dead", request_id=False))
        return job

    return [
        Case("queue.enqueue", "no idempotency key, queue in use", setup=enqueued,
             measure=lambda c, n, _: [q.enqueue_call(k(n), q.JobSpec(payload), False)]),
        Case("queue.enqueue", "the same, with a request record", setup=enqueued,
             measure=lambda c, n, _: [q.enqueue_call(k(n), q.JobSpec(payload))]),
        Case("queue.enqueue_jobs", "10 jobs", setup=enqueued,
             measure=lambda c, n, _: q.enqueue_batch_calls(k(n), [q.JobSpec(payload)] * 10,
                                                           False)),
        Case("queue.enqueue_batch", "10 jobs (fields per job told by their count)",
             setup=enqueued,
             measure=lambda c, n, _: [_enqueue_batch_of_ten(k(n), payload)]),
        Case("queue.dequeue", "count 1, jobs ready", setup=lambda c, n: (enqueued(c, n),
                                                                         enqueued(c, n)),
             measure=lambda c, n, _: [q.dequeue_call(k(n), 1, 30_000, False)]),
        Case("queue.dequeue", "the same, with a request record",
             setup=lambda c, n: (enqueued(c, n), enqueued(c, n)),
             measure=lambda c, n, _: [q.dequeue_call(k(n), 1, 30_000)]),
        Case("queue.ack", "one leased job", setup=leased,
             measure=lambda c, n, job: q.ack_calls(k(n), [(job.id, job.token)], False)),
        Case("queue.ack", "the same, with a request record", setup=leased,
             measure=lambda c, n, job: q.ack_calls(k(n), [(job.id, job.token)])),
        Case("queue.nack", "retry with backoff", setup=leased,
             measure=lambda c, n, job: [q.nack_call(k(n), job.id, job.token, "boom",
                                                    request_id=False)]),
        Case("queue.extend", "leased", setup=leased,
             measure=lambda c, n, job: [q.extend_call(k(n), job.id, job.token, 30_000)]),
        Case("queue.reap", "nothing expired", setup=leased,
             measure=lambda c, n, _: [q.reap_call(k(n))]),
        Case("queue.stats", "jobs ready and leased", setup=leased,
             measure=lambda c, n, _: [q.stats_call(k(n))]),
        Case("queue.peek", "ready, 10", setup=leased,
             measure=lambda c, n, _: [q.peek_call(k(n), "ready", 10)]),
        Case("queue.get", "a leased job", setup=leased,
             measure=lambda c, n, job: [q.get_call(k(n), job.id)]),
        Case("queue.get_by_key", "a ready job's idempotency key",
             setup=lambda c, n: c.run(q.enqueue_call(k(n), q.JobSpec(payload, key="k1"), False)),
             measure=lambda c, n, _: [q.get_by_key_call(k(n), "k1")]),
        Case("queue.dead", "one dead job", setup=dead,
             measure=lambda c, n, _: [q.dead_call(k(n), 0, 10)]),
        Case("queue.requeue", "one dead job by id", setup=dead,
             measure=lambda c, n, job: [q.requeue_call(k(n), [job.id], request_id=False)]),
        Case("queue.purge", "one dead job by id", setup=dead,
             measure=lambda c, n, job: [q.purge_call(k(n), [job.id], request_id=False)]),
    ]


def _stream_cases() -> list[Case]:
    from ..stream import ops as st

    def k(n: str) -> st.StreamKeys:
        return st.StreamKeys(n)

    def consume(n: str) -> Call[list[st.Entry]]:
        return st.consume_call(k(n), "g", "c", 1, 30000, 3, 600000)

    # As for the queue: the rows without "request record" make the calls of the 1.0 contract
    # (two keys; consume: three), comparable --against an older tree.
    def bare(call: Call[Any], keep: int) -> Call[Any]:
        return Call(call.op, call.keys[:keep], call.args[:5] if call.op == "stream.consume"
                    else call.args, call.parse)

    def produced(c: Client, n: str) -> Any:
        c.run_many([bare(call, 2) for call in st.produce_calls(k(n), "g", [b"x" * 100] * 2)])

    def consumed(c: Client, n: str) -> Any:
        produced(c, n)
        return c.run(bare(consume(n), 3))

    def dead(c: Client, n: str) -> Any:
        [entry] = consumed(c, n)
        c.run(bare(st.nack_call(k(n), "g", entry, "boom", "dead"), 2))

    return [
        Case("stream.produce", "one entry, group exists", setup=produced,
             measure=lambda c, n, _: [bare(x, 2) for x in st.produce_calls(k(n), "g",
                                                                           [b"x" * 100])]),
        Case("stream.produce", "the same, with a request record", setup=produced,
             measure=lambda c, n, _: st.produce_calls(k(n), "g", [b"x" * 100])),
        Case("stream.consume", "count 1, new entries", setup=produced,
             measure=lambda c, n, _: [bare(consume(n), 3)]),
        Case("stream.consume", "the same, with the consumer registry and a request record",
             setup=produced, measure=lambda c, n, _: [consume(n)]),
        Case("stream.ack", "one delivered entry", setup=consumed,
             measure=lambda c, n, es: [bare(x, 2) for x in st.ack_calls(k(n), "g", es)]),
        Case("stream.ack", "the same, with a request record", setup=consumed,
             measure=lambda c, n, es: st.ack_calls(k(n), "g", es)),
        Case("stream.nack", "retry", setup=consumed,
             measure=lambda c, n, es: [bare(st.nack_call(k(n), "g", es[0], "boom", "retry"), 2)]),
        Case("stream.extend", "one delivered entry", setup=consumed,
             measure=lambda c, n, es: [st.extend_call(k(n), "g", es[0])]),
        Case("stream.stats", "entries pending", setup=consumed,
             measure=lambda c, n, _: [st.stats_call(k(n), "g")]),
        Case("stream.dead", "one dead entry", setup=dead,
             measure=lambda c, n, _: [st.dead_call(k(n), 10)]),
    ]


def _writebehind_cases() -> list[Case]:
    from ..writebehind import ops as w

    def k(n: str) -> w.StoreKeys:
        return w.StoreKeys(n)

    def one(i: int) -> list[tuple[str, str, bytes]]:
        return [("set", f"r{i}", b"x" * 100)]

    def written(c: Client, n: str) -> Any:
        c.run_many([w.write_call(k(n), one(i)) for i in range(10)])

    def claimed(c: Client, n: str) -> Any:
        written(c, n)
        return c.run(w.claim_call(k(n), 10, 30_000))

    def dead(c: Client, n: str) -> Any:
        cl = claimed(c, n)
        c.run(w.fail_call(k(n), cl.token, [(r, "boom") for r in cl.records], max_attempts=1,
                          backoff_ms=0, max_backoff_ms=0))
        return cl

    return [
        Case("writebehind.write", "one record, store in use", setup=written,
             measure=lambda c, n, _: [w.write_call(k(n), one(99))]),
        Case("writebehind.claim", "10 dirty records", setup=written,
             measure=lambda c, n, _: [w.claim_call(k(n), 10, 30_000)]),
        Case("writebehind.ack", "a claim of 10", setup=claimed,
             measure=lambda c, n, cl: [w.ack_call(k(n), cl.token, cl.records)]),
        Case("writebehind.fail", "a claim of 10, retry", setup=claimed,
             measure=lambda c, n, cl: [w.fail_call(
                 k(n), cl.token, [(r, "boom") for r in cl.records], max_attempts=3,
                 backoff_ms=1000, max_backoff_ms=60_000)]),
        Case("writebehind.release", "a claim of 10", setup=claimed,
             measure=lambda c, n, cl: [w.release_call(k(n), cl.token,
                                                      [r.key for r in cl.records])]),
        Case("writebehind.reap", "nothing expired", setup=claimed,
             measure=lambda c, n, _: [w.reap_call(k(n))]),
        Case("writebehind.requeue", "10 dead records by key", setup=dead,
             measure=lambda c, n, cl: [w.requeue_call(k(n), [r.key for r in cl.records])]),
        Case("writebehind.dead", "10 dead records", setup=dead,
             measure=lambda c, n, _: [w.dead_call(k(n), 0, 10)]),
        Case("writebehind.stats", "records dirty", setup=written,
             measure=lambda c, n, _: [w.stats_call(k(n))]),
        Case("writebehind.get", "one record", setup=written,
             measure=lambda c, n, _: [w.get_call(k(n), ["r1"])]),
    ]


def _cache_cases() -> list[Case]:
    from ..cache import ops as ca

    def cached(c: Client, n: str) -> Any:
        c.run(ca.set_call(ca.CacheKeys(n), "k", b"x" * 100, 60_000, tags=["t"]))

    return [
        Case("cache.get", "hit, one tag", setup=cached,
             measure=lambda c, n, _: [ca.get_call(ca.CacheKeys(n), "k", ["t"])]),
        Case("cache.set", "one tag", setup=cached,
             measure=lambda c, n, _: [ca.set_call(ca.CacheKeys(n), "k", b"y" * 100, 60_000,
                                                  tags=["t"])]),
        Case("cache.delete", "an entry", setup=cached,
             measure=lambda c, n, _: [ca.delete_call(ca.CacheKeys(n), "k")]),
        Case("cache.invalidate_tag", "one tagged entry", setup=cached,
             measure=lambda c, n, _: [ca.invalidate_tag_call(
                 ca.CacheKeys(n), "t", [ca.CacheKeys(n).entry("k")], bump=True)]),
    ]


ALGORITHMS = ("gcra", "token_bucket", "sliding_log", "sliding_window", "fixed_window")
HOUR = 3_600_000


def _ratelimit_cases() -> list[Case]:
    from ..ratelimit import ops as rl

    def limit(algo: str, n: str, i: int = 0, big: bool = True) -> Any:
        # 1,000 an hour: one unit keeps a GCRA or token bucket key for 3.6 s (with a million an
        # hour it expired 3.6 ms after the setup's hit, and "state exists" measured a fresh key)
        size = 1_000 if big else 5
        return rl.Limit(algo, rl.Rate(size, HOUR * (i + 1)), f"{{{n}}}:{algo}:{i}")

    def hit(algo: str, n: str, *, peek: bool = False, big: bool = True) -> Call[Any]:
        return rl.decide_call([limit(algo, n, big=big)], 1, peek=peek)

    def hits(algo: str, times: int, big: bool = True) -> Callable[[Client, str], Any]:
        return lambda c, n: c.run_many([hit(algo, n, big=big)] * times)

    def case(op: str, path: str, algo: str, setup: Any = None, *, big: bool = True,
             peek: bool = False) -> Case:
        def measure(c: Client, n: str, _: Any) -> Measured:
            return [hit(algo, n, peek=peek, big=big)]
        return Case(op, path, measure, setup or (lambda c, n: None))

    out = []
    for a in ALGORITHMS:
        out += [
            case(f"ratelimit.{a}", "admitted, state exists", a, hits(a, 1)),
            case(f"ratelimit.{a}", "admitted, fresh key", a),
            case(f"ratelimit.{a}", "denied", a, hits(a, 5, big=False), big=False),
            case(f"ratelimit.{a}_peek", "state exists", a, hits(a, 3), peek=True),
        ]
    two = ("gcra", "fixed_window")

    def mixed(n: str, peek: bool = False) -> Call[Any]:
        return rl.decide_call([limit(two[0], n), limit(two[1], n, 1)], 1, peek=peek)

    def mixed_state(c: Client, n: str) -> Any:
        c.run(mixed(n))

    def batch(n: str) -> Call[Any]:
        return rl.batch_call([(limit(a, n), 1) for a in ALGORITHMS])

    def slots(n: str) -> str:
        return f"{{{n}}}:slots"

    def held(c: Client, n: str) -> Any:
        c.run(rl.acquire_call(slots(n), "holder", 10, 60_000))

    out += [
        Case("ratelimit.multi", "gcra + fixed_window, admitted, state exists",
             setup=mixed_state, measure=lambda c, n, _: [mixed(n)]),
        Case("ratelimit.multi_peek", "gcra + fixed_window, state exists", setup=mixed_state,
             measure=lambda c, n, _: [mixed(n, True)]),
        Case("ratelimit.batch", "5 keys, one per algorithm, admitted",
             setup=lambda c, n: c.run(batch(n)), measure=lambda c, n, _: [batch(n)]),
        Case("ratelimit.acquire", "a slot is free (one held)", setup=held,
             measure=lambda c, n, _: [rl.acquire_call(slots(n), "me", 10, 60_000)]),
        Case("ratelimit.release", "held", setup=held,
             measure=lambda c, n, _: [rl.release_call(slots(n), "holder")]),
        Case("ratelimit.renew", "held", setup=held,
             measure=lambda c, n, _: [rl.renew_call(slots(n), "holder", 60_000)]),
        Case("ratelimit.reset", "one gcra key", setup=hits("gcra", 1),
             measure=lambda c, n, _: [rl.reset_call([limit("gcra", n).key])]),
        Case("ratelimit.inspect", "a gcra key", setup=hits("gcra", 1),
             measure=lambda c, n, _: [rl.inspect_call(limit("gcra", n).key)]),
    ]
    return out


def _optimistic_cases() -> list[Case]:
    from ..optimistic import ops as op

    def key(n: str, i: int = 0) -> str:
        return op.item_key("bench", f"{{{n}}}:{i}")

    def stored(c: Client, n: str) -> Any:
        made = c.run(op.set_many_call([(key(n, 0), 0, b"x" * 100), (key(n, 1), 0, b"y" * 100)]))
        return made.versions

    return [
        Case("optimistic.get", "a value of 100 bytes", setup=stored,
             measure=lambda c, n, _: [op.get_call(key(n))]),
        Case("optimistic.get_many", "two values", setup=stored,
             measure=lambda c, n, _: [op.get_many_call([key(n, 0), key(n, 1)])]),
        Case("optimistic.set", "the version matches", setup=stored,
             measure=lambda c, n, v: [op.set_call(key(n), b"z" * 100, v[key(n)], 0, "req")]),
        Case("optimistic.set", "refused: another version", setup=stored,
             measure=lambda c, n, v: [op.set_call(key(n), b"z" * 100, v[key(n)] - 1)]),
        Case("optimistic.delete", "the version matches", setup=stored,
             measure=lambda c, n, v: [op.delete_call(key(n), v[key(n)])]),
        Case("optimistic.set_many", "two values, the versions match", setup=stored,
             measure=lambda c, n, v: [op.set_many_call(
                 [(key(n, i), v[key(n, i)], b"z" * 100) for i in (0, 1)], 0, "req")]),
    ]


def _lock_family_cases() -> list[Case]:
    """The lock's relatives: several locks under one tag, the reentrant lock, Redlock's fence
    raise, the read-write lock and the semaphore."""
    from ..lock import LockKeys, acquire_call
    from ..lock.multi import acquire_all_call, extend_all_call
    from ..lock.reentrant import (
        ReentrantKeys,
        reentrant_acquire_call,
        reentrant_extend_call,
        reentrant_release_call,
    )
    from ..redlock.core import raise_call
    from ..rwlock import ops as rw
    from ..semaphore import ops as sem

    def three(n: str) -> list[LockKeys]:
        return [LockKeys(f"{{{n}}}:{i}") for i in range(3)]

    def set_held(c: Client, n: str) -> Any:
        return c.run(acquire_all_call(three(n), "holder", 30_000))

    def r_held(c: Client, n: str) -> Any:
        return c.run(reentrant_acquire_call(ReentrantKeys(n), "owner", "first", 30_000))

    def rw_read(c: Client, n: str) -> Any:
        return c.run(rw.acquire_call(rw.RWLockKeys(n), "reader", "read", 30_000))

    def rw_write(c: Client, n: str) -> Any:
        return c.run(rw.acquire_call(rw.RWLockKeys(n), "writer", "write", 30_000))

    def sem_held(c: Client, n: str) -> Any:
        return c.run(sem.acquire_call(sem.SemaphoreKeys(n), "holder", 4, 1, 30_000))

    def lagging(c: Client, n: str) -> Any:  # held with fence 1; the quorum's fence is 5
        return c.run(acquire_call(LockKeys(n), "holder", 30_000))

    stale = sem.Grant(1, "gone", "grant:1:gone")
    return [
        Case("lock.acquire_all", "three free locks under one tag",
             measure=lambda c, n, _: [acquire_all_call(three(n), "me", 30_000)]),
        Case("lock.extend_all", "three held", setup=set_held,
             measure=lambda c, n, _: [extend_all_call(three(n), "holder", 30_000)]),
        Case("lock.reentrant_acquire", "free",
             measure=lambda c, n, _: [reentrant_acquire_call(ReentrantKeys(n), "owner", "r1",
                                                             30_000)]),
        Case("lock.reentrant_acquire", "nested: the owner holds it", setup=r_held,
             measure=lambda c, n, _: [reentrant_acquire_call(ReentrantKeys(n), "owner", "r2",
                                                             30_000)]),
        Case("lock.reentrant_release", "the last hold", setup=r_held,
             measure=lambda c, n, _: [reentrant_release_call(ReentrantKeys(n), "owner",
                                                             "first")]),
        Case("lock.reentrant_extend", "held", setup=r_held,
             measure=lambda c, n, _: [reentrant_extend_call(ReentrantKeys(n), "owner", 30_000)]),
        Case("redlock.raise", "this node's counter behind the quorum's fence", setup=lagging,
             measure=lambda c, n, _: [raise_call(LockKeys(n), "holder", 5)]),
        Case("rwlock.acquire", "read, free",
             measure=lambda c, n, _: [rw.acquire_call(rw.RWLockKeys(n), "me", "read", 30_000)]),
        Case("rwlock.acquire", "write, free",
             measure=lambda c, n, _: [rw.acquire_call(rw.RWLockKeys(n), "me", "write",
                                                      30_000)]),
        Case("rwlock.release", "a reader, nobody waiting", setup=rw_read,
             measure=lambda c, n, _: [rw.release_call(rw.RWLockKeys(n), "reader", "read")]),
        Case("rwlock.release", "the writer, nobody waiting", setup=rw_write,
             measure=lambda c, n, _: [rw.release_call(rw.RWLockKeys(n), "writer", "write")]),
        Case("rwlock.extend", "a reader", setup=rw_read,
             measure=lambda c, n, _: [rw.extend_call(rw.RWLockKeys(n), "reader", "read",
                                                     30_000)]),
        Case("rwlock.inspect", "a reader holds it", setup=rw_read,
             measure=lambda c, n, _: [rw.inspect_call(rw.RWLockKeys(n))]),
        Case("semaphore.acquire", "1 of 4 permits, one held", setup=sem_held,
             measure=lambda c, n, _: [sem.acquire_call(sem.SemaphoreKeys(n), "me", 4, 1,
                                                       30_000)]),
        Case("semaphore.release", "held, nobody waiting", setup=sem_held,
             measure=lambda c, n, _: [sem.release_call(sem.SemaphoreKeys(n), "holder", 4)]),
        Case("semaphore.renew", "held", setup=sem_held,
             measure=lambda c, n, _: [sem.renew_call(sem.SemaphoreKeys(n), "holder", 30_000)]),
        Case("semaphore.forward", "a stale grant: nothing to forward", setup=sem_held,
             measure=lambda c, n, _: [sem.forward_call(sem.SemaphoreKeys(n), stale)]),
        Case("semaphore.inspect", "one lease held", setup=sem_held,
             measure=lambda c, n, _: [sem.inspect_call(sem.SemaphoreKeys(n))]),
    ]


def _metrics_cases() -> list[Case]:
    """The recording operations with the metrics key (docs/design/metrics-in-redis.md), each
    beside its row without it, and the metrics reads. The setup records once first, so the
    measured call finds its minute's stamp fresh (the once-a-minute reset is not measured)."""
    from ..cache import ops as ca
    from ..lock import LockKeys, acquire_call, release_call
    from ..lock.ops import metrics_call as lock_metrics
    from ..queue import ops as q
    from ..writebehind import ops as w

    payload = b"x" * 100

    def qk(n: str) -> q.QueueKeys:
        return q.QueueKeys(n, metrics=True)

    def enqueued(c: Client, n: str) -> Any:
        return c.run(q.enqueue_call(qk(n), q.JobSpec(payload)))

    def leased(c: Client, n: str) -> Any:
        enqueued(c, n)
        enqueued(c, n)
        return c.run(q.dequeue_call(qk(n), 1, 30_000)).jobs[0]

    def lk(n: str) -> LockKeys:
        return LockKeys(n, metrics=True)

    def used(c: Client, n: str) -> Any:
        c.run_many([acquire_call(lk(n), "before", 30_000), release_call(lk(n), "before")])

    def gcra(n: str) -> Call[Any]:
        return Call("ratelimit.gcra", (f"{{{n}}}:gcra:0", f"prl:rl:{{{n}}}:metrics:bench"),
                    (1, 1_000, HOUR, 0))

    def wk(n: str) -> w.StoreKeys:
        return w.StoreKeys(n, metrics=True)

    def written(c: Client, n: str) -> Any:
        c.run_many([w.write_call(wk(n), [("set", f"r{i}", payload)]) for i in range(10)])

    def claimed(c: Client, n: str) -> Any:
        written(c, n)
        return c.run(w.claim_call(wk(n), 10, 30_000))

    def ck(n: str) -> ca.CacheKeys:
        return ca.CacheKeys(n, metrics=True)

    def cached(c: Client, n: str) -> Any:
        c.run(ca.set_call(ck(n), "k", payload, 60_000, tags=["t"], record=True))

    return [
        Case("queue.enqueue", "with a request record and metrics", setup=enqueued,
             measure=lambda c, n, _: [q.enqueue_call(qk(n), q.JobSpec(payload))]),
        Case("queue.dequeue", "with a request record and metrics",
             setup=lambda c, n: leased(c, n) and enqueued(c, n),
             measure=lambda c, n, _: [q.dequeue_call(qk(n), 1, 30_000)]),
        Case("queue.ack", "with a request record and metrics", setup=leased,
             measure=lambda c, n, job: q.ack_calls(qk(n), [(job.id, job.token)])),
        Case("queue.nack", "retry with backoff, with a request record", setup=lambda c, n:
             leased(c, n), measure=lambda c, n, job: [q.nack_call(
                 q.QueueKeys(n), job.id, job.token, "boom")]),
        Case("queue.nack", "retry with backoff, with a request record and metrics",
             setup=leased, measure=lambda c, n, job: [q.nack_call(qk(n), job.id, job.token,
                                                                  "boom")]),
        Case("queue.metrics", "an hour of a queue's figures", setup=leased,
             measure=lambda c, n, _: [q.metrics_call(qk(n))]),
        Case("lock.acquire", "uncontended cycle, with metrics", setup=used,
             label="lock.acquire + lock.release",
             measure=lambda c, n, _: [acquire_call(lk(n), "me", 30_000),
                                      release_call(lk(n), "me")]),
        Case("lock.metrics", "a lock's figures", setup=used,
             measure=lambda c, n, _: [lock_metrics(lk(n))]),
        Case("ratelimit.gcra", "admitted, state exists, with metrics",
             setup=lambda c, n: c.run(gcra(n)), measure=lambda c, n, _: [gcra(n)]),
        Case("ratelimit.metrics", "a limiter's figures", setup=lambda c, n: c.run(gcra(n)),
             measure=lambda c, n, _: [Call("ratelimit.metrics",
                                           (f"prl:rl:{{{n}}}:metrics:bench",))]),
        Case("writebehind.write", "one record, store in use, with metrics", setup=written,
             measure=lambda c, n, _: [w.write_call(wk(n), [("set", "r99", payload)])]),
        Case("writebehind.ack", "a claim of 10, with metrics", setup=claimed,
             measure=lambda c, n, cl: [w.ack_call(wk(n), cl.token, cl.records)]),
        Case("writebehind.metrics", "a store's figures", setup=claimed,
             measure=lambda c, n, _: [w.metrics_call(wk(n))]),
        Case("cache.get_recorded", "hit, one tag (cache.get with metrics)", setup=cached,
             measure=lambda c, n, _: [ca.get_call(ck(n), "k", ["t"])]),
        Case("cache.set", "one tag, with metrics", setup=cached,
             measure=lambda c, n, _: [ca.set_call(ck(n), "k", b"y" * 100, 60_000, tags=["t"],
                                                  record=True)]),
        Case("cache.metrics", "a cache's figures", setup=cached,
             measure=lambda c, n, _: [ca.metrics_call(ck(n))]),
    ]


AREAS: dict[str, Callable[[], list[Case]]] = {
    "lock": _lock_cases,
    "lock-family": _lock_family_cases,
    "queue": _queue_cases,
    "stream": _stream_cases,
    "writebehind": _writebehind_cases,
    "cache": _cache_cases,
    "ratelimit": _ratelimit_cases,
    "optimistic": _optimistic_cases,
    "metrics": _metrics_cases,
}


def cases() -> list[Case]:
    return [c for build in AREAS.values() for c in build()]


def uncovered(library: Library, all_cases: Sequence[Case]) -> list[str]:
    """Operations of the library that no case measures."""
    measured = {op for c in all_cases for op in c.ops}
    return sorted(set(library.operations) - measured)


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Sample:
    usec: float  # per instance, on the server
    commands: float  # Redis commands per instance (inside scripts; scripts not counted)
    sent: float  # commands sent per instance


@dataclass
class Row:
    row: str
    path: str
    kind: str  # pyredislua | peer | reference
    samples: dict[str, list[Sample]] = field(default_factory=dict)  # per variant
    errors: dict[str, str] = field(default_factory=dict)


def _stats(r: redis.Redis) -> dict[str, dict[str, float]]:
    raw: dict[str, Any] = r.info("commandstats")
    return {k: {"calls": float(v["calls"]), "usec": float(v["usec"])} for k, v in raw.items()
            if k not in _ADMIN}


def _top_level(stats: dict[str, dict[str, float]], sent: dict[str, int]) -> float:
    """Server time of the commands sent: a script's own time includes what it ran inside; a
    plain command's is its average time times how often it was sent."""
    total = 0.0
    for verb, count in sent.items():
        s = stats.get(f"cmdstat_{verb}")
        if s is None:
            continue
        if verb in _SCRIPT_VERBS:
            total += s["usec"]
        else:
            total += s["usec"] / s["calls"] * min(count, s["calls"])
    return total


def _inner(stats: dict[str, dict[str, float]]) -> float:
    return sum(s["calls"] for k, s in stats.items()
               if k.removeprefix("cmdstat_") not in _SCRIPT_VERBS)


def _pipeline(r: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    replies: list[Any] = []
    for i in range(0, len(commands), _CHUNK):
        pipe = r.pipeline(transaction=False)
        for args in commands[i:i + _CHUNK]:
            pipe.execute_command(*args)  # type: ignore[no-untyped-call]
        replies += pipe.execute(raise_on_error=False)
    return replies


def _measure_chunk(r: redis.Redis, commands: Sequence[tuple[Any, ...]], instances: int
                   ) -> Sample:
    r.config_resetstat()
    replies = _pipeline(r, commands)
    stats = _stats(r)
    for reply in replies:
        if isinstance(reply, Exception):
            raise RuntimeError(f"{type(reply).__name__}: {reply}")
    sent: dict[str, int] = {}
    for args in commands:
        verb = str(args[0]).lower()
        sent[verb] = sent.get(verb, 0) + 1
    own = sum(n for v, n in sent.items() if v not in _SCRIPT_VERBS)
    inner = _inner(stats) - own
    return Sample(_top_level(stats, sent) / instances, (inner + own) / instances,
                  len(commands) / instances)


def _measure(r: redis.Redis, commands: Sequence[tuple[Any, ...]], instances: int) -> Sample:
    """Time per instance: the median over chunks of _CHUNK instances, each between its own
    reset and read, so a chunk the scheduler interrupted (a shared machine) does not skew it."""
    per = max(1, len(commands) // instances)
    chunks = [_measure_chunk(r, commands[i:i + per * _CHUNK],
                             min(_CHUNK, (len(commands) - i) // per))
              for i in range(0, len(commands), per * _CHUNK)]
    return Sample(statistics.median(c.usec for c in chunks),
                  statistics.mean(c.commands for c in chunks),
                  statistics.mean(c.sent for c in chunks))


class Variant:
    """A library measured: this tree's, or another checkout's under another library name."""

    def __init__(self, name: str, r: redis.Redis, mode: str, library: Library) -> None:
        self.name = name
        self.client = Client(r, mode=mode, library=library)  # type: ignore[arg-type]
        self.client.load(force=True)

    def commands(self, measured: Measured) -> list[tuple[Any, ...]]:
        engine = self.client.engine
        return [m.args if isinstance(m, Command) else engine.command(m).args for m in measured]


def renamed(library: Library, name: str) -> Library:
    """The same library under another name, so two builds live side by side on one server."""
    ops = {k: replace(op, function=op.function.replace(library.name, name))
           for k, op in library.operations.items()}
    return Library(name, library.version, library.code.replace(library.name, name),
                   library.sha, ops)


def _case_sample(variant: Variant, r: redis.Redis, case: Case, names: Sequence[str]) -> Sample:
    r.flushall()
    client = variant.client
    ctx = [case.setup(client, n) for n in names]
    commands = [args for n, x in zip(names, ctx) for args in variant.commands(
        case.measure(client, n, x))]
    return _measure(r, commands, len(names))


# -- peers ---------------------------------------------------------------------------------------


class Recorder:
    """Records the commands a peer's API sends on one redis-py client, tagged by phase."""

    def __init__(self, conn: redis.Redis) -> None:
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self.phase: str | None = None
        send = conn.execute_command

        def execute_command(*args: Any, **options: Any) -> Any:
            if self.phase is not None:
                self.log.append((self.phase, args))
            return send(*args, **options)  # type: ignore[no-untyped-call]

        conn.execute_command = execute_command  # type: ignore[method-assign]

    def commands(self, phase: str) -> list[tuple[Any, ...]]:
        return [args for p, args in self.log if p == phase]


@dataclass(frozen=True)
class Peer:
    """A peer's operation: ``make(url)`` builds (recorded client, setup(name), op(name));
    both run against Redis once per instance while recorded, then are replayed."""

    row: str
    path: str
    make: Callable[[str], tuple[redis.Redis, Callable[[str], Any], Callable[[str], Any]]]


def _redis_py_lock(url: str) -> Any:
    conn = redis.Redis.from_url(url)

    def cycle(n: str) -> None:
        lock = conn.lock(f"{{{n}}}:redis-py", timeout=30)
        lock.acquire(blocking=False)
        lock.release()

    return conn, lambda n: None, cycle


def _python_redis_lock(url: str) -> Any:
    import redis_lock

    conn = redis.Redis.from_url(url)

    def cycle(n: str) -> None:
        lock = redis_lock.Lock(conn, f"{{{n}}}:prl", expire=30)
        lock.acquire(blocking=False)
        lock.release()

    return conn, lambda n: None, cycle


def _limits(strategy: str) -> Callable[[str], Any]:
    def make(url: str) -> Any:
        import limits
        import limits.storage
        import limits.strategies

        storage = limits.storage.RedisStorage(url)
        s = getattr(limits.strategies, strategy)(storage)
        item = limits.parse("1000000/hour" if "Moving" not in strategy else "10000/hour")

        def hit(n: str) -> None:
            s.hit(item, n)

        return storage.storage, hit, hit

    return make


def peers() -> list[Peer]:
    out = [Peer("redis-py Lock acquire + release", "uncontended cycle", _redis_py_lock)]
    try:
        import redis_lock  # noqa: F401
    except ImportError:
        pass
    else:
        out.append(Peer("python-redis-lock acquire + release", "uncontended cycle",
                        _python_redis_lock))
    try:
        import limits  # noqa: F401
    except ImportError:
        return out
    out += [
        Peer("limits fixed window hit", "admitted, state exists",
             _limits("FixedWindowRateLimiter")),
        Peer("limits sliding-window counter hit", "admitted, state exists",
             _limits("SlidingWindowCounterRateLimiter")),
        Peer("limits moving window hit", "admitted, state exists",
             _limits("MovingWindowRateLimiter")),
    ]
    return out


def _peer_sample(peer: Peer, url: str, r: redis.Redis, names: Sequence[str]) -> Sample:
    conn, setup, op = peer.make(url)
    setup("warm-up")
    op("warm-up")  # scripts loaded before recording
    r.flushall()
    rec = Recorder(conn)
    for n in names:
        rec.phase = "setup"
        setup(n)
        rec.phase = "op"
        op(n)
    rec.phase = None
    r.flushall()
    _pipeline(r, rec.commands("setup"))
    sample = _measure(r, rec.commands("op"), len(names))
    conn.close()
    return sample


# What a one-limit rate-limit check cannot do without: the server clock, one read, one write
# with its expiry, the 10-number reply; no argument checks, no arithmetic, no parsing.
_CHECK_FLOOR = ("local t = redis.call('TIME') local v = redis.call('GET', KEYS[1]) "
                "redis.call('SET', KEYS[1], 'gcra:1764000000123:123456:1000', 'PX', '3600000') "
                "return {1, 999, 0, 3600, 1764000000123, 1, 1, 999, 0, 3600}")
_REFERENCES = [
    ("FCALL of an empty function", "reference", "fcall"),
    ("EVALSHA 'return 1'", "reference", "evalsha"),
    ("FCALL of a check's commands only", "TIME, GET, SET PX, 10-number reply", "floor-fcall"),
    ("EVALSHA of a check's commands only", "the same, in the scripts' Lua", "floor-evalsha"),
]


def _reference_sample(r: redis.Redis, what: str, names: Sequence[str]) -> Sample:
    if what == "fcall":
        command: tuple[Any, ...] = ("FCALL", "prlbench_empty", 0)
    elif what == "evalsha":
        command = ("EVALSHA", r.script_load("return 1"), 0)
    else:
        r.flushall()
        keys = [f"{{{n}}}:floor" for n in names]
        _pipeline(r, [("SET", k, "gcra:1764000000123:123456:1000", "PX", 3_600_000)
                      for k in keys])
        verb, name = (("FCALL", "prlbench_floor") if what == "floor-fcall" else
                      ("EVALSHA", r.script_load(_CHECK_FLOOR)))
        return _measure(r, [(verb, name, 1, k) for k in keys], len(names))
    return _measure(r, [command] * len(names), len(names))


# -- BullMQ ------------------------------------------------------------------------------------

_BULLMQ_PACKAGE = {"name": "pyredislua-bench-node", "private": True, "type": "module",
                   "dependencies": {"bullmq": ">=5", "ioredis": ">=5"}}


def node_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pyredislua" / "bench-node"


def _bullmq_ready(where: Path) -> str | None:
    """Install BullMQ into ``where`` on first use; None when ready, else why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node/npm not on PATH"
    where.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).with_name("bullmq_cost.mjs")
    shutil.copyfile(script, where / script.name)
    if not (where / "node_modules" / "bullmq").is_dir():
        (where / "package.json").write_text(json.dumps(_BULLMQ_PACKAGE))
        try:
            subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=where, check=True, timeout=300, capture_output=True)
        except (subprocess.SubprocessError, OSError) as error:
            return f"npm install bullmq failed in {where}: {error}"
    return None


def _bullmq_sample(where: Path, url: str, jobs: int) -> tuple[Sample, str]:
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run([node, "bullmq_cost.mjs", url, str(jobs)], cwd=where, check=True,
                          timeout=300, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    stats: dict[str, dict[str, float]] = {}
    for line in result["commandstats"].splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line.partition(":")
            values = dict(f.split("=") for f in fields.split(","))
            if name not in _ADMIN:
                stats[name] = {"calls": float(values["calls"]), "usec": float(values["usec"])}
    sent = {k.lower(): int(v) for k, v in result["sent"].items() if k.lower() not in (
        "info", "config", "client", "ping")}
    own = sum(n for v, n in sent.items() if v not in _SCRIPT_VERBS)
    inner = _inner(stats) - own
    return Sample(_top_level(stats, sent) / jobs, (inner + own) / jobs,
                  sum(sent.values()) / jobs), str(result["version"])


# -- the run -------------------------------------------------------------------------------------


def _instances(n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def _selected(row: str, only: Sequence[str] | None) -> bool:
    return not only or any(row.startswith(p) for p in only)


def measure(url: str, args: argparse.Namespace, progress: Callable[[str], None] | None = None
            ) -> dict[str, Any]:
    r = redis.Redis.from_url(url)
    r.function_load("#!lua name=prlbench\nredis.register_function{function_name='prlbench_empty',"
                    " callback=function() return 1 end, flags={'no-writes'}}\n"
                    "redis.register_function{function_name='prlbench_floor', callback="
                    f"function(KEYS) {_CHECK_FLOOR} end}}", replace=True)
    this = render_library()
    variants = [Variant("this", r, args.mode, this)]
    if args.against is not None:
        other = render_library(args.against.resolve() / "lua")
        variants.append(Variant("against", r, args.mode, renamed(other, "prlagainst_v1")))
    all_cases = [c for c in cases() if _selected(c.row, args.only)]
    rows: dict[tuple[str, str], Row] = {}
    for c in all_cases:
        rows.setdefault((c.row, c.path), Row(c.row, c.path, "pyredislua"))
    peer_list = [] if args.no_peers else [p for p in peers() if _selected(p.row, args.only)]
    refs = _REFERENCES
    for label, path, _ in refs:
        rows[(label, path)] = Row(label, path, "reference")
    for p in peer_list:
        rows[(p.row, p.path)] = Row(p.row, p.path, "peer")
    names = _instances(args.calls, "b")
    bullmq_note = None
    bullmq_version = None
    want_bullmq = not args.no_peers and not args.no_bullmq and _selected("BullMQ", args.only)
    where = node_dir(args.node_dir)
    if want_bullmq:
        bullmq_note = _bullmq_ready(where)
        if bullmq_note is None:
            rows[("BullMQ job: add + fetch + complete", "per job")] = Row(
                "BullMQ job: add + fetch + complete", "per job", "peer")
    for rnd in range(args.rounds):
        if progress:
            progress(f"round {rnd + 1}/{args.rounds}")
        order = variants if rnd % 2 == 0 else variants[::-1]
        for label, path, what in refs:
            rows[(label, path)].samples.setdefault("this", []).append(
                _reference_sample(r, what, names))
        for c in all_cases:
            row = rows[(c.row, c.path)]
            for v in order:
                if v.name in row.errors:
                    continue
                try:
                    row.samples.setdefault(v.name, []).append(_case_sample(v, r, c, names))
                except Exception as error:  # an op the other tree lacks, or a changed path
                    row.errors[v.name] = f"{type(error).__name__}: {error}"[:200]
        for p in peer_list:
            row = rows[(p.row, p.path)]
            try:
                row.samples.setdefault("this", []).append(_peer_sample(p, url, r, names))
            except Exception as error:
                row.errors["this"] = f"{type(error).__name__}: {error}"[:200]
        if want_bullmq and bullmq_note is None:
            row = rows[("BullMQ job: add + fetch + complete", "per job")]
            try:
                r.flushall()
                sample, bullmq_version = _bullmq_sample(where, url, max(args.calls, 500))
                row.samples.setdefault("this", []).append(sample)
            except Exception as error:
                bullmq_note = f"BullMQ run failed: {type(error).__name__}: {error}"[:300]
    out: dict[str, Any] = {
        "redis": r.info("server")["redis_version"],
        "library": f"{this.name} {this.version}",
        "mode": args.mode,
        "calls": args.calls,
        "rounds": args.rounds,
        "against": str(args.against) if args.against else None,
        "bullmq": bullmq_version,
        "notes": [n for n in [bullmq_note] if n],
        "uncovered": uncovered(this, cases()) if not args.only else [],
        "rows": [],
    }
    for row in rows.values():
        entry: dict[str, Any] = {"operation": row.row, "path": row.path, "kind": row.kind}
        for variant, samples in row.samples.items():
            if not samples:
                continue
            us = [s.usec for s in samples]
            entry[variant] = {"us": statistics.median(us), "us_min": min(us), "us_max": max(us),
                        "commands": statistics.median(s.commands for s in samples),
                        "sent": statistics.median(s.sent for s in samples)}
        if row.errors:
            entry["errors"] = row.errors
        out["rows"].append(entry)
    out["targets"] = targets(out["rows"])
    r.close()
    return out


def targets(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Issue 10's targets: each measured row of a targeted operation against its bound (the
    rows that also record metrics, an opt-in whose cost is shown beside them, are outside)."""
    result: dict[str, Any] = {}
    for row in rows:
        bound = TARGETS.get(row["operation"])
        if (bound is None or "this" not in row or row["kind"] != "pyredislua"
                or "metrics" in row["path"]):
            continue
        result[f"{row['operation']} [{row['path']}]"] = {
            "us": round(row["this"]["us"], 2), "target_us": bound,
            "met": row["this"]["us"] <= bound}
    return result


def render(results: dict[str, Any]) -> str:
    against = results["against"] is not None
    lines = [
        f"Server cost per operation: {results['library']} ({results['mode']} mode), "
        f"Redis {results['redis']}; median of {results['rounds']} rounds of "
        f"{results['calls']} operations [lowest-highest]",
        "us: microseconds inside Redis per operation; cmds: Redis commands it makes Redis run "
        "(inside scripts; the script call not counted); sent: commands sent per operation",
        "",
    ]
    head = ["operation", "path", "us", "spread", "cmds", "sent"]
    if against:
        head += ["against us", "spread", "cmds", "ratio"]
    table = [head]
    for row in results["rows"]:
        t = row.get("this")
        line = [row["operation"], row["path"]]
        if t is None:
            line += ["error", row.get("errors", {}).get("this", "")[:60], "", ""]
        else:
            line += [f"{t['us']:.1f}", f"{t['us_min']:.1f}-{t['us_max']:.1f}",
                     f"{t['commands']:.2f}".rstrip("0").rstrip("."), f"{t['sent']:g}"]
        if against and row["kind"] == "pyredislua":
            a = row.get("against")
            if a is None:
                line += ["n/a", "", "", ""]
            else:
                ratio = f"{t['us'] / a['us']:.2f}" if t and a["us"] else ""
                line += [f"{a['us']:.1f}", f"{a['us_min']:.1f}-{a['us_max']:.1f}",
                         f"{a['commands']:.2f}".rstrip("0").rstrip("."), ratio]
        elif against:
            line += ["", "", "", ""]
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    right = {2, 3, 4, 5, 6, 7, 8, 9}
    for i, r in enumerate(table):
        cells = [c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in
                 enumerate(zip(r, widths))]
        lines.append("| " + " | ".join(cells) + " |")
        if i == 0:
            lines.append("|" + "|".join(("-" * (w + 1) + ":") if j in right else "-" * (w + 2)
                                        for j, w in enumerate(widths)) + "|")
    if results["targets"]:
        missed = [k for k, v in results["targets"].items() if not v["met"]]
        lines += ["", f"targets (issue 10): {len(results['targets']) - len(missed)} of "
                  f"{len(results['targets'])} met" + (": missed " + ", ".join(
                      f"{k} {results['targets'][k]['us']} > {results['targets'][k]['target_us']}"
                      for k in missed) if missed else "")]
    if results["bullmq"]:
        lines.append(f"BullMQ {results['bullmq']} (Node.js), default job options, "
                     "worker concurrency 8")
    for note in results["notes"]:
        lines.append(f"note: {note}")
    if results["uncovered"]:
        lines.append("not measured (no case yet): " + ", ".join(results["uncovered"]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    with server_url(args.url) as url:
        results = measure(url, args, progress)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results))
    return 0

