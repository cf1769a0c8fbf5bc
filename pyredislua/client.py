"""Executors: drive sans-IO plans on redis-py, sync (``redis.Redis``, ``redis.RedisCluster``,
Sentinel-managed primaries) and asyncio (the ``redis.asyncio`` twins).

On a standalone server a batch is one pipeline. On a cluster a batch is split three ways:

* commands addressed to nodes (``all_primaries``, ``node``: loading, version checks) run per
  node, each node's in one pipeline, so one node's error never hides another's reply;
* operation calls (FCALL/EVALSHA/EVAL and their read-only forms), each with its pinned ``WAIT``
  if any, are routed here, by the slot of their first key: one pipeline per node, following
  MOVED, ASK and TRYAGAIN, refreshing the slot map and retrying (with a backoff, ~4.5 s in all)
  when a node is down or the cluster is failing over. redis-py's own routing of these commands
  costs a ``COMMAND GETKEYS`` round trip per call (they have "movable keys") and, once its
  default node is dead, fails every such call until the client is rebuilt; and WAIT must run on
  the connection that carried the write.
* anything else (BLPOP, XREADGROUP, ... from multi-step plans) goes through redis-py.

The routing logic is written once, as generators yielding the I/O they need (a pipeline to one
node, a slot-map refresh, a sleep); the sync and asyncio executors below only perform it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    CrossSlotTransactionError,
    MovedError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry

from .engine.protocol import (
    RETRY,
    Batch,
    Call,
    Command,
    Durability,
    Engine,
    LoadReport,
    Mode,
    NotSentError,
    NotSentTimeoutError,
    Plan,
    Sleep,
)
from .engine.render import Library, render_library
from .kit import within

T = TypeVar("T")

# Longest single blocking wait a plan asks for; capped further by the client's socket timeout so
# a BLPOP never trips redis-py's read timeout.
DEFAULT_MAX_BLOCK = 2.0
# How many times a routed call is sent again after a redirect, a node down or a failover in
# progress; the waits between grow from 50 ms to 1 s (about 4.5 s in all).
_ATTEMPTS = 9
_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError)
_ROUTED = frozenset({"FCALL", "FCALL_RO", "EVALSHA", "EVALSHA_RO", "EVAL", "EVAL_RO"})


def _max_block(pool_kwargs: dict[str, Any]) -> float:
    socket_timeout = pool_kwargs.get("socket_timeout")
    if socket_timeout:
        return max(0.001, min(DEFAULT_MAX_BLOCK, float(socket_timeout) * 0.8))
    return DEFAULT_MAX_BLOCK


def _is_cluster(conn: Any) -> bool:
    return hasattr(conn, "get_primaries")


def _sends_once(conn: Any) -> bool:
    """Whether this client can send commands without redis-py's automatic re-send: a plain
    connection pool (cluster clients are routed by the driver, which never re-sends a
    ``once`` call). Single-connection clients re-send as redis-py does."""
    return not _is_cluster(conn) and getattr(conn, "connection", None) is None


def _standalone_node(conn: Any) -> str:
    """The name a standalone server goes by in per-node replies."""
    pool = getattr(conn, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service:  # Sentinel-managed: whichever server is the primary now
        return f"sentinel:{service}"
    kwargs = getattr(pool, "connection_kwargs", {}) or {}
    if kwargs.get("path"):
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _not_sent(error: Exception, *_: Any) -> None:
    """Failure handler while connecting: nothing was sent yet, so retrying is safe."""


def _backoff(attempt: int) -> float:
    return float(min(1.0, 0.05 * 2 ** attempt))


def _wrap_standalone(conn: Any, batch: Batch, replies: list[Any]) -> list[Any]:
    name = _standalone_node(conn)
    return [{name: r} if c.all_primaries else r for c, r in zip(batch, replies)]


# -- cluster routines: the routing logic, as generators of I/O requests -------------------------


@dataclass(frozen=True)
class _OnNode:
    """Pipeline ``commands`` to the node ``host:port``; the reply: their replies, errors in
    place (a node down: its ConnectionError for each)."""

    name: str
    commands: list[tuple[Any, ...]]


@dataclass(frozen=True)
class _Refresh:
    """Update the slot map: from a MOVED reply, or re-read from the cluster."""

    moved: MovedError | None = None


@dataclass(frozen=True)
class _Plain:
    """Commands for redis-py's own routing (pipelined when several)."""

    commands: list[Command]


_Routine = Generator["_OnNode | _Refresh | _Plain | Sleep", Any, T]


def _routed(cmd: Command) -> bool:
    return cmd.args[0] in _ROUTED and int(cmd.args[2]) > 0


