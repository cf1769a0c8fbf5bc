"""The Redlock façade: one class over N sync clients or N asyncio clients, and the two thin
drivers that fan a step out to the nodes (a thread pool, or ``asyncio.gather``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar, overload

from ..client import AsyncClient, Client
from ..engine.protocol import Sleep
from ..kit import ms
from ..lock.block import HeldInBlock
from ..lock.watchdog import TaskWatchdog, ThreadWatchdog
from .core import Fan, FanPlan
from .hold import RedlockHold

C = TypeVar("C", Client, AsyncClient)
T = TypeVar("T")

# -- drivers ------------------------------------------------------------------------------------

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_guard = threading.Lock()
# Threads are made on demand. A node slower than the others leaves its call running after a
# majority answered, until its deadline (node_timeout): at most cycles/s x node_timeout of them.
POOL_THREADS = 256


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """One pool per process for every sync Redlock (re-made after a fork). Its tasks are single
    node plans bounded by their deadlines; none submits another, so it cannot deadlock."""
    global _pool, _pool_pid
    with _pool_guard:
        if _pool is None or _pool_pid != os.getpid():
            _pool = concurrent.futures.ThreadPoolExecutor(POOL_THREADS,
                                                          thread_name_prefix="pyredislua-redlock")
            _pool_pid = os.getpid()
        return _pool


# How long past a fan's deadline its driver still waits for a reply already in flight.
FAN_GRACE = 0.05


def _give_up_at(fan: Fan) -> float:
    return math.inf if fan.deadline is None else fan.deadline + FAN_GRACE


def _linger(fan: Fan, started: float) -> float:
    return max(0.001, fan.linger * (time.monotonic() - started))


def _run_into(results: queue.SimpleQueue[tuple[int, Any]], node: int, client: Client,
              plan: Any, before: concurrent.futures.Future[None] | None) -> None:
    if before is not None:  # this Redlock's previous call to the node, still running
        concurrent.futures.wait([before])
    try:
        value = client.drive(plan)
    except Exception as error:  # the plan's caller decides what a node's failure means
        value = error
    results.put((node, value))


class SyncNodes:
    """Runs Redlock plans on sync clients: a ``Fan`` step's node plans in parallel, on a shared
    thread pool.

    One lane per node: a call to a node starts only once this Redlock's previous call to it has
    its reply (or its deadline passed), so a release can never overtake, on a node that was slow
    to answer, the acquire it undoes (the acquire would then hold that node until its lease
    ended)."""

    def __init__(self, clients: Sequence[Client]) -> None:
        self.clients = tuple(clients)
        self._lanes: dict[int, concurrent.futures.Future[None]] = {}
        self._guard = threading.Lock()

    def drive(self, plan: FanPlan[T]) -> T:
        send: Any = None
        while True:
            try:
                step = plan.send(send)
            except StopIteration as done:
                result: T = done.value
                return result
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                send = None
                continue
            send = self._fan(step)

    def _fan(self, fan: Fan) -> dict[int, Any]:
        started = time.monotonic()
        pool = _executor()
        results: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        with self._guard:
            for node, plan in fan.plans:
                before = self._lanes.get(node)
                if before is not None and before.done():
                    before = None
                self._lanes[node] = pool.submit(_run_into, results, node, self.clients[node],
                                                plan, before)
        replies: dict[int, Any] = {}
        linger_until: float | None = None
        give_up = _give_up_at(fan)
        while len(replies) < len(fan.plans):  # until enough said yes, and the linger is over
            until = give_up if linger_until is None else min(linger_until, give_up)
            wait = None if until == math.inf else max(0.0, until - time.monotonic())
            try:
                node, value = results.get(timeout=wait)
            except queue.Empty:
                break  # the others run on to their deadlines
            replies[node] = value
            if linger_until is None and fan.satisfied(replies):
                if not fan.linger:
                    break
                linger_until = time.monotonic() + _linger(fan, started)
        return replies


class AsyncNodes:
    """Runs Redlock plans on asyncio clients: a ``Fan`` step's node plans as tasks, one lane per
    node as :class:`SyncNodes` has."""

    def __init__(self, clients: Sequence[AsyncClient]) -> None:
        self.clients = tuple(clients)
        self._lanes: dict[int, asyncio.Future[Any]] = {}

    async def drive(self, plan: FanPlan[T]) -> T:
        send: Any = None
        while True:
            try:
                step = plan.send(send)
            except StopIteration as done:
                result: T = done.value
                return result
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                send = None
                continue
            send = await self._fan(step)

    async def _fan(self, fan: Fan) -> dict[int, Any]:
        started = time.monotonic()
        by_task: dict[asyncio.Future[Any], int] = {}
        for node, plan in fan.plans:
            before = self._lanes.get(node)
            if before is not None and before.done():
                before = None
            call: asyncio.Future[Any] = asyncio.ensure_future(
                _outcome_async(self.clients[node], plan, before))
            self._lanes[node] = call
            by_task[call] = node
        replies: dict[int, Any] = {}
        pending = set(by_task)
        give_up = _give_up_at(fan)
        try:
            while pending:  # until enough said yes; the others run on to their deadlines
                left = None if give_up == math.inf else max(0.0, give_up - time.monotonic())
                done, pending = await asyncio.wait(pending, timeout=left,
                                                   return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break  # past the calls' deadline: the rest count as not answered
                for task in done:
                    replies[by_task[task]] = task.result()
                if fan.satisfied(replies):
                    if fan.linger and pending:
                        done, pending = await asyncio.wait(pending,
                                                           timeout=_linger(fan, started))
                        for task in done:
                            replies[by_task[task]] = task.result()
                    break
        finally:
            for task in pending:  # kept referenced until done (each ends by its deadline)
                _background.add(task)
                task.add_done_callback(_background.discard)
        return replies


_background: set[asyncio.Future[Any]] = set()


async def _outcome_async(client: AsyncClient, plan: Any, before: asyncio.Future[Any] | None
                         ) -> Any:
    if before is not None:  # this Redlock's previous call to the node, still running
        await asyncio.wait([before])
    try:
        return await client.drive(plan)
    except Exception as error:
        return error


# -- the façade ----------------------------------------------------------------------------------


class Redlock(RedlockHold, HeldInBlock, Generic[C]):
    """The Redlock algorithm over N independent Redis masters (no replication between them), on
    a list of sync :class:`~pyredislua.Client` or of asyncio :class:`~pyredislua.AsyncClient`::

        nodes = [pyredislua.Client(redis.Redis(port=p)) for p in ports]
        with Redlock(nodes, "orders", ttl=10) as lock:          # Clients: values
            write(..., fence=lock.fence)
        async with Redlock(anodes, "orders", ttl=10) as lock:   # AsyncClients: awaitables
            ...

    The algorithm
    -------------
    Acquire sends ``lock.acquire`` (a random owner token, the lease ``ttl``) to every node at
    once, each call awaited ``node_timeout`` at most. It holds when a majority (n//2+1) granted
    and the validity ``ttl - elapsed - drift`` (drift = 1 % of ttl + 2 ms) is still positive
    once the replies are in; ``valid_until`` is then ``start + ttl - drift`` on the local
    monotonic clock. Otherwise it releases on every node that did not refuse outright (one that
    timed out may have granted) and, when blocking, retries after a random delay
    (``retry_delay`` x [0.5, 1.5)) until ``timeout``: it returns by ``timeout + 2*node_timeout``.
    Release sends ``lock.release`` to every node. Extend (and the watchdog, every ttl/3) sends
    ``lock.extend`` to every node and needs a majority again within the new validity; otherwise
    the hold is lost: released everywhere, ``lost`` true, ``on_lost`` called.

    Fences
    ------
    ``fence`` is the highest of the nodes' fence counters among the nodes that granted, and the
    hold only counts once a majority of them (each held by this token) has a counter at least
    that high: the nodes below it are raised (``redlock.raise``, a second round trip only when
    the counters are out of step). So for two holds whose validity windows do not overlap, the
    later one has the higher fence, **as long as no node loses its fence counter**: durable
    counters (never expiring; the default) and persistence (AOF, ``appendfsync always`` or
    ``everysec`` with the loss window that implies). A node restarted without its data restarts
    its counter at 0 and forgets the lease, so it can grant the same lock to a second holder
    while the first still holds a majority with it, and its next fence can be lower than one
    already handed out. Either persist the fence counters, or keep a restarted node out (down)
    for longer than the longest ``ttl`` before it serves again, as the Redlock specification
    asks: its leases are then over, but fences still need the counters (a majority that
    includes the restarted node may then return a fence already used).

    What it does not guarantee: see the README ("Redlock"). A lease is time-bound (a paused
    holder learns it lost the lock only when it resumes: ``lost``, ``on_lost``,
    LockLostError; use the fence), clocks must advance at about the same rate on all nodes
    and the client (a jump of a node's clock shortens its leases), and the nodes must be
    independent masters: a failover to a replica that missed the lock is a restart without
    persistence.

    Options are those of :class:`~pyredislua.Lock` (``ttl``, ``auto_renew``, ``max_hold``,
    ``on_lost``, ``blocking_timeout``, ``token``, ``prefix``) plus ``node_timeout`` (how long a
    node's reply is awaited: much shorter than ``ttl``) and ``retry_delay``. Its keys on each
    node are those of a :class:`~pyredislua.Lock` of the same name (``prl:lock:{name}`` and its
    fence counter), so a Lock and a Redlock of one name exclude each other on that node. On
    asyncio, give each node's ``redis.asyncio.Redis`` ``retry=Retry(NoBackoff(), 0)``: Redlock
    retries by itself, and redis-py's default policy keeps re-connecting to a dead node until
    the node timeout, in the background, on every call.
    """

    def __init__(
        self,
        clients: Sequence[C],
        name: str,
        *,
        ttl: float = 30.0,
        node_timeout: float = 0.1,
        retry_delay: float = 0.2,
        auto_renew: bool = True,
        max_hold: float | None = None,
        on_lost: Callable[[Any], None] | None = None,
        blocking_timeout: float | None = None,
        token: str | None = None,
        prefix: str = "prl",
    ) -> None:
        clients = list(clients)
        if not clients:
            raise ValueError("Redlock needs at least one node")
        is_async = isinstance(clients[0], AsyncClient)
        if any(isinstance(c, AsyncClient) != is_async for c in clients):
            raise TypeError("Redlock's clients must be all sync Clients or all AsyncClients")
        if any(c._cluster for c in clients):
            raise TypeError("Redlock's nodes are independent standalone masters, not a cluster")
        super().__init__([c.engine for c in clients], name, ttl=ttl, node_timeout=node_timeout,
                         retry_delay=retry_delay, auto_renew=auto_renew, max_hold=max_hold,
                         on_lost=on_lost, blocking_timeout=blocking_timeout, token=token,
                         prefix=prefix)
        self._clients: list[C] = clients
        self._driver: SyncNodes | AsyncNodes
        self._watchdog: ThreadWatchdog | TaskWatchdog
        if is_async:
            self._driver = AsyncNodes(clients)  # type: ignore[arg-type]
            self._watchdog = TaskWatchdog(self._driver, self)
        else:
            self._driver = SyncNodes(clients)  # type: ignore[arg-type]
            self._watchdog = ThreadWatchdog(self._driver, self)

    _what = "a Redlock"

    def _on_asyncio(self) -> bool:
        return isinstance(self._driver, AsyncNodes)

    @property
    def clients(self) -> list[C]:
        return self._clients

    def _on_acquired(self) -> None:
        if self.auto_renew:
            self._watchdog.start()

    def _drive(self, plan: FanPlan[T]) -> Any:
        return self._driver.drive(plan)

    @overload
    def acquire(self: Redlock[Client], blocking: bool = True, timeout: float | None = None
                ) -> bool: ...
    @overload
    def acquire(self: Redlock[AsyncClient], blocking: bool = True, timeout: float | None = None
                ) -> Awaitable[bool]: ...
    def acquire(self, blocking: bool = True, timeout: float | None = None
                ) -> bool | Awaitable[bool]:
        """Acquire on a majority; ``timeout`` in seconds (None: retry forever). Not blocking:
        one attempt. Returns False when not acquired (``last_attempt.reason`` says why)."""
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        result: bool | Awaitable[bool] = self._drive(self._acquire_plan(blocking, timeout))
        return result

    @overload
    def release(self: Redlock[Client]) -> None: ...
    @overload
    def release(self: Redlock[AsyncClient]) -> Awaitable[None]: ...
    def release(self) -> Awaitable[None] | None:
        """Release on every node (renewal stops first; shielded from cancellation under
        asyncio). Raises LockNotOwnedError when nothing valid was held and no majority
        released."""
        result: Awaitable[None] | None = self._watchdog.release(self._release_plan())
        return result

    @overload
    def extend(self: Redlock[Client], ttl: float | None = None) -> None: ...
    @overload
    def extend(self: Redlock[AsyncClient], ttl: float | None = None) -> Awaitable[None]: ...
    def extend(self, ttl: float | None = None) -> Awaitable[None] | None:
        """Renew the lease to ``ttl`` (default: the lock's) from now on a majority. Raises
        LockLostError when no majority renewed in time (the hold is then released everywhere
        and ``lost``)."""
        ttl_ms = self.ttl_ms if ttl is None else ms(ttl)
        result: Awaitable[None] | None = self._watchdog.exclusive(self._extend_plan(ttl_ms))
        return result

