"""The ASGI middleware served by a real server (uvicorn on a free loopback port), called by a
real HTTP client (httpx)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

import pyredislua
from pyredislua.ratelimit import SlidingLog
from pyredislua.ratelimit.asgi import RateLimitMiddleware
from pyredislua.server import free_port

uvicorn = pytest.importorskip("uvicorn")  # the test extra: uvicorn, httpx
httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.ratelimit


async def hello(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def _user(scope: Any) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-user":
            return str(value.decode())
    return None


@pytest.fixture
def server(redis_url: str, r: redis.Redis) -> Iterator[str]:
    client = pyredislua.AsyncClient(redis.asyncio.Redis.from_url(redis_url))
    limiter = SlidingLog(client, "api", "3/2s", "5/60s")
    app = RateLimitMiddleware(hello, limiter, identify=_user, cost=1)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_middleware_answers_429_with_retry_after_and_ratelimit_fields(server: str,
                                                                      r: redis.Redis) -> None:
    with httpx.Client(base_url=server) as http:
        ok = [http.get("/", headers={"x-user": "alice"}) for _ in range(3)]
        assert [x.status_code for x in ok] == [200, 200, 200]
        assert ok[0].text == "hello"
        assert ok[0].headers["ratelimit-policy"] == '"api-2s";q=3;w=2, "api-60s";q=5;w=60'
        assert ok[0].headers["ratelimit"] == '"api-2s";r=2;t=2, "api-60s";r=4;t=60'
        assert ok[2].headers["ratelimit"].startswith('"api-2s";r=0;')
        assert "retry-after" not in ok[0].headers

        denied = http.get("/", headers={"x-user": "alice"})
        assert denied.status_code == 429
        assert denied.headers["retry-after"] in ("1", "2")
        assert denied.headers["ratelimit"].startswith('"api-2s";r=0;')
        assert denied.json()["error"] == "rate limit exceeded"
        assert 0 < denied.json()["retry_after_ms"] <= 2000

        # another identity is unaffected; requests without one pass uncounted
        assert http.get("/", headers={"x-user": "bob"}).status_code == 200
        assert http.get("/").status_code == 200
        assert "ratelimit" not in http.get("/").headers
    # the denial charged nothing
    assert r.zcount("prl:rl:{alice}:sliding_log:api:alice:2000", "(0", "+inf") == 3
    assert r.zcount("prl:rl:{alice}:sliding_log:api:alice:60000", "(0", "+inf") == 3


def _serve(app: Any) -> tuple[str, Any, threading.Thread]:
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                        lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", srv, thread


@pytest.mark.parametrize("on_failure", [None, "open", "closed"])
def test_middleware_when_redis_is_unreachable(on_failure: str | None) -> None:
    """Fails open by default (the request goes through, uncounted, without RateLimit fields);
    closed answers 503 with Retry-After."""
    conn = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=0.2, retry=None)
    limiter = SlidingLog(pyredislua.AsyncClient(conn), "api", "3/2s")
    app = RateLimitMiddleware(hello, limiter, identify=_user, on_failure=on_failure)  # type: ignore[arg-type]
    url, srv, thread = _serve(app)
    try:
        with httpx.Client(base_url=url) as http:
            response = http.get("/", headers={"x-user": "alice"})
    finally:
        srv.should_exit = True
        thread.join(10)
    if on_failure == "closed":
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"error": "rate limiter unavailable", "retry_after_ms": 1000}
    else:
        assert response.status_code == 200 and response.text == "hello"
        assert "ratelimit" not in response.headers
