"""Waiting without polling: block on signal lists between attempts.

Scripts cannot block, so a primitive that must wait for something (a lock to be granted, a job
to be enqueued, a record to turn dirty) tries, and when there is nothing yet, blocks on a signal
list that the producing operation pushes to (``BLPOP``), for no longer than it has to; a
Streams consumer blocks in ``XREAD`` for an entry its group has not delivered yet. These plans
are the one way every primitive waits; drivers run them like any plan.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

from ..kit import TIMER_GRAIN, as_fields, as_text
from .protocol import Call, Command, Engine, Plan, Sleep

T = TypeVar("T")

# A call made this close to a blocking call's deadline (the final try, sent at the deadline) has
# this long for its reply; any other call's reply is awaited until the deadline and no longer.
REPLY_GRACE = 0.25
# A blocking read ends by itself (its own timeout); a reply later than this past it means the
# server is not answering (paused): the wait gives up and the caller's deadline decides.
WAIT_GRACE = 0.1
# Connection errors inside a call that keeps a deadline are retried with this backoff.
RETRY_FIRST, RETRY_MAX = 0.01, 0.25

TRANSPORT_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def backoff(attempt: int) -> float:
    return min(RETRY_MAX, RETRY_FIRST * 2.0 ** attempt)


def run_by(engine: Engine, call: Call[T], deadline: float | None,
           clock: Callable[[], float] = time.monotonic) -> Plan[T | None]:
    """Run ``call`` (safe to re-send: a request record makes a re-send reply as its first run)
    and keep the caller's ``deadline``: its reply is awaited until then (at least
    ``REPLY_GRACE`` after it was sent) and no longer, and transport errors are retried with
    the same call until then. None when no reply came by the deadline (a paused server: the
    call may still run when it wakes); the last connection error when Redis could not be
    reached at all. Without a deadline: the call as the driver runs it (redis-py re-sends)."""
    if deadline is None:
        return (yield from engine.run_one(call))
    failures = 0
    while True:
        sent = clock()
        try:
            return (yield from engine.run_one(call, deadline=max(deadline, sent + REPLY_GRACE)))
        except TRANSPORT_ERRORS as error:
            if clock() >= deadline:
                if isinstance(error, redis.exceptions.TimeoutError):
                    return None
                raise
            yield Sleep(min(backoff(failures), max(0.0, deadline - clock())))
            failures += 1


def wait_for_signal(keys: Sequence[str], seconds: float, *, max_block: float,
                    deadline: float | None = None, grain: float = TIMER_GRAIN
                    ) -> Plan[tuple[Any, Any] | None]:
    """Block until one of the signal lists ``keys`` has an element (popped, and returned as
    ``(key, value)``) or about ``seconds`` pass (at most ``max_block`` per call, so a BLPOP never
    outlives the client's socket timeout); None when nothing came.

    Redis times a BLPOP out on its timer tick (:data:`~pyredislua.kit.TIMER_GRAIN`), so the
    blocking part aims that much short of ``seconds`` and a wait shorter than the grain is slept
    locally: the plan never overshoots what it was given. ``deadline``: see
    :class:`~pyredislua.engine.protocol.Command` (the BLPOP is then never re-sent, and a
    transport error is raised from here). ``grain``: how far short of ``seconds`` the BLPOP aims;
    0 for a caller whose ``seconds`` already aims short of its deadline (the lock's waits are
    also bounded by a registration and a lease, which must not lose a grain)."""
    seconds = min(seconds, max_block)
    block = seconds - grain
    if block < 0.01:
        if seconds > 0:
            yield Sleep(seconds)
        return None
    [popped] = yield [Command(("BLPOP", *keys, round(block, 3)), deadline=deadline)]
    if isinstance(popped, BaseException):
        raise popped
    return (popped[0], popped[1]) if popped else None


def until_signalled(attempt: Callable[[float | None], Plan[T | None]],
                    ready: Callable[[T], bool], due_in: Callable[[T], float | None],
                    keys: Sequence[str], *, timeout: float | None, max_block: float,
                    clock: Callable[[], float] = time.monotonic) -> Plan[T | None]:
    """Run ``attempt`` until its result is ``ready``; between attempts, wait on the signal lists
    ``keys`` for as long as ``due_in(result)`` says something falls due on its own (None: only a
    signal can help), within ``timeout`` (None: forever; 0: one attempt). Returns the last
    result, ready or not.

    A timeout above 0 is kept while Redis is paused or restarting: ``attempt`` gets the
    deadline (for :func:`run_by`; None when there is none) and returns None when no reply came
    by then; the waits end by the deadline too, and a transport error during one is left to
    the next attempt. Then the result is None."""
    deadline = None if timeout is None or timeout <= 0 else clock() + timeout
    end = math.inf if timeout is None else clock() + timeout
    while True:
        result = yield from attempt(deadline)
        if result is None or ready(result):
            return result
        remaining = end - clock()
        if remaining <= 0:
            return result
        due = due_in(result)
        seconds = remaining if due is None else min(remaining, due)
        if deadline is None:
            yield from wait_for_signal(keys, seconds, max_block=max_block)
            continue
        try:
            yield from wait_for_signal(keys, seconds, max_block=max_block, deadline=min(
                deadline, clock() + min(seconds, max_block) + WAIT_GRACE))
        except TRANSPORT_ERRORS:
            if clock() >= deadline:
                return None


def wait_for_entry(stream: str, group: str, seconds: float, *, max_block: float,
                   deadline: float | None = None) -> Plan[None]:
    """Block until ``stream`` has an entry after the last one ``group`` delivered, or about
    ``seconds`` pass (at most ``max_block``; at least 1 ms): ``XINFO GROUPS`` reads where the
    group is, ``XREAD BLOCK`` waits past it. Both only read (a re-sent wait delivers nothing to
    nobody); the caller consumes again afterwards, whatever woke it. A stream or group that does
    not exist yet is waited on from ``$`` (the next entry added). ``deadline``: see
    :class:`~pyredislua.engine.protocol.Command` (a transport error is then raised from here)."""
    block_ms = max(1, int(min(seconds, max_block) * 1000))
    [groups] = yield [Command(("XINFO", "GROUPS", stream), deadline=deadline)]
    if deadline is not None and isinstance(groups, TRANSPORT_ERRORS):
        raise groups  # not a missing stream or group (waited on from $): the server's silence
    after = _last_delivered(groups, group)
    [reply] = yield [Command(("XREAD", "BLOCK", block_ms, "COUNT", 1, "STREAMS", stream, after),
                             deadline=deadline)]
    if isinstance(reply, BaseException):
        raise reply


def _last_delivered(groups: Any, group: str) -> str:
    """The group's last-delivered-id from an XINFO GROUPS reply ("$" when unknown: the stream
    or the group is gone)."""
    if isinstance(groups, BaseException) or not groups:
        return "$"
    for info in groups:
        fields = as_fields(info)
        if as_text(fields.get("name", b"")) == group:
            return as_text(fields.get("last-delivered-id", "$"))
    return "$"
