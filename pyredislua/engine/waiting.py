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

from ..kit import TIMER_GRAIN, as_fields, as_text
from .protocol import Command, Plan, Sleep

T = TypeVar("T")


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


def until_signalled(attempt: Callable[[], Plan[T]], ready: Callable[[T], bool],
                    due_in: Callable[[T], float | None], keys: Sequence[str], *,
                    timeout: float | None, max_block: float,
                    clock: Callable[[], float] = time.monotonic) -> Plan[T]:
    """Run ``attempt`` until its result is ``ready``; between attempts, wait on the signal lists
    ``keys`` for as long as ``due_in(result)`` says something falls due on its own (None: only a
    signal can help), within ``timeout`` (None: forever; 0: one attempt). Returns the last
    result, ready or not."""
    end = math.inf if timeout is None else clock() + timeout
    while True:
        result = yield from attempt()
        if ready(result):
            return result
        remaining = end - clock()
        if remaining <= 0:
            return result
        due = due_in(result)
        yield from wait_for_signal(keys, remaining if due is None else min(remaining, due),
                                   max_block=max_block)


def wait_for_entry(stream: str, group: str, seconds: float, *, max_block: float
                   ) -> Plan[None]:
    """Block until ``stream`` has an entry after the last one ``group`` delivered, or about
    ``seconds`` pass (at most ``max_block``; at least 1 ms): ``XINFO GROUPS`` reads where the
    group is, ``XREAD BLOCK`` waits past it. Both only read (a re-sent wait delivers nothing to
    nobody); the caller consumes again afterwards, whatever woke it. A stream or group that does
    not exist yet is waited on from ``$`` (the next entry added)."""
    block_ms = max(1, int(min(seconds, max_block) * 1000))
    [groups] = yield [Command(("XINFO", "GROUPS", stream))]
    after = _last_delivered(groups, group)
    [reply] = yield [Command(("XREAD", "BLOCK", block_ms, "COUNT", 1, "STREAMS", stream, after))]
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
