"""Rendering, loading, versions, loader modes and recovery from lost code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

import pyredislua
from pyredislua.engine.header import (
    KEY_TYPES,
    HeaderError,
    key_spec_at,
    key_type_at,
    parse_header,
)
from pyredislua.engine.render import lua_root, render_library
from pyredislua.lock import LockKeys, acquire_call, inspect_call, release_call
from pyredislua.server import RedisServer

pytestmark = pytest.mark.engine


def _library_copy(tmp_path: Path, version: str, tweak: str = "") -> pyredislua.Library:
    root = tmp_path / f"lua-{version}{'-tweaked' if tweak else ''}"
    shutil.copytree(lua_root(), root)
    lib = root / "library.lua"
    lib.write_text(re.sub(r"version: \d+\.\d+\.\d+", f"version: {version}", lib.read_text()))
    if tweak:
        prelude = root / "includes" / "prelude.lua"
        prelude.write_text(prelude.read_text() + f"\n-- {tweak}\n")
    return render_library(root)


def _use(client: pyredislua.Client, name: str = "res") -> None:
    keys = LockKeys(name)
    assert client.run(acquire_call(keys, "t", 10_000)).acquired
    assert client.run(release_call(keys, "t"))


def test_rendered_library_names_and_flags() -> None:
    lib = render_library()
    assert lib.name == f"pyredislua_v{lib.major}"
    assert lib.code.startswith(f"#!lua name={lib.name}\n")
    for op in lib.operations.values():
        assert op.function == f"{lib.name}_{op.header.ident}"
        flags = ",".join(op.header.flags)
        # scripts carry their flags in the shebang, so allow-oom holds in script mode too
        assert op.script.startswith(f"#!lua flags={flags}\n" if flags else "#!lua\n")
    assert lib.operation("lock.inspect").read_only
    assert not lib.operation("lock.acquire").read_only


def test_header_errors_are_reported() -> None:
    with pytest.raises(HeaderError, match="version"):
        parse_header("--[[\nname: a.b\nversion: 1.0\nsummary: s\nreturns: x\n]]\n")
    with pytest.raises(HeaderError, match="range"):
        parse_header("--[[\nname: a.b\nversion: 1.0.0\nsummary: s\nargv:\n  n: int 5..1\n"
                     "returns: x\n]]\n")
    with pytest.raises(HeaderError, match="follows an optional"):
        parse_header("--[[\nname: a.b\nversion: 1.0.0\nsummary: s\nargv:\n  a: int 1..2 = 1\n"
                     "  b: int 1..2\nreturns: x\n]]\n")
    with pytest.raises(HeaderError, match="must open with its type"):
        parse_header("--[[\nname: a.b\nversion: 1.0.0\nsummary: s\nkeys:\n  k: a hash of x\n"
                     "returns: x\n]]\n")


def test_key_sets_are_declared_once() -> None:
    from pyredislua.engine.header import parse_keyset
    from pyredislua.engine.keysets import KeySet, RecordedKeySet
    from pyredislua.engine.render import load_keysets

    lib = render_library()
    sets = load_keysets()
    assert {"lock", "queue", "streamqueue", "writebehind"} <= set(sets)
    for op in lib.operations.values():
        if op.header.keyset:
            spec = sets[op.header.keyset]
            extras = {k.name: k for k in spec.extras}
            assert op.header.keys == spec.keys + tuple(
                extras[n] for n in op.header.keyset_extras), op.name
    # every queue and Streams operation takes its area's set (and extras), in the same KEYS order
    # (but the metrics read, which takes the metrics key alone)
    for area, keyset in (("queue", "queue"), ("stream", "streamqueue")):
        takers = {op.name: op.header for op in lib.operations.values()
                  if op.header.area == area and op.name != f"{area}.metrics"}
        assert takers and all(h.keyset == keyset for h in takers.values()), area
    assert [lib.operation(f"queue.{n}").header.keyset_extras
            for n in ("enqueue", "stats", "reap")] == [("request", "metrics"), (), ("metrics",)]
    assert lib.operation("stream.consume").header.keyset_extras == (
        "cursors", "consumers", "request")
    # the Python key classes are built from the same files
    from pyredislua.queue.ops import QueueKeys
    from pyredislua.stream.ops import StreamKeys

    names = [k.name for k in sets["queue"].keys]
    assert QueueKeys("orders").all == tuple(f"prl:q:{{orders}}:{n}" for n in names)
    assert QueueKeys("orders").with_request("r")[-1] == "prl:q:{orders}:req:r"
    sq = StreamKeys("ev")
    assert sq.all == ("prl:sq:{ev}:stream", "prl:sq:{ev}:dead")
    assert sq.consume == (*sq.all, "prl:sq:{ev}:cursors", "prl:sq:{ev}:consumers")
    # the queue include's name table (queue_K, which the operations look keys up in) lists the
    # set's keys in the set's order, then the extras
    include = (Path(lua_root()) / "includes" / "queue.lua").read_text()
    body = re.search(r"local function queue_K\(keys\)(.*?)\nend", include, re.S)
    assert body is not None
    table = []
    for names_, values in re.findall(r"((?:K\.\w+,\s*)*K\.\w+) = ((?:keys\[\d+\],\s*)*keys\[\d+\])",
                                     body.group(1)):
        table += zip(re.findall(r"K\.(\w+)", names_), re.findall(r"keys\[(\d+)\]", values))
    assert len(table) == 12
    assert [n for n, _ in sorted(table, key=lambda t: int(t[1]))] == names + [
        k.name for k in sets["queue"].extras]
    with pytest.raises(TypeError, match="no 'request' extra"):
        class NoRecords(RecordedKeySet, keyset="lock"):
            lock: str
            fence: str
            signal: str
            waiters: str
    with pytest.raises(TypeError, match="same names, same order"):
        class WrongExtra(KeySet, keyset="streamqueue"):
            stream: str
            dead: str
            consumers: str
            cursors: str

    def header(keys: str) -> None:
        parse_header(f"--[[\nname: a.b\nversion: 1.0.0\nsummary: s\n{keys}\nreturns: x\n]]\n",
                     keysets=sets)

    with pytest.raises(HeaderError, match="has no extras"):
        header("keys: keyset queue + nope")
    with pytest.raises(HeaderError, match="only the last keys may be optional"):
        header("keys: keyset streamqueue + consumers, cursors")
    # the Python key class must name the set's keys, in order
    with pytest.raises(TypeError, match="same names, same order"):
        class Wrong(KeySet, keyset="lock"):
            lock: str
            signal: str
            fence: str
            waiters: str
    with pytest.raises(HeaderError, match="not both"):
        header("keys: keyset lock\n  k: string; x")
    with pytest.raises(HeaderError, match="no key set named"):
        header("keys: keyset nope")
    with pytest.raises(HeaderError, match="misses 'base'"):
        parse_keyset("--[[\nkeyset: x\nsummary: s\nkeys:\n  k: string; x\n]]\n")


def test_every_declared_key_has_a_type() -> None:
    lib = render_library()
    for op in lib.operations.values():
        assert all(k.type in KEY_TYPES for k in op.header.keys), op.name
    assert [k.type for k in lib.operation("lock.acquire").header.keys] == [
        "hash", "string", "list", "zset", "hash"]
    assert lib.operation("lock.acquire").header.keys[-1].optional  # the metrics key
    assert key_type_at(lib.operation("cache.set").header, 7) == "set"
    # a variadic operation's optional trailing key (the metrics key): the call says it is there
    gcra = lib.operation("ratelimit.gcra").header
    assert [key_spec_at(gcra, i, 3, 1).name for i in (1, 2, 3)] == ["each", "each", "metrics"]
    assert [key_spec_at(gcra, i, 3).name for i in (1, 2, 3)] == ["each", "each", "each"]
    assert "local metrics_key" not in lib.operation("ratelimit.gcra").function_body.split(
        "prl_int")[0]  # the body binds it, from the ARGV count


def test_load_is_idempotent(r: redis.Redis) -> None:
    client = pyredislua.Client(r, mode="function")
    assert client.load().action == "loaded"
    assert client.load().action == "present"
    _use(client)


def test_newer_library_is_never_downgraded(r: redis.Redis, tmp_path: Path) -> None:
    newer = pyredislua.Client(r, mode="function", library=_library_copy(tmp_path, "1.99.0"))
    assert newer.load().action == "loaded"
    older = pyredislua.Client(r, mode="function")
    report = older.load()
    assert report.action == "newer-on-server" and report.server_version == "1.99.0"
    _use(older)  # the older package runs on the newer, compatible library
    assert r.fcall_ro(older.library.info_function, 0)[0] == b"1.99.0"


def test_older_library_is_replaced(r: redis.Redis, tmp_path: Path) -> None:
    pyredislua.Client(r, mode="function").load()
    newer = pyredislua.Client(r, mode="function", library=_library_copy(tmp_path, "1.99.0"))
    assert newer.load().action == "replaced"
    assert r.fcall_ro(newer.library.info_function, 0)[0] == b"1.99.0"


def test_same_version_other_code_is_a_conflict(r: redis.Redis, tmp_path: Path) -> None:
    pyredislua.Client(r, mode="function").load()
    same_version = _library_copy(tmp_path, render_library().version, tweak="edited")
    edited = pyredislua.Client(r, mode="function", library=same_version)
    with pytest.raises(pyredislua.LibraryConflictError, match="other Lua code"):
        edited.load()
    assert edited.load(force=True).action == "replaced"


def test_two_majors_live_side_by_side(r: redis.Redis, tmp_path: Path) -> None:
    v1 = pyredislua.Client(r, mode="function")
    v2 = pyredislua.Client(r, mode="function", library=_library_copy(tmp_path, "2.0.0"))
    v1.load()
    v2.load()
    assert {"pyredislua_v1", "pyredislua_v2"} <= set(v1.server_libraries())
    _use(v1, "a")
    _use(v2, "b")


@pytest.mark.parametrize("flush", ["script", "function"])
def test_flush_between_calls_is_invisible(client: pyredislua.Client, r: redis.Redis,
                                          flush: str) -> None:
    _use(client)
    r.script_flush()
    r.function_flush()
    _use(client)
    if flush == "script":
        r.script_flush()
    else:
        r.function_flush()
    _use(client)


def test_flush_between_pipelined_calls_is_invisible(client: pyredislua.Client,
                                                    r: redis.Redis) -> None:
    keys = [LockKeys(f"p{i}") for i in range(5)]
    with client.pipeline() as p:
        for k in keys:
            p.add(acquire_call(k, "t", 10_000))
        first = p.execute()
    assert all(res.acquired for res in first)
    r.script_flush()
    r.function_flush()
    with client.pipeline() as p:
        for k in keys:
            p.add(inspect_call(k))
        for k in keys:
            p.add(release_call(k, "t"))
        states = p.execute()
    assert [s.owner for s in states[:5]] == ["t"] * 5
    assert states[5:] == [True] * 5


@pytest.mark.parametrize("mode", ["function", "script", "auto"])
def test_server_restart_between_calls_is_invisible(own_server: RedisServer, mode: str) -> None:
    conn = redis.Redis.from_url(own_server.url)
    client = pyredislua.Client(conn, mode=mode)  # type: ignore[arg-type]
    _use(client)
    own_server.restart()  # memory, scripts and functions are gone; the connection breaks
    _use(client)
    conn.close()


def test_pipelines_report_errors_in_place(client: pyredislua.Client) -> None:
    keys = LockKeys("res")
    results = client.run_many(
        [acquire_call(keys, "t", 10_000), acquire_call(keys, "", 10_000), inspect_call(keys)],
        raise_on_error=False)
    assert results[0].acquired
    assert isinstance(results[1], pyredislua.BadArgumentError)
    assert results[2].owner == "t"


def test_wrong_type_errors_carry_a_code(client: pyredislua.Client, r: redis.Redis) -> None:
    keys = LockKeys("res")
    r.set(keys.lock, "not a hash")
    with pytest.raises(pyredislua.WrongTypeError, match="WRONGTYPE") as caught:
        client.run(acquire_call(keys, "t", 10_000))
    assert caught.value.code == "WRONGTYPE"
    assert isinstance(caught.value, pyredislua.BadStateError)
    assert isinstance(caught.value, redis.ResponseError)  # what callers caught before


def test_negative_zero_is_not_an_integer_argument(client: pyredislua.Client) -> None:
    with pytest.raises(pyredislua.BadArgumentError, match="must be an integer"):
        client.run(acquire_call(LockKeys("res"), "t", 10_000, "-0"))  # type: ignore[arg-type]


def _limited_client(r: redis.Redis, redis_url: str, rules: list[str]) -> redis.Redis:
    r.acl_setuser("limited", enabled=True, passwords=["+pw"], keys=["prl:*"],
                  commands=["+@all", *rules], reset=True)
    return redis.Redis.from_url(redis_url, username="limited", password="pw")


@pytest.mark.parametrize("refused", [["-fcall", "-fcall_ro", "-function"], ["-function"]])
def test_auto_mode_falls_back_to_scripts_when_acl_refuses_functions(
    r: redis.Redis, redis_url: str, refused: list[str]
) -> None:
    conn = _limited_client(r, redis_url, refused)
    try:
        client = pyredislua.Client(conn, mode="auto")
        _use(client)  # keys match ~prl:* : every key the scripts touch is declared
        assert client.mode == "script"
    finally:
        conn.close()
        r.acl_deluser("limited")


@pytest.mark.parametrize(("mode", "refused", "command"), [
    ("function", ["-function|load"], "FUNCTION LOAD"),
    ("script", ["-script|load"], "SCRIPT LOAD"),
])
def test_a_user_who_may_not_load_gets_a_permission_error(
        r: redis.Redis, redis_url: str, mode: str, refused: list[str], command: str) -> None:
    conn = _limited_client(r, redis_url, refused)
    try:
        with pytest.raises(pyredislua.LibraryPermissionError, match=command) as caught:
            pyredislua.Client(conn, mode=mode).load()  # type: ignore[arg-type]
        assert isinstance(caught.value, PermissionError)
        assert not isinstance(caught.value, pyredislua.LibraryConflictError)
    finally:
        conn.close()
        r.acl_deluser("limited")


def test_declared_keys_suffice_under_acl_key_patterns(r: redis.Redis, redis_url: str) -> None:
    pyredislua.Client(r, mode="function").load()
    conn = _limited_client(r, redis_url, [])
    try:
        client = pyredislua.Client(conn, mode="function")
        _use(client)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.run(acquire_call(LockKeys("x", prefix="other"), "t", 10_000))
    finally:
        conn.close()
        r.acl_deluser("limited")


def test_reference_docs_are_generated_from_the_headers() -> None:
    from pyredislua.engine.reference import render_reference

    committed = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text()
    assert committed == render_reference(render_library()), (
        "docs/reference.md is stale: regenerate it with `pyredislua reference > docs/reference.md`")


def test_every_changed_operation_carries_a_new_version() -> None:
    checked = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "tools" / "lua_versions.py")],
        capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