def _split(batch: Batch) -> tuple[list[int], list[list[int]], list[int]]:
    """(node-addressed commands, routed groups [call, pinned...], the rest) by index."""
    addressed: list[int] = []
    groups: list[list[int]] = []
    plain: list[int] = []
    for i, cmd in enumerate(batch):
        if cmd.all_primaries or cmd.node is not None:
            addressed.append(i)
        elif cmd.pinned and groups and groups[-1][-1] == i - 1:
            groups[-1].append(i)
        elif _routed(cmd):
            groups.append([i])
        else:
            plain.append(i)
    return addressed, groups, plain


def _masters(text: Any) -> list[str]:
    """``host:port`` of every healthy primary in a ``CLUSTER NODES`` reply, including primaries
    without slots (joined by a bare CLUSTER MEET) that redis-py does not know about."""
    if isinstance(text, bytes):
        text = text.decode()
    found = []
    for line in str(text).splitlines():
        parts = line.split()
        if len(parts) < 8 or "master" not in parts[2].split(","):
            continue
        if set(parts[2].split(",")) & {"fail", "fail?", "handshake", "noaddr"}:
            continue
        address = parts[1].split("@", 1)[0].split(",", 1)[0]
        host, _, port = address.rpartition(":")
        if host and port and port != "0":
            found.append(f"{host}:{port}")
    return found


def _primaries(conn: Any) -> _Routine[list[str]]:
    """Every healthy primary: those redis-py knows, and any other in their CLUSTER NODES (a node
    that joined by a bare CLUSTER MEET owns no slots yet, so redis-py, which reads CLUSTER
    SLOTS, has not heard of it; the executors add such nodes to redis-py's node cache, since
    redis-py follows an ASK to a node it does not know into an AttributeError)."""
    known = [n.name for n in conn.get_primaries()]
    names = dict.fromkeys(known)
    for name in known:
        [view] = yield _OnNode(name, [("CLUSTER", "NODES")])
        if not isinstance(view, Exception):
            names.update(dict.fromkeys(_masters(view)))
    return list(names)


def _owner(conn: Any, cmd: Command) -> str:
    return str(conn.get_node_from_key(cmd.args[3]).name)


def _not_sent_if_refused(error: BaseException) -> BaseException:
    """A connection error caused by a refused connection (a node that just died: nothing
    listens on its port) as :class:`NotSentError`: nothing was written, so even a ``once``
    call may be sent again (to the node that takes over). Any other connection error may have
    come after the commands were written, and stays what it is."""
    cause: BaseException | None = error
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, ConnectionRefusedError):
            return NotSentError(str(error))
        cause = cause.__cause__ or cause.__context__
    return error


def _next_step(reply: Any, once: bool) -> tuple[str, Any] | None:
    """How to go on after a routed call's reply: None (done), or ("ask", node) | ("moved",
    error) | ("wait", None) (TRYAGAIN, loading) | ("down", None) (node unreachable, cluster
    down or failing over: re-read the slot map). A ``once`` call cut off by a connection error
    is done: its caller gets the error (it may have run) — unless the error says nothing was
    sent (:class:`NotSentError`: the connection was refused)."""
    if isinstance(reply, MovedError):
        return "moved", reply
    if isinstance(reply, AskError):
        return "ask", f"{reply.host}:{reply.port}"
    if isinstance(reply, (TryAgainError, BusyLoadingError)):
        return "wait", None
    if isinstance(reply, (ClusterDownError, ReadOnlyError)):
        return "down", None  # a demoted primary answering READONLY: the map is stale
    if isinstance(reply, (NotSentError, NotSentTimeoutError)):
        return "down", None  # nothing was written: safe to send again, even once
    if isinstance(reply, _CONNECTION_ERRORS) and not once:
        return "down", None
    return None


