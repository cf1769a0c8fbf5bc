"""Failover, for real: a replica promoted by ``CLUSTER FAILOVER`` or after its primary was
killed (SIGKILL) in a 3-primary cluster, and a Sentinel-managed primary failed over the same two
ways. Calls keep working after the promotion (the library replicates with FUNCTION LOAD; scripts
are reloaded on NOSCRIPT), and what can be lost is measured: acknowledged jobs the promoted
primary lacks. Each case is also a row of the fault table (``-m faults`` report)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

import pyredislua
from pyredislua.queue import Queue
from pyredislua.topology import LocalCluster, LocalSentinel
from tests.clusterkit import (
    Traffic,
    Writer,
    ause_lock,
    info_versions,
    on_node,
    slot_of,
    tags_by_primary,
    use_lock,
)
from tests.faultkit import FaultOutcome, FaultReport

pytestmark = [pytest.mark.cluster, pytest.mark.faults]


def _surfaced(traffic: Traffic, writer: Writer) -> str:
    count = len(traffic.errors) + len(writer.errors)
    if not count:
        return "none"
    times = sorted(traffic.error_times + writer.error_times)
    return f"calls failed for {times[-1] - times[0]:.2f} s ({count} calls)"


def _writer_client(make: Callable[[], pyredislua.Client], durable: bool) -> pyredislua.Client:
    client = make()
    return client.with_durability(DURABLE) if durable else client


DURABLE = pyredislua.Durability(replicas=1, timeout=0.05, on_shortfall="raise")
FAILOVERS = [  # (how, mode, writes confirmed by a replica)
    pytest.param(False, "function", False, id="manual-function"),
    pytest.param(False, "script", False, id="manual-script"),
    pytest.param(True, "function", False, id="killed-function"),
    pytest.param(True, "script", True, id="killed-script-durable"),
]


@pytest.mark.parametrize(("kill", "mode", "durable"), FAILOVERS)
def test_cluster_failover_under_traffic(cluster: LocalCluster, mode: str, kill: bool,
                                        durable: bool, fault_report: FaultReport) -> None:
    victim = cluster.primaries()[0]
    tags = [t for port_tags in tags_by_primary(cluster, 3).values() for t in port_tags]
    conns: list[redis.RedisCluster] = []

    def make_client() -> pyredislua.Client:
        conns.append(redis.RedisCluster.from_url(cluster.url))
        return pyredislua.Client(conns[-1], mode=mode)  # type: ignore[arg-type]

    traffic = Traffic(make_client, tags).start()
    writer = Writer(_writer_client(make_client, durable),
                    tags_by_primary(cluster, prefix="w")[victim][0]).start()
    try:
        traffic.wait_for_calls(len(tags))
        writer.wait_for_acks(20)
        began = time.monotonic()
        promoted = cluster.failover(victim, kill=kill)
        traffic.wait_for_calls(2 * len(tags))  # every primary serves again, the new one too
        if durable and kill:  # the promoted primary has no replica to confirm writes
            cluster.restore()  # until the killed one is back as its replica
        writer.wait_for_acks(20)
        recovery = time.monotonic() - began
        # recovered: from here on, no call fails. (Before this point, with a killed primary,
        # a call in flight when it died may fail (it may have run), and a lock cycle may find
        # its acquire, acknowledged but not yet replicated, gone on the promoted replica.)
        errors_recovered = len(traffic.errors)
        traffic.wait_for_calls(2 * len(tags))
    finally:
        traffic.stop()
        writer.stop()
    lost = writer.lost(make_client())
    for conn in conns:
        conn.close()
    assert promoted != victim
    assert not traffic.errors[errors_recovered:], "errors once recovered"
    assert len(traffic.errors) <= 2, traffic.errors  # the one cycle in flight at the kill
    if not kill or durable:  # a manual failover waits for the replica to catch up
        assert lost == 0
    if not kill:
        assert traffic.errors == [] and writer.errors == []
    fault_report.record(FaultOutcome(
        f"Client on RedisCluster ({mode} mode{', durability=1' if durable else ''})",
        "primary killed, replica elected" if kill else "CLUSTER FAILOVER",
        recovered=True, recovery_s=recovery, surfaced=_surfaced(traffic, writer), lost=lost,
        note=f"{len(writer.acked)} jobs acknowledged"
             + (f", {writer.unconfirmed} reported unconfirmed" if durable else "")))


def test_a_promoted_replica_without_the_library_is_loaded_under_traffic(
        cluster: LocalCluster) -> None:
    """A replica that lacks the library (made writable and flushed here; in the field: one that
    lost it some other way) is promoted by CLUSTER FAILOVER while calls run on its slots: the
    first call there loads it and is retried, and no call fails."""
    library = pyredislua.render_library()
    victim = cluster.primaries()[0]
    replica = cluster.replicas_of(victim)[0]
    tags = tags_by_primary(cluster, 3)[victim]
    conns: list[redis.RedisCluster] = []

    def make_client() -> pyredislua.Client:
        conns.append(redis.RedisCluster.from_url(cluster.url))
        return pyredislua.Client(conns[-1], mode="function")

    traffic = Traffic(make_client, tags).start()
    try:
        traffic.wait_for_calls(len(tags))
        on_node(replica, "CONFIG", "SET", "replica-read-only", "no")
        on_node(replica, "FUNCTION", "FLUSH")
        assert on_node(replica, "FUNCTION", "LIST") == []
        assert cluster.failover(victim) == replica
        for tag in tags:
            traffic.wait_for_tag(tag)
    finally:
        on_node(replica, "CONFIG", "SET", "replica-read-only", "yes")
        traffic.stop()
        for conn in conns:
            conn.close()
    assert traffic.errors == [], traffic.errors[:5]
    assert info_versions(cluster, library.info_function)[replica] == library.version


async def test_cluster_failover_asyncio(cluster: LocalCluster,
                                        arc: redis.asyncio.RedisCluster, mode: str) -> None:
    client = pyredislua.AsyncClient(arc, mode=mode)  # type: ignore[arg-type]
    tags = tags_by_primary(cluster)
    for port_tags in tags.values():
        await ause_lock(client, port_tags[0])
    victim = cluster.primaries()[2]
    cluster.failover(victim)
    for port_tags in tags.values():  # the moved slots answer MOVED; redis-py follows
        await ause_lock(client, port_tags[0])


# -- Sentinel -----------------------------------------------------------------------------------


def _sentinel_client(sentinel: LocalSentinel, mode: str) -> tuple[redis.Redis, pyredislua.Client]:
    manager = redis.sentinel.Sentinel(sentinel.sentinel_addresses, socket_timeout=2)
    conn = manager.master_for(sentinel.service, socket_timeout=2)
    return conn, pyredislua.Client(conn, mode=mode)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kill", "mode", "durable"), [
    pytest.param(False, "function", False, id="manual-function"),
    pytest.param(False, "function", True, id="manual-function-durable"),
    pytest.param(True, "script", False, id="killed-script"),
    pytest.param(True, "script", True, id="killed-script-durable"),
])
def test_sentinel_failover_under_traffic(sentinel: LocalSentinel, mode: str, kill: bool,
                                         durable: bool, fault_report: FaultReport) -> None:
    """SENTINEL FAILOVER promotes the replica while the old primary still takes writes (it is
    demoted afterwards): writes it acknowledged in between are lost; with durability=1 none
    of those is acknowledged, each raises DurabilityError (the replica stopped confirming)."""
    conns: list[redis.Redis] = []

    def make_client() -> pyredislua.Client:
        conn, client = _sentinel_client(sentinel, mode)
        conns.append(conn)
        return client

    traffic = Traffic(make_client, ["s1", "s2", "s3"]).start()
    writer = Writer(_writer_client(make_client, durable), "sw").start()
    try:
        traffic.wait_for_calls(10)
        writer.wait_for_acks(20)
        began = time.monotonic()
        old = sentinel.primary()
        new = sentinel.failover(kill=kill)
        errors_at_promotion = len(traffic.errors)
        traffic.wait_for_calls(10)
        if durable and kill:  # no replica to confirm writes until the killed one is back
            sentinel.restore()
        writer.wait_for_acks(20)
        recovery = time.monotonic() - began
        # recovered: from here on, no call fails (the restored node's restart, and a pooled
        # connection per client to the old primary, may each fail once before this point)
        errors_recovered = len(traffic.errors)
        traffic.wait_for_calls(20)
    finally:
        traffic.stop()
        writer.stop()
    lost = writer.lost(make_client())
    for conn in conns:
        conn.close()
    assert new != old
    assert not traffic.errors[errors_recovered:], "errors after recovery"
    assert len(traffic.errors) - errors_at_promotion <= 2 * len(conns) + 2, traffic.errors
    if durable:
        assert lost == 0
    fault_report.record(FaultOutcome(
        f"Client on a Sentinel-managed primary ({mode} mode{', durability=1' if durable else ''})",
        "primary killed, replica promoted" if kill else "SENTINEL FAILOVER",
        recovered=True, recovery_s=recovery, surfaced=_surfaced(traffic, writer), lost=lost,
        note=f"{len(writer.acked)} jobs acknowledged"
             + (f", {writer.unconfirmed} reported unconfirmed" if durable else "")))


async def test_sentinel_asyncio(sentinel: LocalSentinel, mode: str) -> None:
    manager = redis.asyncio.sentinel.Sentinel(sentinel.sentinel_addresses, socket_timeout=2)
    conn = manager.master_for(sentinel.service, socket_timeout=2)
    client = pyredislua.AsyncClient(conn, mode=mode)  # type: ignore[arg-type]
    try:
        await ause_lock(client, "a1")
        sentinel.failover()
        for _ in range(50):  # the first calls may meet the demoted primary: redis-py reconnects
            try:
                await ause_lock(client, "a1")
                break
            except (redis.ConnectionError, redis.ReadOnlyError):
                continue
        await ause_lock(client, "a2")
    finally:
        await conn.aclose()


def test_sentinel_sync_basics(sentinel: LocalSentinel, mode: str) -> None:
    conn, client = _sentinel_client(sentinel, mode)
    try:
        report = client.load()
        assert report.nodes == {f"sentinel:{sentinel.service}":
                                "loaded" if mode == "function" else "scripts-loaded"}
        use_lock(client, "b1")
    finally:
        conn.close()


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from pyredislua.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_on_a_sentinel_url(sentinel: LocalSentinel,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``--url redis+sentinel://host:port,.../service``: every command reaches the primary the
    sentinels name, and the one after a failover (a write there would fail READONLY on the
    demoted one)."""
    import json

    hosts = ",".join(f"{h}:{p}" for h, p in sentinel.sentinel_addresses)
    url = f"redis+sentinel://{hosts}/{sentinel.service}?socket_timeout=2"
    code, out, err = _main(capsys, "load", "--url", url)
    assert code == 0, err
    assert out.startswith(f"{pyredislua.render_library().name} ") and ": loaded" in out
    conn, client = _sentinel_client(sentinel, "function")
    try:
        # on the replica too (the wait is generous: a replica that re-synced after an earlier
        # test's failover may answer WAIT later than the default 0.1 s on a loaded machine)
        durable = client.with_durability(pyredislua.Durability(1, timeout=5))
        Queue(durable, "cli-q").enqueue(b"job")
    finally:
        conn.close()
    for when in ("before", "after"):
        if when == "after":
            old = sentinel.primary()
            assert sentinel.failover() != old
        code, out, err = _main(capsys, "queue", "stats", "cli-q", "--url", url, "--json")
        assert code == 0, err
        assert json.loads(out)["ready"] == 1
        code, out, err = _main(capsys, "ratelimit", "hit", "prl:rl:{cli}:x", "--rate", "5/s",
                               "--url", url)
        assert code == 0, err
        code, out, err = _main(capsys, "list", "--url", url)
        assert code == 0 and "missing" not in out, out + err
    for bad in (f"redis+sentinel://{hosts}", "redis+sentinel://nohost/x"):
        code, out, err = _main(capsys, "queue", "stats", "q", "--url", bad)
        assert code == 1, out
        assert "pyredislua: error: ValueError:" in err and "host:port" in err, err
    code, out, err = _main(capsys, "queue", "stats", "q", "--url", url, "--cluster")
    assert code == 1 and "not a cluster" in err


