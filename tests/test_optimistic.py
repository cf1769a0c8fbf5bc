"""Optimistic concurrency against a real redis-server: the compare-and-set operations one by one,
the Versioned façade (sync and asyncio), the WATCH/MULTI/EXEC helper (sync and asyncio), and what
each does when a reply is lost or a connection dies."""

from __future__ import annotations

import shutil
import subprocess
import threading
from typing import Any

import pytest
import redis
import redis.asyncio

import pyredislua
from pyredislua.engine.protocol import Call
from pyredislua.optimistic import (
    AmbiguousWriteError,
    Backoff,
    Optimistic,
    TooManyConflictsError,
    Versioned,
    delete_call,
    get_call,
    item_key,
    set_call,
    set_many_call,
)
from pyredislua.optimistic.ops import resent
from tests.conftest import snapshot
from tests.faultkit import FaultOutcome, FaultReport, FaultServer, wait_for

pytestmark = pytest.mark.optimistic

FAST = Backoff(attempts=5, base=0.0, cap=0.0)
K = item_key("t", "a")


# -- the operations ---------------------------------------------------------------------------


def test_versions_start_absent_and_strictly_increase(client: pyredislua.Client) -> None:
    assert client.run(get_call(K)).version == 0
    first = client.run(set_call(K, b"1", 0))
    assert first.ok and first.version > 0
    second = client.run(set_call(K, b"2", first.version))
    assert second.ok and second.version > first.version
    entry = client.run(get_call(K))
    assert (entry.value, entry.version, entry.ttl_ms) == (b"2", second.version, None)


def test_a_mismatch_is_a_reply_carrying_the_current_state(client: pyredislua.Client) -> None:
    made = client.run(set_call(K, b"v", 0, ttl_ms=60_000))
    before = snapshot(client.redis)
    stale = client.run(set_call(K, b"mine", made.version - 1))
    assert not stale.ok and stale.version == made.version
    assert stale.current is not None and stale.current.value == b"v"
    assert stale.current.ttl_ms is not None and 0 < stale.current.ttl_ms <= 60_000
    again = client.run(set_call(K, b"mine", 0))  # 0: must not exist
    assert not again.ok and again.version == made.version
    absent = client.run(set_call(item_key("t", "nobody"), b"x", 7))
    assert not absent.ok and absent.version == 0 and absent.current is not None
    assert absent.current.value is None
    assert snapshot(client.redis) == before


def test_ttl_is_kept_set_or_removed(client: pyredislua.Client) -> None:
    v = client.run(set_call(K, b"1", 0)).version
    assert client.redis.pttl(K) == -1  # a new value without a TTL has none
    v = client.run(set_call(K, b"2", v, ttl_ms=50_000)).version
    assert 0 < client.redis.pttl(K) <= 50_000
    v = client.run(set_call(K, b"3", v)).version  # 0: keep
    assert 0 < client.redis.pttl(K) <= 50_000
    client.run(set_call(K, b"4", v, ttl_ms=-1))
    assert client.redis.pttl(K) == -1


def test_a_value_deleted_and_created_again_never_reuses_a_version(
        client: pyredislua.Client) -> None:
    old = client.run(set_call(K, b"old", 0)).version
    assert not client.run(delete_call(K, old + 1)).ok
    assert client.run(delete_call(K, old)).ok
    assert client.redis.exists(K) == 0
    new = client.run(set_call(K, b"new", 0)).version
    assert new > old
    assert not client.run(set_call(K, b"stale writer", old)).ok  # no ABA


def test_an_expired_value_comes_back_with_a_higher_version(client: pyredislua.Client) -> None:
    old = client.run(set_call(K, b"old", 0, ttl_ms=1)).version
    wait_for(lambda: client.redis.exists(K) == 0, what="the value expired")
    assert client.run(set_call(K, b"new", 0)).version > old


def test_a_resent_set_recognises_its_request_id(client: pyredislua.Client) -> None:
    call = set_call(K, b"v1", 0, request_id="req-1")
    first = client.run(call)
    before = snapshot(client.redis)
    again = client.run(call)  # as after a lost reply: applied once, reported applied
    assert again.ok and again.version == first.version
    assert snapshot(client.redis) == before
    other = client.run(set_call(K, b"v1", 0, request_id="req-2"))
    assert not other.ok
    # once someone else wrote, the re-send can no longer tell: a mismatch
    client.run(set_call(K, b"v2", first.version))
    assert not client.run(call).ok


