"""Real processes contend for one read-write lock with 1 ms to 1 s leases (a new handle per
hold) while a killer SIGKILLs a random one, holder or waiter, every 0.25 s and starts another.

Every hold is logged by its process before its work starts (mode, fence, the believed lease end)
and when it ends, flushed line by line, so a killed holder's hold counts until its believed lease
ends. No write window may overlap any other window; fences must increase in write order; the
lock must end free (crashed holders' shares and grants to killed waiters lapse)."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import pyredislua
from pyredislua.rwlock import RWLock
from pyredislua.server import RedisServer

pytestmark = [pytest.mark.lock, pytest.mark.perf]

SECONDS = 5.0
PROCESSES = 6
TTLS = (0.001, 0.02, 1.0)


def _worker(url: str, log: str, seed: int) -> None:
    rng = random.Random(seed)
    # a short socket timeout makes short BLPOPs and registrations: a grant made to a killed
    # waiter lapses within ~0.65 s (2.25 s with the default timeout), the cost of a dead waiter
    client = pyredislua.Client(redis.Redis.from_url(url, socket_timeout=0.5))
    with open(log, "a", buffering=1) as out:
        while True:
            ttl = rng.choice(TTLS)
            rw = RWLock(client, "adv", ttl=ttl, auto_renew=ttl >= 0.5)
            mode = "write" if rng.random() < 0.3 else "read"
            handle = rw.write() if mode == "write" else rw.read()
            if not handle.acquire(timeout=rng.choice((0.05, 0.5, 2.0))):
                continue
            start = time.monotonic()
            out.write(f"A {os.getpid()} {mode} {handle.fence} {start} {handle.valid_until}\n")
            time.sleep(rng.random() * 0.01)
            end = time.monotonic()
            valid = handle.valid_until  # renewed by the watchdog meanwhile, or not
            out.write(f"E {os.getpid()} {min(end, valid or start)}\n")
            with contextlib.suppress(pyredislua.errors.LockNotOwnedError):
                handle.release()


def _windows(logs: list[Path]) -> list[tuple[float, float, str, int, int]]:
    """(start, end, mode, fence, pid) of every hold with a non-empty believed window."""
    windows = []
    for log in logs:
        open_hold: dict[str, Any] | None = None
        for line in log.read_text().splitlines():
            parts = line.split()
            if parts[0] == "A" and len(parts) == 6:
                open_hold = {"pid": int(parts[1]), "mode": parts[2], "fence": int(parts[3]),
                             "start": float(parts[4]), "valid": float(parts[5])}
            elif parts[0] == "E" and len(parts) == 3 and open_hold is not None:
                windows.append((open_hold["start"], min(float(parts[2]), open_hold["valid"]),
                                open_hold["mode"], open_hold["fence"], open_hold["pid"]))
                open_hold = None
        if open_hold is not None:  # killed while holding: counts until its believed lease ends
            windows.append((open_hold["start"], open_hold["valid"], open_hold["mode"],
                            open_hold["fence"], open_hold["pid"]))
    return [w for w in windows if w[1] > w[0]]


def test_sigkilled_holders_and_waiters_never_overlap(own_server: RedisServer,
                                                     tmp_path: Path) -> None:
    r = redis.Redis.from_url(own_server.url)
    pyredislua.Client(r).load()
    ctx = mp.get_context("fork")
    procs: list[Any] = []
    seed = 0

    def start() -> None:
        nonlocal seed
        seed += 1
        p = ctx.Process(target=_worker, args=(own_server.url, str(tmp_path / f"{seed}.log"),
                                              seed), daemon=True)
        p.start()
        procs.append(p)

    for _ in range(PROCESSES):
        start()
    kills = 0
    end = time.monotonic() + SECONDS
    while time.monotonic() < end:
        time.sleep(0.25)
        victim = random.choice([p for p in procs if p.is_alive()])
        os.kill(victim.pid, signal.SIGKILL)
        victim.join()
        kills += 1
        start()
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join()

    windows = sorted(_windows(list(tmp_path.glob("*.log"))))
    writes = [w for w in windows if w[2] == "write"]
    reads = [w for w in windows if w[2] == "read"]
    print(f"{kills} kills, {len(writes)} write and {len(reads)} read windows")
    assert kills >= 15 and len(writes) >= 10 and len(reads) >= 20
    overlaps = [(a, b) for a in writes for b in windows
                if a is not b and a[0] < b[1] and b[0] < a[1]]
    assert not overlaps, overlaps[:3]
    fences = [w[3] for w in writes]
    assert fences == sorted(fences) and len(set(fences)) == len(fences)
    assert max(w[1] for w in reads) > 0  # readers did share: some read windows overlapped
    assert any(a[1] > b[0] for a, b in itertools.pairwise(reads))
    # every killed holder's lease and every grant to a killed waiter lapses: the lock frees up
    client = pyredislua.Client(r)
    w = RWLock(client, "adv", ttl=5).write()
    assert w.acquire(timeout=5)
    w.release()
    r.close()
