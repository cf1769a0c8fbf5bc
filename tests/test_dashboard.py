"""``pyredislua dashboard``: the pure chart and percentile functions on series values built
here; the ASGI app served by uvicorn on a real Redis, called over plain HTTP; and the same pages
in a real headless Chromium (skipped, with the reason, when no Chromium is installed)."""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

import pyredislua
from pyredislua import dashboard
from pyredislua.dashboard import charts
from pyredislua.lock import Lock, LockKeys
from pyredislua.lock.ops import acquire_call
from pyredislua.observe.series import MinuteSeries
from pyredislua.queue import Queue
from pyredislua.server import RedisServer, free_port
from pyredislua.writebehind import StoreKeys, WriteBehind
from pyredislua.writebehind.ops import claim_call, fail_call
from tests import cdp

uvicorn = pytest.importorskip("uvicorn")  # the test extra: uvicorn, httpx
httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.cli



# -- pure functions, on series values ------------------------------------------------------------


def _minute_series(**kw: Any) -> Any:
    """A real MinuteSeries (its type is checked against the protocol the dashboard reads)."""
    return MinuteSeries(**kw)


def _hist(**at: int) -> list[int]:
    out = [0] * charts.BUCKETS
    for bucket, count in at.items():
        out[int(bucket[1:])] = count
    return out


def test_bucket_bounds_are_log2_milliseconds() -> None:
    assert charts.bucket_bounds(0) == (0, 1)
    assert charts.bucket_bounds(1) == (1, 2)
    assert charts.bucket_bounds(4) == (8, 16)
    assert charts.bucket_bounds(15) == (16384, 32768)
    assert charts.bucket_bounds(16) == (32768, None)
    with pytest.raises(ValueError):
        charts.bucket_bounds(17)


def test_percentiles_take_the_bucket_of_the_nearest_rank() -> None:
    h = _hist(b0=50, b3=40, b10=9, b16=1)  # 100 samples
    got = charts.percentiles(h)
    assert got["p50"] == charts.Bound(0, 0, 1)  # the 50th sample is the last < 1 ms
    assert got["p90"] == charts.Bound(3, 4, 8)  # the 90th is the last of bucket 3
    assert got["p99"] == charts.Bound(10, 512, 1024)
    assert charts.percentile(h, 1.0) == charts.Bound(16, 32768, None)
    assert charts.percentile(h, 0.51) == charts.Bound(3, 4, 8)
    assert [b.text for b in got.values() if b] == ["< 1 ms", "< 8 ms", "< 1.02 s"]
    assert charts.percentile(h, 1.0).text == "≥ 32.8 s"  # type: ignore[union-attr]
    assert charts.percentiles([0] * 17) == {"p50": None, "p90": None, "p99": None}
    with pytest.raises(ValueError):
        charts.percentile([1] * 16, 0.5)
    with pytest.raises(ValueError):
        charts.percentile(h, 0)


def test_depth_history_walks_back_from_the_depth_now() -> None:
    # minute 0: 5 in; minute 1: 3 in, 4 done; minute 2 (now): 1 in, 1 dead: 4 unfinished now
    assert charts.depth_history(4, [5, 3, 1], [0, 4, 0], [0, 0, 1]) == [5, 4, 4]
    assert charts.depth_history(0, [0, 0], [0, 9], [0, 0]) == [9, 0]
    assert charts.depth_history(0, [9, 9], [0, 0], [0, 0]) == [0, 0]  # clamped, not negative
    with pytest.raises(ValueError):
        charts.depth_history(0, [1], [1, 2], [0])


def test_rates_leave_the_current_minute_out() -> None:
    counts = [0] * 54 + [10, 10, 10, 10, 20, 999]
    assert charts.per_minute_rate(counts) == 12.0
    assert charts.per_minute_rate(counts, 1) == 20.0
    assert charts.share(1, 4) == 0.25 and charts.share(0, 0) is None