def test_set_many_is_all_or_none(client: pyredislua.Client) -> None:
    a, b = item_key("t", "{acct}a"), item_key("t", "{acct}b")
    made = client.run(set_many_call([(a, 0, b"10"), (b, 0, b"20")]))
    assert made.ok and made.versions[a] == made.versions[b] > 0
    assert client.redis.hget(a, "v") == b"10"
    va, vb = made.versions[a], made.versions[b]
    client.run(set_call(b, b"21", vb))  # b moves on
    before = snapshot(client.redis)
    refused = client.run(set_many_call([(a, va, b"0"), (b, vb, b"30")]))
    assert not refused.ok
    assert refused.current[a].value == b"10" and refused.current[b].value == b"21"
    assert snapshot(client.redis) == before
    vb = refused.versions[b]
    done = client.run(set_many_call([(a, va, b"0"), (b, vb, b"30")], ttl_ms=40_000))
    assert done.ok and done.versions[a] > va and done.versions[b] > vb
    assert 0 < client.redis.pttl(a) <= 40_000


def test_multi_key_calls_are_checked_in_python() -> None:
    with pytest.raises(ValueError, match="hash tag"):
        set_many_call([(item_key("t", "a"), 0, b""), (item_key("t", "b"), 0, b"")])
    with pytest.raises(ValueError, match="twice"):
        set_many_call([(K, 0, b""), (K, 0, b"")])
    with pytest.raises(ValueError, match="version"):
        set_call(K, b"", -1)
    with pytest.raises(ValueError, match="version"):
        delete_call(K, 0)
    with pytest.raises(ValueError, match="8 MiB"):
        set_call(K, b"x" * (8 * 1024 * 1024 + 1), 0)


def test_a_foreign_hash_is_refused_before_any_write(client: pyredislua.Client) -> None:
    client.redis.hset(K, mapping={"name": "someone else's"})
    client.redis.set("prl:opt:t:{a}:x", "bystander")
    before = snapshot(client.redis)
    for call in (get_call(K), set_call(K, b"x", 0), delete_call(K, 1),
                 set_many_call([(K, 0, b"x"), ("prl:opt:t:{a}:y", 0, b"y")])):
        with pytest.raises(pyredislua.BadStateError):
            client.run(call)
    client.redis.hset(K, mapping={"t": "prl:optimistic", "n": "-3", "v": "x"})
    with pytest.raises(pyredislua.BadStateError, match="malformed"):
        client.run(get_call(K))
    client.redis.delete(K)
    client.redis.set(K, "a string")
    with pytest.raises(pyredislua.WrongTypeError):
        client.run(set_call(K, b"x", 0))
    assert client.redis.get(K) == b"a string"
    assert snapshot(client.redis)[b"prl:opt:t:{a}:x"] == before[b"prl:opt:t:{a}:x"]


def test_from_any_client_with_fcall(r: redis.Redis) -> None:
    pyredislua.Client(r, mode="function").load()
    key = "prl:opt:cli:{a}"
    ok, version = r.fcall("pyredislua_v1_optimistic_set", 1, key, 0, "hello")
    assert ok == 1
    assert r.fcall_ro("pyredislua_v1_optimistic_get", 1, key) == [version, b"hello", -1]
    assert r.fcall("pyredislua_v1_optimistic_set", 1, key, 0, "again") == [
        0, version, b"hello", -1]
    assert r.fcall("pyredislua_v1_optimistic_delete", 1, key, version) == [1, 0]


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_the_readme_redis_cli_recipe(r: redis.Redis) -> None:
    pyredislua.Client(r, mode="function").load()
    port = str(r.connection_pool.connection_kwargs["port"])

    def cli(*args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", port, *args], capture_output=True, text=True,
                              timeout=10, check=True)
        return done.stdout

    out = cli("FCALL", "pyredislua_v1_optimistic_set", "1", "prl:opt:stock:{sku-1}", "0", "7")
    version = out.split()[1]
    assert out.split()[0] == "1"
    assert cli("FCALL_RO", "pyredislua_v1_optimistic_get", "1",
               "prl:opt:stock:{sku-1}").split() == [version, "7", "-1"]
    stale = cli("FCALL", "pyredislua_v1_optimistic_set", "1", "prl:opt:stock:{sku-1}", "1", "6")
    assert stale.split() == ["0", version, "7", "-1"]


