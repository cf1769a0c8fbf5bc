"""Helpers for the cluster, Sentinel and failover tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

import pyredislua
from pyredislua.lock import LockKeys, acquire_call, inspect_call, release_call
from pyredislua.topology import LocalCluster

ROOT = Path(__file__).resolve().parents[1]


def slot_of(tag: str) -> int:
    from redis.crc import key_slot

    return int(key_slot(f"{{{tag}}}".encode()))


def tags_by_primary(cluster: LocalCluster, per_primary: int = 1, prefix: str = "t"
                    ) -> dict[int, list[str]]:
    """Hash tags whose slots live on each primary (port -> tags)."""
    owners: dict[int, list[str]] = {port: [] for port in cluster.primaries()}
    slots = {}
    for node in cluster.nodes().values():
        if node.primary:
            for lo, hi in node.slots:
                slots[(lo, hi)] = node.port
    i = 0
    while any(len(tags) < per_primary for tags in owners.values()):
        tag = f"{prefix}{i}"
        slot = slot_of(tag)
        port = next(p for (lo, hi), p in slots.items() if lo <= slot <= hi)
        if len(owners[port]) < per_primary:
            owners[port].append(tag)
        i += 1
    return owners


def use_lock(client: pyredislua.Client, tag: str, token: str = "t") -> None:
    """One acquire, inspect, release cycle on the lock named ``tag`` (its keys: ``{tag}``)."""
    keys = LockKeys(tag)
    assert client.run(acquire_call(keys, token, 10_000)).acquired
    assert client.run(inspect_call(keys)).owner == token
    assert client.run(release_call(keys, token))


async def ause_lock(client: pyredislua.AsyncClient, tag: str, token: str = "t") -> None:
    keys = LockKeys(tag)
    assert (await client.run(acquire_call(keys, token, 10_000))).acquired
    assert (await client.run(inspect_call(keys))).owner == token
    assert await client.run(release_call(keys, token))


def _gcra_hit(tag: str) -> Any:
    from pyredislua.ratelimit.ops import Limit, Rate, decide_call

    return decide_call([Limit("gcra", Rate.parse("1000000/s"), f"prl:rl:{{{tag}}}:traffic")])


def cli(*args: str, stdin: str | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyredislua", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def shell(script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A bash script with this virtualenv's ``pyredislua`` first on PATH (as a user has it)."""
    bindir = str(Path(sys.executable).parent)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", f'PATH="{bindir}:$PATH"\n{script}'],
                          capture_output=True, text=True, timeout=timeout)


def node_binary() -> str | None:
    return shutil.which("node")


@dataclass
class Traffic:
    """A background thread running lock cycles over many hash tags (through ``make_client``)
    and counting what surfaced, until stopped."""

    make_client: Callable[[], pyredislua.Client]
    tags: list[str]
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    error_times: list[float] = field(default_factory=list)
    streak: int = 0  # longest run of consecutive errors
    hits: dict[str, int] = field(default_factory=dict)  # successful cycles per tag
    focus: str | None = None  # every other cycle goes to this tag
    current: str | None = None  # the tag of the cycle in flight
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        client = self.make_client()
        run = 0
        i = 0
        while not self._stop.is_set():
            focus = self.focus
            tag = focus if focus is not None and i % 2 else self.tags[i % len(self.tags)]
            i += 1
            self.current = tag
            try:
                use_lock(client, tag, token="traffic")
                client.run(_gcra_hit(tag))  # a single-key call: served on an importing node
                self.hits[tag] = self.hits.get(tag, 0) + 1
                self.ok += 1
                run = 0
            except Exception as error:  # counted, whatever it is: the thread must go on
                self.errors.append(f"{type(error).__name__}: {error}")
                self.error_times.append(time.monotonic())
                run += 1
                self.streak = max(self.streak, run)
                # a cycle cut short leaves the lock held by "traffic": the next acquire with
                # the same token is the holder's repeat and succeeds
            finally:
                self.current = None

    def wait_for_calls(self, n: int, timeout: float = 10.0) -> None:
        target = self.ok + n
        deadline = time.monotonic() + timeout
        while self.ok < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"traffic stalled: {self.ok} ok, errors {self.errors[-3:]}")
            time.sleep(0.005)

    def wait_for_cycle_on(self, tag: str, timeout: float = 10.0) -> None:
        """Until a cycle on ``tag`` is in flight (it may be waiting for its slot)."""
        deadline = time.monotonic() + timeout
        while self.current != tag:
            if time.monotonic() > deadline:
                raise AssertionError(f"no cycle on {tag}: errors {self.errors[-3:]}")
            time.sleep(0.001)

    def wait_for_tag(self, tag: str, n: int = 2, timeout: float = 10.0) -> None:
        """Until ``n`` more cycles on ``tag`` succeeded (or fail the test)."""
        target = self.hits.get(tag, 0) + n
        deadline = time.monotonic() + timeout
        while self.hits.get(tag, 0) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"no traffic on {tag}: errors {self.errors[-3:]}")
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the traffic thread hung"


