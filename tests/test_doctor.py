"""``pyredislua doctor`` against real servers configured well and badly."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import pyredislua
from pyredislua.cli import main
from pyredislua.engine.render import render_library
from pyredislua.observe.doctor import Finding, examine, worst
from pyredislua.server import RedisServer, free_port
from pyredislua.topology import LocalCluster

pytestmark = pytest.mark.cli

LIB = render_library()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    extra: tuple[str, ...] = getattr(request, "param", ())
    with RedisServer(extra_args=extra) as s:
        yield s


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def doctor_json(url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["doctor", "--url", url, "--json"])
    return code, json.loads(capsys.readouterr().out)


GOOD = ("--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory", "200mb")


@pytest.mark.parametrize("server", [GOOD], indirect=True)
def test_a_well_configured_server_passes(server: RedisServer,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    conn = redis.Redis.from_url(server.url)
    pyredislua.Client(conn).load()
    code, report = doctor_json(server.url, capsys)
    assert code == 0, report
    assert report["verdict"] == "ok"
    checks = {f["check"]: f["level"] for f in report["findings"]}
    assert checks == {"version": "ok", "eviction": "ok", "persistence": "ok", "library": "ok",
                      "memory": "ok", "busy-reply-threshold": "ok"}


def test_the_test_servers_defaults_are_reported_with_their_fixes(
        server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    """No persistence (unsafe), no maxmemory and no library (warnings); exit status 1."""
    code = main(["doctor", "--url", server.url])
    out = capsys.readouterr().out
    assert code == 1
    assert "UNSAFE" in out and "persistence" in out and "fix: CONFIG SET appendonly yes" in out
    assert f"pyredislua load --url redis://127.0.0.1:{server.port}" in out
    assert out.strip().endswith("1 unsafe, 2 warnings, 3 ok")
    findings = by_check(examine(redis.Redis.from_url(server.url), LIB))
    assert findings["persistence"].level == "unsafe"
    assert findings["library"].level == "warn"
    assert findings["memory"].level == "warn"
    # nothing was written: the doctor only reads
    assert redis.Redis.from_url(server.url).execute_command("FUNCTION", "LIST") == []
    assert redis.Redis.from_url(server.url).dbsize() == 0


@pytest.mark.parametrize(("policy", "maxmemory", "level"), [
    ("allkeys-lru", "100mb", "unsafe"), ("volatile-ttl", "100mb", "unsafe"),
    ("volatile-lru", "0", "warn"), ("noeviction", "100mb", "ok")])
def test_an_eviction_policy_that_drops_library_keys_is_unsafe(
        server: RedisServer, policy: str, maxmemory: str, level: str) -> None:
    conn = redis.Redis.from_url(server.url)
    conn.config_set("maxmemory-policy", policy)
    conn.config_set("maxmemory", maxmemory)
    finding = by_check(examine(conn, LIB))["eviction"]
    assert finding.level == level, finding
    if level != "ok":
        assert "noeviction" in finding.fix


def test_persistence_levels(server: RedisServer) -> None:
    conn = redis.Redis.from_url(server.url)
    try:
        conn.config_set("save", "900 1")
        assert by_check(examine(conn, LIB))["persistence"].level == "warn"  # snapshots only
        conn.config_set("appendonly", "yes")
        assert by_check(examine(conn, LIB))["persistence"].level == "ok"
        conn.config_set("appendfsync", "no")
        assert by_check(examine(conn, LIB))["persistence"].level == "warn"
    finally:
        # persistence off again: with it on, the server's SIGTERM at teardown took the stop's
        # full 10 s grace before it was killed
        conn.config_set("appendonly", "no")
        conn.config_set("save", "")


def _fake_library(conn: redis.Redis, version: str, sha: str) -> None:
    code = (f"#!lua name={LIB.name}\n"
            f"redis.register_function{{function_name='{LIB.info_function}', "
            f"callback=function() return {{'{version}', '{sha}'}} end, flags={{'no-writes'}}, "
            f"description='pyredislua {version} sha1={sha}'}}")
    conn.execute_command("FUNCTION", "LOAD", "REPLACE", code)


def test_library_versions(server: RedisServer) -> None:
    conn = redis.Redis.from_url(server.url)
    _fake_library(conn, "1.0.0", "a" * 40)
    finding = by_check(examine(conn, LIB))["library"]
    assert (finding.level, "older" in finding.found) == ("warn", True)
    _fake_library(conn, "99.0.0", "b" * 40)
    finding = by_check(examine(conn, LIB))["library"]
    assert (finding.level, "newer" in finding.found) == ("ok", True)
    _fake_library(conn, LIB.version, "c" * 40)
    finding = by_check(examine(conn, LIB))["library"]
    assert (finding.level, "another build" in finding.found) == ("unsafe", True)
    pyredislua.Client(conn).load(force=True)
    assert by_check(examine(conn, LIB))["library"].level == "ok"


def test_memory_headroom(server: RedisServer) -> None:
    conn = redis.Redis.from_url(server.url)
    used = int(conn.info("memory")["used_memory"])
    conn.config_set("maxmemory", str(int(used / 0.85)))
    assert by_check(examine(conn, LIB))["memory"].level == "warn"
    conn.config_set("maxmemory", str(int(used / 0.97)))
    finding = by_check(examine(conn, LIB))["memory"]
    assert finding.level == "unsafe", finding


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_replicas_and_their_link(server: RedisServer) -> None:
    primary = redis.Redis.from_url(server.url)
    with RedisServer(extra_args=("--replicaof", "127.0.0.1", str(server.port))) as replica:
        _wait(lambda: any(k.startswith("slave") and v.get("state") == "online"
                          for k, v in primary.info("replication").items()
                          if isinstance(v, dict)))
        findings = examine(primary, LIB)
        replicas = [f for f in findings if f.check == "replicas"]
        assert len(replicas) == 1 and replicas[0].level == "ok"
        assert f":{replica.port} online" in replicas[0].found
        # the replica itself is read too, through what its primary reports
        link = [f for f in findings if f.check == "replication"]
        assert [(f.node, f.level) for f in link] == [(f"127.0.0.1:{replica.port}", "ok")]
        rconn = redis.Redis.from_url(replica.url)
        _wait(lambda: rconn.info("replication").get("master_link_status") == "up")
        on_replica = by_check(examine(rconn, LIB))
        assert on_replica["replication"].level == "ok"
        assert "library" not in on_replica  # only primaries are asked for functions
    with RedisServer(extra_args=("--replicaof", "127.0.0.1", str(free_port()))) as orphan:
        finding = by_check(examine(redis.Redis.from_url(orphan.url), LIB))["replication"]
        assert finding.level == "warn" and "down" in finding.found


def test_a_user_without_config_rights_gets_warnings_not_a_crash(
        server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    admin = redis.Redis.from_url(server.url)
    admin.acl_setuser("watcher", enabled=True, passwords=["+pw"], commands=["+@all", "-config",
                                                                             "-function"],
                      keys=["*"])
    url = f"redis://watcher:pw@127.0.0.1:{server.port}/0"
    code, report = doctor_json(url, capsys)
    levels = {f["check"]: f["level"] for f in report["findings"]}
    assert levels["eviction"] == levels["persistence"] == levels["library"] == "warn"
    assert code == 0  # nothing is known to be unsafe


def test_a_cluster_is_examined_node_by_node(cluster: LocalCluster,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc = redis.RedisCluster.from_url(cluster.url)
    try:
        pyredislua.Client(rc).load()
        first = cluster.primaries()[0]
        redis.Redis(port=first).execute_command("FUNCTION", "DELETE", LIB.name)
        code, report = doctor_json(cluster.url, capsys)
        library = {f["node"]: f["level"] for f in report["findings"] if f["check"] == "library"}
        assert len(library) == 3
        assert library.pop(f"127.0.0.1:{first}") == "warn"
        assert set(library.values()) == {"ok"}
        replication = [f for f in report["findings"] if f["check"] == "replication"]
        assert len(replication) == 3  # one replica per primary, each read directly
        assert code == 1  # the test cluster keeps nothing on disk
        assert worst(examine(rc, LIB)) == "unsafe"
    finally:
        pyredislua.Client(rc).load()
        rc.close()
