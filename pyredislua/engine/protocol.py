"""The sans-IO core: operations as call specs, execution as plans.

A *plan* is a generator that yields a batch of :class:`Command` objects and is sent back the list
of replies (an exception object in place of an error reply). It never touches a socket: the sync
client, the asyncio client and pipelines only drive plans (see ``pyredislua.client``), so loading,
NOSCRIPT recovery, mode fallback and error mapping are written once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, NoScriptError, OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import (
    DurabilityError,
    LibraryConflictError,
    LibraryError,
    LibraryPermissionError,
    from_reply,
)
from ..kit import as_text
from .compat import VERSION_PROBE, check_version
from .render import Library, Operation

T = TypeVar("T")
Mode = Literal["function", "script", "auto"]
MODES: tuple[Mode, ...] = ("function", "script", "auto")


@dataclass(frozen=True)
class Command:
    """One Redis command.

    ``all_primaries``: the command goes to every primary, each on its own (loading code on a
    cluster); its reply is a dict from node name (``host:port``) to that node's reply or error,
    so one node's error never hides another's answer. A node that cannot be reached answers
    with its ConnectionError/TimeoutError. On a standalone server the dict has one entry.
    ``node``: the command goes to that node only (a name from an ``all_primaries`` reply).
    ``once``: running it twice is not running it once, so a driver must not re-send it after a
    connection error or timeout (redis-py would): the error reaches the plan's caller instead.
    ``pinned``: sent on the same connection right after the previous command of the batch
    (``WAIT`` counts the replicas that have this connection's last write).
    ``deadline`` (``time.monotonic()``): the reply is awaited until then and no longer, the
    command is never re-sent, and a timeout or connection error comes back to the plan in place
    of the reply (the plan retries or gives up), so a plan can keep a timeout it promised while
    Redis is paused or restarting. Not on cluster clients (they re-send and wait as redis-py
    does)."""

    args: tuple[Any, ...]
    all_primaries: bool = False
    node: str | None = None
    once: bool = False
    pinned: bool = False
    deadline: float | None = None


class NotSentError(RedisConnectionError):
    """A connection error before a command was written: it did not run, sending it again is
    safe whatever its ``resend``."""


class NotSentTimeoutError(RedisTimeoutError):
    """A command's deadline passed before it could be written (connecting took too long, or no
    time was left): it did not run."""


@dataclass(frozen=True)
class Sleep:
    """Wait locally before the next batch (time.sleep or asyncio.sleep, as the driver runs).

    Only for waits Redis cannot time precisely (a BLPOP timeout resolves on the server's cron
    tick); a plan never polls with it."""

    seconds: float


@dataclass(frozen=True)
class Do:
    """Call a function that is not Redis (a sink's write, a compute function, a handler) and
    send its result back to the plan; what it raises is thrown into the plan at the ``yield``.

    The sync driver calls it. The asyncio driver awaits what it returns when that is awaitable,
    and, with ``thread`` set, runs a plain function in a worker thread first (a blocking sink such
    as sqlite3 or psycopg's sync connection must not stall the event loop)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    thread: bool = False


Batch = list[Command]
Step = Batch | Sleep | Do
# A plan yields steps and is sent what each produced: the replies of a batch (an error reply in
# place of its reply, as an exception object), None after a Sleep, a Do's result. A transport
# error of a batch, or what a Do raised, is thrown into the plan at its ``yield``.
Plan = Generator[Step, Any, T]


class _Retry:
    """Marker: the call must go through the recovering plan."""


RETRY = _Retry()


def _identity(reply: Any) -> Any:
    return reply


class Call(Generic[T]):
    """A pure description of one operation call: which Lua operation, keys, arguments, how to
    read its reply, and (optionally) what to make of a failure. Building one does no I/O; any
    executor can run it.

    ``recover``: called with what running the call raised (an error reply, a refusal, a
    transport error) when a client runs it on its own (``run``); it re-raises, returns the
    result instead, or returns another call to run in its place (a read-only question after a
    refused write, say). A failure policy is thus pure data, the same for sync and asyncio.

    (A slotted class rather than a frozen dataclass: one is built per operation call.)"""

    __slots__ = ("args", "keys", "op", "parse", "recover")

    def __init__(
        self,
        op: str,
        keys: tuple[str, ...],
        args: tuple[str | int | bytes, ...] = (),
        parse: Callable[[Any], T] = _identity,
        recover: Callable[[Exception], T | Call[T]] | None = None,
    ) -> None:
        self.op = op
        self.keys = keys
        self.args = args
        self.parse = parse
        self.recover = recover

    def recovering(self, recover: Callable[[Exception], T | Call[T]]) -> Call[T]:
        """This call with a failure policy (see the class docstring)."""
        return Call(self.op, self.keys, self.args, self.parse, recover)

    def __repr__(self) -> str:
        return f"Call({self.op!r}, keys={self.keys!r}, args={self.args!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Call) and (self.op, self.keys, self.args, self.parse) == (
            other.op, other.keys, other.args, other.parse)

    def __hash__(self) -> int:
        return hash((self.op, self.keys, self.args))


def _is_missing_function(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and "Function not found" in str(reply)


def _is_refused_fcall(reply: Any) -> bool:
    """FCALL/FUNCTION unknown (old server, renamed command) or refused by ACL."""
    if isinstance(reply, NoPermissionError):
        return True
    return isinstance(reply, ResponseError) and "unknown command" in str(reply).lower()


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


# Loading the code on a node that lacks it is part of the call that found it missing; the
# call's deadline is stretched to at least this much from then, for the loading and the call
# run again (a tight deadline, such as a non-blocking acquire's, must not fail a free lock
# because the library had to be loaded first), and no further (a node that stops answering
# meanwhile holds the caller that long).
RELOAD_GRACE = 1.0


def _reload_deadline(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline, time.monotonic() + RELOAD_GRACE)


def _unreachable(reply: Any) -> bool:
    return isinstance(reply, (RedisConnectionError, RedisTimeoutError))


# the summary of several nodes' actions: the most significant one wins
_ACTION_RANK = ("replaced", "loaded", "scripts-loaded", "newer-on-server", "present",
                "unreachable")


@dataclass
class LoadReport:
    """What loading did. ``action`` sums up the nodes: loaded | replaced | present |
    newer-on-server | scripts-loaded; ``nodes`` says it per primary (``host:port`` ->
    action, or ``unreachable`` for a primary that did not answer)."""

    mode: str
    library: str
    version: str
    action: str
    server_version: str | None = None
    nodes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Shortfall:
    """A write fewer replicas confirmed than :class:`Durability` asked for (``confirmed`` is
    -1 when WAIT itself failed, e.g. refused by ACL)."""

    operation: str
    wanted: int
    confirmed: int


@dataclass(frozen=True)
class Durability:
    """Opt-in replica confirmation of writes: after every writing operation, ``WAIT replicas
    timeout`` runs on the same connection in the same round trip (pipelined), and the call
    checks that ``replicas`` replicas confirmed the write within ``timeout`` seconds.

    ``on_shortfall``: ``"raise"`` (:class:`~pyredislua.errors.DurabilityError`, carrying the
    operation's result: the write happened and stays), ``"count"`` (only counted in
    ``client.engine.shortfalls``), or a callable receiving a :class:`Shortfall` (and counted).

    What it buys: a write acknowledged with ``replicas`` confirmations survives the loss of
    the primary if one of those replicas is promoted. What it does not: replication stays
    asynchronous (a failed WAIT does not undo the write, which may still reach replicas or be
    lost), and WAIT is not consensus — a failover may still promote a replica that lacks it.
    Fencing tokens are still needed.
    """

    replicas: int = 1
    timeout: float = 0.1
    on_shortfall: Literal["raise", "count"] | Callable[[Shortfall], None] = "raise"

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {self.replicas}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds (WAIT 0 blocks forever), "
                             f"got {self.timeout}")
        if not (callable(self.on_shortfall) or self.on_shortfall in ("raise", "count")):
            raise ValueError("on_shortfall must be 'raise', 'count' or a callable")

    @property
    def wait_args(self) -> tuple[str, int, int]:
        return ("WAIT", self.replicas, max(1, round(self.timeout * 1000)))

    @classmethod
    def coerce(cls, value: Durability | int | None) -> Durability | None:
        """``None``/``0`` off, an int: that many replicas with the defaults."""
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = cls(replicas=value)
        if not isinstance(value, Durability):
            raise TypeError(f"durability must be a Durability, an int or None, got {value!r}")
        return value if value.replicas > 0 else None


OFF = Durability(replicas=0)


class Engine:
    """Per-client execution state: the rendered library, the loader mode, what is known loaded,
    and the durability (replica confirmation) writes ask for.

    Thread- and task-safe enough by construction: every field is a flag whose races only cost an
    extra idempotent load (or version check).
    """

    def __init__(self, library: Library, mode: Mode = "auto",
                 durability: Durability | int | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.library = library
        # operations whose header says `resend: once`: drivers never re-send them automatically
        self.send_once_ops = frozenset(
            name for name, op in library.operations.items() if op.header.send_once)
        self.requested_mode: Mode = mode
        self._heads: dict[str, tuple[str, str]] = {}
        # auto tries functions first and settles on scripts if the server refuses them
        self.mode = "script" if mode == "script" else "function"
        self.durability = Durability.coerce(durability)
        self.shortfalls = 0  # writes fewer replicas confirmed than asked (see Durability)
        self.version_checked = False

    def with_durability(self, durability: Durability | int | None) -> Engine:
        """A copy of this engine (same library and settled mode) whose writes ask for
        ``durability``."""
        engine = Engine(self.library, self.requested_mode, durability)
        engine.mode = self.mode
        engine.version_checked = self.version_checked
        return engine

    @property
    def mode(self) -> Literal["function", "script"]:
        return self._mode

    @mode.setter
    def mode(self, mode: Literal["function", "script"]) -> None:
        self._mode = mode
        self._heads = {}

    # -- commands -------------------------------------------------------------------------------

    def operation(self, name: str) -> Operation:
        return self.library.operation(name)

    def args(self, call: Call[Any]) -> tuple[Any, ...]:
        """The command for a call in the current mode (hot path: cached verb and name)."""
        head = self._heads.get(call.op)
        if head is None:
            head = self._head(call.op)
        return (*head, len(call.keys), *call.keys, *call.args)

    def _head(self, name: str) -> tuple[str, str]:
        op = self.operation(name)
        if self._mode == "function":
            head = ("FCALL_RO" if op.read_only else "FCALL", op.function)
        else:
            head = ("EVALSHA_RO" if op.read_only else "EVALSHA", op.sha)
        self._heads[name] = head
        return head

    def command(self, call: Call[Any], *, with_body: bool = False,
                deadline: float | None = None, once: bool = False) -> Command:
        """The command for a call; ``with_body``: in script mode, EVAL the script itself (after
        NOSCRIPT: it runs and caches the script in one round trip); ``once``: never re-sent by a
        driver, whatever the operation's ``resend`` (see :class:`Command`)."""
        op = self.operation(call.op)
        once = once or op.header.send_once
        if with_body and self.mode == "script":
            verb = "EVAL_RO" if op.read_only else "EVAL"
            args = (verb, op.script, len(call.keys), *call.keys, *call.args)
            return Command(args, once=once, deadline=deadline)
        return Command(self.args(call), once=once, deadline=deadline)

    # -- running calls --------------------------------------------------------------------------

    def _needs_retry(self, reply: Any) -> bool:
        """The reply says the code is missing (or FCALL is refused: the server may be too old,
        or, in auto mode, scripts must do): nothing ran."""
        if _is_missing_function(reply) or isinstance(reply, NoScriptError):
            return True
        return self.mode == "function" and (
            self.requested_mode == "auto" or not self.version_checked) and _is_refused_fcall(
            reply)

    def settle(self, call: Call[T], reply: Any) -> T | _Retry:
        """The outcome of one reply: the parsed value, a raised typed error, or RETRY when the
        code must be (re)loaded first. Lets drivers run the common case without a plan."""
        if isinstance(reply, BaseException):
            if self._needs_retry(reply):
                return RETRY
            raise from_reply(reply, call.op)
        return call.parse(reply)

    def _wait_for(self, durability: Durability | int | None) -> Durability | None:
        if durability is None:
            return self.durability
        return Durability.coerce(durability)

    def run(
        self,
        calls: Sequence[Call[Any]],
        *,
        raise_on_error: bool = True,
        first_replies: list[Any] | None = None,
        durability: Durability | int | None = None,
        deadline: float | None = None,
        once: bool = False,
    ) -> Plan[list[Any]]:
        """Run calls in order, normally as one batch (one round trip).

        Calls that failed because the code was missing (restart, failover, SCRIPT FLUSH,
        FUNCTION FLUSH, a cluster node that never had it) are re-run, in their order, after the
        code is reloaded. Code goes missing all at once on a node, so on one server the failed
        calls are a suffix of the batch and order is kept.
        ``first_replies``: the replies of a first attempt a driver already made (no WAITs).
        ``durability``: replica confirmation for this run's writes (default: the engine's;
        :data:`OFF` for none): a ``WAIT`` after each writing call, in the same batch.
        ``deadline``: see :class:`Command` (a transport error is then raised from here, like an
        error reply).
        ``once``: no call is re-sent by the driver after a connection error or timeout, even
        one whose operation is safe to re-send: the caller learns that its calls may have run,
        and decides (a worker that must count exactly what it settled).
        """
        wait = self._wait_for(durability)
        results: list[Any] = [None] * len(calls)
        confirmed: dict[int, Any] = {}
        pending = list(range(len(calls)))
        with_body = False
        for _attempt in range(4):
            waits: dict[int, Any] = {}
            if first_replies is not None:
                replies, first_replies = first_replies, None
            else:
                batch: list[Command] = []
                probe = with_body and not self.version_checked
                if probe:  # the first EVAL of a body: an old server would fail to compile it
                    batch.append(Command(VERSION_PROBE, all_primaries=True, deadline=deadline))
                spots: list[tuple[int, int]] = []
                for i in pending:
                    batch.append(self.command(calls[i], with_body=with_body,
                                              deadline=deadline, once=once))
                    spots.append((i, len(batch) - 1))
                    if wait is not None and not self.operation(calls[i].op).read_only:
                        batch.append(Command(wait.wait_args, pinned=True))
                raw = yield batch
                if probe:
                    self._check_versions(raw[0])
                replies = [raw[at] for _, at in spots]
                if wait is not None:
                    waits = {i: raw[at + 1] for i, at in spots
                             if at + 1 < len(batch) and batch[at + 1].pinned}
            retry: list[int] = []
            for i, reply in zip(pending, replies):
                if self._needs_retry(reply):
                    retry.append(i)
                else:
                    results[i] = reply
                    if i in waits:
                        confirmed[i] = waits[i]
            if not retry:
                break
            first = replies[pending.index(retry[0])]
            if isinstance(first, NoScriptError):
                with_body = True  # EVAL both runs and caches the script: no extra round trip
                deadline = _reload_deadline(deadline)
            elif _is_refused_fcall(first):
                deadline = _reload_deadline(deadline)
                yield from self.check_server(deadline=deadline)
                if self.requested_mode != "auto":
                    raise from_reply(first, calls[retry[0]].op)
                self.mode = "script"
            else:
                # reloading is bounded too: a node that stops answering while its code is
                # missing must not hold the caller for good
                deadline = _reload_deadline(deadline)
                yield from self.ensure_library(deadline=deadline)
            pending = retry
        else:
            raise LibraryError("the Lua code kept disappearing while being reloaded; giving up")

        out: list[Any] = []
        for i, (call, reply) in enumerate(zip(calls, results)):
            if isinstance(reply, BaseException):
                error = from_reply(reply, call.op)
                if raise_on_error:
                    raise error
                out.append(error)
                continue
            value = call.parse(reply)
            if i in confirmed and wait is not None:
                shortfall = self._shortfall(call, wait, confirmed[i], value)
                if shortfall is not None:
                    if raise_on_error:
                        raise shortfall
                    value = shortfall
            out.append(value)
        return out

    def _shortfall(self, call: Call[Any], wait: Durability, reply: Any, value: Any
                   ) -> DurabilityError | None:
        """Check a WAIT reply; count (and maybe report) a shortfall, or return the error to
        raise."""
        got = reply if isinstance(reply, int) else -1
        if got >= wait.replicas:
            return None
        self.shortfalls += 1
        if wait.on_shortfall == "raise":
            return DurabilityError(call.op, wait.replicas, got, value)
        if callable(wait.on_shortfall):
            wait.on_shortfall(Shortfall(call.op, wait.replicas, got))
        return None

    def run_one(self, call: Call[T], first_reply: Any = None, *, replied: bool = False,
                durability: Durability | int | None = None,
                deadline: float | None = None) -> Plan[T]:
        results = yield from self.run([call], first_replies=[first_reply] if replied else None,
                                      durability=durability, deadline=deadline)
        result: T = results[0]
        return result

    # -- the server's version -------------------------------------------------------------------

    def _check_versions(self, per_node: Any) -> None:
        """Raise RedisVersionError if a node is too old; replies that are errors (INFO refused
        by ACL, a node down) claim nothing."""
        if isinstance(per_node, dict):
            several = len(per_node) > 1
            for node, reply in per_node.items():
                if not isinstance(reply, BaseException):
                    check_version(reply, node if several else None)
        elif not isinstance(per_node, BaseException):
            check_version(per_node)
        self.version_checked = True

    def check_server(self, *, deadline: float | None = None) -> Plan[None]:
        """Check once that every primary runs a Redis pyredislua supports (7.0+).
        ``deadline``: see :class:`Command`."""
        if self.version_checked:
            return
        [per_node] = yield [Command(VERSION_PROBE, all_primaries=True, deadline=deadline)]
        self._check_versions(per_node)

    # -- loading --------------------------------------------------------------------------------

    def _library_state(self, node: str, reply: Any, force: bool) -> tuple[str, str | None]:
        """What to do on one node given its answer to the library's info function: (action,
        the node's version), action one of load, replace, present, newer-on-server,
        unreachable, fallback (FCALL refused in auto mode: use scripts)."""
        lib = self.library
        if _is_missing_function(reply):
            return "load", None
        if _unreachable(reply):
            return "unreachable", None
        if isinstance(reply, BaseException):
            if self.requested_mode == "auto" and _is_refused_fcall(reply):
                return "fallback", None
            raise reply
        version, sha = as_text(reply[0]), as_text(reply[1])
        ours, theirs = _version_tuple(lib.version), _version_tuple(version)
        if theirs < ours or (force and sha != lib.sha):
            return "replace", version
        if theirs == ours and sha != lib.sha:
            raise LibraryConflictError(
                f"{node}: the server has {lib.name} {version} built from other Lua code "
                f"(sha1 {sha[:12]}, ours {lib.sha[:12]}); bump lua/library.lua's version "
                "or load with force=True (pyredislua load --force)"
            )
        return ("newer-on-server" if theirs > ours else "present"), version

    def _report(self, mode: str, nodes: dict[str, str], versions: dict[str, str]
                ) -> LoadReport:
        lib = self.library
        reached = [a for a in nodes.values() if a != "unreachable"]
        action = min(reached or ["unreachable"], key=_ACTION_RANK.index)
        newest = max(versions.values(), key=_version_tuple) if versions else None
        return LoadReport(mode, lib.name, lib.version, action, newest, dict(nodes))

    def ensure_library(self, *, force: bool = False, deadline: float | None = None
                       ) -> Plan[LoadReport]:
        """Make sure every primary has this library version or a newer compatible one, each
        primary settled on its own: absent → load, older → replace, same → leave, newer →
        leave (never downgrade). A node that answers nothing is reported ``unreachable``.

        The same version with other code is a conflict (someone edited lua/ without bumping
        the version): an error unless ``force``. ``deadline``: see :class:`Command` (every
        command of the settling keeps it).
        """
        lib = self.library
        info_args = ("FCALL_RO", lib.info_function, 0)
        batch = [Command(info_args, all_primaries=True, deadline=deadline)]
        if not self.version_checked:
            batch.append(Command(VERSION_PROBE, all_primaries=True, deadline=deadline))
        replies = yield batch
        if len(replies) > 1:
            self._check_versions(replies[1])
        states: dict[str, Any] = dict(replies[0])
        if not states:
            raise LibraryError("found no primary to load the library on")
        if all(_unreachable(r) for r in states.values()):
            raise next(iter(states.values()))
        nodes: dict[str, str] = {}
        versions: dict[str, str] = {}
        for _attempt in range(4):
            loads: dict[str, bool] = {}
            for node, reply in states.items():
                action, version = self._library_state(node, reply, force)
                if action == "fallback":
                    self.mode = "script"
                    return (yield from self.load_scripts(deadline=deadline))
                if version is not None:
                    versions[node] = version
                if action in ("load", "replace"):
                    loads[node] = action == "replace"
                else:
                    nodes[node] = action
            if not loads:
                return self._report("function", nodes, versions)
            load_replies = yield [
                Command(("FUNCTION", "LOAD", "REPLACE", lib.code) if replace
                        else ("FUNCTION", "LOAD", lib.code), node=node, deadline=deadline)
                for node, replace in loads.items()]
            again: list[str] = []
            for (node, replace), reply in zip(loads.items(), load_replies):
                if not isinstance(reply, BaseException):
                    nodes[node] = "replaced" if replace else "loaded"
                    versions[node] = lib.version
                elif _unreachable(reply):
                    nodes[node] = "unreachable"
                elif self.requested_mode == "auto" and _is_refused_fcall(reply):
                    self.mode = "script"
                    return (yield from self.load_scripts(deadline=deadline))
                elif "already exists" in str(reply) and f"'{lib.name}'" in str(reply):
                    again.append(node)  # another client loaded it meanwhile: look again
                elif isinstance(reply, OutOfMemoryError):
                    # FUNCTION LOAD is refused at maxmemory (noeviction) although the
                    # operations that free memory would run: raised as it came (transient), so
                    # a worker or flusher backs off and loads it once memory is back
                    raise reply
                elif isinstance(reply, NoPermissionError):
                    raise LibraryPermissionError(
                        f"this Redis user may not run FUNCTION LOAD ({reply}); load {lib.name} "
                        "as a user who may (pyredislua load), or use mode='auto' to fall back "
                        "to scripts")
                else:
                    raise LibraryConflictError(f"FUNCTION LOAD of {lib.name} failed on {node}: "
                                               f"{reply}")
            if not again:
                return self._report("function", nodes, versions)
            looked = yield [Command(info_args, node=node, deadline=deadline) for node in again]
            states = dict(zip(again, looked))
        raise LibraryError(f"could not settle which {lib.name} the server holds")

    def load_scripts(self, *, deadline: float | None = None) -> Plan[LoadReport]:
        """SCRIPT LOAD every operation on every primary (what EVALSHA finds afterwards).
        ``deadline``: see :class:`Command`."""
        ops = list(self.library.operations.values())
        batch = [Command(("SCRIPT", "LOAD", op.script), all_primaries=True, deadline=deadline)
                 for op in ops]
        probe = not self.version_checked
        if probe:
            batch.insert(0, Command(VERSION_PROBE, all_primaries=True, deadline=deadline))
        replies = yield batch
        if probe:
            self._check_versions(replies.pop(0))
        nodes: dict[str, str] = {}
        for op, per_node in zip(ops, replies):
            for node, reply in per_node.items():
                if isinstance(reply, NoPermissionError):
                    raise LibraryPermissionError(
                        f"this Redis user may not run SCRIPT LOAD ({reply}); grant it, or load "
                        "the scripts as a user who may (pyredislua load --mode script)")
                if _unreachable(reply):
                    nodes[node] = "unreachable"
                    continue
                if isinstance(reply, BaseException):
                    raise reply
                if as_text(reply) != op.sha:
                    raise LibraryError(f"SCRIPT LOAD of {op.name} returned an unexpected sha1")
                nodes.setdefault(node, "scripts-loaded")
        if nodes and all(a == "unreachable" for a in nodes.values()):
            raise RedisConnectionError(f"no primary answered: {', '.join(nodes)}")
        return self._report("script", nodes, {})

    def load(self, *, force: bool = False) -> Plan[LoadReport]:
        """Load the code for the current mode (functions or scripts) ahead of the first call."""
        if self.mode == "function":
            return (yield from self.ensure_library(force=force))
        return (yield from self.load_scripts())

    def server_state(self) -> Plan[dict[str, Any]]:
        """What the server holds of pyredislua libraries, for ``pyredislua list``: library name
        -> {function name -> description}, merged over the primaries."""
        by_node = yield from self.server_state_by_node()
        libraries: dict[str, Any] = {}
        for state in by_node.values():
            if isinstance(state, BaseException):
                continue
            for name, functions in state.items():
                libraries.setdefault(name, {}).update(functions)
        return libraries

    def server_state_by_node(self) -> Plan[dict[str, Any]]:
        """Per primary (``host:port``): library name -> {function name -> description}, or the
        error the node answered with (a node down)."""
        [per_node] = yield [Command(("FUNCTION", "LIST", "LIBRARYNAME", "pyredislua*"),
                                    all_primaries=True)]
        out: dict[str, Any] = {}
        for node, reply in per_node.items():
            if _unreachable(reply):
                out[node] = reply
                continue
            if isinstance(reply, BaseException):
                raise reply
            libraries: dict[str, Any] = {}
            for entry in reply:
                lib = _as_dict(entry)
                name = as_text(lib.get("library_name", "?"))
                functions = {}
                for fn in lib.get("functions", []):
                    f = _as_dict(fn)
                    functions[as_text(f.get("name"))] = as_text(f.get("description") or "")
                libraries[name] = functions
            out[node] = libraries
        if out and all(isinstance(v, BaseException) for v in out.values()):
            raise next(iter(out.values()))
        return out


def _as_dict(entry: Any) -> dict[str, Any]:
    if isinstance(entry, dict):
        return {as_text(k): v for k, v in entry.items()}
    it = iter(entry)
    return {as_text(k): v for k, v in zip(it, it)}
