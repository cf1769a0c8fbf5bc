#!/usr/bin/env python3
"""Adversarial lock run: real processes, SIGKILLed holders and waiters, 1-5 ms leases, a new
``Lock`` per acquire, and a check that no two holders' *believed* lease windows overlap.

    .venv/bin/python tools/lock_adversarial.py [--seconds 8] [--processes 6] [--kill-every 0.25]
                                               [--ghosts 0.05] [--source CHECKOUT] [--url URL]
                                               [--mode function] [--turn 0.002]

Each worker process loops: a new ``Lock`` (ttl 1-5 ms, no watchdog, requeue on or off), a
blocking acquire (half with a 1-30 ms timeout, slept out locally, half with 0.15-0.6 s, waiting
on the signal list), then, while holding, a read-modify-write of a shared counter that acts as a
fenced resource (a fenced read, then a compare-and-set with the fence). It appends what it
believed to a file of its own before doing anything under the lock: the window from the moment
``acquire`` returned to the local lease deadline (``valid_until``, the client's lower bound of
the server's lease) or its release, whichever is first. CLOCK_MONOTONIC is system-wide on Linux,
so windows of different processes compare directly. A killer SIGKILLs a random worker every
``--kill-every`` seconds and starts a replacement, forked from the runner so it starts at once
(a killed holder's window runs to its lease deadline).

A random SIGKILL rarely lands in the most harmful place for a waiter: just after it registered,
before it blocks. So, on a fraction ``--ghosts`` of its turns, a worker plays such a waiter
instead: one raw registering acquire (a new token, registered for 20-300 ms, as the README's
recipe step 1) and nothing after it, as if it died there. Grants are then made for waiters that
never come, and real waiters meet them unpopped: what made a waiter count a grant's lease from
its own later call (issue 8 §2). A ghost that finds the lock free holds it unseen, like a holder
killed at once.

``--turn T`` runs bounded barging (``Lock(turn=T)``): each ``Lock`` is then kept for 1-8
acquires in a row, so its releases carry the lock for its next acquire within its turn, and a
SIGKILL also lands between a carry and the acquire that takes it (the carry then runs out with
its lease, or is passed on by a timer if the worker goes on).

Reported (JSON on stdout): holds, kills, carries, overlapping believed windows, windows whose
fences do not increase in time order, counter writes that found the value changed under them
inside the writer's window or found a newer fence there first, the largest the waiters set grew, and
whether the lock ended free with no grant left behind. ``--source`` runs another checkout's
pyredislua (e.g. main) for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "adversarial"
COUNTER = "adversarial:{counter}"
# A fenced resource: a read or write carrying a fence lower than the highest seen is refused
# (-1), so a holder that lost its lease while paused cannot write after a newer holder read.
READ = """
local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '0')
if tonumber(ARGV[1]) < f then return -1 end
redis.call('HSET', KEYS[1], 'f', ARGV[1])
return tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
"""
# compare-and-set with a fence: -1 a newer fence was seen, -2 the value changed since read
CAS = """
local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '0')
if tonumber(ARGV[1]) < f then return -1 end
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[2]) then return -2 end
redis.call('HSET', KEYS[1], 'v', v + 1, 'f', ARGV[1])
return v + 1
"""


def _worker(url: str, mode: str, out: str, until: float, seed: int, ghosts: float,
            turn: float = 0.0) -> None:
    import redis

    import pyredislua
    from pyredislua.errors import LockNotOwnedError
    from pyredislua.lock import Lock, LockKeys, acquire_call

    r = redis.Redis.from_url(url)
    client = pyredislua.Client(r, mode=mode)  # type: ignore[arg-type]
    read, cas = r.register_script(READ), r.register_script(CAS)
    rng = random.Random(seed)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    keys = LockKeys(NAME)
    lock: Lock[pyredislua.Client] | None = None
    uses = 0
    while time.monotonic() < until:
        if rng.random() < ghosts:
            # a waiter that registers and dies before it blocks (see the module docstring)
            token = f"ghost-{seed}-{rng.getrandbits(64):x}"
            client.run(acquire_call(keys, token, rng.randint(1, 5), rng.randint(20, 300)))
            os.write(fd, b"G\n")
            continue
        if lock is None or uses <= 0:
            lock = Lock(client, NAME, ttl=rng.uniform(0.001, 0.005), auto_renew=False,
                        requeue=rng.random() < 0.5, turn=turn)
            uses = rng.randint(1, 8) if turn else 1
        uses -= 1
        # half sleep out a short timeout locally, half block on the signal list (BLPOP)
        timeout = rng.uniform(0.001, 0.03) if rng.random() < 0.5 else rng.uniform(0.15, 0.6)
        if not lock.acquire(timeout=timeout):
            continue
        start = time.monotonic()
        lease = lock._lease
        assert lease is not None
        valid_until = lease.valid_until
        os.write(fd, f"S {lock.fence} {start!r} {valid_until!r}\n".encode())
        outcome = "late"
        value = int(read(keys=[COUNTER], args=[lock.fence]))
        if value >= 0 and time.monotonic() < valid_until:
            written = int(cas(keys=[COUNTER], args=[lock.fence, value]))
            done = time.monotonic()
            outcome = f"{written} {'in' if done < valid_until else 'after'}"
        # the belief ends here: recorded before release is sent (a SIGKILL right after the
        # release went out must not leave the window open to the lease deadline)
        end = time.monotonic()
        os.write(fd, f"E {lock.fence} {min(end, valid_until)!r} {outcome}\n".encode())
        with contextlib.suppress(LockNotOwnedError):
            lock.release()
        if lock._carried is not None:
            os.write(fd, b"C\n")  # carried for this Lock's next acquire (turn)
    os.close(fd)


def _spawn(mode: str, url: str, directory: str, n: int, until: float, ghosts: float,
           turn: float) -> int:
    """Fork a worker (the library is rendered already: a replacement starts at once)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _worker(url, mode, os.path.join(directory, f"worker-{n}.log"), until, n, ghosts,
                    turn)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def _analyse(directory: str, kills: int) -> dict[str, Any]:
    windows: list[tuple[float, float, int]] = []
    starts: dict[tuple[str, int], tuple[float, float]] = {}
    ends: dict[tuple[str, int], float] = {}
    written, conflicts, stale, late_writes, ghosts, carries = [], 0, 0, 0, 0, 0
    for path in Path(directory).glob("worker-*.log"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts == ["G"]:
                ghosts += 1
                continue
            if parts == ["C"]:
                carries += 1
                continue
            if len(parts) < 3:
                continue  # a line cut by SIGKILL
            key = (path.name, int(parts[1]))
            if parts[0] == "S" and len(parts) == 4:
                starts[key] = (float(parts[2]), float(parts[3]))
            elif parts[0] == "E" and len(parts) >= 4:
                ends[key] = float(parts[2])
                if parts[3] != "late" and len(parts) == 5:
                    value, where = int(parts[3]), parts[4]
                    if value > 0:
                        written.append(value)
                    elif value == -2 and where == "in":
                        conflicts += 1  # changed under a writer inside its believed window
                    elif value == -1 and where == "in":
                        stale += 1  # a later holder wrote before this one, inside its window
                    if where == "after":
                        late_writes += 1
    expired_on_arrival = 0
    for key, (start, valid_until) in starts.items():
        end = min(ends.get(key, valid_until), valid_until)
        if end <= start:
            expired_on_arrival += 1  # the lease was over by the time acquire returned: no belief
            continue
        windows.append((start, end, key[1]))
    windows.sort()
    overlaps, fence_disorder, examples = 0, 0, []
    latest: tuple[float, float, int] = (float("-inf"), float("-inf"), 0)
    latest_fence = 0
    for window in windows:
        start, end, fence = window
        if start < latest[1]:
            overlaps += 1
            examples.append({"earlier": latest, "later": window,
                             "overlap_ms": round((latest[1] - start) * 1000, 3)})
        if fence <= latest_fence:
            fence_disorder += 1
        if end > latest[1]:
            latest = window
        latest_fence = max(latest_fence, fence)
    return {"holds": len(windows), "released": len(ends), "kills": kills,
            "ghost_waiters": ghosts, "carries": carries,
            "acquired_after_the_lease_ran_out": expired_on_arrival,
            "overlapping_windows": overlaps, "fences_out_of_order": fence_disorder,
            "counter_conflicts_inside_windows": conflicts,
            "stale_fence_writes_inside_windows": stale,
            "writes_after_the_window": late_writes, "counter_writes": len(written),
            "duplicate_counter_values": len(written) - len(set(written)),
            "overlap_examples": examples[:5]}


def run(seconds: float, processes: int, kill_every: float, url: str, mode: str = "function",
        ghosts: float = 0.05, turn: float = 0.0) -> dict[str, Any]:
    """Run the adversarial workload against ``url``; returns the counts."""
    import redis

    import pyredislua

    pyredislua.render_library()  # once, before forking the workers
    admin = redis.Redis.from_url(url)
    admin.delete(COUNTER)
    rng = random.Random(42)
    with tempfile.TemporaryDirectory(prefix="lock-adversarial-") as directory:
        until = time.monotonic() + seconds
        workers = [_spawn(mode, url, directory, n, until, ghosts, turn)
                   for n in range(processes)]
        spawned, kills, largest_waiters = processes, 0, 0
        next_kill = time.monotonic() + kill_every
        keys = f"prl:lock:{{{NAME}}}"
        while time.monotonic() < until - kill_every:
            largest_waiters = max(largest_waiters, int(admin.zcard(keys + ":waiters")))
            if time.monotonic() >= next_kill:
                victim = rng.randrange(len(workers))
                os.kill(workers[victim], signal.SIGKILL)
                os.waitpid(workers[victim], 0)
                kills += 1
                workers[victim] = _spawn(mode, url, directory, spawned, until, ghosts, turn)
                spawned += 1
                next_kill += kill_every
            time.sleep(0.01)
        failed = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0 for pid in workers)
        # every lease is 5 ms at most: the lock must be free and no grant left once they ran out
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and admin.exists(keys, keys + ":signal"):
            time.sleep(0.01)
        result = _analyse(directory, kills)
        result["workers_failed"] = failed
        result["largest_waiters_set"] = largest_waiters
        result["ended_free_without_grant"] = not admin.exists(keys, keys + ":signal")
        result["counter"] = int(admin.hget(COUNTER, "v") or 0)
    admin.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--kill-every", type=float, default=0.25)
    parser.add_argument("--url", help="a disposable Redis (default: a throwaway redis-server)")
    parser.add_argument("--mode", default="function", choices=["function", "script"])
    parser.add_argument("--ghosts", type=float, default=0.05,
                        help="fraction of turns a worker registers as a waiter and walks away")
    parser.add_argument("--turn", type=float, default=0.0,
                        help="bounded barging: Lock(turn=...), each Lock kept for 1-8 acquires")
    parser.add_argument("--source", help="checkout whose pyredislua to run (default: this)")
    args = parser.parse_args()
    sys.path.insert(0, args.source or str(Path(__file__).resolve().parents[1]))
    if args.url:
        print(json.dumps(run(args.seconds, args.processes, args.kill_every, args.url, args.mode,
                             args.ghosts, args.turn), indent=1))
        return
    from pyredislua.server import RedisServer

    with RedisServer() as server:
        print(json.dumps(run(args.seconds, args.processes, args.kill_every, server.url,
                             args.mode, args.ghosts, args.turn), indent=1))


if __name__ == "__main__":
    main()
