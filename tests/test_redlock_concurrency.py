"""Mutual exclusion across real processes while a majority of five nodes is reachable: workers
contend for one Redlock, holders are SIGKILLed at random, one node goes down and another is
paused meanwhile. Every hold is recorded (its window on the shared monotonic clock, its fence);
no two windows may overlap and fences must increase in hold order."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import pyredislua
from pyredislua.errors import LockNotOwnedError
from pyredislua.redlock import Redlock
from tests.faultkit import FaultServer

pytestmark = [pytest.mark.lock, pytest.mark.perf, pytest.mark.faults]

WORKERS = 4
RUN_FOR = 5.0
TTL = 0.5


def _worker(ports: list[int], path: str, stop_at: float) -> None:
    clients = [pyredislua.Client(redis.Redis(port=p)) for p in ports]
    lock = Redlock(clients, "shared", ttl=TTL, node_timeout=0.05, retry_delay=0.02,
                   auto_renew=False)
    with open(path, "a", buffering=1) as out:
        while time.monotonic() < stop_at:
            if not lock.acquire(timeout=0.3):
                continue
            start = time.monotonic()
            out.write(f"A {lock.fence} {start!r} {lock.valid_until!r}\n")
            time.sleep(random.uniform(0, 0.02))  # the work
            end = time.monotonic()
            out.write(f"R {lock.fence} {end!r}\n")
            with contextlib.suppress(LockNotOwnedError):
                lock.release()


def _holds(paths: list[Path]) -> list[tuple[float, float, int]]:
    """(start, end, fence) of every hold: a killed holder's window lasts its whole validity."""
    holds = []
    for path in paths:
        if not path.exists():
            continue
        current: dict[int, tuple[float, float]] = {}
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == "A":
                current[int(parts[1])] = (float(parts[2]), float(parts[3]))
            elif len(parts) == 3 and parts[0] == "R" and int(parts[1]) in current:
                start, valid = current.pop(int(parts[1]))
                end = float(parts[2])
                assert end <= valid, "a worker's work outlasted its validity"
                holds.append((start, end, int(parts[1])))
        holds += [(start, valid, fence) for fence, (start, valid) in current.items()]
    return sorted(holds)


def test_processes_never_overlap_while_a_majority_is_reachable(tmp_path: Path) -> None:
    servers = [FaultServer() for _ in range(5)]
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    try:
        for server in servers:
            server.start()
        ports = [s.port for s in servers]
        pyredislua.Client(redis.Redis(port=ports[0])).load()
        stop_at = time.monotonic() + RUN_FOR + 2.0  # spawning takes a while
        paths: list[Path] = []

        def spawn() -> Any:
            path = tmp_path / f"w{len(paths)}.log"
            paths.append(path)
            proc = ctx.Process(target=_worker, args=(ports, str(path), stop_at))
            proc.start()
            return proc

        procs = [spawn() for _ in range(WORKERS)]
        begun = time.monotonic()
        killed, node_down, paused = 0, False, False
        while time.monotonic() < stop_at - 0.5:
            time.sleep(0.3)
            elapsed = time.monotonic() - begun
            victim = random.randrange(len(procs))  # often a holder: holds are most of the time
            procs[victim].kill()
            procs[victim].join()
            procs[victim] = spawn()
            killed += 1
            if elapsed > 1.5 and not node_down:
                servers[3].kill()  # stays down: restarting without its data is unsafe
                node_down = True
            if elapsed > 2.5 and not paused:
                assert servers[4].process is not None
                servers[4].process.send_signal(signal.SIGSTOP)
                paused = True
            if elapsed > 4.0 and paused:
                assert servers[4].process is not None
                servers[4].process.send_signal(signal.SIGCONT)
                paused = False
        for proc in procs:
            proc.join(timeout=10)
        holds = _holds(paths)
        assert killed >= 10
        assert len(holds) >= 30, f"only {len(holds)} holds"
        for (_start_a, end_a, fence_a), (start_b, _, fence_b) in itertools.pairwise(holds):
            assert end_a <= start_b, f"holds overlap: fence {fence_a} and {fence_b}"
            assert fence_a < fence_b, "fences must increase in hold order"
    finally:
        for proc in procs:
            proc.kill()
            proc.join()
        for server in servers:
            if server.process is not None:
                server.process.send_signal(signal.SIGCONT)
            server.close()
