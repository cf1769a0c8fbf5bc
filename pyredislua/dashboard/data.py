"""What each dashboard page reads: bounded read-only operations (``*.stats``, ``lock.inspect``,
``queue.peek``/``get``/``get_by_key``/``dead``, ``writebehind.dead`` and the per-minute series),
planned as calls and run in one pipelined round trip per page (one per node on a cluster), so a
dashboard can point at a replica. The two writes, requeue and purge, live in :func:`act`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..client import AsyncClient, Client
from ..engine.protocol import Call
from ..observe import figures as fig
from ..observe.figures import Figure, Targets
from ..observe.series import series_call as make_series_call
from ..queue import ops as queue_ops
from ..queue.ops import JobInfo, QueueKeys, State
from ..writebehind import ops as wb_ops
from ..writebehind.ops import DeadRecord, StoreKeys
from .charts import SeriesLike

PAGE = 50  # rows per table: every read is bounded
SeriesKind = Literal["queue", "lock", "limiter", "store", "cache"]


class Reader:
    """Runs calls in one pipelined round trip without raising on error replies (they come back
    as exceptions, each in its place): awaited on an AsyncClient, in a worker thread (one at a
    time) on a sync Client. ``operations``: the names of the operations the client's library
    has (a call to any other would fail the whole round trip, not only its own reply)."""

    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client
        self.operations = frozenset(client.library.operations)
        self._lock = asyncio.Lock()

    async def __call__(self, calls: Sequence[Call[Any]]) -> list[Any]:
        if not calls:
            return []
        if isinstance(self.client, AsyncClient):
            return await self.client.run_many(calls, raise_on_error=False)
        async with self._lock:
            return await asyncio.to_thread(self.client.run_many, calls, raise_on_error=False)


def series_call(kind: SeriesKind, name: str, prefix: str = "prl", tag: str | None = None
                ) -> Call[Any]:
    """The read of one primitive's per-minute series (:mod:`pyredislua.observe.series`).
    ``tag``: a limiter's hash tag (its figures are kept per tag; default: its name)."""
    call: Call[Any] = make_series_call(kind, name, tag=tag, prefix=prefix)
    return call


Limiter = tuple[str, "str | None"]  # (name, hash tag; None: the name)


def limiter_label(limiter: Limiter) -> str:
    name, tag = limiter
    return name if tag is None else f"{name} (tag {tag})"


@dataclass
class Series:
    """One primitive's per-minute series, or why there is none."""

    value: SeriesLike | None
    note: str = ""


@dataclass
class Config:
    """What the dashboard shows and whether it may change anything."""

    targets: Targets
    limiters: Sequence[Limiter] = ()
    allow_actions: bool = False
    title: str = "pyredislua"
    server: str = ""  # shown in the header (a URL without credentials)
    refresh: int = 10  # seconds between page reloads (0: none)

    def has(self, kind: str, name: str) -> bool:
        t = self.targets
        known = {"queue": t.queues, "store": t.stores, "lock": t.locks}.get(kind, ())
        return name in known

    def queue_keys(self, name: str) -> QueueKeys:
        return QueueKeys(name, self.targets.prefix)

    def store_keys(self, name: str) -> StoreKeys:
        return StoreKeys(name, self.targets.prefix)


class _Plan:
    """Calls gathered for one round trip; each ``add`` returns the index of its reply."""

    def __init__(self, run: Reader, prefix: str) -> None:
        self.operations = run.operations
        self.prefix = prefix
        self.calls: list[Call[Any]] = []

    def add(self, call: Call[Any]) -> int:
        self.calls.append(call)
        return len(self.calls) - 1

    def add_series(self, kind: SeriesKind, name: str, tag: str | None = None) -> int | str:
        """The index of the series' reply, or why it is not read."""
        call = series_call(kind, name, self.prefix, tag)
        if call.op not in self.operations:
            return f"no metrics recorded (no {call.op} operation in this pyredislua)"
        return self.add(call)


def _series(replies: list[Any], index: int | str) -> Series:
    if isinstance(index, str):
        return Series(None, index)
    reply = replies[index]
    if isinstance(reply, BaseException):
        text = str(reply).strip().splitlines()[0] if str(reply).strip() else ""
        return Series(None, f"no metrics recorded ({type(reply).__name__}: {text})")
    return Series(reply)


def _value(reply: Any) -> tuple[Any, str | None]:
    if isinstance(reply, BaseException):
        text = str(reply).strip().splitlines()[0] if str(reply).strip() else ""
        return None, f"{type(reply).__name__}: {text}" if text else type(reply).__name__
    return reply, None


@dataclass
class Overview:
    figures: list[Figure]
    series: dict[tuple[str, str], Series]  # by (kind, name; a limiter's label)
    limiters: Sequence[str]  # their labels


