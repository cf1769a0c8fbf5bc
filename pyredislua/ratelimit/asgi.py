"""ASGI middleware: answer 429 with ``Retry-After`` and the IETF httpapi ``RateLimit`` /
``RateLimit-Policy`` header fields (draft-ietf-httpapi-ratelimit-headers, structured fields)::

    RateLimit-Policy: "api-1s";q=100;w=1
    RateLimit: "api-1s";r=57;t=1

Every response (admitted or not) carries both fields; ``q`` is the quota, ``w`` the window in
seconds, ``r`` what remains and ``t`` the seconds until the quota is back to full.

When Redis cannot decide (unreachable, timed out, or refusing writes at ``maxmemory``), the
middleware fails open by default: the request goes through uncounted and without the two fields
(nothing is known of the quota). ``on_failure="closed"`` answers 503 with ``Retry-After``
instead; ``"raise"`` lets the error reach the server (a 500). Give the redis client a
``socket_timeout``: without one, a frozen Redis holds requests until it answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..client import AsyncClient
from .limiters import Limiter
from .ops import Decision, Failure, FailureLike

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def client_address(scope: Scope) -> str | None:
    """The default identity: the peer's address (put a proxy-aware function in its place)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def policy_names(limiter: Limiter[Any]) -> list[str]:
    return [f"{limiter.name}-{_window_label(r.period_ms)}" for r in limiter.rates]


def _window_label(period_ms: int) -> str:
    return f"{period_ms // 1000}s" if period_ms % 1000 == 0 else f"{period_ms}ms"


def _seconds(ms: int) -> int:
    return max(0, math.ceil(ms / 1000))


def ratelimit_headers(limiter: Limiter[Any], decision: Decision) -> list[tuple[bytes, bytes]]:
    """``RateLimit-Policy`` and ``RateLimit`` for a decision (and ``Retry-After`` if denied)."""
    names = policy_names(limiter)
    policy = ", ".join(f'"{n}";q={r.limit};w={max(1, _seconds(r.period_ms))}'
                       for n, r in zip(names, limiter.rates, strict=True))
    state = ", ".join(f'"{n}";r={max(0, d.remaining)};t={_seconds(d.reset_after_ms)}'
                      for n, d in zip(names, decision.limits, strict=True))
    headers = [(b"ratelimit-policy", policy.encode()), (b"ratelimit", state.encode())]
    if not decision.allowed and decision.retry_after_ms >= 0:
        headers.append((b"retry-after", str(max(1, _seconds(decision.retry_after_ms))).encode()))
    return headers


class RateLimitMiddleware:
    """Charge ``limiter`` (on an :class:`~pyredislua.AsyncClient`) for each HTTP request.

    identify: scope -> identity (None lets the request through uncounted); default: peer address.
    cost: units per request, or scope -> units. tag: scope -> hash tag (default: the identity).
    on_failure: when Redis cannot decide: ``"open"`` (pass the request through, uncounted),
    ``"closed"`` (503) or ``"raise"``; default: the limiter's (itself ``"open"`` by default).
    """

    def __init__(self, app: ASGIApp, limiter: Limiter[AsyncClient], *,
                 identify: Callable[[Scope], str | None] = client_address,
                 cost: int | Callable[[Scope], int] = 1,
                 tag: Callable[[Scope], str | None] | None = None,
                 on_failure: FailureLike | None = None) -> None:
        if not isinstance(limiter.client, AsyncClient):
            raise TypeError("RateLimitMiddleware needs a limiter on an AsyncClient")
        self.app = app
        self.limiter = limiter
        self.identify = identify
        self.cost = cost
        self.tag = tag
        self.failure = limiter.failure if on_failure is None else Failure.of(on_failure)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        identity = self.identify(scope)
        if identity is None:
            await self.app(scope, receive, send)
            return
        units = self.cost(scope) if callable(self.cost) else self.cost
        tag = self.tag(scope) if self.tag is not None else None
        decision = await self.limiter.guarded_hit(  # type: ignore[misc]
            identity, units, tag=tag, failure=self.failure)
        if decision.error is not None:
            if decision.allowed:
                await self.app(scope, receive, send)
                return
            await _respond(send, 503, {"error": "rate limiter unavailable",
                                       "retry_after_ms": decision.retry_after_ms},
                           [(b"retry-after",
                             str(max(1, _seconds(decision.retry_after_ms))).encode())])
            return
        headers = ratelimit_headers(self.limiter, decision)
        if not decision.allowed:
            await _respond(send, 429, {"error": "rate limit exceeded",
                                       "retry_after_ms": decision.retry_after_ms}, headers)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _respond(send: Send, status: int, payload: dict[str, Any],
                   headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