def _route(conn: Any, groups: list[list[Command]]) -> _Routine[list[list[Any]]]:
    """Run routed groups (a call and its pinned WAIT) on the nodes owning their slots, each
    node's groups in one pipeline, following redirects; the groups' replies, in order."""
    out: list[list[Any]] = [[] for _ in groups]
    todo: dict[int, str | None] = dict.fromkeys(range(len(groups)))  # group -> ASK target
    for attempt in range(_ATTEMPTS):
        by_node: dict[str, list[int]] = {}
        try:
            for g, target in todo.items():
                by_node.setdefault(target or _owner(conn, groups[g][0]), []).append(g)
        except SlotNotCoveredError:
            yield Sleep(_backoff(attempt))
            yield _Refresh()
            continue
        asking = {g for g, target in todo.items() if target is not None}
        todo = {}
        moved: MovedError | None = None
        refresh = pause = False
        last = attempt == _ATTEMPTS - 1
        for name, gs in by_node.items():
            commands: list[tuple[Any, ...]] = []
            for g in gs:
                if g in asking:
                    commands.append(("ASKING",))
                commands.extend(c.args for c in groups[g])
            replies = yield _OnNode(name, commands)
            at = 0
            for g in gs:
                at += g in asking
                got = replies[at:at + len(groups[g])]
                at += len(groups[g])
                step = None if last else _next_step(got[0], groups[g][0].once)
                if step is None:
                    out[g] = got
                    continue
                kind, detail = step
                todo[g] = detail if kind == "ask" else None
                if kind == "moved":
                    moved = detail
                refresh |= kind == "down"
                pause |= kind in ("wait", "down")
        if not todo:
            return out
        if pause:
            yield Sleep(_backoff(attempt))
        if refresh or moved is not None:
            yield _Refresh(None if refresh else moved)
    return out


def _addressed(conn: Any, batch: Batch, indices: list[int], replies: list[Any]) -> _Routine[None]:
    primaries = ((yield from _primaries(conn)) if any(batch[i].all_primaries for i in indices)
                 else [])
    per_node: dict[str, list[int]] = {}
    for i in indices:
        cmd = batch[i]
        if cmd.all_primaries:
            replies[i] = {}
        for name in primaries if cmd.all_primaries else [cmd.node]:
            per_node.setdefault(str(name), []).append(i)
    for name, idx in per_node.items():
        got = yield _OnNode(name, [batch[i].args for i in idx])
        for i, reply in zip(idx, got):
            if batch[i].all_primaries:
                replies[i][name] = reply
            else:
                replies[i] = reply


def _cluster_batch(conn: Any, batch: Batch) -> _Routine[list[Any]]:
    replies: list[Any] = [None] * len(batch)
    addressed, groups, plain = _split(batch)
    if addressed:
        yield from _addressed(conn, batch, addressed, replies)
    if groups:
        got = yield from _route(conn, [[batch[i] for i in g] for g in groups])
        for g, group_replies in zip(groups, got):
            for i, reply in zip(g, group_replies):
                replies[i] = reply
    if plain:
        got = yield _Plain([batch[i] for i in plain])
        for i, reply in zip(plain, got):
            replies[i] = reply
    return replies


def _unknown_node(error: BaseException) -> bool:
    """redis-py's cluster client followed an ASK to a node missing from its cache (before
    sending anything: the command did not run)."""
    return isinstance(error, AttributeError) and (
        "redis_connection" in str(error) or "execute_command" in str(error))


def _redirected_out(error: BaseException) -> bool:
    """redis-py gave up after 16 MOVED/ASK/TRYAGAIN replies in a row: the command never ran.
    A multi-key command on a slot that is half-way through a migration gets TRYAGAIN until the
    migration of that slot ends; redis-py's patience (about 0.4 s) can be shorter."""
    return isinstance(error, ClusterError) and "TTL exhausted" in str(error)


# -- sync ---------------------------------------------------------------------------------------


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