def test_recorded_tells_an_empty_series_from_one_with_data() -> None:
    empty = _minute_series(kind="queue", name="q", minute=1, counters={"enqueued": [0] * 60},
                           histograms={"wait": [0] * 17, "run": [0] * 17})
    assert not charts.recorded(None) and not charts.recorded(empty)
    some = _minute_series(kind="queue", name="q", minute=1,
                          counters={"enqueued": [0] * 59 + [1]},
                          histograms={"wait": [0] * 17, "run": [0] * 17})
    assert charts.recorded(some)


def test_line_chart_draws_one_polyline_per_series_scaled_to_a_round_top() -> None:
    svg = charts.line_chart({"enqueued": [0] * 58 + [7, 3], "completed": [1] * 60},
                            minute=29_000_000, title="q <x>")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 2 and 'data-series="enqueued"' in svg
    assert "q &lt;x&gt;" in svg and "<x>" not in svg  # escaped
    assert ">10</text>" in svg  # 7 rounds up to 10
    points = re.search(r'data-series="enqueued"[^>]*points="([^"]+)"', svg)
    assert points is not None
    xy = [tuple(map(float, p.split(","))) for p in points.group(1).split()]
    assert len(xy) == 60 and xy[0][0] < xy[-1][0]
    assert xy[58][1] < xy[59][1] < xy[0][1]  # 7 higher than 3, higher than 0 (y grows down)
    with pytest.raises(ValueError):
        charts.line_chart({"a": [1], "b": [1, 2]}, minute=0, title="")


def test_histogram_chart_draws_a_bar_per_bucket() -> None:
    svg = charts.histogram_chart(_hist(b2=5, b16=1), title="wait")
    assert svg.count('class="bar"') == 17
    heights = [float(h) for h in re.findall(r'class="bar"[^>]*height="([0-9.]+)"', svg)]
    assert heights[2] > heights[16] > 0 and heights[0] == 0


def _queue_series(minute: int = 29_000_000) -> Any:
    ones = [0] * 57 + [4, 6, 2]
    return _minute_series(
        kind="queue", name="orders", minute=minute,
        counters={"enqueued": ones, "completed": [0] * 57 + [1, 5, 3], "failed": [0] * 60,
                  "retried": [0] * 60, "dead": [0] * 58 + [1, 0]},
        histograms={"wait": _hist(b0=5, b4=4, b9=1), "run": _hist(b2=9)})


def test_queue_page_draws_the_series_it_is_given() -> None:
    from pyredislua.dashboard import data, pages
    from pyredislua.observe.figures import Figure, Targets
    from pyredislua.queue.ops import QueueStats

    config = data.Config(Targets(queues=["orders"]), allow_actions=False, refresh=0)
    stats = QueueStats(2, 0, 1, 0, 1, {"enqueued": 12}, None)
    page = data.QueuePage("orders", Figure("queue", "orders", stats), data.Series(
        _queue_series()), "ready", [], None, 0, 0, [], None)
    out = pages.queue(config, "/ops", "token", page)
    assert out.count("<svg") == 4  # unfinished, throughput, wait and run histograms
    assert out.count('class="series"') == 6  # 1 unfinished + 5 counters
    # unfinished now 3, walked back: 3 - 2 + 3 = 4, 4 - 6 + 5 + 1 = 4, 4 - 4 + 1 = 1
    points = re.search(r'data-series="unfinished"[^>]*points="([^"]+)"', out)
    assert points is not None
    ys = [float(p.split(",")[1]) for p in points.group(1).split()]
    assert ys[-4] > ys[-1] > ys[-2] == ys[-3]  # 1, 4, 4, 3 (y grows down)
    rows = re.findall(r"<tr><td>(wait|run)</td><td>([^<]+)</td><td>([^<]+)</td>"
                      r"<td>([^<]+)</td>", out)
    assert rows == [("wait", "&lt; 1 ms", "&lt; 16 ms", "&lt; 512 ms"),
                    ("run", "&lt; 4 ms", "&lt; 4 ms", "&lt; 4 ms")]
    assert "no metrics recorded" not in out and 'method="post"' not in out
    empty = data.QueuePage("orders", Figure("queue", "orders", stats), data.Series(
        None, "no metrics recorded (because)"), "ready", [], None, 0, 0, [], None)
    assert "no metrics recorded (because)" in pages.queue(config, "", "t", empty)