# -- the Versioned façade ---------------------------------------------------------------------


def test_versioned_sync(client: pyredislua.Client) -> None:
    accounts = Versioned(client, "accounts")
    assert accounts.key("alice") == "prl:opt:accounts:{alice}"
    assert not accounts.get("alice").exists
    w = accounts.set("alice", "100", version=0, ttl=60)
    assert w.ok and accounts.get("alice").value == b"100"
    up = accounts.update("alice", lambda v: str(int(v or 0) - 30))
    assert (up.value, up.attempts, up.conflicts) == (b"70", 1, 0)
    assert 0 < (accounts.get("alice").ttl_ms or 0) <= 60_000  # kept
    accounts.update("alice", lambda v: v or b"", ttl=None)
    assert accounts.get("alice").ttl_ms is None
    both = accounts.update_many(["{x}a", "{x}b"], lambda d: {"{x}a": "1", "{x}b": "2"})
    assert both.values == {"{x}a": b"1", "{x}b": b"2"}
    got = accounts.get_many(["{x}a", "{x}b"])
    assert {n: e.version for n, e in got.items()} == both.versions
    refused = accounts.set_many({"{x}a": (0, "z"), "{x}b": (both.versions["{x}b"], "z")})
    assert not refused.ok and refused.current["{x}a"].value == b"1"
    assert accounts.delete("alice", version=accounts.get("alice").version).ok
    assert accounts.stats.committed == 3


async def test_versioned_asyncio(aclient: pyredislua.AsyncClient) -> None:
    accounts = Versioned(aclient, "accounts")
    assert (await accounts.set("bob", b"5", version=0)).ok

    async def double(value: bytes | None) -> bytes:
        return str(2 * int(value or 0)).encode()

    up = await accounts.update("bob", double)
    assert up.value == b"10"
    assert (await accounts.get("bob")).value == b"10"
    many = await accounts.update_many(["{y}a", "{y}b"], lambda d: dict.fromkeys(d, b"0"))
    assert many.attempts == 1
    assert (await accounts.delete("bob", version=up.version)).ok


def test_update_retries_from_the_refusal_without_reading(client: pyredislua.Client,
                                                        r: redis.Redis) -> None:
    accounts = Versioned(client, "c", backoff=FAST)
    other = Versioned(pyredislua.Client(r, mode=client.mode), "c")  # type: ignore[arg-type]
    accounts.set("n", "0", version=0)
    other.get("n")  # loaded: no loading calls below
    seen: list[bytes | None] = []

    def bump(value: bytes | None) -> str:
        seen.append(value)
        if len(seen) == 1:  # another writer gets in between our read and our write
            other.update("n", lambda v: str(int(v or 0) + 10))
        return str(int(value or 0) + 1)

    r.config_resetstat()
    done = accounts.update("n", bump)
    assert seen == [b"0", b"10"]
    assert (done.value, done.attempts, done.conflicts) == (b"11", 2, 1)
    stats = r.info("commandstats")
    reads = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("fcall_ro", "evalsha_ro"))
    assert reads == 2, "one read each for the two updates: the retry read nothing"
    assert accounts.stats.conflicts == 1 and accounts.stats.committed == 1


def test_update_gives_up_after_its_attempts(client: pyredislua.Client, r: redis.Redis) -> None:
    accounts = Versioned(client, "c", backoff=Backoff(attempts=3, base=0.0, cap=0.0))
    other = Versioned(pyredislua.Client(r), "c")
    accounts.set("n", "0", version=0)

    def always_beaten(value: bytes | None) -> str:
        other.update("n", lambda v: str(int(v or 0) + 1))
        return "mine"

    with pytest.raises(TooManyConflictsError) as caught:
        accounts.update("n", always_beaten)
    assert (caught.value.attempts, caught.value.conflicts) == (3, 3)
    assert accounts.get("n").value == b"3"
    assert accounts.stats.gave_up == 1


def test_an_exception_in_the_update_function_writes_nothing(client: pyredislua.Client) -> None:
    accounts = Versioned(client, "c")
    accounts.set("n", "0", version=0)
    before = snapshot(client.redis)

    def boom(value: bytes | None) -> str:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        accounts.update("n", boom)
    assert snapshot(client.redis) == before


