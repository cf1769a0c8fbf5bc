"""The Prometheus collector and ``pyredislua metrics serve``, scraped over HTTP and parsed with
prometheus_client's own text parser, against figures kept in a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

import pyredislua
from pyredislua.lock import Lock
from pyredislua.observe.prometheus import PyRedisLuaCollector, exposition
from pyredislua.queue import Queue, StreamQueue
from pyredislua.server import free_port
from pyredislua.writebehind import WriteBehind

pytestmark = pytest.mark.cli


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[Any, float], metric: str, **labels: str) -> float:
    return found[(metric, tuple(sorted(labels.items())))]


def _activity(client: pyredislua.Client) -> None:
    q = Queue(client, "orders", lease=30)
    q.enqueue_many([q.job(f"job {i}", priority=i % 2) for i in range(6)])
    [job] = q.dequeue(1)
    q.ack(job)
    [job] = q.dequeue(1)
    q.nack(job, "boom", action="dead")
    store = WriteBehind(client, "tx")
    store.write_many([("a", "1"), ("b", "2"), ("c", "3")])
    sq = StreamQueue(client, "events", group="g", consumer="c1")
    sq.produce([b"e1", b"e2"])
    sq.consume(1)
    assert Lock(client, "billing", ttl=60, auto_renew=False).acquire(blocking=False)


def test_one_scrape_reports_what_redis_keeps(client: pyredislua.Client) -> None:
    _activity(client)
    collector = PyRedisLuaCollector(client, queues=["orders"], streams=[("events", "g")],
                                    stores=["tx"], locks=["billing", "idle"])
    found = samples(exposition(collector))
    assert value(found, "pyredislua_queue_jobs", queue="orders", state="ready") == 4
    assert value(found, "pyredislua_queue_jobs", queue="orders", state="dead") == 1
    assert value(found, "pyredislua_queue_jobs_total", queue="orders", event="enqueued") == 6
    assert value(found, "pyredislua_queue_jobs_total", queue="orders", event="acked") == 1
    assert value(found, "pyredislua_queue_jobs_total", queue="orders", event="dead") == 1
    assert value(found, "pyredislua_stream_pending", queue="events", group="g") == 1
    assert value(found, "pyredislua_stream_consumer_pending", queue="events", group="g",
                 consumer="c1") == 1
    assert value(found, "pyredislua_writebehind_records", store="tx", state="dirty") == 3
    assert value(found, "pyredislua_writebehind_records_total", store="tx", event="writes") == 3
    assert value(found, "pyredislua_lock_held", lock="billing") == 1
    assert value(found, "pyredislua_lock_fence", lock="billing") == 1
    assert 59 < value(found, "pyredislua_lock_lease_remaining_seconds", lock="billing") <= 60.001
    assert value(found, "pyredislua_lock_held", lock="idle") == 0
    assert all(v == 0 for (metric, _), v in found.items() if metric == "pyredislua_read_errors")


def test_a_primitive_that_cannot_be_read_is_flagged_not_fatal(client: pyredislua.Client,
                                                              r: redis.Redis) -> None:
    _activity(client)
    r.delete("prl:q:{broken}:stats")
    r.set("prl:q:{broken}:stats", "not a hash")
    found = samples(exposition(PyRedisLuaCollector(client, queues=["broken", "orders"])))
    assert value(found, "pyredislua_read_errors", kind="queue", name="broken") == 1
    assert value(found, "pyredislua_read_errors", kind="queue", name="orders") == 0
    assert value(found, "pyredislua_queue_jobs", queue="orders", state="ready") == 4


def test_metrics_serve_is_scraped_over_http(client: pyredislua.Client, redis_url: str) -> None:
    _activity(client)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyredislua", "metrics", "serve", "--url", redis_url, "--port",
         str(port), "--queue", "orders", "--stream", "events:g", "--store", "tx",
         "--lock", "billing"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the server listens
        assert f":{port}/metrics" in line, (line, proc.stderr.read() if proc.stderr else "")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        found = samples(body.decode())
        assert value(found, "pyredislua_queue_jobs", queue="orders", state="ready") == 4
        # the next scrape reads Redis again: the figures move with the primitives
        q = Queue(client, "orders")
        q.enqueue("one more")
        deadline = time.monotonic() + 10
        while True:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
            if value(samples(body.decode()), "pyredislua_queue_jobs", queue="orders",
                     state="ready") == 5:
                break
            assert time.monotonic() < deadline
    finally:
        proc.terminate()
        proc.wait(10)


def test_metrics_show(client: pyredislua.Client, redis_url: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    from pyredislua.cli import main

    _activity(client)
    assert main(["metrics", "show", "--url", redis_url, "--store", "tx"]) == 0
    found = samples(capsys.readouterr().out)
    assert value(found, "pyredislua_writebehind_records", store="tx", state="dirty") == 3


def test_recorded_series_are_scraped(client: pyredislua.Client, r: redis.Redis) -> None:
    """The metrics the operations record themselves: the last complete minute (pre-set with
    the server's minute - 1), the hour's totals and the histograms' cumulative buckets."""
    from pyredislua.ratelimit import GCRA

    q = Queue(client, "mq", metrics=True)
    q.enqueue_many(["a", "b"])
    [job] = q.dequeue(1)
    q.ack(job)
    lim = GCRA(client, "api", "1/h", metrics=True)
    lim.hit("x", tag="team")
    lim.hit("x", tag="team")  # denied (one an hour)
    collector = PyRedisLuaCollector(client, series=[("queue", "mq"), ("limiter", "api", "team"),
                                                    ("lock", "nothing here")])
    for _ in range(5):
        minute = int(r.time()[0]) // 60
        before = minute - 1
        r.hset("prl:q:{mq}:metrics", mapping={f"m:{before % 60}": before,
                                              f"completed:{before % 60}": 7})
        found = samples(exposition(collector))
        if int(r.time()[0]) // 60 == minute:
            break
    labels = {"kind": "queue", "name": "mq"}
    assert value(found, "pyredislua_recorded_last_minute", counter="completed", **labels) == 7
    assert value(found, "pyredislua_recorded_last_hour", counter="completed", **labels) == 8
    assert value(found, "pyredislua_recorded_last_hour", counter="enqueued", **labels) == 2
    assert value(found, "pyredislua_recorded_last_hour", kind="limiter", name="api",
                 counter="allowed") == 1
    assert value(found, "pyredislua_recorded_last_hour", kind="limiter", name="api",
                 counter="denied") == 1
    assert value(found, "pyredislua_recorded_seconds_count", histogram="wait", **labels) == 1
    assert value(found, "pyredislua_recorded_seconds_bucket", histogram="run", le="+Inf",
                 **labels) == 1
    assert value(found, "pyredislua_recorded_seconds_bucket", histogram="run", le="0.001",
                 **labels) <= 1
    assert value(found, "pyredislua_recorded_last_hour", kind="lock", name="nothing here",
                 counter="acquired") == 0  # an absent key reads as zeros
    assert all(v == 0 for (metric, _), v in found.items()
               if metric == "pyredislua_recorded_read_errors")


def test_metrics_show_recorded_series(client: pyredislua.Client, redis_url: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from pyredislua.cli import main

    Queue(client, "mq", metrics=True).enqueue("a")
    assert main(["metrics", "show", "--url", redis_url, "--series", "queue:mq"]) == 0
    found = samples(capsys.readouterr().out)
    assert value(found, "pyredislua_recorded_last_hour", kind="queue", name="mq",
                 counter="enqueued") == 1


def test_a_cluster_is_read_in_one_pass(cluster_client: pyredislua.Client) -> None:
    names = [f"q{i}" for i in range(6)]  # spread over the primaries
    for name in names:
        Queue(cluster_client, name).enqueue("x")
    found = samples(exposition(PyRedisLuaCollector(cluster_client, queues=names)))
    assert [value(found, "pyredislua_queue_jobs", queue=n, state="ready") for n in names] == [1] * 6
