"""Durability: how many acknowledged writes a promoted replica lacks after the primary is killed,
with and without replica confirmation (``Durability``: WAIT in the same round trip).

Each round: a primary and its replica (real redis-server processes); a client acquires locks
and enqueues jobs (each a separate call, as an application does); the primary is killed
(SIGKILL) right after the last acknowledgement; the replica is promoted (``REPLICAOF NO ONE``,
what Sentinel does) and checked for every acknowledged write; the killed primary comes back as
the new primary's replica for the next round. Three states of the replica link:

* ``healthy``: the replica is up and connected, its link settled.
* ``resynced``: the replica has just completed a full sync (it joined, or came back after a
  failover): a Redis 7.0 primary may then hold the replication stream back for up to a
  second (see :meth:`Pair._replicate`).
* ``frozen``: the replica process is stopped (SIGSTOP) during the writes, its connection open
  (a GC-like pause, a swapped-out VM); it resumes after the kill.
* ``cut off``: the primary has lost its replica (the link is killed and the replica frozen so it
  cannot reconnect: a network partition); the replica resumes after the kill.

``lost``: acknowledged writes the promoted replica lacks. ``unconfirmed``: writes the primary
ran but fewer replicas confirmed within the timeout (``DurabilityError``: the caller knows).
Not a test: the numbers depend on the machine; the tests assert only what must hold.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import redis

from ..client import Client
from ..engine.protocol import Durability
from ..errors import DurabilityError
from ..lock import LockKeys, acquire_call, inspect_call
from ..queue.ops import JobSpec, QueueKeys, enqueue_call, get_call
from ..server import RedisServer
from ..topology import wait_until
from ._common import emit_json, print_table

SCENARIOS = ("healthy", "resynced", "frozen", "cut off")
_REPLICATION = ("--repl-diskless-sync-delay", "0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=100,
                        help="primary kills per scenario and setting (default 100)")
    parser.add_argument("--writes", type=int, default=20,
                        help="acknowledged writes before each kill (half lock acquires, half "
                        "enqueues; default 20)")
    parser.add_argument("--timeout-ms", type=int, default=50,
                        help="how long WAIT waits for the replica (default 50 ms)")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="only this replica link state (repeatable; default: all)")


@dataclass
class Outcome:
    scenario: str
    durability: str
    rounds: int = 0
    acknowledged: int = 0
    lost: int = 0
    lost_locks: int = 0  # of ``lost``: acquired locks the promoted replica does not hold
    lost_jobs: int = 0  # of ``lost``: enqueued jobs it lacks
    unconfirmed: int = 0
    rounds_with_loss: int = 0


class Pair:
    """A primary and its replica: kill the primary, promote the replica, bring the old primary
    back as the new one's replica."""

    def __init__(self) -> None:
        self.primary = RedisServer(extra_args=_REPLICATION).start()
        self.replica = RedisServer(extra_args=_REPLICATION).start()
        self._replicate(self.replica, self.primary)

    @staticmethod
    def _replicate(replica: RedisServer, primary: RedisServer, *, settle: bool = True) -> None:
        """Make ``replica`` replicate ``primary``. The replica says "connected" as soon as it
        loaded the snapshot, but after a full sync a Redis 7.0 primary holds the replication
        stream back until it has seen the replica's first acknowledgement, and when that
        acknowledgement beats the primary's noticing that the snapshot is done (it looks on its
        100 ms timer), the stream waits for the next one, up to a second later; ``settle``
        waits until a write has reached the replica."""
        with redis.Redis(port=replica.port) as conn, redis.Redis(port=primary.port) as main:
            conn.execute_command("REPLICAOF", "127.0.0.1", primary.port)

            def linked() -> bool:
                role = conn.execute_command("ROLE")
                return bool(role[0] == b"slave" and role[3] == b"connected")

            wait_until(linked, 10.0, "the replica to sync")
            if settle:  # a write must reach the replica: the stream flows
                marker = os.urandom(8).hex()
                main.set("bench:settled", marker)
                wait_until(lambda: conn.get("bench:settled") == marker.encode(), 10.0,
                           "the replication stream to flow")

    def resync_replica(self) -> None:
        """The replica restarted empty and fully synced again, its first acknowledgement not yet
        sent (the state after a replica joins or after a failover)."""
        self.replica.kill()
        self.replica.start()
        self._replicate(self.replica, self.primary, settle=False)

    def kill_primary(self) -> None:
        self.primary.kill()

    def promote(self) -> None:
        with redis.Redis(port=self.replica.port) as conn:
            conn.execute_command("REPLICAOF", "NO", "ONE")
        self.primary, self.replica = self.replica, self.primary

    def heal(self) -> None:
        """The killed old primary back as the new primary's replica."""
        self.replica.start()
        self._replicate(self.replica, self.primary)

    @contextlib.contextmanager
    def replica_link(self, scenario: str) -> Iterator[None]:
        """The replica's state while the writes run; ends after the primary is killed."""
        process = self.replica.process
        assert process is not None
        stopped = scenario in ("frozen", "cut off")
        if stopped:
            process.send_signal(signal.SIGSTOP)
        if scenario == "cut off":
            with redis.Redis(port=self.primary.port) as conn:
                conn.execute_command("CLIENT", "KILL", "TYPE", "replica")
        try:
            yield
        finally:
            if stopped:
                process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.primary.close()
        self.replica.close()


