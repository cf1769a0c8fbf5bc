"""Optimistic concurrency: compare-and-set on versioned values (Lua operations any client can
FCALL) and a WATCH/MULTI/EXEC helper for any read-modify-write, sync and asyncio; both retry
on conflict with backoff and jitter, within a bound, and count their conflicts."""

from ..errors import AmbiguousWriteError, ConflictError, TooManyConflictsError
from .ops import (
    KEEP,
    Backoff,
    Entry,
    Stats,
    Transacted,
    Updated,
    UpdatedMany,
    Written,
    WrittenMany,
    delete_call,
    get_call,
    get_many_call,
    item_key,
    set_call,
    set_many_call,
)
from .transactions import Optimistic
from .versioned import Versioned

__all__ = [
    "KEEP",
    "AmbiguousWriteError",
    "Backoff",
    "ConflictError",
    "Entry",
    "Optimistic",
    "Stats",
    "TooManyConflictsError",
    "Transacted",
    "Updated",
    "UpdatedMany",
    "Versioned",
    "Written",
    "WrittenMany",
    "delete_call",
    "get_call",
    "get_many_call",
    "item_key",
    "set_call",
    "set_many_call",
]
