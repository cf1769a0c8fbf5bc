"""Rate limiters (sync and asyncio) and the ASGI middleware (uvicorn, called by httpx) through
real faults: Redis restarted with AOF and without persistence, frozen with SIGSTOP, its clients
killed, driven to maxmemory and back.

Each case drives a limit of 20 per hour (nothing refills while a case runs) with a steady stream
of hits, injects the fault once about a quarter of the limit is spent, and runs on until Redis
decides again and the limit is exhausted. What must hold:

* the limit is never exceeded beyond what the fault destroyed: at most 20 admitted by Redis, or
  20 before and 20 after a restart without persistence (which forgets every limiter: said so);
* what Redis holds is exactly what the callers were told was admitted, plus at most one charge
  per hit whose reply was lost (a hit is never re-sent: ``resend: once``), so nothing is charged
  twice (``duplicated``);
* while Redis cannot decide, the failure mode decides: fail closed never admits, fail open
  admits without charging (counted and reported);
* Redis decides again after the fault (``recovery``), and the drivers stop (no hung threads).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

import pyredislua
from pyredislua.ratelimit import GCRA, ConcurrencyLimiter, Decision, SlidingLog
from pyredislua.ratelimit.asgi import RateLimitMiddleware
from pyredislua.server import free_port
from tests.faultkit import FaultOutcome, FaultReport, FaultServer, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.ratelimit]

uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

L = 20
RATE = "20/1h"
FAULTS = ["restart with AOF", "restart without persistence", "SIGSTOP", "CLIENT KILL",
          "maxmemory and back"]
# short timeouts and few quick reconnect attempts, as a latency-bound service would configure
CONN: dict[str, Any] = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.05, base=0.01), 3)


@dataclass
class Outcome:
    at: float  # monotonic, when the answer came
    allowed: bool
    degraded: bool  # decided by the failure mode, not by Redis
    error: str | None = None  # what made it degraded


def _outcome(d: Decision) -> Outcome:
    return Outcome(time.monotonic(), d.allowed, d.error is not None,
                   None if d.error is None else type(d.error).__name__)


@dataclass
class Driver:
    """Calls ``step`` every ``interval`` seconds from a thread (on an event loop of its own for
    coroutine steps) and records each outcome."""

    step: Callable[[], Outcome] | Callable[[], Awaitable[Outcome]]
    is_async: bool = False
    interval: float = 0.02
    outcomes: list[Outcome] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if self.is_async:
            asyncio.run(self._arun())
            return
        while not self.stopping.is_set():
            self.outcomes.append(self.step())  # type: ignore[arg-type]
            self.stopping.wait(self.interval)

    async def _arun(self) -> None:
        while not self.stopping.is_set():
            self.outcomes.append(await self.step())  # type: ignore[misc]
            await asyncio.sleep(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        assert self.thread is not None
        self.thread.join(10)
        assert not self.thread.is_alive(), "the driver hung"

    def since(self, t: float) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.at >= t]

    def admitted(self, t: float = 0.0) -> int:
        return sum(1 for o in self.since(t) if o.allowed and not o.degraded)


@dataclass
class Case:
    """One component under one fault: how to build its driver, how to read what Redis holds."""

    component: str
    driver: Driver
    charged: Callable[[], int]  # units Redis holds as charged now
    fails_open: bool
    cleanup: Callable[[], None] = lambda: None


def _inject(server: FaultServer, fault: str, driver: Driver) -> None:
    """The fault, held until the driver has seen it (when it can see it)."""
    start = time.monotonic()

    def seen() -> bool:
        return any(o.degraded for o in driver.since(start))

    if fault.startswith("restart"):
        with server.down():
            wait_for(seen, 5, "a hit while Redis is down")
    elif fault == "SIGSTOP":
        with server.paused():
            wait_for(seen, 5, "a hit timing out while Redis is frozen")
    elif fault == "CLIENT KILL":
        assert server.kill_clients() >= 1
    else:
        with server.out_of_memory() as admin:
            _below_memory(admin)
            wait_for(lambda: len(driver.since(start)) >= 5, 5, "hits at maxmemory")


def _below_memory(admin: redis.Redis) -> None:
    """Keep Redis at maxmemory: once the ballast push that hit the limit is refused, its query
    buffer is freed and small writes would fit again, so the limit goes below what is used."""
    admin.config_set("maxmemory", 1)


def _run(case: Case, server: FaultServer, fault: str, report: FaultReport) -> None:
    driver = case.driver
    driver.start()
    try:
        wait_for(lambda: driver.admitted() >= L // 4, 10, "hits admitted before the fault")
        before_fault = case.charged()
        t_fault = time.monotonic()
        _inject(server, fault, driver)
        t_end = time.monotonic()
        # Redis decides again, and the limit runs out after the fault
        wait_for(lambda: any(not o.allowed and not o.degraded for o in driver.since(t_end)),
                 15, "a denial by Redis after the fault")
    finally:
        driver.stop()
        case.cleanup()
    during = [o for o in driver.outcomes if t_fault <= o.at < t_end]
    after = driver.since(t_end)
    first_ok = next(o for o in after if not o.degraded)
    degraded = [o for o in driver.outcomes if o.degraded]
    # hits that may have run without their caller learning the outcome: a refusal (OOM) ran
    # nothing; the middleware does not say why it let a request through
    unknown = sum(1 for o in degraded if o.error != "OutOfMemoryError")
    lost_state = fault == "restart without persistence"
    charged = case.charged()

    # the limit holds: at most L admitted by Redis, per life of the state
    if lost_state:
        # Hits run one after another, and the server came back only after one failed: every
        # admission before that failure was the old server's, every one after it the new one's.
        outcomes = list(driver.outcomes)
        down = next(i for i, o in enumerate(outcomes) if o.at >= t_fault and o.degraded)
        old_life = sum(1 for o in outcomes[:down] if o.allowed and not o.degraded)
        told = sum(1 for o in outcomes[down:] if o.allowed and not o.degraded)
        assert old_life <= L and told <= L
    else:
        assert driver.admitted() <= L
        told = driver.admitted()
    # what Redis holds: what callers were told was admitted, plus at most one charge per hit
    # whose reply was lost (never re-sent), minus nothing
    assert told <= charged <= min(L, told + unknown), (told, charged, unknown)
    assert charged <= L
    if not case.fails_open:
        assert not any(o.allowed for o in degraded)  # fail closed admits nothing unknown
    if fault == "maxmemory and back":
        assert before_fault <= charged and all(o.error != "TimeoutError" for o in during)
    surfaced = "none"
    if degraded:
        kinds = sorted({o.error or "?" for o in degraded})
        verb = "admitted (fail open)" if case.fails_open else "denied (fail closed)"
        hits = "hit" if len(degraded) == 1 else "hits"
        surfaced = f"{len(degraded)} {hits} {verb}: {', '.join(kinds)}"
    note = (f"{driver.admitted()} admitted by Redis (limit {L}/h"
            + (", state forgotten by the restart: up to 20 more" if lost_state else "") + ")")
    if charged > told:
        note += f"; {charged - told} charged whose reply was lost"
    report.record(FaultOutcome(
        component=case.component, fault=fault, recovered=True,
        recovery_s=max(0.0, first_ok.at - t_end), surfaced=surfaced, lost=0,
        duplicated=max(0, charged - told - unknown), note=note))


def _sliding_log_charged(server: FaultServer, key: str) -> Callable[[], int]:
    def charged() -> int:
        with server.admin() as admin:
            return int(admin.zcount(key, "(0", "+inf"))  # the marker (scored 0) is no charge
    return charged


def _server(request: pytest.FixtureRequest, fault: str) -> FaultServer:
    name = "aof_server" if fault == "restart with AOF" else "fault_server"
    server: FaultServer = request.getfixturevalue(name)
    return server


@pytest.mark.parametrize("fault", FAULTS)
def test_sync_limiter_failing_closed(request: pytest.FixtureRequest, fault: str,
                                     fault_report: FaultReport) -> None:
    server = _server(request, fault)
    conn = redis.Redis(port=server.port, retry=_retry(), **CONN)
    lim = SlidingLog(pyredislua.Client(conn), "api", RATE, on_failure="closed")
    driver = Driver(lambda: _outcome(lim.hit("alice")))
    case = Case("rate limiter (sync SlidingLog, fail closed)", driver,
                _sliding_log_charged(server, lim.keys("alice")[0]), False, conn.close)
    _run(case, server, fault, fault_report)


@pytest.mark.parametrize("fault", FAULTS)
def test_asyncio_limiter_failing_open(request: pytest.FixtureRequest, fault: str,
                                      fault_report: FaultReport) -> None:
    server = _server(request, fault)
    holder: dict[str, Any] = {}

    async def step() -> Outcome:
        if "lim" not in holder:  # the client belongs to the driver's event loop
            conn = redis.asyncio.Redis(port=server.port, retry=_retry(), **CONN)
            holder["conn"] = conn
            holder["lim"] = GCRA(pyredislua.AsyncClient(conn), "api", RATE)
        return _outcome(await holder["lim"].hit("alice"))

    def charged() -> int:
        # GCRA of 20/h refills one unit per 3 minutes: what is charged is what no longer remains
        with server.admin() as admin:
            check = GCRA(pyredislua.Client(admin), "api", RATE).check("alice", 0)
        return L - check.remaining

    case = Case("rate limiter (asyncio GCRA, fail open)", Driver(step, is_async=True), charged,
                True)
    _run(case, server, fault, fault_report)


@pytest.fixture
def middleware_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, FaultServer]]:
    fault = request.node.callspec.params["fault"]
    server = _server(request, fault)

    async def hello(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    conn = redis.asyncio.Redis(port=server.port, retry=_retry(), **CONN)
    limiter = SlidingLog(pyredislua.AsyncClient(conn), "api", RATE)  # fails open by default
    app = RateLimitMiddleware(hello, limiter, identify=lambda scope: "alice")
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                        lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_for(lambda: srv.started or not thread.is_alive(), 10, "uvicorn to start")
    assert thread.is_alive()
    yield f"http://127.0.0.1:{port}", server
    srv.should_exit = True
    thread.join(10)
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.mark.parametrize("fault", FAULTS)
def test_asgi_middleware_failing_open(middleware_url: tuple[str, FaultServer], fault: str,
                                      fault_report: FaultReport) -> None:
    url, server = middleware_url
    http = httpx.Client(base_url=url, timeout=10)

    def step() -> Outcome:
        response = http.get("/")
        now = time.monotonic()
        if response.status_code == 200:
            # no RateLimit fields: the middleware could not ask Redis and let it through
            degraded = "ratelimit" not in response.headers
            return Outcome(now, True, degraded, "unavailable" if degraded else None)
        if response.status_code == 503:
            return Outcome(now, False, True, "unavailable")
        assert response.status_code == 429, response.text
        return Outcome(now, False, False)

    case = Case("ASGI middleware (uvicorn, SlidingLog, fail open)", Driver(step),
                _sliding_log_charged(server, "prl:rl:{alice}:sliding_log:api:alice:3600000"),
                True, http.close)
    _run(case, server, fault, fault_report)


# -- maxmemory: what runs, what is refused ------------------------------------------------------


def test_at_maxmemory_hits_are_refused_before_writing_and_denials_stay_exact(
        fault_server: FaultServer, fault_report: FaultReport) -> None:
    """A hit is refused at maxmemory (noeviction) before it writes anything. The limiter then
    asks Redis read-only what it would decide: a denial is exact (an identity over its limit stays
    denied), only an admission that cannot be charged falls to the failure mode. reset runs
    (allow-oom: it frees memory); check runs (read-only)."""
    conn = redis.Redis(port=fault_server.port, retry=_retry(), **CONN)
    client = pyredislua.Client(conn)
    open_ = SlidingLog(client, "api", "3/1h")
    closed = SlidingLog(client, "api", "3/1h", on_failure="closed")
    raising = SlidingLog(client, "api", "3/1h", on_failure="raise")
    for _ in range(3):
        assert open_.hit("full").allowed
    assert open_.hit("some").allowed
    with fault_server.out_of_memory() as admin:
        _below_memory(admin)
        t0 = time.monotonic()
        before = {k: admin.dump(k) for k in admin.scan_iter("prl:*")}
        over = open_.hit("full")
        assert not over.allowed and over.error is None and over.retry_after_ms > 0  # exact
        assert not closed.hit("full").allowed
        unknown = open_.hit("some")
        assert unknown.allowed and isinstance(unknown.error, redis.exceptions.OutOfMemoryError)
        shut = closed.hit("some")
        assert not shut.allowed and shut.retry_after_ms == 1000 and shut.error is not None
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            raising.hit("some")
        assert [d.allowed for d in open_.hit_many(["x", "y"], tag="t")] == [True, True]
        assert open_.check("some").remaining == 1  # read-only: runs
        assert {k: admin.dump(k) for k in admin.scan_iter("prl:*")} == before  # nothing written
        assert open_.reset("full") == 1  # allow-oom: frees memory
    recovery_from = time.monotonic()
    assert open_.hit("some").allowed and open_.check("some", 0).remaining == 1
    fault_report.record(FaultOutcome(
        "rate limiter (sync SlidingLog, each failure mode)", "maxmemory, limit exhausted", True,
        time.monotonic() - recovery_from, "OutOfMemoryError (raise mode only)", 0, 0,
        f"refused hits wrote nothing; over-limit denials exact (read-only check) for "
        f"{recovery_from - t0:.1f} s; reset ran"))
    conn.close()


# -- the concurrency limiter and re-sent hits ---------------------------------------------------


def test_concurrency_limiter_at_maxmemory_and_after_a_restart(
        fault_server: FaultServer, fault_report: FaultReport) -> None:
    """At maxmemory a new lease is refused (before writing) while release and renew run
    (allow-oom): holders can always give their slots back. A restart without persistence forgets
    every lease: holders still at work are no longer counted (the fault destroyed them)."""
    conn = redis.Redis(port=fault_server.port, retry=_retry(), **CONN)
    jobs = ConcurrencyLimiter(pyredislua.Client(conn), "jobs", 2, ttl=60, on_failure="closed")
    a, b = jobs.acquire("t"), jobs.acquire("t")
    assert a.acquired and b.acquired and not jobs.acquire("t").acquired
    with fault_server.out_of_memory() as admin:
        _below_memory(admin)
        refused = jobs.acquire("t")
        assert not refused.acquired and refused.decision.error is not None
        assert jobs.renew(a) and jobs.release(a)  # allow-oom: settles and frees
        still = jobs.acquire("t")  # a slot is free, but taking it needs memory: refused
        assert not still.acquired and still.decision.error is not None
        t_end = time.monotonic()
    slot = jobs.acquire("t")
    recovery = time.monotonic() - t_end
    assert slot.acquired and slot.decision.in_flight == 2
    fault_report.record(FaultOutcome(
        "concurrency limiter (sync, fail closed)", "maxmemory and back", True, recovery,
        "2 acquires denied (fail closed): OutOfMemoryError", 0, 0,
        "release and renew ran at maxmemory (allow-oom)"))

    t0 = time.monotonic()
    fault_server.crash_restart()
    c, d = jobs.acquire("t"), jobs.acquire("t")
    assert c.acquired and d.acquired and not c.decision.error  # b and slot were forgotten
    assert not jobs.release(b)  # its lease is gone with the data
    fault_report.record(FaultOutcome(
        "concurrency limiter (sync, fail closed)", "restart without persistence", True,
        time.monotonic() - t0, "none", 0, 0,
        "every lease forgotten: up to 2 more holders while old ones still run"))
    conn.close()


@pytest.mark.parametrize("mode", ["function", "script"])
@pytest.mark.parametrize("via", ["hit", "hit_many", "hit_all"])
def test_a_hit_whose_reply_is_lost_is_charged_at_most_once(
        fault_server: FaultServer, mode: str, via: str, fault_report: FaultReport) -> None:
    """redis-py re-sends a command whose reply it lost. A hit is never re-sent (resend: once):
    frozen past the client's timeout, it runs once when Redis wakes, and the caller gets the
    failure mode's answer (here: raise, so the TimeoutError itself). Before, up to ten re-sends
    queued up behind the frozen server, each charged."""
    conn = redis.Redis(port=fault_server.port, socket_timeout=0.2,
                       retry=Retry(ExponentialBackoff(cap=0.1, base=0.05), 10))
    client = pyredislua.Client(conn, mode=mode)  # type: ignore[arg-type]
    lim = SlidingLog(client, "api", "100/1h", on_failure="raise")
    other = SlidingLog(client, "tenant", "100/1h", on_failure="raise")

    def hit() -> Any:
        if via == "hit":
            return lim.hit("u")
        if via == "hit_many":
            return lim.hit_many(["u"], tag="u")
        return pyredislua.ratelimit.hit_all(client, [(lim, "u"), (other, "u")], tag="u")

    hit()  # the code is loaded (in script mode a first EVALSHA would fail NOSCRIPT, run nothing)
    resume = fault_server.pause_for(1.2)
    with pytest.raises(redis.TimeoutError):
        hit()
    resume.join()
    charged = _sliding_log_charged(fault_server, lim.keys("u")[0])
    wait_for(lambda: charged() == 2, 5, "the frozen hit to run, once")
    assert lim.check("u", 0).remaining == 98  # not 97, 96, ...
    conn.close()


async def test_an_asyncio_hit_whose_reply_is_lost_is_charged_at_most_once(
        fault_server: FaultServer) -> None:
    conn = redis.asyncio.Redis(port=fault_server.port, socket_timeout=0.2,
                               retry=redis.asyncio.retry.Retry(
                                   ExponentialBackoff(cap=0.1, base=0.05), 10))
    lim = SlidingLog(pyredislua.AsyncClient(conn), "api", "100/1h")  # fails open
    assert (await lim.hit("u")).allowed
    resume = fault_server.pause_for(1.2)
    d = await lim.hit("u")
    assert d.allowed and isinstance(d.error, redis.TimeoutError)  # the failure mode's answer
    resume.join()
    charged = _sliding_log_charged(fault_server, lim.keys("u")[0])
    wait_for(lambda: charged() == 2, 5, "the frozen hit to run, once")
    await conn.aclose()


@pytest.mark.parametrize("op", ["acquire", "renew", "release"])
def test_concurrency_operations_are_safe_to_resend(fault_server: FaultServer, op: str) -> None:
    """acquire, renew and release carry a lease id chosen by the client, so redis-py's re-sends
    (they are not disabled for them) change nothing more: one lease, never two slots."""
    conn = redis.Redis(port=fault_server.port, socket_timeout=0.2,
                       retry=Retry(ExponentialBackoff(cap=0.1, base=0.05), 10))
    jobs = ConcurrencyLimiter(pyredislua.Client(conn), "jobs", 3, ttl=60, on_failure="raise")
    held = jobs.acquire("t", lease="held")
    key = held.key
    resume = fault_server.pause_for(0.8)
    if op == "acquire":
        slot = jobs.acquire("t", lease="mine")  # re-sent until Redis answers
        assert slot.acquired and slot.decision.in_flight == 2
    elif op == "renew":
        assert jobs.renew(held)
    else:
        jobs.release(held)  # the re-send replies False: already released (documented)
    resume.join()
    with fault_server.admin() as admin:
        leases = {m.decode() for m in admin.zrangebyscore(key, "(0", "+inf")}
    assert leases == ({"held", "mine"} if op == "acquire" else
                      {"held"} if op == "renew" else set())
    conn.close()
