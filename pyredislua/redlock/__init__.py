"""Redlock: one lock across N independent Redis masters, with fences that keep increasing.

Read :class:`Redlock` (``redlock.py``) first: its docstring states the algorithm, the guarantee
and its limits. The package:

* ``core.py``: the rules (quorum, validity, drift, the fence, the retry delay) as pure
  functions, and the plans of one acquire attempt, a release and an extend round over all
  nodes, written once for sync and asyncio (``Fan`` steps: one single-node plan per node);
* ``hold.py``: what one Redlock object knows of its hold, and its plans (no I/O); the lock's
  watchdog (:mod:`pyredislua.lock.watchdog`) renews it;
* ``redlock.py``: :class:`Redlock`, and the drivers that run a ``Fan`` on a thread pool or with
  ``asyncio.gather``.

Per node it runs the single-instance lock's operations (``lock.acquire``, ``lock.extend``,
``lock.release``) and ``redlock.raise`` (``lua/redlock/raise.lua``).
"""

from .core import (
    Attempt,
    Fan,
    Renewal,
    Votes,
    attempt_plan,
    attempts_plan,
    drift_ms,
    extend_round,
    fence_of,
    quorum,
    raise_call,
    release_all,
    retry_delay,
    valid_until,
)
from .hold import RedlockHold
from .redlock import AsyncNodes, Redlock, SyncNodes

__all__ = [
    "AsyncNodes",
    "Attempt",
    "Fan",
    "Redlock",
    "RedlockHold",
    "Renewal",
    "SyncNodes",
    "Votes",
    "attempt_plan",
    "attempts_plan",
    "drift_ms",
    "extend_round",
    "fence_of",
    "quorum",
    "raise_call",
    "release_all",
    "retry_delay",
    "valid_until",
]
