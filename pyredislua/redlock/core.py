"""Redlock's decisions and plans, written once for sync and asyncio: no I/O.

One Redlock step talks to N independent Redis masters at once. A plan here yields :class:`Fan`
steps (one sub-plan per node, each an ordinary single-node plan of that node's engine, with a
per-node deadline) and :class:`~pyredislua.engine.protocol.Sleep` steps; the façade's drivers
(:mod:`.redlock`) run a ``Fan`` on a thread pool (sync) or with ``asyncio.gather`` and send back
``{node index: value or exception}``. Everything else (quorum, validity, the fence, the retry
delay, what to release) is decided here by pure functions.

The per-node operations are the single-instance lock's (``lock.acquire``, ``lock.extend``,
``lock.release``, not waiting, durable fences) plus ``redlock.raise``, which brings the fence
counters of a majority up to the fence the holder returns (see :func:`fence_of`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from ..engine.protocol import Call, Engine, Plan, Sleep
from ..lock.ops import AcquireResult, LockKeys, acquire_call, extend_call, release_call

T = TypeVar("T")


def _no(_: Any) -> bool:
    return False


@dataclass(frozen=True)
class Fan:
    """Run these single-node plans at once, plan ``(i, p)`` on node ``i``; the plan is sent back
    a dict from node index to the plan's value, or to the exception it raised.

    ``enough``: the driver may stop waiting once that many values satisfy ``ok`` (a majority
    granted: a slow or paused node then costs nothing); the nodes not heard from are missing
    from the dict, and their plans run on to their deadlines in the background, their outcome
    unknown, like a node that timed out. 0: wait for every node (each bounded by its deadline).
    """

    plans: tuple[tuple[int, Plan[Any]], ...]
    enough: int = 0
    ok: Callable[[Any], bool] = _no
    # once enough said yes, wait this many times as long again (at least 1 ms) for the others:
    # nodes as healthy as the majority are then heard from, a paused one costs little
    linger: float = 0.0
    # the calls' own deadline: past it (and a grace for the reply in flight) the driver stops
    # waiting, whatever a node's connection does (a call that could not honour it, stuck on a
    # black-holed socket, must not hold up the lock's watchdog)
    deadline: float | None = None

    def satisfied(self, replies: Mapping[int, Any]) -> bool:
        return self.enough > 0 and sum(
            1 for r in replies.values()
            if not isinstance(r, BaseException) and self.ok(r)) >= self.enough


FanPlan = Generator[Fan | Sleep, Any, T]


# -- the rules ----------------------------------------------------------------------------------


def quorum(n: int) -> int:
    """Votes a decision needs among ``n`` nodes: a majority, so any two majorities share a node."""
    return n // 2 + 1


def drift_ms(ttl_ms: int) -> int:
    """The clock drift allowed for a lease of ``ttl_ms``: 1 % of it plus 2 ms (Redis' timer
    resolution), as the Redlock specification says."""
    return ttl_ms // 100 + 2


def valid_until(started: float, ttl_ms: int) -> float:
    """Local time until which a lease of ``ttl_ms`` set on the nodes after ``started`` is surely
    still running on all of them: ``started + ttl - drift``. The specification's validity time
    ``ttl - elapsed - drift`` is what remains of it once the replies are in."""
    return started + (ttl_ms - drift_ms(ttl_ms)) / 1000


def retry_delay(draw: float, base: float, remaining: float) -> float | None:
    """The random pause before the next attempt: ``base`` x [0.5, 1.5) from ``draw`` in [0, 1)
    (spreads competing clients apart), within ``remaining``; None when no time is left."""
    if remaining <= 0:
        return None
    return min(base * (0.5 + draw), remaining)


class Votes(NamedTuple):
    """What one round of per-node calls said."""

    yes: dict[int, Any]  # node -> its value, where the call succeeded as asked
    no: frozenset[int]  # nodes that answered, and refused (busy, not the owner)
    silent: frozenset[int]  # nodes that did not answer in time, or failed: the outcome is unknown


def count(replies: Mapping[int, Any], ok: Callable[[Any], bool]) -> Votes:
    yes: dict[int, Any] = {}
    no: set[int] = set()
    silent: set[int] = set()
    for node, reply in replies.items():
        if isinstance(reply, BaseException):
            silent.add(node)
        elif ok(reply):
            yes[node] = reply
        else:
            no.add(node)
    return Votes(yes, frozenset(no), frozenset(silent))


def fence_of(fences: Mapping[int, int], n: int) -> tuple[int, list[int]]:
    """The fence a holder returns, and the nodes whose counter must be raised to it.

    The fence is the highest counter among the nodes that granted. Alone it would not be
    monotonic: counters of different nodes drift apart (an attempt that failed still advanced
    the counters of the nodes that granted it, a node that was down advanced none), so a later
    majority may not include the node that gave the earlier holder its high fence. Hence the
    rule: a hold counts only once a majority of nodes, each held by this token, has a counter
    of at least the fence (``redlock.raise`` on the ones below it). Every later holder's
    majority shares a node with that majority, and advanced its counter after this hold was
    over there, so its highest counter is greater. When a majority already gave the highest
    fence (counters in step: the usual case), no raise is needed: one round trip."""
    top = max(fences.values())
    at_top = [node for node, fence in fences.items() if fence == top]
    if len(at_top) >= quorum(n):
        return top, []
    return top, sorted(node for node, fence in fences.items() if fence < top)


# -- one round of per-node calls ----------------------------------------------------------------


def fan_calls(engines: Sequence[Engine], calls: Mapping[int, Call[Any]], deadline: float,
              enough: int = 0, ok: Callable[[Any], bool] = _no, linger: float = 0.0) -> Fan:
    """One call per listed node, each awaited until ``deadline`` and no longer (``enough``,
    ``ok``, ``linger``: see :class:`Fan`)."""
    return Fan(tuple((node, engines[node].run_one(call, deadline=deadline))
                     for node, call in calls.items()), enough, ok, linger, deadline)


def _awaited_from_send(engine: Engine, call: Call[T], timeout: float,
                       clock: Callable[[], float]) -> Plan[T]:
    """A call awaited ``timeout`` from when it is sent, not from when its round began: a driver
    holds a node's call back until its previous call to the node is over (at its deadline, for
    an acquire whose reply is late), and a release timed from the round would then never be
    sent, leaving a grant it was meant to undo held until its lease ends."""
    return (yield from engine.run_one(call, deadline=clock() + timeout))


def _granted(reply: Any) -> bool:
    return isinstance(reply, AcquireResult) and reply.acquired


def _released(reply: Any) -> bool:
    return int(reply) > 0


def raise_call(keys: LockKeys, token: str, fence: int) -> Call[bool]:
    """``redlock.raise``: the fence counter (and this holder's fence) of one node up to
    ``fence``; True when the token holds the lock there."""
    return Call("redlock.raise", (keys.lock, keys.fence), (token, fence), lambda r: int(r) == 1)


class Attempt(NamedTuple):
    """One acquire attempt on all nodes."""

    acquired: bool
    fence: int | None
    started: float  # local time before the first call was sent: every lease began after it
    valid_until: float  # started + ttl - drift (meaningful when acquired)
    granted: int  # nodes that granted (before any release)
    reason: str  # why not, for errors and logs ("" when acquired)
    token: str = ""  # the owner token this attempt used


def attempt_plan(engines: Sequence[Engine], keys: LockKeys, token: str, ttl_ms: int,
                 node_timeout: float, clock: Callable[[], float] = time.monotonic
                 ) -> FanPlan[Attempt]:
    """Acquire on every node at once (each call awaited ``node_timeout``); keep the hold if a
    majority granted and its validity has not run out by the time the replies (and any fence
    raise) are in; otherwise release on every node that did not refuse outright."""
    n = len(engines)
    need = quorum(n)
    started = clock()
    until = valid_until(started, ttl_ms)
    # A majority of grants ends the wait (after as long again for the others): a node not heard
    # from by then counts as one that timed out, and the fence rule needs only the majority heard
    # from (fence_of). The drivers run this object's calls to a node in order, so the release
    # waits for that acquire; one that reaches its node after its deadline may still land after
    # the release: that node then stays busy until the lease ends, for a minority, and never
    # counts for a later attempt of this object (a new owner token each).
    replies = yield fan_calls(engines, {i: acquire_call(keys, token, ttl_ms) for i in range(n)},
                              started + node_timeout, need, _granted, linger=1.0)
    votes = count(replies, _granted)
    fences = {node: int(r.fence) for node, r in votes.yes.items()}
    fence: int | None = None
    reason = ""
    if len(fences) < need:
        reason = (f"{len(fences)} of {n} nodes granted ({len(votes.no)} busy, "
                  f"{len(votes.silent)} unreachable); {need} needed")
    elif clock() >= until:
        reason = "the validity time ran out before a majority granted"
    else:
        fence, behind = fence_of(fences, n)
        if behind:
            raised = yield fan_calls(engines, {i: raise_call(keys, token, fence) for i in behind},
                                     min(clock() + node_timeout, until))
            confirmed = (len(fences) - len(behind)) + len(count(raised, bool).yes)
            if confirmed < need:
                reason = f"the fence could be raised on {confirmed} nodes only; {need} needed"
            elif clock() >= until:
                reason = "the validity time ran out while raising the fence"
        elif clock() >= until:
            reason = "the validity time ran out before a majority granted"
    if not reason:
        return Attempt(True, fence, started, until, len(fences), "", token)
    # A node that refused (busy) is not ours; any other may have granted without our hearing.
    yield from release_all(engines, keys, token, set(range(n)) - votes.no, node_timeout, clock)
    return Attempt(False, None, started, until, len(fences), reason, token)


def release_all(engines: Sequence[Engine], keys: LockKeys, token: str, nodes: set[int],
                node_timeout: float, clock: Callable[[], float] = time.monotonic,
                enough: int = 0) -> FanPlan[Votes]:
    """Release on ``nodes`` (sent once each, however long the driver holds a node's release back
    behind its previous call to the node, and awaited ``node_timeout`` from its send; the round
    waits ``node_timeout`` from its start at most; ``enough``: stop waiting
    once that many released, and as long again for the others, so that a node as fast as the
    majority is free again when this returns); a node that does not answer keeps the key until
    its lease runs out. Votes: yes = released here."""
    if not nodes:
        return Votes({}, frozenset(), frozenset())
    plans = tuple((i, _awaited_from_send(engines[i], release_call(keys, token), node_timeout,
                                         clock)) for i in sorted(nodes))
    replies = yield Fan(plans, enough, _released, 1.0, clock() + node_timeout)
    return count(replies, _released)


class Renewal(NamedTuple):
    """One extend round on all nodes."""

    extended: bool  # a majority extended within the new validity
    valid_until: float  # the new validity (meaningful when extended)
    hopeless: bool  # so many nodes answered "not the owner" that no majority can be ours


def extend_round(engines: Sequence[Engine], keys: LockKeys, token: str, ttl_ms: int,
                 node_timeout: float, deadline: float,
                 clock: Callable[[], float] = time.monotonic) -> FanPlan[Renewal]:
    """Extend the lease to ``ttl_ms`` on every node at once, each call awaited until
    ``min(now + node_timeout, deadline)``. ``lock.extend`` only renews a lease this token still
    holds (an expired one stays expired), so the nodes that extended have been held by it
    without a gap: a majority of them means no other holder could have had a majority
    meanwhile."""
    n = len(engines)
    started = clock()
    until = valid_until(started, ttl_ms)
    replies = yield fan_calls(engines, {i: extend_call(keys, token, ttl_ms) for i in range(n)},
                              min(started + node_timeout, deadline), quorum(n), bool)
    votes = count(replies, bool)
    extended = len(votes.yes) >= quorum(n) and clock() < until
    return Renewal(extended, until, len(votes.no) > n - quorum(n))


def attempts_plan(engines: Sequence[Engine], keys: LockKeys, tokens: Callable[[], str],
                  ttl_ms: int, *, node_timeout: float, blocking: bool, timeout: float | None,
                  retry: float, draw: Callable[[], float],
                  clock: Callable[[], float] = time.monotonic) -> FanPlan[Attempt]:
    """Attempt, and while blocking retry after a random delay until ``timeout`` (None: no
    limit). Every attempt has an owner token of its own (``tokens()``): a call of an earlier
    attempt still on its way to a slow node (its release, say, sent once a majority answered
    without that node) can never touch a later attempt's hold. An attempt is only started
    before the deadline, and takes at most two rounds of ``node_timeout`` (three when the fence
    is raised), so the plan ends by ``timeout + 2*node_timeout``."""
    deadline = math.inf if timeout is None else clock() + timeout
    while True:
        attempt = yield from attempt_plan(engines, keys, tokens(), ttl_ms, node_timeout, clock)
        if attempt.acquired or not blocking:
            return attempt
        delay = retry_delay(draw(), retry, deadline - clock())
        if delay is None:
            return attempt
        yield Sleep(delay)  # the last attempt is made at the deadline
