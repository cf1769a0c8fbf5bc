"""Executors: drive sans-IO plans on redis-py, sync (``redis.Redis``) and asyncio
(``redis.asyncio.Redis``). The two drivers below are the only code that differs between them."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.retry import Retry

from .engine.protocol import (
    RETRY,
    Batch,
    Call,
    Engine,
    LoadReport,
    Mode,
    NotSentError,
    NotSentTimeoutError,
    Plan,
    Sleep,
)
from .engine.render import Library, render_library

if TYPE_CHECKING:
    from .lock import AsyncLock, Lock
    from .queue import AsyncQueue, Queue

T = TypeVar("T")

# Longest single blocking wait a plan asks for; capped further by the client's socket timeout so
# a BLPOP never trips redis-py's read timeout.
DEFAULT_MAX_BLOCK = 2.0


def _max_block(pool_kwargs: dict[str, Any]) -> float:
    socket_timeout = pool_kwargs.get("socket_timeout")
    if socket_timeout:
        return max(0.001, min(DEFAULT_MAX_BLOCK, float(socket_timeout) * 0.8))
    return DEFAULT_MAX_BLOCK


def _is_cluster(conn: Any) -> bool:
    return hasattr(conn, "get_primaries")


def _sends_once(conn: Any) -> bool:
    """Whether this client can send commands without redis-py's automatic re-send: a plain
    connection pool. Cluster clients and single-connection clients re-send as redis-py does."""
    return not _is_cluster(conn) and getattr(conn, "connection", None) is None


def _not_sent(error: Exception, *_: Any) -> None:
    """Failure handler while connecting: nothing was sent yet, so retrying is safe."""


def _send_once_sync(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send commands in one write on one connection and read their replies, without redis-py's
    automatic re-send: a connection error or timeout once they are written reaches the caller,
    who cannot know whether they ran. Connecting, before anything is written, is retried with
    the client's retry policy. Error replies come back in place, as exceptions."""
    pool = conn.connection_pool
    retry = conn.get_retry()
    connection = (retry.call_with_retry(pool.get_connection, _not_sent) if retry is not None
                  else pool.get_connection())
    try:
        connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for args in commands:
            try:
                replies.append(conn.parse_response(connection, args[0]))
            except ResponseError as error:
                replies.append(error)
        return replies
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


