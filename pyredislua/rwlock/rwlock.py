"""The read-write lock façade: one class, on a sync or an asyncio client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, overload

from ..client import AsyncClient, Client
from .handle import RWHandle
from .ops import RWLockKeys, RWLockState, inspect_call

C = TypeVar("C", Client, AsyncClient)


class RWLock(Generic[C]):
    """A distributed read-write lock: many readers or one writer, first come first served, on a
    sync :class:`~pyredislua.Client` or an asyncio :class:`~pyredislua.AsyncClient`::

        rw = RWLock(client, "catalog", ttl=10)
        with rw.read():                      # shares with other readers
            ...
        with rw.write() as w:                # alone; w.fence is its fencing token
            store.put(..., fence=w.fence)
        async with RWLock(aclient, "catalog").write() as w:   # AsyncClient: the same, awaited
            ...

    ``read()`` and ``write()`` make a new :class:`RWHandle` (its own token) each time; a handle
    is a context manager and has ``acquire`` / ``release`` / ``extend``.

    Guarantee, and its limits
    -------------------------
    On a single Redis primary, while a writer's lease runs nobody else holds (no reader, no
    other writer), and readers share only with readers. Grants follow arrival order: a waiter
    is served before everyone who queued after it, so a stream of readers cannot starve a
    writer (a reader arriving while a writer waits queues behind it) and a writer waits for the
    readers that hold, not for those that come later. Consecutive readers at the head of the
    queue are granted together. A non-blocking acquire succeeds only if nobody waits ahead.

    Each holder has its own lease (``ttl``), renewed by the lock's watchdog while held
    (``auto_renew``, capped by ``max_hold``); a crashed reader's share, or a crashed writer's
    hold, ends with its lease, and waiters then go ahead. Every writer hold gets a **fencing
    token** (``handle.fence``) from a counter that never goes backwards; pass it with every
    write to the protected resource and have the resource reject lower fences: a lease can end
    while its holder is paused (GC, swapping) and it then writes beside the next holder. Readers
    get no fence of their own (``fence`` is the last writer's); a reader paused past its lease
    may read while a writer writes, which only the resource can detect.

    The limits of :class:`~pyredislua.lock.Lock` apply as they are: asynchronous replication
    (a failover may forget holders and queue), ``maxmemory-policy`` must be ``noeviction``,
    leases run on the server's clock.

    Waiting is not polling: a waiter registers in the queue and blocks (BLPOP) on the lock's
    signal list. The call that frees the head of the queue (a release, or any call after a
    lease ran out) grants it the lock in the same script and pushes one wake-up per registered
    waiter: every blocked waiter wakes once, the grantees claim their grant with their next
    call, the others block again (a grant costs one round trip per waiter; a waiter that took a
    wake-up meant for an unclaimed grant passes it back). A grantee stays registered, at the
    head, until it claims; its grant lasts ``handoff`` (30 ms) and is made again while it is
    registered, so a grantee that wakes late loses nothing and a wake-up that went astray costs
    about that window. A waiter also asks again when a holder's lease (or an unclaimed grant)
    would run out by itself. A granted waiter that died is passed over when its registration
    ends (at most the client's ``max_block`` plus 250 ms). At most 64 queue entries are looked
    at per grant (a longer run of waiting readers is granted in steps) and at most 1000
    wake-ups are pushed.

    Keys (one hash tag, ``prl:rwlock:{name}`` and five suffixes): the writer's hash (expires
    with its lease), the readers' zset (expires with the last lease it was given), the queue and
    deadlines zsets (expire with the last registration), the signal list (expires with its
    grants) and the fence counter, which never expires.
    """

    def __init__(self, client: C, name: str, *, ttl: float = 30.0, auto_renew: bool = True,
                 max_hold: float | None = None, on_lost: Callable[[Any], None] | None = None,
                 blocking_timeout: float | None = None, prefix: str = "prl",
                 handoff: float = 0.03) -> None:
        self._client: C = client
        self.name = name
        self.prefix = prefix
        self.keys = RWLockKeys(name, prefix)
        self.ttl = ttl
        self.auto_renew = auto_renew
        self.max_hold = max_hold
        self.on_lost = on_lost
        self.blocking_timeout = blocking_timeout
        self.handoff = handoff

    @property
    def client(self) -> C:
        return self._client

    def _handle(self, mode: str, token: str | None, ttl: float | None,
                blocking_timeout: float | None) -> RWHandle[C]:
        return RWHandle(self._client, self.name, "read" if mode == "read" else "write",
                        ttl=self.ttl if ttl is None else ttl, auto_renew=self.auto_renew,
                        max_hold=self.max_hold, on_lost=self.on_lost,
                        blocking_timeout=(self.blocking_timeout if blocking_timeout is None
                                          else blocking_timeout),
                        token=token, prefix=self.prefix, handoff=self.handoff)

    def read(self, *, token: str | None = None, ttl: float | None = None,
             blocking_timeout: float | None = None) -> RWHandle[C]:
        """A new read-share handle (not acquired yet: ``with`` or ``acquire()`` does)."""
        return self._handle("read", token, ttl, blocking_timeout)

    def write(self, *, token: str | None = None, ttl: float | None = None,
              blocking_timeout: float | None = None) -> RWHandle[C]:
        """A new write-lock handle (not acquired yet: ``with`` or ``acquire()`` does)."""
        return self._handle("write", token, ttl, blocking_timeout)

    @overload
    def inspect(self: RWLock[Client]) -> RWLockState: ...
    @overload
    def inspect(self: RWLock[AsyncClient]) -> Awaitable[RWLockState]: ...
    def inspect(self) -> RWLockState | Awaitable[RWLockState]:
        """The lock's state on the server (one read-only call)."""
        return self._client.run(inspect_call(self.keys))

    def __repr__(self) -> str:
        return f"<RWLock {self.name!r}>"