async def overview(run: Reader, config: Config) -> Overview:
    """Every target's figures and series, in one round trip."""
    planned = fig.calls(run.client, config.targets)
    plan = _Plan(run, config.targets.prefix)
    for *_, call in planned:
        plan.add(call)
    wanted: list[tuple[SeriesKind, str]] = [
        *(("queue", n) for n in config.targets.queues),
        *(("lock", n) for n in config.targets.locks),
        *(("store", n) for n in config.targets.stores)]
    at: dict[tuple[str, str], int | str] = {
        (kind, name): plan.add_series(kind, name) for kind, name in wanted}
    for limiter in config.limiters:
        at["limiter", limiter_label(limiter)] = plan.add_series("limiter", *limiter)
    replies = await run(plan.calls)
    return Overview(fig.figures(planned, replies[:len(planned)]),
                    {key: _series(replies, index) for key, index in at.items()},
                    [limiter_label(limiter) for limiter in config.limiters])


@dataclass
class QueuePage:
    name: str
    figure: Figure
    series: Series
    state: State
    jobs: list[JobInfo]
    jobs_error: str | None
    dead_offset: int
    dead_total: int
    dead: list[JobInfo]
    dead_error: str | None
    search: tuple[str, str] | None = None  # ("id" | "key", value)
    found: JobInfo | None = None
    search_error: str | None = None


async def queue_page(run: Reader, config: Config, name: str, *, state: State = "ready",
                     dead_offset: int = 0, search: tuple[str, str] | None = None) -> QueuePage:
    """One queue: its figures, series, the first jobs of ``state``, a page of dead letters and
    a search by job id or idempotency key, in one round trip."""
    keys = config.queue_keys(name)
    plan = _Plan(run, config.targets.prefix)
    i_stats = plan.add(queue_ops.stats_call(keys))
    i_series = plan.add_series("queue", name)
    i_jobs = plan.add(queue_ops.peek_call(keys, state, PAGE)) if state != "dead" else None
    i_dead = plan.add(queue_ops.dead_call(keys, dead_offset, PAGE))
    i_search = None
    if search is not None:
        by, value = search
        i_search = plan.add(queue_ops.get_call(keys, value) if by == "id"
                            else queue_ops.get_by_key_call(keys, value))
    replies = await run(plan.calls)
    stats, error = _value(replies[i_stats])
    figure = Figure("queue", name, stats, error)
    jobs, jobs_error = ([], None) if i_jobs is None else _value(replies[i_jobs])
    dead, dead_error = _value(replies[i_dead])
    dead_total, dead_rows = dead if dead is not None else (0, [])
    if state == "dead":
        jobs, jobs_error = dead_rows, dead_error
    page = QueuePage(name, figure, _series(replies, i_series), state, jobs or [], jobs_error,
                     dead_offset, dead_total, dead_rows, dead_error, search)
    if i_search is not None and search is not None:
        page.found, page.search_error = _value(replies[i_search])
    return page


@dataclass
class StorePage:
    name: str
    figure: Figure
    series: Series
    dead_offset: int
    dead: list[DeadRecord]
    dead_error: str | None


async def store_page(run: Reader, config: Config, name: str, *, dead_offset: int = 0
                     ) -> StorePage:
    keys = config.store_keys(name)
    plan = _Plan(run, config.targets.prefix)
    i_stats = plan.add(wb_ops.stats_call(keys))
    i_series = plan.add_series("store", name)
    i_dead = plan.add(wb_ops.dead_call(keys, dead_offset, PAGE))
    replies = await run(plan.calls)
    stats, error = _value(replies[i_stats])
    dead, dead_error = _value(replies[i_dead])
    return StorePage(name, Figure("store", name, stats, error), _series(replies, i_series),
                     dead_offset, dead or [], dead_error)


Action = Literal["requeue", "purge"]


async def act(run: Reader, config: Config, kind: str, name: str, action: Action,
              ids: Sequence[str]) -> str:
    """Requeue or purge dead letters (queues: by id; stores: requeue by record key), and say
    what was done. The only writes the dashboard makes, and only when actions are allowed."""
    if not config.allow_actions:
        raise PermissionError("actions are disabled (start the dashboard with --allow-actions)")
    if not ids:
        raise ValueError("no dead letter chosen")
    if kind == "queue":
        keys = config.queue_keys(name)
        if action == "requeue":
            [done] = await run([queue_ops.requeue_call(keys, ids, limit=len(ids))])
            if isinstance(done, BaseException):
                raise done
            return f"requeued {len(done)} of {len(ids)} dead letter(s)"
        [count] = await run([queue_ops.purge_call(keys, ids, limit=len(ids))])
        if isinstance(count, BaseException):
            raise count
        return f"purged {count} of {len(ids)} dead letter(s)"
    if kind == "store" and action == "requeue":
        [count] = await run([wb_ops.requeue_call(config.store_keys(name), ids, limit=len(ids))])
        if isinstance(count, BaseException):
            raise count
        return f"requeued {count} of {len(ids)} dead record(s)"
    raise ValueError(f"no {action} for a {kind}")