def test_after_a_lost_reply_a_write_is_resent_once_and_recognised(
        client: pyredislua.Client) -> None:
    call = set_call(K, b"v1", 0, request_id="req-9")
    client.run(call)  # it ran; then its reply is lost:
    retry = resent(call, "set").recover
    assert retry is not None
    again = retry(redis.TimeoutError("lost"))
    assert isinstance(again, Call)
    assert client.run(again).ok
    # another writer got in before the re-send: nobody can tell whether ours was applied
    client.run(set_call(K, b"v2", client.run(get_call(K)).version))
    again = retry(redis.ConnectionError("lost"))
    assert isinstance(again, Call)
    with pytest.raises(AmbiguousWriteError) as caught:
        client.run(again)
    assert isinstance(caught.value.__cause__, redis.ConnectionError)
    with pytest.raises(pyredislua.BadArgumentError):
        retry(pyredislua.BadArgumentError("not a transport error"))


@pytest.mark.faults
def test_a_set_whose_reply_times_out_is_applied_once(fault_server: FaultServer,
                                                     fault_report: FaultReport) -> None:
    conn = redis.Redis(port=fault_server.port, socket_timeout=0.3)
    client = pyredislua.Client(conn)
    store = Versioned(client, "c")
    v = store.set("n", "0", version=0).version
    resume = fault_server.pause_for(0.45)  # the first send times out, the re-send is answered
    try:
        w = store.set("n", "1", version=v)
    finally:
        resume.join()
    assert w.ok
    assert store.get("n").version == w.version
    fault_report.record(FaultOutcome(
        "optimistic Versioned.set", "server paused past the reply timeout", True, None, "none",
        0, 0, "sent again once with its request id: recognised, applied once"))
    conn.close()


# -- the WATCH/MULTI/EXEC helper --------------------------------------------------------------


def _incr(key: str) -> Any:
    def fn(pipe: Any) -> int:
        n = int(pipe.get(key) or 0)
        pipe.multi()
        pipe.set(key, n + 1)
        return n + 1

    return fn


def test_transaction_commits(client: pyredislua.Client, r: redis.Redis) -> None:
    opt = Optimistic(client)
    done = opt.transaction(_incr("{c}n"), "{c}n")
    assert (done.value, done.replies, done.attempts, done.conflicts) == (1, [True], 1, 0)
    assert r.get("{c}n") == b"1"


async def test_transaction_asyncio(aclient: pyredislua.AsyncClient, r: redis.Redis) -> None:
    opt = Optimistic(aclient)

    async def incr(pipe: Any) -> int:
        n = int(await pipe.get("{c}n") or 0)
        pipe.multi()
        pipe.set("{c}n", n + 1)
        return n + 1

    for _ in range(3):
        await opt.transaction(incr, "{c}n")
    assert r.get("{c}n") == b"3"
    assert opt.stats.committed == 3


def test_a_conflict_is_retried_and_counted(client: pyredislua.Client, r: redis.Redis) -> None:
    opt = Optimistic(client, backoff=FAST)
    calls = []

    def fn(pipe: Any) -> int:
        n = int(pipe.get("{c}n") or 0)
        if not calls:
            r.set("{c}n", n)  # the same value: still a write, still a conflict
        calls.append(n)
        pipe.multi()
        pipe.set("{c}n", n + 1)
        return n + 1

    done = opt.transaction(fn, "{c}n")
    assert (done.attempts, done.conflicts) == (2, 1)
    assert opt.stats.conflicts == 1 and opt.stats.committed == 1
    assert r.get("{c}n") == b"1"


def test_a_transaction_gives_up_after_its_attempts(client: pyredislua.Client,
                                                   r: redis.Redis) -> None:
    opt = Optimistic(client, backoff=Backoff(attempts=4, base=0.0, cap=0.0))

    def beaten(pipe: Any) -> None:
        pipe.get("{c}n")
        r.incr("{c}n")
        pipe.multi()
        pipe.set("{c}n", "mine")

    with pytest.raises(TooManyConflictsError) as caught:
        opt.transaction(beaten, "{c}n")
    assert (caught.value.attempts, caught.value.conflicts) == (4, 4)
    assert r.get("{c}n") == b"4"
    assert opt.stats.gave_up == 1


