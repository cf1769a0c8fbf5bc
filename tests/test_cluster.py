"""Redis Cluster as a first-class target: loading settles each primary on its own, a node
without the library is loaded and the call retried without an error, asyncio cluster clients,
one-primary clusters, the CLI, and the redis-cli and Node.js (ioredis) recipes of the README —
on real clusters (3 primaries + 3 replicas, and one primary alone)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import redis
import redis.asyncio

import pyredislua
from pyredislua.engine.render import lua_root, render_library
from pyredislua.lock import LockKeys, acquire_call, inspect_call, release_call
from pyredislua.queue import Queue
from pyredislua.topology import LocalCluster
from tests.clusterkit import (
    ROOT,
    ause_lock,
    cli,
    info_versions,
    node_binary,
    on_node,
    shell,
    tags_by_primary,
    use_lock,
)

pytestmark = pytest.mark.cluster
LIB = render_library()


def _library_copy(tmp_path: Path, version: str) -> pyredislua.Library:
    root = tmp_path / f"lua-{version}"
    shutil.copytree(lua_root(), root)
    lib = root / "library.lua"
    lib.write_text(re.sub(r"version: \d+\.\d+\.\d+", f"version: {version}", lib.read_text()))
    return render_library(root)


# -- loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["function", "script"])
def test_load_reports_every_primary(cluster: LocalCluster, rc: redis.RedisCluster,
                                    mode: str) -> None:
    client = pyredislua.Client(rc, mode=mode)  # type: ignore[arg-type]
    report = client.load()
    primaries = {f"127.0.0.1:{p}" for p in cluster.primaries()}
    assert set(report.nodes) == primaries
    first = "loaded" if mode == "function" else "scripts-loaded"
    assert set(report.nodes.values()) == {first} and report.action == first
    again = client.load()
    assert set(again.nodes.values()) == {"present" if mode == "function" else first}


def test_each_primary_is_settled_on_its_own(cluster: LocalCluster, rc: redis.RedisCluster,
                                            tmp_path: Path) -> None:
    """One primary has an older build, one a newer one, one none: replace, leave, load."""
    older, newer = _library_copy(tmp_path, "1.0.0"), _library_copy(tmp_path, "1.99.0")
    a, b, c = cluster.primaries()
    on_node(a, "FUNCTION", "LOAD", older.code)
    on_node(b, "FUNCTION", "LOAD", newer.code)
    report = pyredislua.Client(rc, mode="function").load()
    assert report.nodes == {f"127.0.0.1:{a}": "replaced", f"127.0.0.1:{b}": "newer-on-server",
                            f"127.0.0.1:{c}": "loaded"}
    assert report.server_version == "1.99.0"
    assert info_versions(cluster, LIB.info_function) == {a: LIB.version, b: "1.99.0",
                                                         c: LIB.version}
    # and every primary serves calls: the newer minor is compatible
    client = pyredislua.Client(rc, mode="function")
    for tags in tags_by_primary(cluster).values():
        use_lock(client, tags[0])


def test_a_library_loaded_by_another_client_meanwhile_is_not_an_error(
        cluster: LocalCluster, rc: redis.RedisCluster) -> None:
    """Two clients loading at once: the second's FUNCTION LOAD finds the library already there
    (the first loaded it between the second's look and its load); it looks again instead of
    failing."""
    first, second = pyredislua.Client(rc, mode="function"), pyredislua.Client(rc, mode="function")
    plan = second.engine.ensure_library()
    replies = _drive_batch(second, next(plan))  # the second looks: nothing anywhere
    assert first.load().action == "loaded"  # the first loads everywhere meanwhile
    try:
        while True:
            replies = _drive_batch(second, plan.send(replies))
    except StopIteration as done:
        report = done.value
    assert set(report.nodes.values()) == {"present"}


def _drive_batch(client: pyredislua.Client, batch: object) -> list[object]:
    from pyredislua.client import _run_batch_sync

    return _run_batch_sync(client.redis, batch)  # type: ignore[arg-type]


# -- a node without the library -----------------------------------------------------------------


@pytest.mark.parametrize("flush", ["FUNCTION", "SCRIPT"])
def test_code_flushed_on_one_primary_is_invisible(cluster: LocalCluster, rc: redis.RedisCluster,
                                                  mode: str, flush: str) -> None:
    client = pyredislua.Client(rc, mode=mode)  # type: ignore[arg-type]
    tags = tags_by_primary(cluster, per_primary=2)
    for port_tags in tags.values():
        use_lock(client, port_tags[0])
    victim = cluster.primaries()[1]
    on_node(victim, flush, "FLUSH")
    for port_tags in tags.values():  # one call at a time: the victim's load happens inside
        use_lock(client, port_tags[0])
    on_node(victim, flush, "FLUSH")
    keys = [LockKeys(t) for port_tags in tags.values() for t in port_tags]
    with client.pipeline() as p:  # a pipeline spanning every primary
        for k in keys:
            p.add(acquire_call(k, "p", 10_000))
        for k in keys:
            p.add(inspect_call(k))
        for k in keys:
            p.add(release_call(k, "p"))
        replies = p.execute()
    n = len(keys)
    assert all(r.acquired for r in replies[:n])
    assert [s.owner for s in replies[n:2 * n]] == ["p"] * n
    assert replies[2 * n:] == [True] * n


async def test_code_flushed_on_one_primary_is_invisible_asyncio(
        cluster: LocalCluster, arc: redis.asyncio.RedisCluster, mode: str) -> None:
    client = pyredislua.AsyncClient(arc, mode=mode)  # type: ignore[arg-type]
    tags = tags_by_primary(cluster)
    for port_tags in tags.values():
        await ause_lock(client, port_tags[0])
    on_node(cluster.primaries()[0], "FUNCTION", "FLUSH")
    on_node(cluster.primaries()[0], "SCRIPT", "FLUSH")
    for port_tags in tags.values():
        await ause_lock(client, port_tags[0])
    async with client.pipeline() as p:
        for port_tags in tags.values():
            p.add(acquire_call(LockKeys(port_tags[0]), "p", 10_000))
        assert all(r.acquired for r in await p.execute())


@pytest.mark.parametrize("mode", ["function", "script", "auto"])
async def test_asyncio_cluster_loads_and_runs_in_every_mode(
        cluster: LocalCluster, arc: redis.asyncio.RedisCluster, mode: str) -> None:
    client = pyredislua.AsyncClient(arc, mode=mode)  # type: ignore[arg-type]
    report = await client.load()
    assert len(report.nodes) == 3
    for port_tags in tags_by_primary(cluster).values():
        await ause_lock(client, port_tags[0])
    assert client.mode == ("script" if mode == "script" else "function")


def test_noscript_is_recovered_on_cluster_pipelines(cluster: LocalCluster,
                                                    rc: redis.RedisCluster) -> None:
    """Script mode: a SCRIPT FLUSH everywhere between pipelines costs one EVAL per call, and
    no SCRIPT EXISTS is ever sent."""
    client = pyredislua.Client(rc, mode="script")
    keys = [LockKeys(t) for tags in tags_by_primary(cluster, 2).values() for t in tags]
    assert all(r.acquired for r in client.run_many([acquire_call(k, "p", 10_000) for k in keys]))
    for port in cluster.primaries():
        on_node(port, "SCRIPT", "FLUSH")
        on_node(port, "CONFIG", "RESETSTAT")
    states = client.run_many([inspect_call(k) for k in keys] + [release_call(k, "p")
                                                                 for k in keys])
    assert [s.owner for s in states[:len(keys)]] == ["p"] * len(keys)
    stats: dict[str, int] = {}
    for port in cluster.primaries():
        with redis.Redis(port=port) as conn:
            for name, value in conn.info("commandstats").items():
                stats[name] = stats.get(name, 0) + int(value["calls"])
    assert "cmdstat_script|exists" not in stats
    assert stats.get("cmdstat_eval_ro", 0) == len(keys)  # inspect: re-sent with its body
    assert stats.get("cmdstat_eval", 0) == len(keys)


# -- one primary --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["function", "script", "auto"])
async def test_one_primary_cluster(one_primary: LocalCluster, mode: str) -> None:
    conn = redis.RedisCluster.from_url(one_primary.url)
    aconn = redis.asyncio.RedisCluster.from_url(one_primary.url)
    try:
        client = pyredislua.Client(conn, mode=mode)  # type: ignore[arg-type]
        report = client.load()
        assert list(report.nodes) == [f"127.0.0.1:{one_primary.primaries()[0]}"]
        use_lock(client, "one")
        on_node(one_primary.primaries()[0], "FUNCTION", "FLUSH")
        on_node(one_primary.primaries()[0], "SCRIPT", "FLUSH")
        await ause_lock(pyredislua.AsyncClient(aconn, mode=mode), "one")  # type: ignore[arg-type]
        assert client.server_libraries() if mode != "script" else True
    finally:
        conn.close()
        await aconn.aclose()


# -- the command line ---------------------------------------------------------------------------


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command line, in this process (each subprocess would cost a second of imports)."""
    from pyredislua.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_load_and_list_report_per_primary(cluster: LocalCluster,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    primaries = [f"127.0.0.1:{p}" for p in cluster.primaries()]
    on_node(cluster.primaries()[0], "FUNCTION", "LOAD", LIB.code)
    loaded = cli("load", "--url", cluster.url)  # once through the real entry point
    assert loaded.returncode == 0, loaded.stderr
    lines = loaded.stdout.splitlines()
    assert lines[0].startswith(f"{LIB.name} {LIB.version}: loaded")
    assert sorted(line.split() for line in lines[1:]) == sorted(
        [p, "present" if p.endswith(f":{cluster.primaries()[0]}") else "loaded"]
        for p in primaries)
    code, out, err = _main(capsys, "list", "--url", cluster.url)
    assert code == 0, err
    for p in primaries:
        assert f"{p}: server holds {LIB.name} {LIB.version}" in out
    assert "missing" not in out
    on_node(cluster.primaries()[2], "FUNCTION", "FLUSH")
    code, out, err = _main(capsys, "list", "--url", cluster.url, "--json")
    rows = json.loads(out)["functions"]
    assert all(status == f"{primaries[2]}: missing" for _f, _d, status in rows)


def test_cli_load_fails_when_a_primary_is_unreachable(cluster: LocalCluster,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A primary that does not answer (SIGSTOP, shorter than the cluster's node timeout, so
    no failover starts) is reported, and the exit status says so."""
    victim, other = cluster.primaries()[1], cluster.primaries()[0]
    process = cluster.servers[victim].process
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    try:
        code, out, err = _main(capsys, "load", "--url", f"redis://127.0.0.1:{other}/0?"
                               "socket_timeout=0.1&socket_connect_timeout=0.1", "--cluster")
    finally:
        process.send_signal(signal.SIGCONT)
    assert code == 1
    assert f"127.0.0.1:{victim}  unreachable" in out
    assert "not loaded on" in err


def test_cli_on_a_one_primary_cluster(one_primary: LocalCluster,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The one-primary cluster crashed the loader ('bytes' object has no attribute 'values')."""
    node = f"127.0.0.1:{one_primary.primaries()[0]}"
    code, out, err = _main(capsys, "load", "--url", one_primary.url)
    assert code == 0, err
    assert out.splitlines()[1].split() == [node, "loaded"]
    code, out, err = _main(capsys, "list", "--url", one_primary.url)
    assert code == 0 and f"{node}: server holds {LIB.name} {LIB.version}" in out, out + err
    code, out, err = _main(capsys, "queue", "stats", "q", "--url", one_primary.url, "--json")
    assert code == 0 and json.loads(out)["ready"] == 0, err


@pytest.mark.parametrize("how", ["detected", "--cluster", "?cluster=true"])
def test_area_commands_work_on_a_cluster(cluster: LocalCluster, how: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`pyredislua queue stats … --url` used to raise MovedError on a cluster."""
    url = cluster.url + ("?cluster=true" if how == "?cluster=true" else "")
    flag = ["--cluster"] if how == "--cluster" else []
    client = pyredislua.Client(redis.RedisCluster.from_url(cluster.url))
    names = [t for tags in tags_by_primary(cluster, prefix="q").values() for t in tags]
    for name in names:
        Queue(client, name).enqueue(b"job")
    for name in names:  # one queue on each primary: most are not on the URL's node
        code, out, err = _main(capsys, "queue", "stats", name, "--url", url, *flag, "--json")
        assert code == 0, err
        assert json.loads(out)["ready"] == 1
    code, out, err = _main(capsys, "ratelimit", "hit", "prl:rl:{cli}:x", "--rate", "5/s",
                           "--url", url, *flag)
    assert code == 0, err
    code, out, err = _main(capsys, "load", "--url", url, *flag)  # `?cluster=true`: TypeError
    assert code == 0, err
    assert len(out.splitlines()) == 1 + len(cluster.primaries())  # a line per primary


def _every_command(name: str, job: str, lease: str) -> list[list[str]]:
    """Every command that reads or writes the data of a named primitive (all on ``name``)."""
    rl = f"prl:rl:{{{name}}}:x"
    return [
        ["queue", "stats", name], ["queue", "peek", name], ["queue", "get", name, job],
        ["queue", "dead", "list", name], ["queue", "dead", "requeue", name],
        ["queue", "dead", "purge", name, "--yes"],
        ["semaphore", "inspect", name], ["semaphore", "release", name, lease, "--permits", "2"],
        ["writebehind", "stats", "--store", name], ["writebehind", "dead", "--store", name],
        ["writebehind", "requeue", "--store", name],
        ["cache", "invalidate-tag", "--namespace", name, "--tag", "t"],
        ["ratelimit", "inspect", rl], ["ratelimit", "check", rl, "--rate", "5/s"],
        ["ratelimit", "hit", rl, "--rate", "5/s"], ["ratelimit", "reset", rl],
        ["memory"], ["metrics", "show", "--queue", name], ["top", "--once", "--queue", name],
        ["load-data", "--scale", "0.01", "--quiet"],
    ]


def test_every_command_works_on_a_cluster(cluster: LocalCluster,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Each area's commands, on names whose slots are on another node than the URL's: none
    fails (before, they raised MovedError or answered for one node only)."""
    from pyredislua.cache import Cache
    from pyredislua.semaphore import Semaphore
    from pyredislua.writebehind import WriteBehind

    url_node = cluster.primaries()[0]
    url = f"redis://127.0.0.1:{url_node}/0"
    name = tags_by_primary(cluster, prefix="c")[cluster.primaries()[1]][0]
    rc = redis.RedisCluster.from_url(cluster.url)
    try:
        client = pyredislua.Client(rc)
        q = Queue(client, name)
        q.enqueue(b"x", max_attempts=1)
        [job] = q.dequeue(count=1, timeout=0)
        q.nack(job, "boom", action="dead")
        permit = Semaphore(client, name, 2, ttl=30, auto_renew=False).acquire(1)
        assert permit is not None
        WriteBehind(client, name).set("k", b"v")
        Cache(client, name).set("y", 1, tags=["t"])
        for args in _every_command(name, job.id, permit.lease):
            code, out, err = _main(capsys, *args, "--url", url)
            assert "pyredislua: error" not in err, (args, err)
            assert code == 0, (args, out, err)
        # and what they did happened on the name's own node
        stats = q.stats()
        assert (stats.dead, stats.ready) == (0, 1)  # dead-lettered, then requeued by the CLI
        assert Semaphore(client, name, 2).inspect().in_use == 0
    finally:
        rc.close()


def test_the_demo_runs_on_a_cluster(cluster: LocalCluster,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`pyredislua demo --url <any node>` used to stop at its first key on another node
    (MovedError)."""
    code, out, err = _main(capsys, "demo", "--url", f"redis://127.0.0.1:{cluster.primaries()[0]}")
    assert code == 0, err
    assert out.rstrip().endswith("Done.")
    assert f"{LIB.name} {LIB.version}" in out


# -- the README recipes -------------------------------------------------------------------------


def test_redis_cli_cluster_call_recipe_loads_every_primary(cluster: LocalCluster) -> None:
    """The README's `redis-cli --cluster call` recipe: the library on stdin (-x; as an argument
    it is over Linux's 128 KiB limit), primaries only (replicas answer READONLY and get it by
    replication), one result line per primary."""
    node = cluster.primaries()[0]
    done = shell(
        f"pyredislua render | redis-cli -x --cluster call 127.0.0.1:{node} "
        "FUNCTION LOAD REPLACE --cluster-only-masters | grep -E '^[^ ]+:[0-9]+: '")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(
        f"127.0.0.1:{p}: {LIB.name}" for p in cluster.primaries())
    assert set(info_versions(cluster, LIB.info_function).values()) == {LIB.version}
    too_long = shell(f'redis-cli --cluster call 127.0.0.1:{node} FUNCTION LOAD REPLACE '
                     '"$(pyredislua render)"')
    assert too_long.returncode != 0 and "Argument list too long" in too_long.stderr


def test_redis_cli_loop_recipe_loads_every_primary(cluster: LocalCluster) -> None:
    """The README's loop over CLUSTER NODES: no argument-size limit on the library."""
    node = cluster.primaries()[0]
    done = shell(
        'lib="$(mktemp)"; pyredislua render > "$lib"\n'
        f"redis-cli -p {node} CLUSTER NODES | awk '/master/ && !/fail/ {{print $2}}' |\n"
        "  cut -d@ -f1 | tr : ' ' | while read -r host port; do\n"
        '    redis-cli -h "$host" -p "$port" -x FUNCTION LOAD REPLACE < "$lib"\n'
        '  done\nrm "$lib"')
    assert done.returncode == 0, done.stderr
    assert set(info_versions(cluster, LIB.info_function).values()) == {LIB.version}
    any_node = cluster.replicas_of(node)[0]  # any node will do: -c follows the redirect
    acquired = shell(f'redis-cli -c -p {any_node} FCALL pyredislua_v1_lock_acquire 4 '
                     'prl:lock:{{r}} prl:lock:{{r}}:fence prl:lock:{{r}}:signal '
                     'prl:lock:{{r}}:waiters op-1 30000')
    assert acquired.stdout.split() == ["1", "1", "30000"], acquired.stdout + acquired.stderr


NODE_DIR = ROOT / "tests" / "node"


def _ioredis() -> None:
    if node_binary() is None:
        pytest.skip("Node.js is not on PATH")
    if not (NODE_DIR / "node_modules" / "ioredis").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not on PATH")
        installed = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent"],
                                   cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
        if installed.returncode != 0:
            pytest.skip(f"npm install ioredis failed: {installed.stderr[-500:]}")


def test_nodejs_ioredis_cluster_recipe(cluster: LocalCluster) -> None:
    """The README's Node.js way: ioredis Cluster loads on every primary, then FCALLs; after a
    FUNCTION FLUSH on one primary, a call there reloads everywhere and retries."""
    _ioredis()
    flushed = cluster.primaries()[1]
    tag = tags_by_primary(cluster)[flushed][0]
    done = shell(f"node {NODE_DIR / 'cluster_recipe.mjs'} 127.0.0.1 {cluster.primaries()[0]} "
                 f"{tag} {flushed}", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["acquired"] == [1, 1, 30000]
    assert result["released"] == 1
    assert result["after_flush"] == [1, 2, 30000]
    assert set(info_versions(cluster, LIB.info_function).values()) == {LIB.version}
