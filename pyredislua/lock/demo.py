"""Locks with fencing tokens"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..client import Client
from ..lock import Lock

ORDER = 10


def demo(client: Client, say: Callable[[str], None]) -> None:
    name = "invoice-42"
    alice = Lock(client, name, ttl=10, prefix="prl:demo")
    bob = Lock(client, name, ttl=10, prefix="prl:demo")
    assert alice.acquire(blocking=False)
    say(f"alice takes the lock '{name}' and gets fencing token {alice.fence}.")
    busy = bob.inspect()
    say(f"bob tries without waiting: {'granted' if bob.acquire(blocking=False) else 'busy'} "
        f"(held by alice for another {busy.pttl_ms} ms).")

    got: dict[str, float] = {}

    def wait_for_it() -> None:
        bob.acquire(timeout=5)
        got["at"] = time.monotonic()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    while alice.inspect().waiters == 0:
        time.sleep(0.001)
    released_at = time.monotonic()
    alice.release()
    waiter.join()
    say(f"bob blocks; alice releases; the lock is handed straight to bob "
        f"{(got['at'] - released_at) * 1000:.1f} ms later with fence {bob.fence} "
        "(no polling: release pushed the grant bob was blocked on).")

    newest_seen = bob.fence or 0
    stale = alice.fence or 0
    say(f"A storage service that remembers the highest fence it has seen ({newest_seen}) "
        f"rejects a late write from alice carrying fence {stale}: "
        f"{'rejected' if stale < newest_seen else 'accepted'}. That is what fencing is for: "
        "a paused holder whose lease ran out cannot corrupt the resource.")
    bob.release()

    short = Lock(client, name, ttl=0.3, prefix="prl:demo")
    with short:
        time.sleep(0.7)
        say(f"A lock with a 300 ms lease held for 700 ms is still ours "
            f"({short.owned()}): the watchdog renewed it every 100 ms.")
    say("From redis-cli the same lock is: FCALL pyredislua_v1_lock_acquire 4 "
        "prl:demo:lock:{invoice-42} prl:demo:lock:{invoice-42}:fence "
        "prl:demo:lock:{invoice-42}:signal prl:demo:lock:{invoice-42}:waiters my-token 30000")
