"""The dashboard as a plain ASGI application (HTTP only; no framework).

Routes (under the mount point, ``scope["root_path"]``)::

    GET  /                        overview: queues, streams, locks, limiters, stores
    GET  /queue/<name>            one queue: ?state=ready|delayed|active|dead, ?dead=<offset>,
                                  ?by=id|key&q=<value> (search), ?done=<message>
    GET  /store/<name>            one write-behind store: ?dead=<offset>
    POST /queue/<name>/requeue    dead letters back to ready (form: csrf, id...)
    POST /queue/<name>/purge      dead letters deleted (form: csrf, id...)
    POST /store/<name>/requeue    dead records back to the flush queue (form: csrf, id...)

Only the primitives the dashboard was given are served (404 otherwise). POSTs are refused with
403 unless actions were allowed, and then need the page's token (``csrf``) and, when the browser
says where the request came from (``Origin``, ``Sec-Fetch-Site``), the same origin.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from ..queue.ops import STATES
from . import data, pages

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 64 * 1024
MAX_IDS = 1000
ACTIONS = {("queue", "requeue"), ("queue", "purge"), ("store", "requeue")}


class HTTPError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Dashboard:
    """The ASGI callable. Build it with :func:`pyredislua.dashboard.app`."""

    def __init__(self, client: Any, config: data.Config, *, token: str | None = None) -> None:
        self.client = client
        self.config = config
        self.run = data.Reader(client)
        self.token = token or secrets.token_urlsafe(24)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        root = scope.get("root_path", "").rstrip("/")
        try:
            status, headers, body = await self.handle(scope, receive, root)
        except HTTPError as error:
            status, headers = error.status, [(b"content-type", b"text/html; charset=utf-8")]
            body = pages.message(self.config, root, error.status, error.text).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            *headers, (b"cache-control", b"no-store"), (b"x-frame-options", b"DENY"),
            (b"content-security-policy",
             b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
             b"form-action 'self'; frame-ancestors 'none'"),
            (b"referrer-policy", b"same-origin"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})

    async def handle(self, scope: Scope, receive: Receive, root: str
                     ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        path = scope["path"]
        if root and path.startswith(root):  # servers that keep the mount point in the path
            path = path[len(root):]
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        method = scope["method"]

        def arg(name: str, default: str = "") -> str:
            values: list[str] = query.get(name, [default])
            return values[-1]

        html_type = [(b"content-type", b"text/html; charset=utf-8")]
        if method in ("GET", "HEAD"):
            if not parts:
                got = await data.overview(self.run, self.config)
                return 200, html_type, pages.overview(self.config, root, got).encode()
            if len(parts) == 2 and parts[0] in ("queue", "store"):
                kind, name = parts
                self._known(kind, name)
                offset = _int(arg("dead", "0"), "dead")
                if kind == "queue":
                    state = arg("state", "ready")
                    if state not in STATES:
                        raise HTTPError(400, f"state must be one of {', '.join(STATES)}")
                    search = None
                    if arg("q").strip():
                        search = ("key" if arg("by") == "key" else "id", arg("q").strip())
                    elif arg("id").strip():
                        search = ("id", arg("id").strip())
                    page = await data.queue_page(self.run, self.config, name,
                                                 state=state, dead_offset=offset,
                                                 search=search)
                    text = pages.queue(self.config, root, self.token, page, arg("done"))
                else:
                    spage = await data.store_page(self.run, self.config, name,
                                                  dead_offset=offset)
                    text = pages.store(self.config, root, self.token, spage, arg("done"))
                return 200, html_type, text.encode()
            raise HTTPError(404, "no such page")
        if method == "POST":
            if len(parts) != 3 or (parts[0], parts[2]) not in ACTIONS:
                raise HTTPError(404, "no such action")
            kind, name, action = parts
            self._known(kind, name)
            if not self.config.allow_actions:
                raise HTTPError(403, "read-only dashboard: actions are disabled (start it with "
                                     "--allow-actions, or app(..., allow_actions=True))")
            self._same_origin(scope)
            form = parse_qs((await _body(receive)).decode("utf-8", "replace"))
            if not hmac.compare_digest(form.get("csrf", [""])[-1], self.token):
                raise HTTPError(403, "missing or wrong form token: reload the page")
            ids = [i for i in form.get("id", []) if i]
            if len(ids) > MAX_IDS:
                raise HTTPError(400, f"at most {MAX_IDS} ids at once")
            try:
                done = await data.act(self.run, self.config, kind, name,
                                      cast(data.Action, action), ids)
            except ValueError as error:
                raise HTTPError(400, str(error)) from None
            except Exception as error:
                raise HTTPError(500, f"{type(error).__name__}: {error}") from None
            where = f"{root}/{kind}/{quote(name, safe='')}?" + urlencode({"done": done})
            return 303, [(b"location", where.encode()), *html_type], b""
        raise HTTPError(405, f"method {method} not allowed")

    def _known(self, kind: str, name: str) -> None:
        if not self.config.has(kind, name):
            raise HTTPError(404, f"no {kind} named {name!r} on this dashboard")

    def _same_origin(self, scope: Scope) -> None:
        """Refuse a request a browser says came from another site."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise HTTPError(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = headers.get("origin") or headers.get("referer")
        if origin and origin != "null":
            host = headers.get("host", "")
            if urlsplit(origin).netloc != host:
                raise HTTPError(403, f"cross-origin request refused (from {origin}, "
                                     f"this is {host})")
        elif origin == "null":
            raise HTTPError(403, "request from an opaque origin refused")


def _int(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise HTTPError(400, f"{name} must be a whole number") from None
    if not 0 <= value <= 1_000_000_000:
        raise HTTPError(400, f"{name} must be 0..1000000000")
    return value


async def _body(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPError(400, "client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPError(413, "form too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
