"""Typed exceptions, and the mapping from Lua error replies to them.

Every error a pyredislua operation replies with reads ``PYREDISLUA:<CODE> <message>``: the code is
stable (part of an operation's contract, listed in its header), the message is for people. Putting
the code first also makes ``INFO errorstats`` count each code separately
(``errorstat_PYREDISLUA:BADARG``).
"""

from __future__ import annotations

import asyncio
import re

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

ERROR_PREFIX = "PYREDISLUA:"
_CODE_RE = re.compile(r"PYREDISLUA:([A-Z][A-Z0-9_]*)\s?(.*)", re.S)


class PyRedisLuaError(Exception):
    """Base class of every error raised by pyredislua."""


class OperationError(PyRedisLuaError, ResponseError):
    """A Lua operation replied with a ``PYREDISLUA:<CODE>`` error; nothing was changed by it."""

    code = "ERROR"

    def __init__(self, message: str, *, code: str | None = None, operation: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.operation = operation

    def __str__(self) -> str:
        where = f"{self.operation}: " if self.operation else ""
        return f"{where}{self.code}: {self.message}"


class BadArgumentError(OperationError, ValueError):
    """BADARG: an argument or the number of keys is invalid. The call changed nothing."""

    code = "BADARG"


class InternalScriptError(OperationError):
    """INTERNAL: the Lua code failed unexpectedly (a bug in pyredislua; please report it)."""

    code = "INTERNAL"


class StaleTokenError(OperationError):
    """STALE: a lease or claim token is no longer the live one. The call changed nothing."""

    code = "STALE"


class NotFoundError(OperationError, LookupError):
    """NOTFOUND: the record an operation names does not exist."""

    code = "NOTFOUND"


class BadStateError(OperationError):
    """BADSTATE: a key holds data of another shape than the operation keeps there (written by
    something else). The call changed nothing."""

    code = "BADSTATE"


class WrongTypeError(BadStateError):
    """WRONGTYPE: a key the operation declares holds another Redis type (a string where a hash
    belongs, ...). The call changed nothing."""

    code = "WRONGTYPE"


_BY_CODE: dict[str, type[OperationError]] = {
    cls.code: cls
    for cls in (BadArgumentError, InternalScriptError, StaleTokenError, NotFoundError,
                BadStateError, WrongTypeError)
}


def from_reply(error: BaseException, operation: str | None = None) -> BaseException:
    """The typed exception for an error reply, or the error itself when it is not ours."""
    m = _CODE_RE.search(str(error))
    if not m:
        return error
    code, message = m.group(1), m.group(2).strip()
    cls = _BY_CODE.get(code, OperationError)
    return cls(message, code=code, operation=operation)


# Error replies (first word) after which the same call may succeed: a script running too long,
# too few replicas, a failed RDB save refusing writes, a blocking call cut off by a failover.
_TRANSIENT_CODES = frozenset({"BUSY", "NOREPLICAS", "MISCONF", "UNBLOCKED", "LOADING",
                              "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN"})


def transient(error: BaseException) -> bool:
    """Whether the same call may succeed later, so a long-running loop (a worker, a flusher)
    should back off and try again rather than stop: Redis unreachable, restarting, loading its
    data, paused (timeouts), out of memory (``maxmemory`` with ``noeviction``), read-only or
    failing over, busy with a long script. Not: a wrong password or a missing permission, a bad
    argument, a key of the wrong type, a library conflict — retrying changes nothing."""
    if isinstance(error, (AuthenticationError, AuthorizationError)):
        return False
    if isinstance(error, (RedisConnectionError, RedisTimeoutError, OSError,
                          asyncio.TimeoutError)):
        return True  # includes LOADING (BusyLoadingError) and NotSentError
    if isinstance(error, (OutOfMemoryError, ReadOnlyError, TryAgainError, ClusterDownError)):
        return True
    if isinstance(error, ResponseError) and not isinstance(error, OperationError):
        return str(error).split(" ", 1)[0] in _TRANSIENT_CODES
    return False


class LibraryError(PyRedisLuaError):
    """The server's copy of the Lua library cannot be used or replaced safely."""


class LibraryConflictError(LibraryError):
    """The server holds a library of the same version with different code, or lacks a function."""


class LibraryPermissionError(LibraryError, PermissionError):
    """The Redis user may not load the code (an ACL refuses the command named in the message).
    Load it once as a user who may (``pyredislua load``), or use ``mode="auto"``, which falls back
    to scripts."""


class LockError(PyRedisLuaError):
    """Base class of lock errors."""


class LockNotOwnedError(LockError):
    """The lock is not held by this owner token (it expired, or was never acquired)."""


class LockLostError(LockError):
    """The lease ran out while the holder still believed it held the lock.

    Raised on leaving a ``with`` block when renewal failed or the hold cap was reached: the work
    done inside may have overlapped with another holder. Use the fencing token to make the
    protected resource reject stale writers.
    """


class SemaphoreError(PyRedisLuaError):
    """Base class of semaphore errors."""


class SemaphoreTimeoutError(SemaphoreError, TimeoutError):
    """A blocking acquire did not get its permits within its timeout."""


class PermitLostError(SemaphoreError):
    """A semaphore lease ran out while its holder still believed it held the permits.

    Raised on leaving a ``with`` block when renewal failed or the lease ran out by the local
    clock: the work done inside may have run beside more holders than the semaphore allows. Use
    the fencing token to make the protected resource reject stale holders.
    """


class RedisVersionError(LibraryError):
    """The server is too old for pyredislua (it needs Redis 7.0 or newer)."""


class DurabilityError(PyRedisLuaError):
    """A write ran and was acknowledged by the primary, but fewer replicas than asked for
    confirmed it within the timeout (``WAIT``; see :class:`pyredislua.Durability`).

    The write is *not* undone: ``result`` holds what the operation returned (a held lock, an
    enqueued job id, ...). It may be lost if the primary fails before a replica receives it."""

    def __init__(self, operation: str, wanted: int, confirmed: int, result: object) -> None:
        super().__init__(
            f"{operation}: {confirmed} of {wanted} replica(s) confirmed the write in time")
        self.operation = operation
        self.wanted = wanted
        self.confirmed = confirmed
        self.result = result


class ConflictError(PyRedisLuaError):
    """Base class of the optimistic-concurrency errors (pyredislua.optimistic)."""


class TooManyConflictsError(ConflictError):
    """An optimistic update gave up: every one of its ``attempts`` found the data changed by
    someone else (``conflicts`` of them; the others were interrupted before writing). Nothing
    was written by it."""

    def __init__(self, what: str, attempts: int, conflicts: int) -> None:
        super().__init__(f"{what}: gave up after {attempts} attempt(s), {conflicts} of them "
                         "conflicting with other writers; nothing was written")
        self.attempts = attempts
        self.conflicts = conflicts


class AmbiguousWriteError(ConflictError):
    """The connection failed after a conditional write was sent, and it cannot be told whether
    it ran: retrying as if it had not could apply it twice. ``__cause__`` is the connection
    error; ``attempts`` and ``conflicts`` count what came before."""

    def __init__(self, what: str, attempts: int = 1, conflicts: int = 0) -> None:
        super().__init__(f"{what}: the connection failed after the write was sent; it may or may "
                         "not have been applied (not retried: that could apply it twice)")
        self.attempts = attempts
        self.conflicts = conflicts
