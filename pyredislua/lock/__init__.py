"""A distributed lock with fencing tokens, fair hand-off and an auto-renewal watchdog.

Read :class:`Lock` (``lock.py``) first: its docstring states the guarantee and its limits. The
package, from the Lua contract up:

* ``ops.py``: the keys (``lua/keysets/lock.keys``) and one call spec per Lua operation;
* ``plans.py``: the multi-step plans (a blocking acquire waiting for a grant, a re-sent release);
* ``hold.py``: what one lock object knows of its hold, and the plans that change it (no I/O);
* ``watchdog.py``: renewal in the background, a thread per sync client or a task per lock;
* ``lock.py``: :class:`Lock`, one class on a sync or an asyncio client.
"""

from .hold import REQUEUE_MS, Lease, LockTimeoutError
from .lock import Lock
from .ops import (
    GRANT_PREFIX,
    RELEASED_FREE,
    RELEASED_GRANTED,
    RELEASED_UNCONFIRMED,
    AcquireResult,
    FenceDurability,
    LockKeys,
    LockState,
    acquire_call,
    extend_call,
    fence_ttl_ms,
    inspect_call,
    parse_grant,
    release_call,
)
from .plans import Acquired, acquire_plan, registration_ms, release_plan

__all__ = [
    "GRANT_PREFIX",
    "RELEASED_FREE",
    "RELEASED_GRANTED",
    "RELEASED_UNCONFIRMED",
    "REQUEUE_MS",
    "AcquireResult",
    "Acquired",
    "FenceDurability",
    "Lease",
    "Lock",
    "LockKeys",
    "LockState",
    "LockTimeoutError",
    "acquire_call",
    "acquire_plan",
    "extend_call",
    "fence_ttl_ms",
    "inspect_call",
    "parse_grant",
    "registration_ms",
    "release_call",
    "release_plan",
]
