"""``@limiter.limit(...)``: rate-limit a sync or an ``async def`` function."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from ..client import AsyncClient, Client
from .ops import Decision, RateLimitExceeded

F = TypeVar("F", bound=Callable[..., Any])


class Hits(Protocol):
    """What the decorator needs of a limiter (any :class:`~pyredislua.ratelimit.Limiter`)."""

    name: str

    @property
    def client(self) -> Client | AsyncClient: ...

    def hit(self, identity: str, cost: int = 1, *, tag: str | None = None) -> Any: ...


def rate_limited(limiter: Hits, key: str | Callable[..., str], *,
                 cost: int | Callable[..., int] = 1,
                 tag: str | Callable[..., str] | None = None) -> Callable[[F], F]:
    """Charge ``limiter`` before each call; raise :class:`RateLimitExceeded` when denied.

    ``key``, ``cost`` and ``tag`` are values or callables given the function's arguments.
    An ``async def`` function needs the limiter on an asyncio client, a plain one a sync client.
    When Redis cannot decide, the limiter's ``on_failure`` mode does: open runs the function,
    closed raises :class:`RateLimitExceeded` (its decision carries the error).
    """

    def hit(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        identity = key(*args, **kwargs) if callable(key) else key
        units = cost(*args, **kwargs) if callable(cost) else cost
        tagged = tag(*args, **kwargs) if callable(tag) else tag
        return limiter.hit(identity, units, tag=tagged)

    def decorate(fn: F) -> F:
        what = f"{getattr(fn, '__qualname__', fn)}: {limiter.name} rate limit exceeded"
        if inspect.iscoroutinefunction(fn):
            if not isinstance(limiter.client, AsyncClient):
                raise TypeError("an async function needs a limiter on an AsyncClient")

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                decision: Decision = await hit(args, kwargs)
                if not decision.allowed:
                    raise RateLimitExceeded(decision, what)
                return await fn(*args, **kwargs)

            return cast(F, async_wrapper)
        if not isinstance(limiter.client, Client):
            raise TypeError("a sync function needs a limiter on a sync Client")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            decision: Decision = hit(args, kwargs)
            if not decision.allowed:
                raise RateLimitExceeded(decision, what)
            return fn(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