def test_an_exception_in_the_function_ends_the_transaction(client: pyredislua.Client,
                                                           r: redis.Redis) -> None:
    def fn(pipe: Any) -> None:
        pipe.get("{c}n")
        pipe.multi()
        pipe.set("{c}n", "never")
        raise KeyError("nope")

    with pytest.raises(KeyError):
        Optimistic(client).transaction(fn, "{c}n")
    assert r.get("{c}n") is None
    assert Optimistic(client).transaction(_incr("{c}n"), "{c}n").value == 1


def test_a_reading_transaction_checks_what_it_read(client: pyredislua.Client,
                                                   r: redis.Redis) -> None:
    r.mset({"{c}a": 1, "{c}b": 2})
    calls = []

    def total(pipe: Any) -> int:
        a = int(pipe.get("{c}a"))
        if not calls:
            r.set("{c}b", 5)  # changed between our two reads: the pair is not consistent
        calls.append(a)
        return a + int(pipe.get("{c}b"))

    done = Optimistic(client, backoff=FAST).transaction(total, "{c}a", "{c}b")
    assert (done.value, done.replies, done.attempts) == (6, [], 2)


def test_a_watched_key_that_expires_is_a_conflict(client: pyredislua.Client,
                                                  r: redis.Redis) -> None:
    r.set("{c}e", 1, px=20)
    calls = []

    def fn(pipe: Any) -> None:
        pipe.get("{c}e")
        if not calls:
            wait_for(lambda: r.exists("{c}e") == 0, what="the key expired")
        calls.append(1)
        pipe.multi()
        pipe.set("{c}done", 1)

    assert Optimistic(client, backoff=FAST).transaction(fn, "{c}e").conflicts == 1


def test_transaction_arguments(client: pyredislua.Client) -> None:
    with pytest.raises(ValueError, match="at least one key"):
        Optimistic(client).transaction(lambda pipe: None)
    with pytest.raises(ValueError):
        Backoff(attempts=0)
    with pytest.raises(ValueError):
        Backoff(base=1.0, cap=0.5)


def test_backoff_is_exponential_with_full_jitter() -> None:
    b = Backoff(attempts=10, base=0.001, cap=0.05)
    assert [b.delay(n, lambda: 1.0) for n in (1, 2, 3, 6, 7, 30)] == [
        0.001, 0.002, 0.004, 0.032, 0.05, 0.05]
    assert b.delay(5, lambda: 0.0) == 0.0
    assert b.delay(10**6, lambda: 0.5) == 0.025


def _killer(fault_server: FaultServer, after: threading.Event) -> threading.Thread:
    def kill() -> None:
        after.wait(10)
        fault_server.kill_clients()

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


@pytest.mark.faults
def test_a_connection_killed_while_watching_is_retried_without_a_lost_update(
        fault_server: FaultServer, fault_report: FaultReport) -> None:
    conn = redis.Redis(port=fault_server.port)
    other = redis.Redis(port=fault_server.port)
    opt = Optimistic(pyredislua.Client(conn), backoff=FAST)
    conn.set("{c}n", 10)
    calls: list[int] = []

    def fn(pipe: Any) -> int:
        n = int(pipe.get("{c}n"))
        calls.append(n)
        if len(calls) == 1:
            fault_server.kill_clients()  # our WATCH dies with its connection...
            other.incr("{c}n")  # ...and someone writes: a lost WATCH would overwrite this
            # the next command finds the connection gone (redis-py: WatchError)
            pipe.get("{c}n")
        pipe.multi()
        pipe.set("{c}n", n + 1)
        return n + 1

    done = opt.transaction(fn, "{c}n")
    assert done.attempts == 2 and done.conflicts == 0
    assert opt.stats.interrupted == 1
    assert conn.get("{c}n") == b"12"
    fault_report.record(FaultOutcome(
        "optimistic transaction (sync)", "connection killed while watching", True, None, "none",
        0, 0, "retried (nothing was written); the concurrent write kept"))
    conn.close()
    other.close()