def _once_call(tag: str) -> Any:
    """A rate-limit hit: flagged ``resend: once`` (a re-sent hit would charge twice)."""
    from pyredislua.ratelimit.ops import Limit, Rate, decide_call

    call = decide_call([Limit("gcra", Rate.parse("1000/s"), f"prl:rl:{{{tag}}}:once")])
    assert pyredislua.render_library().operations[call.op].header.resend == "once"
    return call


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["sync", "asyncio"])
async def test_a_once_call_refused_by_a_killed_primary_waits_for_the_promotion(
        cluster: LocalCluster, use_asyncio: bool) -> None:
    """A call that may not be sent twice is not sent again after a connection error (it may
    have run) — but a refused connection means it was never sent: it waits for the promoted
    replica like any other call instead of failing (the killed-primary failover test surfaced
    one such error about one run in ten). The pooled connection to the dead node is not
    written into: redis-py's sync pool checks it; on asyncio, pyredislua drops it once the
    event loop has seen its end."""
    victim, other = cluster.primaries()[:2]
    tag = tags_by_primary(cluster)[victim][0]
    url = f"redis://127.0.0.1:{other}"
    conn = redis.RedisCluster.from_url(url)
    aconn = redis.asyncio.RedisCluster.from_url(url)
    try:
        client = pyredislua.Client(conn, mode="function")
        aclient = pyredislua.AsyncClient(aconn, mode="function")
        client.load()
        call = _once_call(tag)
        assert client.run(call).allowed  # a pooled connection to the victim, each
        assert (await aclient.run(call)).allowed
        node = aconn.get_node(node_name=f"127.0.0.1:{victim}")
        assert node is not None and len(node._free) == 1
        cluster.servers[victim].kill()
        if use_asyncio:  # until the event loop has seen the pooled connection's end
            reader = node._free[0]._reader
            deadline = time.monotonic() + 5
            while not (reader.at_eof() or reader.exception() is not None):
                assert time.monotonic() < deadline, "the killed node's socket never closed"
                await asyncio.sleep(0.001)
        # the first call after the kill reconnects to the dead node and is refused
        decision = await aclient.run(call) if use_asyncio else client.run(call)
        assert decision.allowed
        assert cluster.owner_of(slot_of(tag)) != victim
    finally:
        conn.close()
        await aconn.aclose()
