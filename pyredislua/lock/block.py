"""What every lease holder shares, written once: ``with`` on a sync client and ``async with`` on
an asyncio one (:class:`HeldInBlock`: Lock, ReentrantLock, LockSet, MultiLock, Redlock and the
read-write lock's handles), and a Hold bound to one client with its watchdog
(:class:`ClientHold`)."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

from ..client import AsyncClient, Client
from ..errors import LockNotOwnedError
from .hold import Hold
from .watchdog import TaskWatchdog, ThreadWatchdog

H = TypeVar("H", bound="HeldInBlock")
C = TypeVar("C", Client, AsyncClient)


class HeldInBlock:
    """Entering acquires, blocking up to ``blocking_timeout`` (``LockTimeoutError`` after it);
    leaving releases (a hold already gone is no error there) and then raises ``LockLostError``
    when the hold was lost while the block ran and the block raised nothing else.

    A class using it has ``acquire(blocking, timeout)``, ``release()``, ``blocking_timeout``,
    ``_timeout_error()``, ``_exit_error(exc_type)`` and ``_on_asyncio()`` (whether it runs on
    asyncio clients); ``_what`` names it when the wrong kind of ``with`` is used."""

    _what: ClassVar[str] = "a lock"

    def _on_asyncio(self) -> bool:
        raise NotImplementedError

    def __enter__(self: H) -> H:
        me: Any = self  # acquire and release are typed per client kind (overloads) in each class
        if me._on_asyncio():
            raise TypeError(f"{me._what} on an AsyncClient is entered with 'async with'")
        if not me.acquire(blocking=True, timeout=me.blocking_timeout):
            raise me._timeout_error()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        me: Any = self
        with contextlib.suppress(LockNotOwnedError):
            me.release()
        error = me._exit_error(exc_type)
        if error is not None:
            raise error

    async def __aenter__(self: H) -> H:
        me: Any = self
        if not me._on_asyncio():
            raise TypeError(f"{me._what} on a sync Client is entered with 'with'")
        if not await me.acquire(blocking=True, timeout=me.blocking_timeout):
            raise me._timeout_error()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        me: Any = self
        with contextlib.suppress(LockNotOwnedError):
            await me.release()
        error = me._exit_error(exc_type)
        if error is not None:
            raise error


class ClientHold(Hold, HeldInBlock, Generic[C]):
    """A :class:`~.hold.Hold` run by one client, sync or asyncio, with its watchdog: the base of
    Lock, ReentrantLock, LockSet and the read-write lock's handles. Subclasses call
    :meth:`_bind` in ``__init__`` once the Hold is set up."""

    _client: C
    _watchdog: ThreadWatchdog | TaskWatchdog

    def _bind(self, client: C) -> None:
        self._client = client
        self._watchdog = (TaskWatchdog(client, self) if isinstance(client, AsyncClient)
                          else ThreadWatchdog(client, self))

    def _on_asyncio(self) -> bool:
        return isinstance(self._client, AsyncClient)

    @property
    def client(self) -> C:
        return self._client

    def _on_acquired(self) -> None:
        if self.auto_renew:
            self._watchdog.start()

    def _on_carried(self, until: float) -> None:
        self._watchdog.carry(self, until)
