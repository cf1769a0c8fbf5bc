"""A counting semaphore: permits under leases, handed to waiters in order"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..client import Client
from .ops import inspect_call
from .semaphore import Permit, Semaphore

ORDER = 15


def demo(client: Client, say: Callable[[str], None]) -> None:
    sem = Semaphore(client, "gpus", 4, ttl=10, prefix="prl:demo")
    trainer = sem.acquire(3)
    assert trainer is not None
    say(f"A semaphore 'gpus' with 4 permits: a trainer takes 3 (lease {trainer.lease[:8]}..., "
        f"fence {trainer.fence}).")
    got: list[tuple[str, Permit | None, float]] = []

    def want(who: str, count: int) -> None:
        permit = sem.acquire(count, timeout=5)
        got.append((who, permit, time.monotonic()))

    big = threading.Thread(target=want, args=("an evaluation wanting 2", 2))
    big.start()
    while client.run(inspect_call(sem.keys)).queued < 1:
        time.sleep(0.001)
    say("An evaluation wants 2 and queues (1 is free). A notebook wanting 1 comes later: "
        f"{'it gets the free permit' if sem.acquire(1, blocking=False) else 'refused'} "
        "(first come, first served: nobody takes permits an earlier waiter needs).")
    released_at = time.monotonic()
    sem.release(trainer)
    big.join()
    who, permit, at = got[0]
    assert permit is not None
    say(f"The trainer releases; {who} gets them {(at - released_at) * 1000:.1f} ms later, fence "
        f"{permit.fence} (handed over: the release granted them and pushed the grant it was "
        "blocked on).")
    sem.release(permit)
    crashed = Semaphore(client, "gpus", 4, ttl=0.2, auto_renew=False, prefix="prl:demo")
    assert crashed.acquire(4) is not None
    started = time.monotonic()
    after = sem.acquire(4, timeout=5)
    assert after is not None
    say(f"A holder of all 4 with a 200 ms lease dies without releasing: a waiter for 4 gets them "
        f"{(time.monotonic() - started) * 1000:.0f} ms later, when the lease ends.")
    sem.release(after)
