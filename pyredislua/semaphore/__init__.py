"""A counting semaphore: permits under leases, fair hand-off to queued waiters, fencing tokens.

Read :class:`Semaphore` (``semaphore.py``) first: its docstring states the guarantee and its
limits. The package, from the Lua contract up:

* ``ops.py``: the keys (``lua/keysets/semaphore.keys``, and a waiter's inbox) and one call
  spec per Lua operation (acquire, release, renew, forward, inspect);
* ``plans.py``: the blocking acquire (queue, BLPOP a grant, forward another's, claim its own);
* ``semaphore.py``: :class:`Semaphore`, one class on a sync or an asyncio client, and
  :class:`Permit`, what it hands out (renewed by the lock's watchdog);
* ``commands.py``, ``bench.py``, ``demo.py``: ``pyredislua semaphore ...``,
  ``pyredislua bench semaphore`` (against the polled concurrency limiter), the demo section.

The concurrency limiter (:class:`~pyredislua.ratelimit.ConcurrencyLimiter`) is this semaphore's
non-waiting half: its Lua operations keep the same permit state through the same include
(``lua/includes/semaphore.lua``), one permit per lease.
"""

from .ops import (
    GRANT_PREFIX,
    MAX_PERMITS,
    AcquireReply,
    Grant,
    ReleaseReply,
    SemaphoreKeys,
    SemaphoreState,
    acquire_call,
    forward_call,
    inbox,
    inspect_call,
    parse_grant,
    release_call,
    renew_call,
)
from .plans import Acquired, acquire_plan
from .semaphore import Permit, PermitHold, Semaphore

__all__ = [
    "GRANT_PREFIX",
    "MAX_PERMITS",
    "AcquireReply",
    "Acquired",
    "Grant",
    "Permit",
    "PermitHold",
    "ReleaseReply",
    "Semaphore",
    "SemaphoreKeys",
    "SemaphoreState",
    "acquire_call",
    "acquire_plan",
    "forward_call",
    "inbox",
    "inspect_call",
    "parse_grant",
    "release_call",
    "renew_call",
]
