"""pyredislua: atomic Redis primitives as versioned Lua, callable from Python (sync and asyncio),
from ``redis-cli`` with ``FCALL``, or from any Redis client."""

from .client import AsyncClient, AsyncPipeline, Client, Pipeline
from .engine.protocol import Call, LoadReport
from .engine.render import Library, Operation, render_library
from .errors import (
    BadArgumentError,
    BadStateError,
    InternalScriptError,
    LibraryConflictError,
    LibraryError,
    LibraryPermissionError,
    LockError,
    LockLostError,
    LockNotOwnedError,
    NotFoundError,
    OperationError,
    PyRedisLuaError,
    StaleTokenError,
    WrongTypeError,
)
from .lock import AsyncLock, Lock, LockState, LockTimeoutError

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncLock",
    "AsyncPipeline",
    "BadArgumentError",
    "BadStateError",
    "Call",
    "Client",
    "InternalScriptError",
    "Library",
    "LibraryConflictError",
    "LibraryError",
    "LibraryPermissionError",
    "LoadReport",
    "Lock",
    "LockError",
    "LockLostError",
    "LockNotOwnedError",
    "LockState",
    "LockTimeoutError",
    "NotFoundError",
    "Operation",
    "OperationError",
    "Pipeline",
    "PyRedisLuaError",
    "StaleTokenError",
    "WrongTypeError",
    "render_library",
]
