"""A distributed lock with fencing tokens, fair hand-off and an auto-renewal watchdog.

Read :class:`Lock` (``lock.py``) first: its docstring states the guarantee and its limits. The
package, from the Lua contract up:

* ``ops.py``: the keys (``lua/keysets/lock.keys``) and one call spec per Lua operation;
* ``plans.py``: the multi-step plans (a blocking acquire waiting for a grant, a re-sent release);
* ``hold.py``: what one lock object knows of its hold, and the plans that change it (no I/O);
* ``watchdog.py``: renewal in the background, a thread per sync client or a task per lock;
* ``lock.py``: :class:`Lock`, one class on a sync or an asyncio client;
* ``multi.py``: several locks at once without deadlock: :class:`LockSet` (one hash tag, all or
  none in one call) and :class:`MultiLock` (any slots, taken in one global order);
* ``reentrant.py``: :class:`ReentrantLock`, taken again by its owner, released as many times.
"""

from .hold import REQUEUE_MS, LockTimeoutError
from .lease import Lease
from .lock import Lock
from .multi import (
    AllResult,
    LockSet,
    MultiLock,
    acquire_all_call,
    acquire_all_plan,
    extend_all_call,
    release_all_plan,
)
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
from .reentrant import (
    ReentrantKeys,
    ReentrantLock,
    ReentrantRelease,
    ReentrantResult,
    reentrant_acquire_call,
    reentrant_acquire_plan,
    reentrant_extend_call,
    reentrant_release_call,
)

__all__ = [
    "GRANT_PREFIX",
    "RELEASED_FREE",
    "RELEASED_GRANTED",
    "RELEASED_UNCONFIRMED",
    "REQUEUE_MS",
    "AcquireResult",
    "Acquired",
    "AllResult",
    "FenceDurability",
    "Lease",
    "Lock",
    "LockKeys",
    "LockSet",
    "LockState",
    "LockTimeoutError",
    "MultiLock",
    "ReentrantKeys",
    "ReentrantLock",
    "ReentrantRelease",
    "ReentrantResult",
    "acquire_all_call",
    "acquire_all_plan",
    "acquire_call",
    "acquire_plan",
    "extend_all_call",
    "extend_call",
    "fence_ttl_ms",
    "inspect_call",
    "parse_grant",
    "reentrant_acquire_call",
    "reentrant_acquire_plan",
    "reentrant_extend_call",
    "reentrant_release_call",
    "registration_ms",
    "release_all_plan",
    "release_call",
    "release_plan",
]
