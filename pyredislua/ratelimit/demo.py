"""Rate limiting demo: GCRA with burst, all-or-none multi-limits, a concurrency limit."""

from __future__ import annotations

from collections.abc import Callable

import pyredislua
from pyredislua.ratelimit import GCRA, ConcurrencyLimiter, SlidingLog, hit_all

ORDER = 30


def demo(client: pyredislua.Client, say: Callable[[str], None]) -> None:
    api = GCRA(client, "demo-api", "5/s", burst=3)
    say("GCRA 5/s with a burst of 3: eight requests arrive at once")
    for i in range(8):
        d = api.hit("alice")
        verdict = "admitted" if d.allowed else f"denied, retry in {d.retry_after_ms} ms"
        say(f"  request {i + 1}: {verdict} (remaining {d.remaining})")
    big = api.hit("alice", cost=4)
    say(f"a request costing 4 (more than the burst of 3): allowed={big.allowed}, "
        f"retry_after_ms={big.retry_after_ms} (-1: never), nothing charged")

    per_user = SlidingLog(client, "demo-user", "2/10s")
    per_tenant = SlidingLog(client, "demo-tenant", "3/10s")
    say("per-user 2/10s and per-tenant 3/10s, charged together or not at all "
        "(keys share the tag {acme})")
    for user in ("ann", "ann", "ann", "bob", "cid"):
        d = hit_all(client, [(per_user, user), (per_tenant, "acme")], tag="acme")
        which = "per-user" if d.binding == 0 else "per-tenant"
        say(f"  {user}: {'admitted' if d.allowed else 'denied by the ' + which + ' limit'}")

    jobs = ConcurrencyLimiter(client, "demo-jobs", 2, ttl=5)
    a, b, c = (jobs.acquire("render") for _ in range(3))
    say(f"concurrency limit 2: three workers ask for a slot -> {a.acquired}, {b.acquired}, "
        f"{c.acquired}")
    jobs.release(a)
    say(f"the first releases its lease; a new worker gets a slot: "
        f"{jobs.acquire('render').acquired} (a dead worker's lease would end within 5 s)")