@pytest.mark.faults
def test_a_lost_exec_reply_is_not_retried(fault_server: FaultServer,
                                          fault_report: FaultReport) -> None:
    conn = redis.Redis(port=fault_server.port, socket_timeout=0.3)
    opt = Optimistic(pyredislua.Client(conn))
    conn.set("{c}n", 0)
    resumes: list[threading.Thread] = []

    def fn(pipe: Any) -> None:
        n = int(pipe.get("{c}n"))
        pipe.multi()
        pipe.set("{c}n", n + 1)
        resumes.append(fault_server.pause_for(0.5))  # EXEC is sent into a frozen server

    with pytest.raises(AmbiguousWriteError) as caught:
        opt.transaction(fn, "{c}n")
    for resume in resumes:
        resume.join()
    assert isinstance(caught.value.__cause__, redis.TimeoutError)
    assert opt.stats.unknown == 1
    # EXEC ran once the server woke; the helper raised instead of running it a second time
    wait_for(lambda: conn.get("{c}n") == b"1", what="the EXEC sent before the pause ran")
    assert conn.get("{c}n") == b"1"
    fault_report.record(FaultOutcome(
        "optimistic transaction (sync)", "server paused during EXEC past the reply timeout",
        True, None, "AmbiguousWriteError", 0, 0, "not retried: EXEC ran once, after the pause"))
    conn.close()


@pytest.mark.faults
async def test_asyncio_a_killed_connection_is_retried_and_a_lost_exec_is_not(
        fault_server: FaultServer, fault_report: FaultReport) -> None:
    conn = redis.asyncio.Redis(port=fault_server.port, socket_timeout=0.3)
    other = redis.Redis(port=fault_server.port)
    opt = Optimistic(pyredislua.AsyncClient(conn), backoff=FAST)
    other.set("{c}n", 10)
    calls: list[int] = []

    async def killed(pipe: Any) -> None:
        n = int(await pipe.get("{c}n"))
        calls.append(n)
        if len(calls) == 1:
            fault_server.kill_clients()
            other.incr("{c}n")
            await pipe.get("{c}n")
        pipe.multi()
        pipe.set("{c}n", n + 1)

    done = await opt.transaction(killed, "{c}n")
    assert (done.attempts, opt.stats.interrupted) == (2, 1)
    assert other.get("{c}n") == b"12"

    resumes: list[threading.Thread] = []

    async def frozen(pipe: Any) -> None:
        n = int(await pipe.get("{c}n"))
        pipe.multi()
        pipe.set("{c}n", n + 1)
        resumes.append(fault_server.pause_for(0.5))

    with pytest.raises(AmbiguousWriteError):
        await opt.transaction(frozen, "{c}n")
    for resume in resumes:
        resume.join()
    assert len(resumes) == 1
    wait_for(lambda: other.get("{c}n") == b"13", what="the EXEC sent before the pause ran")
    fault_report.record(FaultOutcome(
        "optimistic transaction (asyncio)", "connection killed while watching; then server "
        "paused during EXEC", True, None, "AmbiguousWriteError (the EXEC)", 0, 0,
        "the first retried, the second not: each applied once"))
    await conn.aclose()
    other.close()


# -- lifecycle (issue 8 §3) -------------------------------------------------------------------


def test_a_full_lifecycle_leaves_only_the_values_themselves(client: pyredislua.Client,
                                                            r: redis.Redis) -> None:
    """Every writing path (create, update with and without a TTL, set_many, a refused write, a
    re-sent write recognised by its request id, delete): the only keys are the versioned values
    still alive (README: optimistic, keys it leaves), no request record or other key beside
    them; deleted and expired values leave nothing."""
    accounts = Versioned(client, "life")
    assert accounts.set("alice", "100", version=0).ok
    assert accounts.set("bob", "5", version=0, ttl=0.2).ok
    accounts.update("alice", lambda v: str(int(v or 0) - 30))
    both = accounts.update_many(["{x}a", "{x}b"], lambda d: {"{x}a": "1", "{x}b": "2"})
    assert not accounts.set_many({"{x}a": (0, "z"), "{x}b": (both.versions["{x}b"], "z")}).ok
    key = accounts.key("carol")
    call = set_call(key, b"1", 0, 0, "request-1")
    made = client.run(call)
    assert client.run(call).version == made.version  # the re-send recognises its own write
    assert accounts.delete("carol", version=made.version).ok
    values = {accounts.key(n).encode() for n in ("alice", "bob", "{x}a", "{x}b")}
    assert set(r.scan_iter()) == values
    assert [r.pttl(k) for k in sorted(values - {accounts.key("bob").encode()})] == [-1, -1, -1]
    wait_for(lambda: not r.exists(accounts.key("bob")), timeout=5, what="bob's TTL to run out")
    for name in ("alice", "{x}a", "{x}b"):
        assert accounts.delete(name, version=accounts.get(name).version).ok
    assert list(r.scan_iter()) == []
