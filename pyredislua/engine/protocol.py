"""The sans-IO core: operations as call specs, execution as plans.

A *plan* is a generator that yields a batch of :class:`Command` objects and is sent back the list
of replies (an exception object in place of an error reply). It never touches a socket: the sync
client, the asyncio client and pipelines only drive plans (see ``pyredislua.client``), so loading,
NOSCRIPT recovery, mode fallback and error mapping are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from redis.exceptions import (
    ConnectionError,
    NoPermissionError,
    NoScriptError,
    ResponseError,
    TimeoutError,
)

from ..errors import LibraryConflictError, LibraryError, LibraryPermissionError, from_reply
from .render import Library, Operation

T = TypeVar("T")
Mode = Literal["function", "script", "auto"]
MODES: tuple[Mode, ...] = ("function", "script", "auto")


@dataclass(frozen=True)
class Command:
    """One Redis command. ``all_primaries`` marks commands that must reach every primary
    (loading code on a cluster): its reply is then the list of the primaries' replies.
    ``once``: running it twice is not running it once, so a driver must not re-send it after a
    connection error or timeout (redis-py would): the error reaches the plan's caller instead.
    ``deadline`` (``time.monotonic()``): the reply is awaited until then and no longer, the
    command is never re-sent, and a timeout or connection error comes back to the plan in place
    of the reply (the plan retries or gives up), so a plan can keep a timeout it promised while
    Redis is paused or restarting. Not on cluster clients (they re-send and wait as redis-py
    does)."""

    args: tuple[Any, ...]
    all_primaries: bool = False
    once: bool = False
    deadline: float | None = None


class NotSentError(ConnectionError):
    """A connection error before a command was written: it did not run, sending it again is
    safe whatever its ``resend``."""


class NotSentTimeoutError(TimeoutError):
    """A command's deadline passed before it could be written (connecting took too long, or no
    time was left): it did not run."""


@dataclass(frozen=True)
class Sleep:
    """Wait locally before the next batch (time.sleep or asyncio.sleep, as the driver runs).

    Only for waits Redis cannot time precisely (a BLPOP timeout resolves on the server's cron
    tick); a plan never polls with it."""

    seconds: float


Batch = list[Command]
Plan = Generator["Batch | Sleep", list[Any], T]


class _Retry:
    """Marker: the call must go through the recovering plan."""


RETRY = _Retry()


def _identity(reply: Any) -> Any:
    return reply


class Call(Generic[T]):
    """A pure description of one operation call: which Lua operation, keys, arguments, and how to
    read its reply. Building one does no I/O; any executor can run it.

    (A slotted class rather than a frozen dataclass: one is built per operation call.)"""

    __slots__ = ("args", "keys", "op", "parse")

    def __init__(
        self,
        op: str,
        keys: tuple[str, ...],
        args: tuple[str | int | bytes, ...] = (),
        parse: Callable[[Any], T] = _identity,
    ) -> None:
        self.op = op
        self.keys = keys
        self.args = args
        self.parse = parse

    def __repr__(self) -> str:
        return f"Call({self.op!r}, keys={self.keys!r}, args={self.args!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Call) and (self.op, self.keys, self.args, self.parse) == (
            other.op, other.keys, other.args, other.parse)

    def __hash__(self) -> int:
        return hash((self.op, self.keys, self.args))


def text(value: Any) -> str:
    """A reply value as str, whatever the client's ``decode_responses``."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _is_missing_function(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and "Function not found" in str(reply)


def _is_refused_fcall(reply: Any) -> bool:
    """FCALL/FUNCTION unknown (old server, renamed command) or refused by ACL."""
    if isinstance(reply, NoPermissionError):
        return True
    return isinstance(reply, ResponseError) and "unknown command" in str(reply).lower()


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


@dataclass
class LoadReport:
    mode: str
    library: str
    version: str
    action: str  # loaded | replaced | present | newer-on-server | scripts-loaded
    server_version: str | None = None


