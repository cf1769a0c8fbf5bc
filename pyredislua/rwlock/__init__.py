"""A distributed read-write lock: many readers or one writer, FIFO-fair, with leases per
holder, the lock's watchdog, fencing tokens for writers and BLPOP hand-off instead of polling.

Read :class:`RWLock` (``rwlock.py``) first: its docstring states the guarantee and its limits.
``ops.py``: the keys (``lua/keysets/rwlock.keys``), one call spec per Lua operation and the
blocking acquire plan; ``handle.py``: one holder (a read share or the write lock).
"""

from .handle import RWHandle
from .ops import (
    MODES,
    Mode,
    RWLockKeys,
    RWLockState,
    acquire_call,
    acquire_plan,
    extend_call,
    inspect_call,
    release_call,
)
from .rwlock import RWLock

__all__ = [
    "MODES",
    "Mode",
    "RWHandle",
    "RWLock",
    "RWLockKeys",
    "RWLockState",
    "acquire_call",
    "acquire_plan",
    "extend_call",
    "inspect_call",
    "release_call",
]