def _on_node_sync(conn: Any, name: str, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Commands pipelined to one node (redis-py's client for it: no retries of its own)."""
    from redis.cluster import PRIMARY, ClusterNode

    node = conn.get_node(node_name=name)
    if node is None:  # a primary redis-py has not heard of: keep it, ASKs may lead there
        host, _, port = name.rpartition(":")
        node = ClusterNode(host, int(port), PRIMARY)  # type: ignore[no-untyped-call]
        conn.nodes_manager.nodes_cache[node.name] = node
    try:
        pipe = conn.get_redis_connection(node).pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies
    except _CONNECTION_ERRORS as error:
        return [_not_sent_if_refused(error)] * len(commands)


def _refresh_sync(conn: Any, moved: MovedError | None) -> None:
    manager = conn.nodes_manager
    if moved is not None and hasattr(manager, "move_slot"):
        manager.move_slot(moved)
    else:
        # no node answering now is not an error: the next attempt tries again
        with contextlib.suppress(redis.RedisError, OSError):
            manager.initialize()


def _call_cluster_sync(conn: Any, args: tuple[Any, ...]) -> Any:
    """One command through redis-py's routing; its error reply in place. Rides out what means
    the command did not run: an ASK to a node redis-py does not know yet, and redirects beyond
    redis-py's patience (a slot being migrated)."""
    waits = learns = 0
    while True:
        try:
            return conn.execute_command(*args)
        except ResponseError as error:
            return error
        except (AttributeError, ClusterError) as error:
            if _unknown_node(error) and learns < _ATTEMPTS:
                learns += 1  # redis-py may forget the node again when it re-reads the slots
                _perform_sync(conn, _primaries(conn))
            elif _redirected_out(error) and waits < _ATTEMPTS:
                time.sleep(_backoff(waits))
                waits += 1
            else:
                raise


def _plain_sync(conn: Any, commands: list[Command]) -> list[Any]:
    if len(commands) == 1:
        return [_call_cluster_sync(conn, commands[0].args)]
    for attempt in range(2):
        pipe = conn.pipeline(transaction=False)
        for cmd in commands:
            pipe.execute_command(*cmd.args)
        try:
            replies: list[Any] = pipe.execute(raise_on_error=False)
        except AttributeError as error:
            # some commands of the pipeline may have run: send it again only if every one
            # may be re-sent (as redis-py does after a connection error)
            if attempt or not _unknown_node(error) or any(c.once for c in commands):
                raise
            _perform_sync(conn, _primaries(conn))
            continue
        # redis-py re-sends redirected commands one by one after the pipeline; those it gave
        # up on did not run: send them again, patiently
        return [_call_cluster_sync(conn, cmd.args) if _redirected_out(reply) else reply
                for cmd, reply in zip(commands, replies)]
    raise AssertionError("unreachable")


def _perform_sync(conn: Any, routine: _Routine[T]) -> T:
    """Perform a cluster routine's I/O on a sync cluster client."""
    try:
        request = next(routine)
        while True:
            result: Any = None
            if isinstance(request, _OnNode):
                result = _on_node_sync(conn, request.name, request.commands)
            elif isinstance(request, _Refresh):
                _refresh_sync(conn, request.moved)
            elif isinstance(request, _Plain):
                result = _plain_sync(conn, request.commands)
            else:
                time.sleep(request.seconds)
            request = routine.send(result)
    except StopIteration as done:
        value: T = done.value
        return value


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


def _run_batch_sync(conn: Any, batch: Batch,
                    deadlines: _DeadlineConnections | None = None) -> list[Any]:
    deadline = _deadline_of(batch)
    if deadline is not None and deadlines is not None:
        return _wrap_standalone(conn, batch, deadlines.run([c.args for c in batch], deadline))
    if _is_cluster(conn):
        return _perform_sync(conn, _cluster_batch(conn, batch))
    if any(c.once for c in batch) and _sends_once(conn):
        return _wrap_standalone(conn, batch, _send_once_sync(conn, [c.args for c in batch]))
    if len(batch) == 1:
        try:
            reply = conn.execute_command(*batch[0].args)
        except ResponseError as error:
            reply = error
        return _wrap_standalone(conn, batch, [reply])
    pipe = conn.pipeline(transaction=False)
    for cmd in batch:
        pipe.execute_command(*cmd.args)
    return _wrap_standalone(conn, batch, pipe.execute(raise_on_error=False))


# -- asyncio ------------------------------------------------------------------------------------


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


async def _drop_if_closed(node: Any) -> None:
    """Disconnect the pooled connection the node will use next if the server already closed it
    (its end seen by the event loop: the node died, or killed the client). Written into, it
    would fail after the write, and a ``once`` call would be given up (it may have run);
    disconnected, it connects again first, and a refused connection is :class:`NotSentError`.
    (redis-py's sync pools check this themselves; its asyncio cluster nodes do not.)"""
    free = getattr(node, "_free", None)
    if not free:
        return
    reader = getattr(free[0], "_reader", None)
    if reader is not None and (reader.at_eof() or reader.exception() is not None):
        await free[0].disconnect()


async def _on_node_async(conn: Any, name: str, commands: list[tuple[Any, ...]]) -> list[Any]:
    """:func:`_on_node_sync` on an asyncio cluster client."""
    from redis.asyncio.cluster import ClusterNode, PipelineCommand

    node = conn.get_node(node_name=name)
    if node is None:
        host, _, port = name.rpartition(":")
        node = ClusterNode(host, int(port), "primary", **conn.get_connection_kwargs())
        conn.nodes_manager.nodes_cache[node.name] = node
    await _drop_if_closed(node)
    try:
        stack = [PipelineCommand(i, *args) for i, args in enumerate(commands)]
        await node.execute_pipeline(stack)
        return [c.result for c in stack]
    except _CONNECTION_ERRORS as error:
        return [_not_sent_if_refused(error)] * len(commands)


async def _refresh_async(conn: Any, moved: MovedError | None) -> None:
    manager = conn.nodes_manager
    if moved is not None and hasattr(manager, "move_slot"):
        await manager.move_slot(moved)
    else:
        with contextlib.suppress(redis.RedisError, OSError):
            await manager.initialize()


async def _call_cluster_async(conn: Any, args: tuple[Any, ...]) -> Any:
    """:func:`_call_cluster_sync` on an asyncio cluster client."""
    waits = learns = 0
    while True:
        try:
            return await conn.execute_command(*args)
        except ResponseError as error:
            return error
        except (AttributeError, ClusterError) as error:
            if _unknown_node(error) and learns < _ATTEMPTS:
                learns += 1
                await _perform_async(conn, _primaries(conn))
            elif _redirected_out(error) and waits < _ATTEMPTS:
                await asyncio.sleep(_backoff(waits))
                waits += 1
            else:
                raise


async def _plain_async(conn: Any, commands: list[Command]) -> list[Any]:
    if len(commands) == 1:
        return [await _call_cluster_async(conn, commands[0].args)]
    for attempt in range(2):
        pipe = conn.pipeline(transaction=False)
        for cmd in commands:
            pipe.execute_command(*cmd.args)
        try:
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        except AttributeError as error:
            if attempt or not _unknown_node(error) or any(c.once for c in commands):
                raise
            await _perform_async(conn, _primaries(conn))
            continue
        return [await _call_cluster_async(conn, cmd.args) if _redirected_out(reply) else reply
                for cmd, reply in zip(commands, replies)]
    raise AssertionError("unreachable")


async def _perform_async(conn: Any, routine: _Routine[T]) -> T:
    """Perform a cluster routine's I/O on an asyncio cluster client."""
    await conn.initialize()  # a fresh asyncio cluster client knows no node before a call
    try:
        request = next(routine)
        while True:
            result: Any = None
            if isinstance(request, _OnNode):
                result = await _on_node_async(conn, request.name, request.commands)
            elif isinstance(request, _Refresh):
                await _refresh_async(conn, request.moved)
            elif isinstance(request, _Plain):
                result = await _plain_async(conn, request.commands)
            else:
                await asyncio.sleep(request.seconds)
            request = routine.send(result)
    except StopIteration as done:
        value: T = done.value
        return value


async def _run_by_deadline_async(conn: Any, batch: Batch, deadline: float) -> list[Any]:
    """Commands with a deadline on an asyncio client: sent once, and abandoned (the connection
    closed, so no late reply is misread) when no reply came in time."""
    left = deadline - time.monotonic()
    try:
        if left <= 0:
            raise _late(deadline)
        return await within(_send_once_async(conn, [c.args for c in batch]), left)
    except asyncio.TimeoutError:
        return [_late(deadline)] * len(batch)
    except _TRANSPORT_ERRORS as error:
        return [error] * len(batch)


async def _run_batch_async(conn: Any, batch: Batch) -> list[Any]:
    deadline = _deadline_of(batch)
    if deadline is not None and _sends_once(conn):
        return _wrap_standalone(conn, batch, await _run_by_deadline_async(conn, batch, deadline))
    if _is_cluster(conn):
        return await _perform_async(conn, _cluster_batch(conn, batch))
    if any(c.once for c in batch) and _sends_once(conn):
        return _wrap_standalone(conn, batch,
                                await _send_once_async(conn, [c.args for c in batch]))
    if len(batch) == 1:
        try:
            reply = await conn.execute_command(*batch[0].args)
        except ResponseError as error:
            reply = error
        return _wrap_standalone(conn, batch, [reply])
    pipe = conn.pipeline(transaction=False)
    for cmd in batch:
        pipe.execute_command(*cmd.args)
    return _wrap_standalone(conn, batch, await pipe.execute(raise_on_error=False))


# -- WATCH/MULTI/EXEC: one attempt on one held connection ------------------------------------
# Plans cannot hold a connection across batches, and an optimistic transaction must: WATCH, the
# caller's reads and computation, and MULTI/EXEC all go over one connection. So one attempt is
# a driver call (a ``Do`` step of the retry plan in pyredislua/optimistic), performed with
# redis-py's own transactional pipeline on the server or cluster node that owns the keys; the
# retries, backoff and counting stay in the plan, written once.


@dataclass(frozen=True)
class WatchAttempt:
    """What one WATCH/MULTI/EXEC attempt came to.

    ``committed``: EXEC ran (``value``: what the function returned, ``replies``: EXEC's);
    ``conflict``: a watched key changed, EXEC ran nothing; ``interrupted``: the connection failed,
    or the slot moved, before EXEC was sent: nothing was written (``error``); ``unknown``: the
    connection failed once EXEC was sent, so it may or may not have run (``error``)."""

    outcome: Literal["committed", "conflict", "interrupted", "unknown"]
    value: Any = None
    replies: list[Any] = field(default_factory=list)
    error: BaseException | None = None


# replies by which a cluster node refuses a command on a slot it does not serve now: nothing ran
_NOT_HERE = (AskError, TryAgainError, ClusterDownError)


def _one_slot(conn: Any, keys: Sequence[Any]) -> None:
    if not keys:
        raise ValueError("an optimistic transaction watches at least one key")
    if _is_cluster(conn) and len({conn.keyslot(k) for k in keys}) > 1:
        raise CrossSlotTransactionError(
            "the keys of a transaction on a cluster must share one slot: give them one hash "
            f"tag, e.g. '{{order-7}}:lines' and '{{order-7}}:total' (got {list(keys)!r})")


def _after_exec_error(error: BaseException) -> WatchAttempt:
    """What a WatchError from EXEC means: redis-py raises it for a conflict (EXEC replied nil)
    and also when the connection failed while watching, EXEC sent or not (the error it caught is
    then the WatchError's context): the latter is not a conflict, and retrying could apply the
    transaction twice."""
    cause = error.__context__
    if isinstance(cause, _TRANSPORT_ERRORS):
        return WatchAttempt("unknown", error=cause)
    return WatchAttempt("conflict")


def _learn_sync(conn: Any, error: BaseException) -> None:
    """Update the slot map after a refusal: from a MOVED, or re-read after CLUSTERDOWN (an ASK
    or TRYAGAIN only says to come back once the slot's migration moves on)."""
    if isinstance(error, MovedError):
        _refresh_sync(conn, error)
    elif isinstance(error, ClusterDownError):
        _refresh_sync(conn, None)


def _watch_attempt_sync(conn: Any, keys: Sequence[Any], fn: Any) -> WatchAttempt:
    _one_slot(conn, keys)
    node = conn.get_redis_connection(conn.get_node_from_key(keys[0])) if _is_cluster(conn) \
        else conn
    pipe = node.pipeline(transaction=True)
    try:
        try:
            pipe.watch(*keys)
            value = fn(pipe)
        except redis.WatchError as error:  # the connection failed while watching (before EXEC)
            return WatchAttempt("interrupted", error=error.__context__ or error)
        except _NOT_HERE as error:
            _learn_sync(conn, error)
            return WatchAttempt("interrupted", error=error)
        if not pipe.explicit_transaction:
            pipe.multi()  # nothing to write: EXEC still checks that the reads were consistent
        try:
            replies: list[Any] = pipe.execute()
        except redis.WatchError as error:
            return _after_exec_error(error)
        except _NOT_HERE as error:  # refused while queueing: EXECABORT, nothing ran
            _learn_sync(conn, error)
            return WatchAttempt("interrupted", error=error)
        return WatchAttempt("committed", value, replies)
    finally:
        pipe.reset()


class _NodeConnections:
    """The connection pool interface redis.asyncio's Pipeline needs, over one asyncio cluster
    node's own connections (they stay the cluster client's, closed with it)."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self.connection_kwargs = node.connection_kwargs

    def get_encoder(self) -> Any:
        return self._node.get_encoder()

    async def get_connection(self, *_: Any, **__: Any) -> Any:
        connection = self._node.acquire_connection()
        try:
            await connection.connect()
        except BaseException:
            await connection.disconnect()
            self._node.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        self._node.release(connection)


async def _learn_async(conn: Any, error: BaseException) -> None:
    if isinstance(error, MovedError):
        await _refresh_async(conn, error)
    elif isinstance(error, ClusterDownError):
        await _refresh_async(conn, None)


async def _watch_attempt_async(conn: Any, keys: Sequence[Any], fn: Any) -> WatchAttempt:
    _one_slot(conn, keys)
    if _is_cluster(conn):
        await conn.initialize()
        node = conn.get_node_from_key(keys[0])
        pipe: Any = redis.asyncio.client.Pipeline(
            _NodeConnections(node), node.response_callbacks, True, None)  # type: ignore[arg-type]
    else:
        pipe = conn.pipeline(transaction=True)
    try:
        try:
            await pipe.watch(*keys)
            value = fn(pipe)
            if inspect.isawaitable(value):
                value = await value
        except redis.WatchError as error:
            return WatchAttempt("interrupted", error=error.__context__ or error)
        except _NOT_HERE as error:
            await _learn_async(conn, error)
            return WatchAttempt("interrupted", error=error)
        if not pipe.explicit_transaction:
            pipe.multi()
        try:
            replies: list[Any] = await pipe.execute()
        except redis.WatchError as error:
            return _after_exec_error(error)
        except _NOT_HERE as error:
            await _learn_async(conn, error)
            return WatchAttempt("interrupted", error=error)
        return WatchAttempt("committed", value, replies)
    finally:
        await pipe.reset()


# -- the clients --------------------------------------------------------------------------------


class _ClientBase:
    def __init__(self, conn: Any, *, mode: Mode = "auto", library: Library | None = None,
                 durability: Durability | int | None = None, engine: Engine | None = None):
        self.redis = conn
        self.engine = engine or Engine(library or render_library(), mode, durability)
        pool = getattr(conn, "connection_pool", None)
        self.max_block = _max_block(getattr(pool, "connection_kwargs", {}) or {})
        self._once = _sends_once(conn)
        self._cluster = _is_cluster(conn)
        self._deadlines: _DeadlineConnections | None = None

    @property
    def mode(self) -> str:
        """The mode in effect: ``function`` or ``script`` (``auto`` settles on one)."""
        return self.engine.mode

    @property
    def library(self) -> Library:
        return self.engine.library

    @property
    def durability(self) -> Durability | None:
        """The replica confirmation every writing operation asks for (None: none)."""
        return self.engine.durability


class Client(_ClientBase):
    """pyredislua on a sync redis-py client: ``redis.Redis``, ``redis.RedisCluster``, or a
    Sentinel-managed primary (``redis.sentinel.Sentinel(...).master_for(name)``).

    ``mode``: ``function`` (Redis Functions, FCALL), ``script`` (EVALSHA) or ``auto`` (functions,
    falling back to scripts where FUNCTION is missing or refused by ACL). Code is loaded on first
    use — on a cluster, on every primary, each settled on its own — and reloaded transparently
    after a restart, failover, SCRIPT FLUSH or FUNCTION FLUSH, or on a primary that joined
    without it. Needs Redis 7.0+ (checked once, when loading).

    ``durability``: replica confirmation of writes (:class:`~pyredislua.Durability`, or an int:
    that many replicas within 100 ms): each writing operation is followed by ``WAIT`` in the
    same round trip; see :class:`~pyredislua.Durability` for what it does and does not promise.
    """

    redis: redis.Redis

    def with_durability(self, durability: Durability | int | None) -> Client:
        """This client (same connection, library and mode) with other replica confirmation,
        e.g. for one primitive: ``Queue(client.with_durability(1), "payments")``."""
        return Client(self.redis, engine=self.engine.with_durability(durability))

    def drive(self, plan: Plan[T]) -> T:
        """Run a plan to its end: batches on this client, sleeps with ``time.sleep``, ``Do``
        steps called here; a transport error or what a ``Do`` raised is thrown into the plan."""
        send: Any = None
        error: Exception | None = None
        while True:
            try:
                step = plan.send(send) if error is None else plan.throw(error)
            except StopIteration as done:
                result: T = done.value
                return result
            send, error = None, None
            try:
                if isinstance(step, list):
                    send = _run_batch_sync(self.redis, step, self._deadline_connections(step))
                elif isinstance(step, Sleep):
                    time.sleep(step.seconds)
                else:
                    send = step.fn(*step.args)
            except Exception as exc:
                error = exc

    def _deadline_connections(self, batch: Batch) -> _DeadlineConnections | None:
        if not self._once or _deadline_of(batch) is None:
            return None
        if self._deadlines is None:
            self._deadlines = _DeadlineConnections(self.redis)
        return self._deadlines

    def run(self, call: Call[T], durability: Durability | int | None = None) -> T:
        """Run one operation in one round trip (two if its code had to be loaded first).
        ``durability``: replica confirmation for this call (default: the client's). A failure
        goes to the call's ``recover`` when it has one."""
        try:
            return self._run(call, durability)
        except Exception as error:
            if call.recover is None:
                raise
            outcome = call.recover(error)
        return self.run(outcome, durability) if isinstance(outcome, Call) else outcome

    def _run(self, call: Call[T], durability: Durability | int | None) -> T:
        if durability is not None or self.engine.durability is not None:
            return self.drive(self.engine.run_one(call, durability=durability))
        args = self.engine.args(call)
        if self._cluster:
            once = call.op in self.engine.send_once_ops
            [[reply]] = _perform_sync(self.redis, _route(self.redis, [[Command(args, once=once)]]))
        elif call.op in self.engine.send_once_ops and self._once:
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

    def run_many(self, calls: Sequence[Call[Any]], *, raise_on_error: bool = True,
                 durability: Durability | int | None = None) -> list[Any]:
        """Run operations in one pipelined round trip, in order (on a cluster: one per node)."""
        return self.drive(self.engine.run(calls, raise_on_error=raise_on_error,
                                          durability=durability))

    def watch_attempt(self, fn: Any, keys: Sequence[Any]) -> WatchAttempt:
        """One optimistic transaction attempt on one held connection: WATCH ``keys``, call
        ``fn(pipe)`` (a redis-py transactional pipeline: commands run at once until
        ``pipe.multi()``, then queue), then MULTI/EXEC what it queued. On a cluster the keys
        must share a slot; the attempt runs on the node owning it. Retrying is the caller's
        (``pyredislua.optimistic.Optimistic.transaction``)."""
        return _watch_attempt_sync(self.redis, keys, fn)

    def pipeline(self) -> Pipeline:
        return Pipeline(self)

    def load(self, *, force: bool = False) -> LoadReport:
        """Load the code on every primary now (each settled on its own; see LoadReport.nodes)."""
        return self.drive(self.engine.load(force=force))

    def server_libraries(self) -> dict[str, Any]:
        return self.drive(self.engine.server_state())

    def server_libraries_by_node(self) -> dict[str, Any]:
        return self.drive(self.engine.server_state_by_node())


class AsyncClient(_ClientBase):
    """pyredislua on an asyncio redis-py client (``redis.asyncio.Redis``,
    ``redis.asyncio.RedisCluster``, or a Sentinel-managed primary); see :class:`Client`."""

    redis: redis.asyncio.Redis

    def with_durability(self, durability: Durability | int | None) -> AsyncClient:
        """See :meth:`Client.with_durability`."""
        return AsyncClient(self.redis, engine=self.engine.with_durability(durability))

    async def drive(self, plan: Plan[T]) -> T:
        """See :meth:`Client.drive`; a ``Do`` result that is awaitable is awaited, and a plain
        function marked ``thread`` runs in a worker thread."""
        send: Any = None
        error: Exception | None = None
        while True:
            try:
                step = plan.send(send) if error is None else plan.throw(error)
            except StopIteration as done:
                result: T = done.value
                return result
            send, error = None, None
            try:
                if isinstance(step, list):
                    send = await _run_batch_async(self.redis, step)
                elif isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                elif step.thread and not inspect.iscoroutinefunction(step.fn):
                    send = await asyncio.to_thread(step.fn, *step.args)
                else:
                    send = step.fn(*step.args)
                    if inspect.isawaitable(send):
                        send = await send
            except Exception as exc:
                error = exc

    async def run(self, call: Call[T], durability: Durability | int | None = None) -> T:
        """See :meth:`Client.run`."""
        try:
            return await self._run(call, durability)
        except Exception as error:
            if call.recover is None:
                raise
            outcome = call.recover(error)
        return await self.run(outcome, durability) if isinstance(outcome, Call) else outcome

    async def _run(self, call: Call[T], durability: Durability | int | None) -> T:
        if durability is not None or self.engine.durability is not None:
            return await self.drive(self.engine.run_one(call, durability=durability))
        args = self.engine.args(call)
        if self._cluster:
            once = call.op in self.engine.send_once_ops
            [[reply]] = await _perform_async(self.redis,
                                             _route(self.redis, [[Command(args, once=once)]]))
        elif call.op in self.engine.send_once_ops and self._once:
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
        self, calls: Sequence[Call[Any]], *, raise_on_error: bool = True,
        durability: Durability | int | None = None,
    ) -> list[Any]:
        return await self.drive(self.engine.run(calls, raise_on_error=raise_on_error,
                                                durability=durability))

    async def watch_attempt(self, fn: Any, keys: Sequence[Any]) -> WatchAttempt:
        """See :meth:`Client.watch_attempt`; ``fn`` may be a coroutine function (its commands
        are awaited: ``await pipe.get(key)``)."""
        return await _watch_attempt_async(self.redis, keys, fn)

    def pipeline(self) -> AsyncPipeline:
        return AsyncPipeline(self)

    async def load(self, *, force: bool = False) -> LoadReport:
        return await self.drive(self.engine.load(force=force))

    async def server_libraries(self) -> dict[str, Any]:
        return await self.drive(self.engine.server_state())

    async def server_libraries_by_node(self) -> dict[str, Any]:
        return await self.drive(self.engine.server_state_by_node())


# What a primitive is bound to. Each primitive is one class generic over it: its methods build call
# specs and plans (pure) and return what the client makes of them, the value on a Client and an
# awaitable of it on an AsyncClient (typed with overloads on ``self``); see the README's
# "Adding a primitive".
AnyClient = TypeVar("AnyClient", Client, AsyncClient)


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