def info_versions(cluster: LocalCluster, function: str) -> dict[int, str | None]:
    """The library version each primary holds (None: none)."""
    out: dict[int, str | None] = {}
    for port in cluster.primaries():
        with redis.Redis(port=port) as conn:
            try:
                out[port] = conn.fcall_ro(function, 0)[0].decode()
            except redis.ResponseError:
                out[port] = None
    return out


def on_node(port: int, *args: Any) -> Any:
    with redis.Redis(port=port) as conn:
        return conn.execute_command(*args)


@dataclass
class Writer:
    """A background thread enqueueing jobs one call at a time and recording which ones were
    acknowledged (and when calls raised), until stopped: after a failover, :meth:`lost` counts
    the acknowledged jobs the promoted primary lacks."""

    client: pyredislua.Client
    queue: str
    acked: list[tuple[str, bytes]] = field(default_factory=list)  # (job id, payload)
    errors: list[str] = field(default_factory=list)
    error_times: list[float] = field(default_factory=list)
    unconfirmed: int = 0  # DurabilityError: ran on the primary, not confirmed by replicas
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from pyredislua.queue.ops import JobSpec, QueueKeys, enqueue_call

        keys = QueueKeys(self.queue)
        i = 0
        while not self._stop.is_set():
            i += 1
            payload = f"{self.queue}-{i}".encode()
            try:
                self.acked.append((self.client.run(enqueue_call(keys, JobSpec(payload))).id,
                                   payload))
            except pyredislua.DurabilityError:
                self.unconfirmed += 1
            except Exception as error:  # counted: a write the caller knows failed
                self.errors.append(f"{type(error).__name__}: {error}")
                self.error_times.append(time.monotonic())

    @property
    def error_span(self) -> float:
        """Seconds from the first to the last error."""
        return self.error_times[-1] - self.error_times[0] if self.error_times else 0.0

    def wait_for_acks(self, n: int, timeout: float = 20.0) -> None:
        target = len(self.acked) + n
        deadline = time.monotonic() + timeout
        while len(self.acked) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"writer stalled: errors {self.errors[-3:]}")
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the writer thread hung"

    def lost(self, client: pyredislua.Client) -> int:
        """Acknowledged jobs the server lacks. A job id is a sequence number kept in Redis: after
        a failover that lost writes, the counter is behind and a later job may get the id of a
        lost one, so the payload is compared too."""
        from pyredislua.queue.ops import QueueKeys, get_call

        keys = QueueKeys(self.queue)
        found = client.run_many([get_call(keys, job_id) for job_id, _ in self.acked])
        return sum(1 for (_id, payload), info in zip(self.acked, found)
                   if info is None or info.payload != payload)

    def reused_ids(self) -> int:
        """Acknowledged ids handed out twice (to different jobs)."""
        return len(self.acked) - len({job_id for job_id, _ in self.acked})