def test_overview_shows_limiter_rates_and_lock_figures_from_series() -> None:
    from pyredislua.dashboard import data, pages
    from pyredislua.lock.ops import LockState
    from pyredislua.observe.figures import Figure, Targets

    config = data.Config(Targets(locks=["billing"]), limiters=[("api", None), ("quiet", None)],
                         refresh=0)
    api = _minute_series(kind="limiter", name="api", minute=1,
                         counters={"allowed": [0] * 54 + [30] * 5 + [7],
                                   "denied": [0] * 54 + [10] * 5 + [1]}, histograms={})
    lock = _minute_series(kind="lock", name="billing", minute=1,
                          counters={"acquired": [0] * 55 + [2] * 5, "contended": [0] * 60,
                                    "handoffs": [0] * 60, "expired": [0] * 60},
                          histograms={"wait": _hist(b0=3, b11=1)})
    got = data.Overview([Figure("lock", "billing", LockState(True, "tok", 1500, 7, 2))],
                        {("limiter", "api"): data.Series(api),
                         ("limiter", "quiet"): data.Series(None, "no metrics recorded (x)"),
                         ("lock", "billing"): data.Series(lock)}, ["api", "quiet"])
    text = _text(pages.overview(config, "", got))
    assert "api 30.0 10.0 157 51 24.5 %" in text  # 51 denied of 208 over the hour
    assert "quiet no metrics recorded (x)" in text
    assert "billing held tok 7 1.5 s 2 1.6 10 < 1 ms / < 2.05 s / < 2.05 s" in text
    assert pages.overview(config, "", got).count('class="series"') == 2


# -- a live Redis with queue, lock and write-behind state ----------------------------------------


@dataclass
class State:
    client: pyredislua.Client
    dead_id: str
    dead_key_id: str  # a ready job with an idempotency key
    active_id: str
    lock_token: str


def _state(client: pyredislua.Client) -> State:
    q = Queue(client, "orders", lease=60)
    q.enqueue_many([q.job(f"order {i}") for i in range(4)])
    [job] = q.dequeue(1)
    q.ack(job)  # order 0
    [job] = q.dequeue(1)
    q.nack(job, "card declined", action="dead")  # order 1
    [active] = q.dequeue(1)  # order 2
    held = q.enqueue("pay invoice 7", key="invoice-7")  # ready: order 3 and this
    lock = Lock(client, "billing", ttl=60, auto_renew=False)
    assert lock.acquire(blocking=False) and lock.token is not None
    # a second contender registers as a waiter
    waiting = client.run(acquire_call(LockKeys("billing"), "other", 60_000, wait_ms=30_000))
    assert not waiting.acquired
    wb = WriteBehind(client, "tx")
    wb.write_many([("acct:1", "100"), ("acct:2", "200")])
    keys = StoreKeys("tx")
    claim = client.run(claim_call(keys, 1, 30_000))
    [record] = claim.records
    client.run(fail_call(keys, claim.token, [(record, "sink refused: duplicate key")],
                         max_attempts=1, backoff_ms=10, max_backoff_ms=10))
    return State(client, job.id, held.id, active.id, lock.token)


@pytest.fixture
def state(redis_url: str, r: redis.Redis) -> State:
    return _state(pyredislua.Client(redis.Redis.from_url(redis_url)))