class Engine:
    """Per-client execution state: the rendered library, the loader mode, what is known loaded.

    Thread- and task-safe enough by construction: every field is a flag whose races only cost an
    extra idempotent load.
    """

    def __init__(self, library: Library, mode: Mode = "auto") -> None:
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
                deadline: float | None = None) -> Command:
        """The command for a call; ``with_body``: in script mode, EVAL the script itself (after
        NOSCRIPT: it runs and caches the script in one round trip)."""
        op = self.operation(call.op)
        if with_body and self.mode == "script":
            verb = "EVAL_RO" if op.read_only else "EVAL"
            args = (verb, op.script, len(call.keys), *call.keys, *call.args)
            return Command(args, once=op.header.send_once, deadline=deadline)
        return Command(self.args(call), once=op.header.send_once, deadline=deadline)

    # -- running calls --------------------------------------------------------------------------

    def _needs_retry(self, reply: Any) -> bool:
        """The reply says the code is missing (or FCALL is refused in auto mode): nothing ran."""
        if _is_missing_function(reply) or isinstance(reply, NoScriptError):
            return True
        return self.mode == "function" and self.requested_mode == "auto" and _is_refused_fcall(
            reply)

    def settle(self, call: Call[T], reply: Any) -> T | _Retry:
        """The outcome of one reply: the parsed value, a raised typed error, or RETRY when the
        code must be (re)loaded first. Lets drivers run the common case without a plan."""
        if isinstance(reply, BaseException):
            if self._needs_retry(reply):
                return RETRY
            raise from_reply(reply, call.op)
        return call.parse(reply)

    def run(
        self,
        calls: Sequence[Call[Any]],
        *,
        raise_on_error: bool = True,
        first_replies: list[Any] | None = None,
        deadline: float | None = None,
    ) -> Plan[list[Any]]:
        """Run calls in order, normally as one batch (one round trip).

        Calls that failed because the code was missing (restart, failover, SCRIPT FLUSH,
        FUNCTION FLUSH) are re-run, in their order, after the code is reloaded. Code goes missing
        all at once, so the failed calls are a suffix of the batch and order is kept.
        ``first_replies``: the replies of a first attempt a driver already made. ``deadline``:
        see :class:`Command` (a transport error is then raised from here, like an error reply).
        """
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        with_body = False
        for _attempt in range(4):
            if first_replies is not None:
                replies, first_replies = first_replies, None
            else:
                replies = yield [self.command(calls[i], with_body=with_body, deadline=deadline)
                                 for i in pending]
            retry: list[int] = []
            for i, reply in zip(pending, replies):
                if self._needs_retry(reply):
                    retry.append(i)
                else:
                    results[i] = reply
            if not retry:
                break
            first = replies[pending.index(retry[0])]
            if isinstance(first, NoScriptError):
                with_body = True  # EVAL both runs and caches the script: no extra round trip
            elif _is_refused_fcall(first):
                self.mode = "script"
            else:
                yield from self.ensure_library()
            pending = retry
        else:
            raise LibraryError("the Lua code kept disappearing while being reloaded; giving up")

        out: list[Any] = []
        for call, reply in zip(calls, results):
            if isinstance(reply, BaseException):
                error = from_reply(reply, call.op)
                if raise_on_error:
                    raise error
                out.append(error)
            else:
                out.append(call.parse(reply))
        return out

    def run_one(self, call: Call[T], first_reply: Any = None, *, replied: bool = False,
                deadline: float | None = None) -> Plan[T]:
        results = yield from self.run([call], first_replies=[first_reply] if replied else None,
                                      deadline=deadline)
        result: T = results[0]
        return result

    # -- loading --------------------------------------------------------------------------------

    def ensure_library(self, *, force: bool = False) -> Plan[LoadReport]:
        """Make sure every primary has this library version or a newer compatible one.

        Never replaces a newer library of the same major. The same version with other code is a
        conflict (someone edited lua/ without bumping the version): an error unless ``force``.
        """
        lib = self.library
        info = Command(("FCALL_RO", lib.info_function, 0), all_primaries=True)
        for _attempt in range(3):
            [per_node] = yield [info]
            needs_load = False
            replace = False
            newest: str | None = None
            for reply in per_node:
                if _is_missing_function(reply):
                    needs_load = True
                    continue
                if isinstance(reply, BaseException):
                    if self.requested_mode == "auto" and _is_refused_fcall(reply):
                        self.mode = "script"
                        return (yield from self.load_scripts())
                    raise reply
                version, sha = text(reply[0]), text(reply[1])
                ours, theirs = _version_tuple(lib.version), _version_tuple(version)
                if newest is None or theirs > _version_tuple(newest):
                    newest = version
                if theirs < ours or (force and sha != lib.sha):
                    needs_load = replace = True
                elif theirs == ours and sha != lib.sha:
                    raise LibraryConflictError(
                        f"the server has {lib.name} {version} built from other Lua code "
                        f"(sha1 {sha[:12]}, ours {lib.sha[:12]}); bump lua/library.lua's version "
                        "or load with force=True (pyredislua load --force)"
                    )
            if newest is not None and _version_tuple(newest) > _version_tuple(lib.version):
                if needs_load and not force:
                    raise LibraryConflictError(
                        f"primaries disagree: one has {lib.name} {newest}, newer than ours "
                        f"({lib.version}); load the newer library everywhere"
                    )
                if not needs_load:
                    return LoadReport("function", lib.name, lib.version, "newer-on-server", newest)
            if not needs_load:
                return LoadReport("function", lib.name, lib.version, "present", newest)
            load = ("FUNCTION", "LOAD", "REPLACE", lib.code) if replace else (
                "FUNCTION", "LOAD", lib.code)
            [results] = yield [Command(load, all_primaries=True)]
            failures = [r for r in results if isinstance(r, BaseException)]
            if not failures:
                action = "replaced" if replace else "loaded"
                return LoadReport("function", lib.name, lib.version, action, newest)
            error = failures[0]
            if self.requested_mode == "auto" and _is_refused_fcall(error):
                self.mode = "script"
                return (yield from self.load_scripts())
            if "already exists" in str(error) and f"'{lib.name}'" in str(error):
                continue  # another client loaded it meanwhile: look again
            if isinstance(error, NoPermissionError):
                raise LibraryPermissionError(
                    f"this Redis user may not run FUNCTION LOAD ({error}); load {lib.name} as a "
                    "user who may (pyredislua load), or use mode='auto' to fall back to scripts")
            raise LibraryConflictError(f"FUNCTION LOAD of {lib.name} failed: {error}")
        raise LibraryError(f"could not settle which {lib.name} the server holds")

    def load_scripts(self) -> Plan[LoadReport]:
        ops = list(self.library.operations.values())
        batch = [Command(("SCRIPT", "LOAD", op.script), all_primaries=True) for op in ops]
        replies = yield batch
        for op, per_node in zip(ops, replies):
            for reply in per_node:
                if isinstance(reply, NoPermissionError):
                    raise LibraryPermissionError(
                        f"this Redis user may not run SCRIPT LOAD ({reply}); grant it, or load "
                        "the scripts as a user who may (pyredislua load --mode script)")
                if isinstance(reply, BaseException):
                    raise reply
                if text(reply) != op.sha:
                    raise LibraryError(f"SCRIPT LOAD of {op.name} returned an unexpected sha1")
        lib = self.library
        return LoadReport("script", lib.name, lib.version, "scripts-loaded")

    def load(self, *, force: bool = False) -> Plan[LoadReport]:
        """Load the code for the current mode (functions or scripts) ahead of the first call."""
        if self.mode == "function":
            return (yield from self.ensure_library(force=force))
        return (yield from self.load_scripts())

    def server_state(self) -> Plan[dict[str, Any]]:
        """What the server holds of pyredislua libraries, for ``pyredislua list``."""
        [per_node] = yield [Command(("FUNCTION", "LIST", "LIBRARYNAME", "pyredislua*"),
                                    all_primaries=True)]
        libraries: dict[str, Any] = {}
        for reply in per_node:
            if isinstance(reply, BaseException):
                raise reply
            for entry in reply:
                lib = _as_dict(entry)
                name = text(lib.get("library_name", "?"))
                functions = {}
                for fn in lib.get("functions", []):
                    f = _as_dict(fn)
                    functions[text(f.get("name"))] = text(f.get("description") or "")
                libraries[name] = functions
        return libraries


def _as_dict(entry: Any) -> dict[str, Any]:
    if isinstance(entry, dict):
        return {text(k): v for k, v in entry.items()}
    it = iter(entry)
    return {text(k): v for k, v in zip(it, it)}
