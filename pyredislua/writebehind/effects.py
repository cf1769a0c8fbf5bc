"""Flows: logic that mixes Redis plans with other I/O (a sink, a compute function, a lock),
written once as a generator and driven by a sync or an asyncio driver.

A flow yields steps and is sent back their results; a step that raised is thrown back into the
flow at the ``yield``, so flows use plain ``try``/``except``:

* :class:`Redis` — run a pyredislua plan (``client.drive``);
* :class:`Do` — call a function: the sync driver calls it; the asyncio driver awaits what it
  returns when that is awaitable, and runs it in a worker thread first when ``thread`` is set
  (blocking sinks, e.g. sqlite3 or psycopg's sync connection).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..engine.protocol import Plan

if TYPE_CHECKING:
    from ..client import AsyncClient, Client

T = TypeVar("T")


@dataclass(frozen=True)
class Redis:
    plan: Plan[Any]


@dataclass(frozen=True)
class Do:
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    thread: bool = False


Step = Redis | Do
Flow = Generator[Step, Any, T]


def drive_sync(client: Client, flow: Flow[T]) -> T:
    """Run a flow to its end on a sync client."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as done:
            result: T = done.value
            return result
        send, error = None, None
        try:
            send = client.drive(step.plan) if isinstance(step, Redis) else step.fn(*step.args)
        except Exception as exc:
            error = exc


async def drive_async(client: AsyncClient, flow: Flow[T]) -> T:
    """Run a flow to its end on an asyncio client."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as done:
            result: T = done.value
            return result
        send, error = None, None
        try:
            if isinstance(step, Redis):
                send = await client.drive(step.plan)
            else:
                if step.thread and not inspect.iscoroutinefunction(step.fn):
                    send = await asyncio.to_thread(step.fn, *step.args)
                else:
                    send = step.fn(*step.args)
                if inspect.isawaitable(send):
                    send = await send
        except Exception as exc:
            error = exc