class Served:
    def __init__(self, app: Any, url: str) -> None:
        self.app = app
        self.url = url


@pytest.fixture
def serve(redis_url: str) -> Iterator[Callable[..., Served]]:
    servers: list[tuple[Any, threading.Thread]] = []

    def start(allow_actions: bool = False, *, wrap: Callable[[Any], Any] | None = None,
              client: Any = None, **kw: Any) -> Served:
        shown: dict[str, Any] = {"queues": ["orders"], "locks": ["billing", "idle"],
                                 "stores": ["tx"], "limiters": ["api"], **kw}
        app = dashboard.app(client or pyredislua.Client(redis.Redis.from_url(redis_url)),
                            allow_actions=allow_actions, refresh=0, server="redis://test",
                            **shown)
        port = free_port()
        srv = uvicorn.Server(uvicorn.Config(wrap(app) if wrap else app, host="127.0.0.1",
                                            port=port, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        servers.append((srv, thread))
        deadline = time.monotonic() + 10
        while not srv.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        return Served(app, f"http://127.0.0.1:{port}")

    yield start
    for srv, thread in servers:
        srv.should_exit = True
        thread.join(10)


def _text(page: str) -> str:
    """The page's text: tags out, entities decoded, whitespace squeezed."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


# -- plain HTTP ----------------------------------------------------------------------------------


def test_overview_shows_every_primitive(state: State, serve: Callable[..., Served]) -> None:
    s = serve()
    got = httpx.get(s.url + "/")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in got.headers["content-security-policy"]
    text = _text(got.text)
    assert "read-only" in text and "redis://test" in text
    # queue: ready, delayed, active, dead, enqueued total
    assert re.search(r"orders 2 0 1 1 5 ", text), text
    owner = re.escape(state.lock_token[:20])
    lease = re.search(rf"billing held {owner}\S* 1 (\d+\.\d) s 1 ", text)
    assert lease is not None, text
    assert 30 < float(lease.group(1)) <= 60  # a 60 s lease, read moments after it began
    assert "idle free - 0 - 0" in text
    assert re.search(r"tx 1 0 1 ", text), text  # pending 1, retrying 0, dead 1


def test_queue_page_lists_jobs_and_dead_letters_with_reason_and_attempts(
        state: State, serve: Callable[..., Served]) -> None:
    s = serve()
    page = httpx.get(s.url + "/queue/orders").text
    text = _text(page)
    assert "order 3" in text and "pay invoice 7" in text  # ready jobs
    assert re.search(rf"{state.dead_id} \S+ \S+ card declined 1/3 order 1", text), text
    assert "read-only: start with --allow-actions" in text
    assert "<form" in page and 'method="post"' not in page  # no action is offered
    active = _text(httpx.get(s.url + "/queue/orders?state=active").text)
    assert state.active_id in active


def test_search_by_id_and_idempotency_key(state: State, serve: Callable[..., Served]) -> None:
    s = serve()
    by_key = _text(httpx.get(s.url + "/queue/orders", params={"by": "key",
                                                               "q": "invoice-7"}).text)
    assert re.search(rf"{state.dead_key_id} ready 0 0 0/3 pay invoice 7 invoice-7", by_key)
    by_id = _text(httpx.get(s.url + "/queue/orders", params={"by": "id",
                                                              "q": state.dead_id}).text)
    assert re.search(rf"{state.dead_id} dead \S+ \S+ 0 1/3 card declined order 1", by_id)
    none = _text(httpx.get(s.url + "/queue/orders", params={"by": "key", "q": "nope"}).text)
    assert "no unfinished job holds that idempotency key" in none


def test_store_page_shows_dead_records(state: State, serve: Callable[..., Served]) -> None:
    text = _text(httpx.get(serve().url + "/store/tx").text)
    assert re.search(r"acct:1 \d+ write 1 sink refused: duplicate key \d{4}-", text), text


def test_only_named_primitives_and_known_routes(state: State,
                                               serve: Callable[..., Served]) -> None:
    s = serve()
    assert httpx.get(s.url + "/queue/other").status_code == 404
    assert httpx.get(s.url + "/store/orders").status_code == 404
    assert httpx.get(s.url + "/nothing/here").status_code == 404
    assert httpx.get(s.url + "/queue/orders?state=gone").status_code == 400
    assert httpx.get(s.url + "/queue/orders?dead=-1").status_code == 400
    assert httpx.put(s.url + "/queue/orders").status_code == 405


def test_actions_are_refused_when_read_only(state: State, serve: Callable[..., Served],
                                            r: redis.Redis) -> None:
    s = serve()
    got = httpx.post(s.url + "/queue/orders/requeue",
                     data={"csrf": s.app.token, "id": state.dead_id})
    assert got.status_code == 403 and "--allow-actions" in got.text
    assert httpx.post(s.url + "/queue/orders/purge",
                      data={"csrf": s.app.token, "id": state.dead_id}).status_code == 403
    assert Queue(state.client, "orders").stats().dead == 1


def test_actions_need_the_token_and_the_same_origin(state: State,
                                                    serve: Callable[..., Served]) -> None:
    s = serve(allow_actions=True)
    q = Queue(state.client, "orders")
    url = s.url + "/queue/orders/requeue"
    form = {"csrf": s.app.token, "id": state.dead_id}
    assert httpx.post(url, data={"id": state.dead_id}).status_code == 403
    assert httpx.post(url, data={**form, "csrf": "guess"}).status_code == 403
    assert httpx.post(url, data=form,
                      headers={"origin": "http://evil.example"}).status_code == 403
    assert httpx.post(url, data=form, headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert httpx.post(url, data=form, headers={"origin": "null"}).status_code == 403
    assert q.stats().dead == 1  # nothing was done
    got = httpx.post(url, data=form, headers={"origin": s.url, "sec-fetch-site": "same-origin"})
    assert got.status_code == 303 and got.headers["location"].startswith("/queue/orders?done=")
    assert q.stats().dead == 0 and q.get(state.dead_id).state == "ready"  # type: ignore[union-attr]
    page = _text(httpx.get(s.url + got.headers["location"]).text)
    assert "requeued 1 of 1 dead letter(s)" in page
    # purge, and the store's requeue
    [job] = q.dequeue(1)
    q.nack(job, "again", action="dead")
    got = httpx.post(s.url + "/queue/orders/purge", data={"csrf": s.app.token, "id": job.id})
    assert got.status_code == 303 and q.stats().dead == 0 and q.get(job.id) is None
    got = httpx.post(s.url + "/store/tx/requeue", data={"csrf": s.app.token, "id": "acct:1"})
    assert got.status_code == 303 and WriteBehind(state.client, "tx").stats().dead == 0
    assert httpx.post(s.url + "/store/tx/purge", data=form).status_code == 404


def test_mounted_under_a_prefix_and_on_an_async_client(state: State, redis_url: str,
                                                       serve: Callable[..., Served]) -> None:
    def mount(app: Any) -> Any:  # what a framework's Mount("/ops", app) hands on
        async def outer(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].startswith("/ops"):
                scope = {**scope, "root_path": scope.get("root_path", "") + "/ops"}
                return await app(scope, receive, send)
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b"host app"})
        return outer

    aclient = pyredislua.AsyncClient(redis.asyncio.Redis.from_url(redis_url))
    s = serve(allow_actions=True, wrap=mount, client=aclient)
    assert httpx.get(s.url + "/").text == "host app"
    page = httpx.get(s.url + "/ops/").text
    assert 'href="/ops/queue/orders"' in page
    queue = httpx.get(s.url + "/ops/queue/orders").text
    assert 'action="/ops/queue/orders/requeue"' in queue
    got = httpx.post(s.url + "/ops/queue/orders/requeue",
                     data={"csrf": s.app.token, "id": state.dead_id})
    assert got.status_code == 303 and got.headers["location"].startswith("/ops/queue/orders?")


async def test_a_plain_asgi_call_on_a_url(state: State, redis_url: str) -> None:
    """No server in between: the app called as any ASGI server calls it, built from a URL."""
    app = dashboard.app(redis_url, queues=["orders"], refresh=5)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def startup() -> dict[str, Any]:
        return {"type": "lifespan.startup"} if not sent else {"type": "lifespan.shutdown"}

    await app({"type": "lifespan"}, startup, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    sent.clear()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app({"type": "http", "method": "GET", "path": "/queue/orders", "root_path": "",
               "query_string": b"state=dead", "headers": []}, receive, send)
    start, body = sent
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-length"] == str(len(body["body"])).encode()
    page = body["body"].decode()
    assert '<meta http-equiv="refresh" content="5">' in page
    assert re.search(rf"{state.dead_id} dead \S+ \S+ 0 1/3 card declined", _text(page))


def test_reads_from_a_replica(own_server: RedisServer, serve: Callable[..., Served]) -> None:
    """Every page is read with read-only operations, so a read-only replica serves them."""
    primary = redis.Redis.from_url(own_server.url)
    state = _state(pyredislua.Client(primary))
    with RedisServer(extra_args=("--replicaof", "127.0.0.1", str(own_server.port))) as replica:
        conn = redis.Redis.from_url(replica.url)
        deadline = time.monotonic() + 10
        while conn.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.02)
        assert primary.wait(1, 5000) == 1  # the replica has every write so far
        s = serve(client=pyredislua.Client(conn))
        assert re.search(r"orders 2 0 1 1 5 ", _text(httpx.get(s.url + "/").text))
        found = _text(httpx.get(s.url + "/queue/orders",
                                params={"by": "key", "q": "invoice-7"}).text)
        assert re.search(rf"{state.dead_key_id} ready", found)
        assert "card declined" in found
        assert "sink refused" in _text(httpx.get(s.url + "/store/tx").text)
        assert conn.info("replication")["role"] == "slave"


def test_the_command_serves_the_dashboard(state: State, redis_url: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyredislua", "dashboard", "--url", redis_url, "--queue",
         "orders", "--lock", "billing", "--store", "tx", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"read-only) on http://127.0.0.1:{port}/" in line, line + proc.stderr.read()
        deadline = time.monotonic() + 10
        while True:
            try:
                got = httpx.get(f"http://127.0.0.1:{port}/queue/orders")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert got.status_code == 200 and "card declined" in got.text
        assert '<meta http-equiv="refresh" content="10">' in got.text
        assert httpx.post(f"http://127.0.0.1:{port}/queue/orders/purge").status_code == 403
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


# -- a real headless Chromium --------------------------------------------------------------------

CHROMIUM, WHY_NOT = cdp.find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=WHY_NOT)


@pytest.fixture
def browser() -> Iterator[cdp.Browser]:
    assert CHROMIUM is not None
    with cdp.Browser(CHROMIUM) as b:
        yield b


@needs_chromium
def test_browser_renders_pages_with_live_data(state: State, serve: Callable[..., Served],
                                              browser: cdp.Browser) -> None:
    s = serve()
    browser.goto(s.url + "/")
    assert browser.text("#mode") == "read-only"
    assert browser.count("table.queues tbody tr") == 1
    row = browser.evaluate("[...document.querySelectorAll('table.queues tbody tr td')]"
                           ".map(td => td.innerText)")
    assert row[:6] == ["orders", "2", "0", "1", "1", "5"]
    locks = browser.evaluate("[...document.querySelectorAll('table.locks tbody tr')]"
                             ".map(tr => [...tr.cells].map(td => td.innerText))")
    assert locks[0][:4] == ["billing", "held", state.lock_token, "1"] and locks[0][5] == "1"
    assert locks[1][:2] == ["idle", "free"]
    # follow the queue's link, like a person would
    browser.click_and_wait("table.queues a", "document.querySelector('table.dead')")
    dead = browser.evaluate("[...document.querySelectorAll('table.dead tbody tr')]"
                            ".map(tr => [...tr.cells].map(td => td.innerText))")
    assert [(d[0], d[2], d[3]) for d in dead] == [(state.dead_id, "card declined", "1/3")]
    assert browser.count("button.requeue") == 0  # read-only: no action offered


@needs_chromium
def test_browser_search_finds_by_id_and_by_idempotency_key(
        state: State, serve: Callable[..., Served], browser: cdp.Browser) -> None:
    s = serve()
    browser.goto(s.url + "/queue/orders")
    browser.evaluate("document.querySelector('#search select').value = 'key'; "
                     "document.querySelector('#search input').value = 'invoice-7'")
    browser.click_and_wait("#search button", "document.querySelector('#found')")
    found = browser.evaluate("[...document.querySelectorAll('table.found td')]"
                             ".map(td => td.innerText)")
    assert found[0] == state.dead_key_id and found[1] == "ready" and found[7] == "invoice-7"
    assert browser.evaluate("location.search") == "?by=key&q=invoice-7"
    browser.evaluate("document.querySelector('#search select').value = 'id'; "
                     f"document.querySelector('#search input').value = '{state.dead_id}'")
    browser.click_and_wait("#search button", "document.querySelector('#found')")
    found = browser.evaluate("[...document.querySelectorAll('table.found td')]"
                             ".map(td => td.innerText)")
    assert found[:2] == [state.dead_id, "dead"] and found[5] == "card declined"


@needs_chromium
def test_browser_requeues_a_dead_letter_when_actions_are_enabled(
        state: State, serve: Callable[..., Served], browser: cdp.Browser) -> None:
    s = serve(allow_actions=True)
    browser.goto(s.url + "/queue/orders")
    assert browser.text("#mode") == "actions enabled"
    browser.click_and_wait("table.dead button.requeue", "document.querySelector('#flash')")
    assert browser.text("#flash") == "requeued 1 of 1 dead letter(s)"
    assert "no dead letters" in browser.text()
    info = Queue(state.client, "orders").get(state.dead_id)
    assert info is not None and info.state == "ready"


@needs_chromium
def test_browser_action_is_refused_when_read_only(state: State, serve: Callable[..., Served],
                                                  browser: cdp.Browser) -> None:
    """A read-only dashboard offers no button; a form posted anyway (from the page itself,
    same origin, with the token) gets 403 and changes nothing."""
    s = serve()
    browser.goto(s.url + "/queue/orders")
    assert browser.count("button.requeue") == 0
    browser.evaluate(  # the form an enabled dashboard would show, built in the page
        "(() => { const f = document.createElement('form'); f.method = 'post'; "
        "f.action = '/queue/orders/requeue'; f.className = 'forged'; "
        f"f.innerHTML = '<input name=csrf value={s.app.token}><input name=id "
        f"value={state.dead_id}><button type=submit>requeue</button>'; "
        "document.body.appendChild(f); })()")
    browser.click_and_wait("form.forged button", "document.querySelector('#message')")
    assert browser.text("h1") == "403"
    assert "read-only dashboard: actions are disabled" in browser.text("#message")
    assert Queue(state.client, "orders").stats().dead == 1


@needs_chromium
def test_browser_draws_charts_from_recorded_series(redis_url: str, r: redis.Redis,
                                                   serve: Callable[..., Served],
                                                   browser: cdp.Browser) -> None:
    client = pyredislua.Client(redis.Redis.from_url(redis_url))
    q = Queue(client, "orders", metrics=True)
    q.enqueue_many([q.job(f"job {i}") for i in range(5)])
    for job in q.dequeue(5):
        q.ack(job)
    s = serve()
    browser.goto(s.url + "/queue/orders")
    assert browser.count("svg.chart polyline.series") >= 5
    assert browser.count("svg.histogram rect.bar") == 2 * charts.BUCKETS
    assert browser.count("table.percentiles tbody tr") == 2


def test_overview_reads_recorded_lock_and_limiter_series(redis_url: str, r: redis.Redis,
                                                         serve: Callable[..., Served]) -> None:
    from pyredislua.ratelimit import GCRA

    client = pyredislua.Client(redis.Redis.from_url(redis_url))
    limiter = GCRA(client, "api", "3/h", metrics=True)
    assert [limiter.hit("alice", tag="team").allowed for _ in range(5)] == [True] * 3 + [False] * 2
    lock = Lock(client, "billing", ttl=60, auto_renew=False, metrics=True)
    for _ in range(3):
        assert lock.acquire(blocking=False)
        lock.release()
    s = serve(limiters=[("api", "team"), "api"], locks=["billing"])
    text = _text(httpx.get(s.url + "/").text)
    # this minute's counts are in the hour, not yet in the per-minute rate (complete minutes)
    assert "api (tag team) 0.0 0.0 3 2 40.0 %" in text, text
    assert re.search(r"api no metrics recorded", text), text  # nothing under the tag "api"
    assert re.search(r"billing free - 3 - 0 0\.0 3 ", text), text


def test_screenshot_for_the_readme(state: State, serve: Callable[..., Served]) -> None:
    """PYREDISLUA_DASHBOARD_SCREENSHOT=path writes the queue page's screenshot there (how
    docs/dashboard.png is made); skipped otherwise."""
    path = os.environ.get("PYREDISLUA_DASHBOARD_SCREENSHOT")
    if not path:
        pytest.skip("set PYREDISLUA_DASHBOARD_SCREENSHOT=docs/dashboard.png to take it")
    if CHROMIUM is None:
        pytest.skip(WHY_NOT)
    q = Queue(state.client, "orders", metrics=True)
    q.enqueue_many([q.job(f'{{"order": {100 + i}, "sku": "A-{i}"}}', priority=i % 3,
                          key=f"order-{100 + i}") for i in range(24)])
    for n, job in enumerate(q.dequeue(10)):
        if n < 8:
            q.ack(job)
        else:
            q.nack(job, "timeout talking to the payment API", delay=0)
    s = serve(allow_actions=True)
    with cdp.Browser(CHROMIUM) as b:
        b.goto(s.url + "/queue/orders?by=key&q=order-122")
        b.screenshot(str(Path(path)))
    assert Path(path).stat().st_size > 10_000


def test_an_unreadable_primitive_fills_its_row_to_the_tables_width() -> None:
    """A primitive whose figures could not be read (a key of the wrong type, say) gets a row
    with its error, as wide as its table (the rendering itself: no server involved)."""
    from pyredislua.dashboard import pages
    from pyredislua.dashboard.data import Config, Overview
    from pyredislua.observe.figures import Figure, Targets

    figures = [Figure("queue", "q", None, "WRONGTYPE q"),
               Figure("stream", "s", None, "WRONGTYPE s", group="g"),
               Figure("lock", "l", None, "WRONGTYPE l"),
               Figure("store", "w", None, "WRONGTYPE w")]
    page = pages.overview(Config(Targets()), "/", Overview(figures, {}, ()))
    tables = re.findall(r'<table class="(\w+)"><thead><tr>(.*?)</tr></thead><tbody>(.*?)</tbody>',
                        page)
    assert {t[0] for t in tables} == {"queues", "streams", "locks", "stores"}
    for cls, head, body in tables:
        (row,) = re.findall(r"<tr>(.*?)</tr>", body)
        assert row.count("<td") == head.count("<th>"), cls
        assert "WRONGTYPE" in row, cls