def measure(pair: Pair, scenario: str, durability: Durability | None, rounds: int,
            writes: int, start: int = 0) -> Outcome:
    """Kill the primary ``rounds`` times right after ``writes`` writes; count what the
    promoted replica lacks."""
    outcome = Outcome(scenario, "none" if durability is None else
                      f"WAIT {durability.replicas} {durability.wait_args[2]}")
    for r in range(start, start + rounds):
        if scenario == "resynced":
            pair.resync_replica()
        acked_locks: list[tuple[LockKeys, str]] = []
        acked_jobs: list[tuple[QueueKeys, str]] = []
        queue = QueueKeys(f"dq{r}")
        with redis.Redis(port=pair.primary.port) as conn:
            client = Client(conn, mode="function", durability=durability)
            client.load()
            with pair.replica_link(scenario):
                for i in range(writes):
                    try:
                        if i % 2:
                            job = client.run(enqueue_call(queue, JobSpec(f"job-{r}-{i}")))
                            acked_jobs.append((queue, job.id))
                        else:
                            keys, token = LockKeys(f"dl{r}-{i}"), f"owner-{r}-{i}"
                            client.run(acquire_call(keys, token, 60_000))
                            acked_locks.append((keys, token))
                    except DurabilityError:
                        outcome.unconfirmed += 1
                pair.kill_primary()  # SIGKILL right after the last acknowledgement
            pair.promote()
        with redis.Redis(port=pair.primary.port) as promoted:
            survivor = Client(promoted, mode="function")
            held = survivor.run_many([inspect_call(k) for k, _ in acked_locks])
            jobs = survivor.run_many([get_call(q, job_id) for q, job_id in acked_jobs])
        lost_locks = sum(1 for (_k, token), state in zip(acked_locks, held)
                         if state.owner != token)
        lost_jobs = sum(1 for info in jobs if info is None)
        lost = lost_locks + lost_jobs
        outcome.lost += lost
        outcome.lost_locks += lost_locks
        outcome.lost_jobs += lost_jobs
        outcome.rounds_with_loss += lost > 0
        outcome.acknowledged += len(acked_locks) + len(acked_jobs)
        outcome.rounds += 1
        pair.heal()
    return outcome


def measure_all(rounds: int, writes: int, timeout_ms: int,
                scenarios: tuple[str, ...] = SCENARIOS) -> list[Outcome]:
    pair = Pair()
    try:
        results = []
        start = 0
        for scenario in scenarios:
            for durability in (None, Durability(1, timeout_ms / 1000, "raise")):
                results.append(measure(pair, scenario, durability, rounds, writes, start))
                start += rounds
        return results
    finally:
        pair.close()


def run(args: argparse.Namespace) -> int:
    if args.url:
        print("bench durability kills its own servers: --url is not used")
    results = measure_all(args.rounds, args.writes, args.timeout_ms,
                          tuple(args.scenario or SCENARIOS))
    if args.json:
        emit_json({"results": [asdict(r) for r in results]})
        return 0
    rows = [(f"{r.scenario}, {r.durability}", f"{r.acknowledged} acknowledged",
             f"{r.lost} lost ({r.lost_locks} locks, {r.lost_jobs} jobs; in "
             f"{r.rounds_with_loss} rounds), {r.unconfirmed} reported unconfirmed")
            for r in results]
    print_table(f"primary killed right after {args.writes} writes, {args.rounds} times per row; "
                "the replica promoted", rows, ("replica link, confirmation", "writes",
                                               "after promotion"))
    return 0
