"""``pyredislua top``: frames of the figures a real Redis keeps, rates between two readings,
errors shown in their row, and the command run as a real process."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import pyredislua
from pyredislua.lock import Lock, LockKeys
from pyredislua.lock.ops import LockState
from pyredislua.observe.figures import Figure, Reading, Targets, read
from pyredislua.observe.top import CLEAR, Rates, rates, render, run
from pyredislua.queue import Queue, StreamQueue
from pyredislua.queue.ops import QueueStats
from pyredislua.server import free_port
from pyredislua.stream.ops import StreamKeys
from pyredislua.writebehind import StoreKeys, WriteBehind
from pyredislua.writebehind.ops import StoreStats

pytestmark = pytest.mark.cli

TARGETS = Targets(queues=["orders"], streams=[("events", "g")], stores=["tx"],
                  locks=["billing", "idle"])


def _activity(client: pyredislua.Client) -> Lock:
    q = Queue(client, "orders", lease=30)
    q.enqueue_many([q.job(f"job {i}", priority=i % 2) for i in range(6)])
    [job] = q.dequeue(1)
    q.ack(job)
    [job] = q.dequeue(1)
    q.nack(job, "boom", action="dead")
    [job] = q.dequeue(1)  # still active
    WriteBehind(client, "tx").write_many([("a", "1"), ("b", "2"), ("c", "3")])
    sq = StreamQueue(client, "events", group="g", consumer="c1")
    sq.produce([b"e1", b"e2"])
    sq.consume(1)
    lock = Lock(client, "billing", ttl=60, auto_renew=False)
    assert lock.acquire(blocking=False)
    return lock


def _row(frame: str, name: str) -> list[str]:
    [line] = [line for line in frame.splitlines() if line.split()[:1] == [name]]
    return line.split()


def test_once_prints_one_frame_of_the_figures_redis_keeps(client: pyredislua.Client) -> None:
    lock = _activity(client)
    out = io.StringIO()
    assert run(client, TARGETS, server="redis://here", once=True, out=out, tty=True) == 0
    frame = out.getvalue()
    assert "\x1b" not in frame  # --once: no escape codes, even on a terminal
    header = frame.splitlines()[0]
    assert "redis://here" in header and "refresh 1" in header and "UTC" in header
    assert "every" not in header
    # queue, ready, delayed, active, dead, expired, enq/s ack/s fail/s dead/s (no rate yet)
    assert _row(frame, "orders") == ["orders", "3", "0", "1", "1", "0", "-", "-", "-", "-"]
    # stream, group, entries, pending, dead, consumers
    assert _row(frame, "events") == ["events", "g", "2", "1", "0", "1"]
    tx = _row(frame, "tx")  # store, dirty, retry, claimed, dead, lag, writes/s, ack/s
    assert tx[:5] == ["tx", "3", "0", "0", "0"] and tx[6:] == ["-", "-"]
    assert tx[5].endswith("s") and float(tx[5][:-1]) >= 0
    billing = _row(frame, "billing")  # lock, held, owner, fence, waiters, lease left
    assert billing[1] == "yes" and billing[3:5] == ["1", "0"]
    assert lock.token is not None and billing[2].rstrip(".") in lock.token
    assert 59 < float(billing[5][:-1]) <= 60
    assert _row(frame, "idle") == ["idle", "no", "-", "0", "0", "-"]
    assert "ERROR" not in frame


def test_rates_from_two_given_readings() -> None:
    def queue(enqueued: int, acked: int, retried: int, dead: int) -> QueueStats:
        return QueueStats(0, 0, 0, 0, dead, {"seq": enqueued, "enqueued": enqueued,
                                             "acked": acked, "retried": retried, "dead": dead}, [])

    def store(now_ms: int, writes: int, acked: int) -> StoreStats:
        return StoreStats(now_ms, 0, 0, 0, 0, -1, {"seq": 99, "writes": writes, "acked": acked})

    lock = Figure("lock", "l", LockState(False, None, -2, 0, 0))
    first = Reading([Figure("queue", "q", queue(10, 4, 1, 1)),
                     Figure("store", "s", store(1_000, 2, 0)),
                     Figure("queue", "reset", queue(50, 50, 0, 0)),
                     Figure("queue", "was broken", None, "ResponseError: WRONGTYPE"), lock],
                    monotonic=100.0)
    second = Reading([Figure("queue", "q", queue(30, 10, 3, 2)),
                      Figure("store", "s", store(1_500, 7, 3)),  # the server's clock: 0.5 s
                      Figure("queue", "reset", queue(5, 0, 0, 0)),
                      Figure("queue", "was broken", queue(1, 0, 0, 0)),
                      Figure("queue", "new", queue(1, 0, 0, 0)), lock],
                     monotonic=102.0)  # the local clock: 2 s (used for queues)
    got = rates(first, second)
    assert got[("queue", "q")] == {"enq/s": 10.0, "ack/s": 3.0, "fail/s": 1.5, "dead/s": 0.5}
    assert got[("store", "s")] == {"writes/s": 10.0, "ack/s": 6.0}
    assert got[("queue", "reset")] == {"enq/s": None, "ack/s": None, "fail/s": None,
                                       "dead/s": None}  # totals went down: no rate
    assert set(got[("queue", "was broken")].values()) == {None}
    assert set(got[("queue", "new")].values()) == {None}
    assert ("lock", "l") not in got
    assert set(rates(None, second)[("queue", "q")].values()) == {None}
    frame = render(second, got, server="s", refresh=2, interval=2)
    assert _row(frame, "q")[-4:] == ["10.0", "3.0", "1.5", "0.5"]
    assert _row(frame, "s")[-2:] == ["10.0", "6.0"]


def test_the_loop_rates_activity_between_two_refreshes(client: pyredislua.Client) -> None:
    q = Queue(client, "orders")
    q.enqueue("before")
    store = WriteBehind(client, "tx")
    store.write_many([("k0", "v")])
    seen: list[tuple[int, Reading | None, Rates]] = []

    def between(refresh: int, reading: Reading | None, rated: Rates) -> None:
        seen.append((refresh, reading, rated))
        if refresh == 1:  # activity between the two reads
            q.enqueue_many([q.job(f"job {i}") for i in range(5)])
            store.write_many([(f"k{i}", "v") for i in range(1, 5)])

    out = io.StringIO()
    assert run(client, Targets(queues=["orders"], stores=["tx"]), server="s", interval=0.01,
               out=out, tty=True, frames=2, on_frame=between) == 0
    assert [refresh for refresh, _, _ in seen] == [1, 2]
    [(_, r1, _), (_, r2, rated)] = seen
    assert r1 is not None and r2 is not None
    enq = rated[("queue", "orders")]["enq/s"]
    assert enq == pytest.approx(5 / (r2.monotonic - r1.monotonic))
    s1, s2 = r1.get("store", "tx"), r2.get("store", "tx")
    assert s1 is not None and s2 is not None and s1.server_ms is not None
    assert s2.server_ms is not None and s2.server_ms >= s1.server_ms
    if s2.server_ms > s1.server_ms:  # the server's clock moved (it has 1 ms resolution)
        assert rated[("store", "tx")]["writes/s"] == pytest.approx(
            4 / ((s2.server_ms - s1.server_ms) / 1000))
    frames = out.getvalue().split(CLEAR)
    assert frames[0] == "" and len(frames) == 3  # a TTY: home + clear before each frame
    assert _row(frames[1], "orders")[1] == "1" and _row(frames[2], "orders")[1] == "6"
    assert enq is not None
    assert _row(frames[2], "orders")[6] == (f"{enq:,.0f}" if enq >= 100 else f"{enq:.1f}")
    assert "refresh 2  every 0.01s" in frames[2]


def test_a_key_of_the_wrong_type_shows_in_its_row(client: pyredislua.Client,
                                                  r: redis.Redis) -> None:
    _activity(client)
    r.set(Queue(client, "broken").keys.stats, "not a hash")
    r.set(StoreKeys("badstore", "prl").stats, "not a hash")
    r.set(LockKeys("badlock", "prl").lock, "not a hash")
    r.set(StreamKeys("badstream", "prl").stream, "not a stream")
    targets = Targets(queues=["broken", "orders"], streams=[("badstream", "g"), ("events", "g")],
                      stores=["badstore", "tx"], locks=["badlock", "billing"])
    out = io.StringIO()
    assert run(client, targets, server="s", once=True, out=out) == 0
    frame = out.getvalue()
    for name in ("broken", "badstream", "badstore", "badlock"):
        row = _row(frame, name)
        assert row[1] == "ERROR", (name, frame)
    assert _row(frame, "orders")[1] == "3"
    assert _row(frame, "events")[2] == "2"
    assert _row(frame, "tx")[1] == "3"
    assert _row(frame, "billing")[1] == "yes"
    reading = read(client, targets)
    errors = {f.name: f.error for f in reading.figures if f.error}
    assert set(errors) == {"broken", "badstream", "badstore", "badlock"}


def test_a_server_that_cannot_be_reached_is_shown_not_fatal() -> None:
    client = pyredislua.Client(redis.Redis(host="127.0.0.1", port=free_port(),
                                           retry=Retry(NoBackoff(), 0)))  # refused at once
    out = io.StringIO()
    assert run(client, Targets(queues=["orders"]), server="s", interval=0.01, out=out,
               tty=False, frames=2) == 0
    assert out.getvalue().count("ERROR reading the server: ConnectionError") == 2
    out = io.StringIO()
    assert run(client, Targets(queues=["orders"]), server="s", once=True, out=out) == 1


def test_top_once_as_a_process(client: pyredislua.Client, redis_url: str) -> None:
    _activity(client)
    done = subprocess.run(
        [sys.executable, "-m", "pyredislua", "top", "--url", redis_url, "--once", "--queue",
         "orders", "--stream", "events:g", "--store", "tx", "--lock", "billing"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert redis_url.split("@")[-1] in done.stdout.splitlines()[0]
    assert _row(done.stdout, "orders")[:6] == ["orders", "3", "0", "1", "1", "0"]
    assert _row(done.stdout, "events")[:3] == ["events", "g", "2"]
    assert _row(done.stdout, "tx")[1] == "3"
    assert _row(done.stdout, "billing")[1] == "yes"


def test_ctrl_c_exits_zero(client: pyredislua.Client, redis_url: str) -> None:
    Queue(client, "orders").enqueue("x")
    # SIGINT at its default in the child: a test run started in the background by a shell
    # (CI) inherits SIGINT ignored, and so would top, which a terminal's Ctrl-C reaches in the
    # foreground only
    proc = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "pyredislua", "top", "--url", redis_url,
         "--queue", "orders", "--interval", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None and proc.stderr is not None
        while "orders" not in (line := proc.stdout.readline()):  # a frame was printed
            assert line, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        try:
            _, errors = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints where each thread is
            _, errors = proc.communicate(timeout=10)
            pytest.fail(f"top did not exit on SIGINT; where it was:\n{errors[-4000:]}")
        assert proc.returncode == 0, errors[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_cluster_is_watched_in_one_pass(cluster_client: pyredislua.Client) -> None:
    names = [f"q{i}" for i in range(6)]  # spread over the primaries
    for i, name in enumerate(names):
        Queue(cluster_client, name).enqueue_many([f"job {j}" for j in range(i + 1)])
    lock = Lock(cluster_client, "billing", ttl=60, auto_renew=False)
    assert lock.acquire(blocking=False)
    out = io.StringIO()
    assert run(cluster_client, Targets(queues=names, locks=["billing"]), server="cluster",
               once=True, out=out) == 0
    frame = out.getvalue()
    assert [_row(frame, n)[1] for n in names] == ["1", "2", "3", "4", "5", "6"]
    assert _row(frame, "billing")[1] == "yes"