async def _send_once_async(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """:func:`_send_once_sync` on an asyncio client."""
    pool = conn.connection_pool
    retry = conn.get_retry()

    async def _not_sent_async(error: Exception, *_: Any) -> None:
        pass

    connection = (await retry.call_with_retry(pool.get_connection, _not_sent_async)
                  if retry is not None else await pool.get_connection())
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for args in commands:
            try:
                replies.append(await conn.parse_response(connection, args[0]))
            except ResponseError as error:
                replies.append(error)
        return replies
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


# What a command with a deadline gets back, in place of a reply, when it could not complete in
# time or its connection failed: the plan decides (retry until its own deadline, or give up).
_TRANSPORT_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _late(deadline: float) -> redis.exceptions.TimeoutError:
    return redis.exceptions.TimeoutError(
        f"no reply before the deadline ({time.monotonic() - deadline:.3f}s ago)")


class _DeadlineConnections:
    """Connections of a sync client for commands with a deadline (``Command.deadline``).

    redis-py's own connections re-send on a timeout and wait for replies as long as their socket
    timeout says (forever without one), so a command sent to a paused server returns when the
    server wakes. These connections never re-send, connect within the time left (handshake
    included) and wait for each reply only until the deadline; a connection that missed one is
    closed, so a late reply is never read as the answer to a later command. Kept apart from the
    pool: they are created from its settings and closed with the client's process (not counted
    in ``max_connections``)."""

    def __init__(self, conn: Any) -> None:
        pool = conn.connection_pool
        self._callbacks = conn.response_callbacks
        self._cls = pool.connection_class
        kwargs = dict(pool.connection_kwargs)
        kwargs["retry"] = Retry(NoBackoff(), 0)
        self._kwargs = kwargs
        self._connect_timeout = kwargs.get("socket_connect_timeout")
        self._idle: list[Any] = []
        self._guard = threading.Lock()
        self._pid = os.getpid()

    def _take(self) -> Any:
        with self._guard:
            if self._pid != os.getpid():  # forked: the parent's sockets are not ours
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return self._cls(**self._kwargs)

    def _give_back(self, connection: Any) -> None:
        with self._guard:
            if self._pid == os.getpid():
                self._idle.append(connection)

    def run(self, commands: Sequence[tuple[Any, ...]], deadline: float) -> list[Any]:
        connection = self._take()
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotSentTimeoutError(str(_late(deadline)))
            if connection.is_connected and connection.can_read(timeout=0):
                # an idle connection with something to read was closed by the server (it
                # restarted, or CLIENT KILL): reconnect rather than send into it
                connection.disconnect()
            if not connection.is_connected:
                connection.socket_timeout = left
                connection.socket_connect_timeout = min(left, self._connect_timeout or left)
                try:
                    connection.connect()
                except redis.exceptions.TimeoutError as error:
                    raise NotSentTimeoutError(str(error)) from error
                except _TRANSPORT_ERRORS as error:
                    raise NotSentError(str(error)) from error
            connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for args in commands:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _late(deadline)
                try:
                    reply = connection.read_response(timeout=left)
                except ResponseError as error:
                    replies.append(error)
                    continue
                except redis.exceptions.TimeoutError:
                    raise _late(deadline) from None
                callback = self._callbacks.get(args[0])
                replies.append(callback(reply) if callback is not None else reply)
        except _TRANSPORT_ERRORS as error:
            connection.disconnect()
            return [error] * len(commands)
        except BaseException:
            connection.disconnect()
            raise
        self._give_back(connection)
        return replies


def _deadline_of(batch: Batch) -> float | None:
    deadlines = [c.deadline for c in batch if c.deadline is not None]
    return min(deadlines) if deadlines else None


def _run_batch_sync(conn: Any, batch: Batch | Sleep,
                    deadlines: _DeadlineConnections | None = None) -> list[Any]:
    if isinstance(batch, Sleep):
        time.sleep(batch.seconds)
        return []
    deadline = _deadline_of(batch)
    if deadline is not None and deadlines is not None:
        return deadlines.run([c.args for c in batch], deadline)
    if any(c.once for c in batch) and _sends_once(conn):
        return _send_once_sync(conn, [c.args for c in batch])
    if len(batch) == 1:
        cmd = batch[0]
        try:
            if cmd.all_primaries and _is_cluster(conn):
                per_node = conn.execute_command(*cmd.args, target_nodes=conn.PRIMARIES)
                return [list(per_node.values())]
            reply = conn.execute_command(*cmd.args)
        except ResponseError as error:
            reply = error
        return [[reply]] if cmd.all_primaries else [reply]
    if any(c.all_primaries for c in batch) and _is_cluster(conn):
        return [_run_batch_sync(conn, [c])[0] for c in batch]
    pipe = conn.pipeline(transaction=False)
    for cmd in batch:
        pipe.execute_command(*cmd.args)
    replies = pipe.execute(raise_on_error=False)
    return [[r] if c.all_primaries else r for c, r in zip(batch, replies)]


async def _run_by_deadline_async(conn: Any, batch: Batch, deadline: float) -> list[Any]:
    """Commands with a deadline on an asyncio client: sent once, and abandoned (the connection
    closed, so no late reply is misread) when no reply came in time."""
    left = deadline - time.monotonic()
    try:
        if left <= 0:
            raise _late(deadline)
        return await asyncio.wait_for(_send_once_async(conn, [c.args for c in batch]), left)
    except asyncio.TimeoutError:
        return [_late(deadline)] * len(batch)
    except _TRANSPORT_ERRORS as error:
        return [error] * len(batch)


async def _run_batch_async(conn: Any, batch: Batch | Sleep) -> list[Any]:
    if isinstance(batch, Sleep):
        await asyncio.sleep(batch.seconds)
        return []
    deadline = _deadline_of(batch)
    if deadline is not None and _sends_once(conn):
        return await _run_by_deadline_async(conn, batch, deadline)
    if any(c.once for c in batch) and _sends_once(conn):
        return await _send_once_async(conn, [c.args for c in batch])
    if len(batch) == 1:
        cmd = batch[0]
        try:
            if cmd.all_primaries and _is_cluster(conn):
                per_node = await conn.execute_command(*cmd.args, target_nodes=conn.PRIMARIES)
                return [list(per_node.values())]
            reply = await conn.execute_command(*cmd.args)
        except ResponseError as error:
            reply = error
        return [[reply]] if cmd.all_primaries else [reply]
    if any(c.all_primaries for c in batch) and _is_cluster(conn):
        return [(await _run_batch_async(conn, [c]))[0] for c in batch]
    pipe = conn.pipeline(transaction=False)
    for cmd in batch:
        pipe.execute_command(*cmd.args)
    replies = await pipe.execute(raise_on_error=False)
    return [[r] if c.all_primaries else r for c, r in zip(batch, replies)]


class _ClientBase:
    def __init__(self, conn: Any, *, mode: Mode = "auto", library: Library | None = None):
        self.redis = conn
        self.engine = Engine(library or render_library(), mode)
        pool = getattr(conn, "connection_pool", None)
        self.max_block = _max_block(getattr(pool, "connection_kwargs", {}) or {})
        self._once = _sends_once(conn)
        self._deadlines: _DeadlineConnections | None = None

    @property
    def mode(self) -> str:
        """The mode in effect: ``function`` or ``script`` (``auto`` settles on one)."""
        return self.engine.mode

    @property
    def library(self) -> Library:
        return self.engine.library


class Client(_ClientBase):
    """pyredislua on a sync redis-py client (``redis.Redis`` or ``redis.RedisCluster``).

    ``mode``: ``function`` (Redis Functions, FCALL), ``script`` (EVALSHA) or ``auto`` (functions,
    falling back to scripts where FUNCTION is missing or refused by ACL). Code is loaded on first
    use and reloaded transparently after a restart, failover, SCRIPT FLUSH or FUNCTION FLUSH.
    """

    redis: redis.Redis

    def drive(self, plan: Plan[T]) -> T:
        try:
            batch = next(plan)
            while True:
                batch = plan.send(
                    _run_batch_sync(self.redis, batch, self._deadline_connections(batch)))
        except StopIteration as done:
            result: T = done.value
            return result

    def _deadline_connections(self, batch: Batch | Sleep) -> _DeadlineConnections | None:
        if isinstance(batch, Sleep) or not self._once or _deadline_of(batch) is None:
            return None
        if self._deadlines is None:
            self._deadlines = _DeadlineConnections(self.redis)
        return self._deadlines

    def run(self, call: Call[T]) -> T:
        """Run one operation in one round trip (two if its code had to be loaded first)."""
        args = self.engine.args(call)
        if call.op in self.engine.send_once_ops and self._once:
            [reply] = _send_once_sync(self.redis, [args])
        else:
            try:
                reply = self.redis.execute_command(*args)  # type: ignore[no-untyped-call]
            except ResponseError as error:
                reply = error
        outcome = self.engine.settle(call, reply)
        if outcome is RETRY:
            return self.drive(self.engine.run_one(call, reply, replied=True))
        return outcome  # type: ignore[return-value]

    def run_many(self, calls: Sequence[Call[Any]], *, raise_on_error: bool = True) -> list[Any]:
        """Run operations in one pipelined round trip, in order."""
        return self.drive(self.engine.run(calls, raise_on_error=raise_on_error))

    def pipeline(self) -> Pipeline:
        return Pipeline(self)

    def load(self, *, force: bool = False) -> LoadReport:
        return self.drive(self.engine.load(force=force))

    def server_libraries(self) -> dict[str, Any]:
        return self.drive(self.engine.server_state())

    def lock(self, name: str, **options: Any) -> Lock:
        from .lock import Lock

        return Lock(self, name, **options)

    def queue(self, name: str, **options: Any) -> Queue:
        from .queue import Queue

        return Queue(self, name, **options)


class AsyncClient(_ClientBase):
    """pyredislua on an asyncio redis-py client (``redis.asyncio.Redis``); see :class:`Client`."""

    redis: redis.asyncio.Redis

    async def drive(self, plan: Plan[T]) -> T:
        try:
            batch = next(plan)
            while True:
                batch = plan.send(await _run_batch_async(self.redis, batch))
        except StopIteration as done:
            result: T = done.value
            return result

    async def run(self, call: Call[T]) -> T:
        args = self.engine.args(call)
        if call.op in self.engine.send_once_ops and self._once:
            [reply] = await _send_once_async(self.redis, [args])
        else:
            try:
                reply = await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]
            except ResponseError as error:
                reply = error
        outcome = self.engine.settle(call, reply)
        if outcome is RETRY:
            return await self.drive(self.engine.run_one(call, reply, replied=True))
        return outcome  # type: ignore[return-value]

    async def run_many(
        self, calls: Sequence[Call[Any]], *, raise_on_error: bool = True
    ) -> list[Any]:
        return await self.drive(self.engine.run(calls, raise_on_error=raise_on_error))

    def pipeline(self) -> AsyncPipeline:
        return AsyncPipeline(self)

    async def load(self, *, force: bool = False) -> LoadReport:
        return await self.drive(self.engine.load(force=force))

    async def server_libraries(self) -> dict[str, Any]:
        return await self.drive(self.engine.server_state())

    def lock(self, name: str, **options: Any) -> AsyncLock:
        from .lock import AsyncLock

        return AsyncLock(self, name, **options)

    def queue(self, name: str, **options: Any) -> AsyncQueue:
        from .queue import AsyncQueue

        return AsyncQueue(self, name, **options)


class _PipelineBase:
    def __init__(self) -> None:
        self.calls: list[Call[Any]] = []

    def add(self, call: Call[Any]) -> None:
        self.calls.append(call)

    def __len__(self) -> int:
        return len(self.calls)


class Pipeline(_PipelineBase):
    """Collects calls and runs them in one round trip (not a transaction: each operation is
    atomic on its own). ``with client.pipeline() as p: p.add(call); ...; p.execute()``"""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client

    def execute(self, *, raise_on_error: bool = True) -> list[Any]:
        calls, self.calls = self.calls, []
        return self.client.run_many(calls, raise_on_error=raise_on_error)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.calls = []


class AsyncPipeline(_PipelineBase):
    def __init__(self, client: AsyncClient) -> None:
        super().__init__()
        self.client = client

    async def execute(self, *, raise_on_error: bool = True) -> list[Any]:
        calls, self.calls = self.calls, []
        return await self.client.run_many(calls, raise_on_error=raise_on_error)

    async def __aenter__(self) -> AsyncPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.calls = []
