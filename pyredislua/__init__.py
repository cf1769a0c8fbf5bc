"""pyredislua: atomic Redis primitives as versioned Lua, callable from Python (sync and asyncio),
from ``redis-cli`` with ``FCALL``, or from any Redis client."""

from .client import AsyncClient, AsyncPipeline, Client, Pipeline
from .engine.protocol import Call, Durability, LoadReport, Shortfall
from .engine.render import Library, Operation, render_library
from .errors import (
    BadArgumentError,
    BadStateError,
    DurabilityError,
    InternalScriptError,
    LibraryConflictError,
    LibraryError,
    LibraryPermissionError,
    LockError,
    LockLostError,
    LockNotOwnedError,
    NotFoundError,
    OperationError,
    PermitLostError,
    PyRedisLuaError,
    RedisVersionError,
    SemaphoreError,
    SemaphoreTimeoutError,
    StaleTokenError,
    WrongTypeError,
)
from .lock import Lock, LockSet, LockState, LockTimeoutError, MultiLock, ReentrantLock
from .redlock import Redlock
from .semaphore import Permit, Semaphore

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncPipeline",
    "BadArgumentError",
    "BadStateError",
    "Call",
    "Client",
    "Durability",
    "DurabilityError",
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
    "LockSet",
    "LockState",
    "LockTimeoutError",
    "MultiLock",
    "NotFoundError",
    "Operation",
    "OperationError",
    "Permit",
    "PermitLostError",
    "Pipeline",
    "PyRedisLuaError",
    "RedisVersionError",
    "Redlock",
    "ReentrantLock",
    "Semaphore",
    "SemaphoreError",
    "SemaphoreTimeoutError",
    "Shortfall",
    "StaleTokenError",
    "WrongTypeError",
    "render_library",
]
