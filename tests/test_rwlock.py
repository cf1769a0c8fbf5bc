"""The read-write lock (issue 11 §3): readers share, a writer is alone, grants follow arrival
order (a writer is not starved by a stream of readers), waiters are handed the lock through the
signal list, leases end crashed holders, writers get increasing fences; sync and asyncio, and
any client through FCALL."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time

import pytest
import redis

import pyredislua
from pyredislua.engine.protocol import Call
from pyredislua.errors import LockLostError, LockNotOwnedError
from pyredislua.lock import LockTimeoutError
from pyredislua.rwlock import RWLock, RWLockKeys, acquire_call, inspect_call, release_call

pytestmark = pytest.mark.lock


def _until(condition: object, timeout: float = 5.0) -> None:
    """Wait for a condition (a callable) with a deadline; never a bare sleep over a race."""
    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.005)


def test_readers_share_and_a_writer_is_alone(client: pyredislua.Client) -> None:
    rw = RWLock(client, "doc", ttl=10, auto_renew=False)
    a, b = rw.read(), rw.read()
    assert a.acquire(blocking=False) and b.acquire(blocking=False)
    w = rw.write()
    assert not w.acquire(blocking=False)
    state = rw.inspect()
    assert (state.writer, state.readers, state.waiters) == (None, 2, 0)
    a.release()
    assert not w.acquire(blocking=False)
    b.release()
    assert w.acquire(blocking=False)
    assert w.fence == 1
    assert not rw.read().acquire(blocking=False)
    assert not rw.write().acquire(blocking=False)
    state = rw.inspect()
    assert (state.writer, state.fence, state.readers) == (w.token, 1, 0)
    assert 0 < state.writer_pttl_ms <= 10_001  # the lease and its 1 ms slack
    w.release()
    w2 = rw.write()
    assert w2.acquire(blocking=False) and w2.fence == 2  # fences increase across holds
    r = rw.read()
    w2.release()
    assert r.acquire(blocking=False)
    assert r.fence == 2  # a reader sees the last writer's fence
    r.release()


def test_repeat_by_the_holder_renews_and_release_twice_fails(client: pyredislua.Client) -> None:
    rw = RWLock(client, "repeat", ttl=10, auto_renew=False)
    w = rw.write()
    assert w.acquire(blocking=False)
    fence = w.fence
    assert w.acquire(blocking=False) and w.fence == fence
    w.extend(20)
    assert rw.inspect().writer_pttl_ms > 10_000
    w.release()
    with pytest.raises(LockNotOwnedError):
        w.release()
    r = rw.read()
    assert r.acquire(blocking=False) and r.acquire(blocking=False)
    r.extend(5)
    r.release()
    with pytest.raises(LockNotOwnedError):
        r.extend()


def test_a_writer_is_not_starved_by_a_stream_of_readers(client: pyredislua.Client) -> None:
    """Readers keep coming while a writer waits: the ones that arrive after it queue behind it,
    so it gets the lock as soon as the readers ahead of it are gone."""
    rw = RWLock(client, "stream", ttl=10, auto_renew=False)
    first = rw.read()
    assert first.acquire(blocking=False)
    order: list[str] = []
    got_write = threading.Event()

    def writer() -> None:
        w = rw.write()
        assert w.acquire(timeout=10)
        order.append("writer")
        got_write.set()
        w.release()

    t = threading.Thread(target=writer)
    t.start()
    _until(lambda: rw.inspect().waiters == 1)
    # a non-blocking reader may not barge past the waiting writer
    assert not rw.read().acquire(blocking=False)
    late: list[threading.Thread] = []

    def reader(i: int) -> None:
        h = rw.read()
        assert h.acquire(timeout=10)
        order.append(f"reader{i}")
        h.release()

    for i in range(3):
        late.append(threading.Thread(target=reader, args=(i,)))
        late[-1].start()
    _until(lambda: rw.inspect().waiters == 4)
    assert not got_write.is_set()
    first.release()  # the last reader ahead of the writer: the writer goes first
    t.join(10)
    for th in late:
        th.join(10)
    assert order[0] == "writer" and sorted(order[1:]) == ["reader0", "reader1", "reader2"]
    state = rw.inspect()
    assert (state.writer, state.readers, state.waiters) == (None, 0, 0)


def test_waiting_readers_at_the_head_are_granted_together(client: pyredislua.Client) -> None:
    keys = RWLockKeys("run")
    run = client.run
    assert run(acquire_call(keys, "w1", "write", 10_000)).acquired
    for name in ("r1", "r2", "r3"):
        assert not run(acquire_call(keys, name, "read", 10_000, 5_000)).acquired
    assert not run(acquire_call(keys, "w2", "write", 10_000, 5_000)).acquired
    assert not run(acquire_call(keys, "r4", "read", 10_000, 5_000)).acquired
    assert run(release_call(keys, "w1", "write", 60_000)) == 1  # grants wait a minute
    # r1..r3 are granted in that one call (r4 stays behind w2) and stay registered until they
    # claim; every registered waiter wakes once
    state = run(inspect_call(keys))
    assert (state.writer, state.readers, state.waiters) == (None, 3, 5)
    assert client.redis.llen(keys.signal) == 5
    for name in ("r1", "r2", "r3"):
        claimed = run(acquire_call(keys, name, "read", 10_000, 5_000))
        assert claimed.acquired and claimed.pttl_ms == 10_000
    assert run(inspect_call(keys)).waiters == 2
    assert not run(acquire_call(keys, "r4", "read", 10_000, 5_000)).acquired
    for name in ("r1", "r2"):
        assert run(release_call(keys, name, "read")) == 1
    assert run(inspect_call(keys)).writer is None
    assert run(release_call(keys, "r3", "read", 60_000)) == 1
    state = run(inspect_call(keys))
    assert (state.writer, state.fence, state.readers, state.waiters) == ("w2", 2, 0, 2)
    assert run(acquire_call(keys, "w2", "write", 10_000, 0)) == (True, 2, 10_000, None)
    assert run(inspect_call(keys)).waiters == 1  # r4


def test_a_wake_up_taken_by_another_waiter_goes_back_to_the_grantee(
        client: pyredislua.Client) -> None:
    keys = RWLockKeys("pass")
    run, r = client.run, client.redis
    assert run(acquire_call(keys, "w1", "write", 10_000)).acquired
    for name in ("g", "x"):
        assert not run(acquire_call(keys, name, "write", 10_000, 5_000)).acquired
    run(release_call(keys, "w1", "write", 60_000))  # grants g; two wake-ups (g and x)
    assert r.lpop(keys.signal) == b"1" and r.lpop(keys.signal) == b"1"  # x took both
    call = acquire_call(keys, "x", "write", 10_000, 5_000, woken=True)
    reply = run(Call(call.op, call.keys, call.args))  # the raw reply
    assert reply[0] == 0 and reply[2] == 1 and 0 < reply[1] <= 60_000  # passed; grant's pttl
    assert r.llen(keys.signal) == 1  # for g
    assert not run(acquire_call(keys, "x", "write", 10_000, 5_000)).acquired
    assert r.llen(keys.signal) == 1  # not woken: nothing passed
    assert run(acquire_call(keys, "g", "write", 10_000, 5_000, woken=True)).acquired


def test_a_waiter_that_gives_up_leaves_no_registration(client: pyredislua.Client) -> None:
    rw = RWLock(client, "giveup", ttl=10, auto_renew=False)
    holder = rw.write()
    assert holder.acquire(blocking=False)
    start = time.monotonic()
    assert not rw.read().acquire(timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 1.0
    assert rw.inspect().waiters == 0
    with pytest.raises(LockTimeoutError), rw.write(blocking_timeout=0.05):
        pass
    holder.release()
    assert client.redis.exists(*RWLockKeys("giveup").all) == 1  # the fence counter only


def test_a_waiting_writer_that_gives_up_lets_the_readers_behind_it_in(
        client: pyredislua.Client) -> None:
    keys = RWLockKeys("behind")
    run = client.run
    assert run(acquire_call(keys, "r0", "read", 10_000)).acquired
    assert not run(acquire_call(keys, "w", "write", 10_000, 5_000)).acquired
    assert not run(acquire_call(keys, "r1", "read", 10_000, 5_000)).acquired
    assert not run(acquire_call(keys, "w", "write", 10_000, 0)).acquired  # gives up
    assert run(inspect_call(keys)).readers == 2  # r1 was granted a share
    assert run(acquire_call(keys, "r1", "read", 10_000, 0)).acquired


def test_a_crashed_readers_share_expires_with_its_lease(client: pyredislua.Client) -> None:
    rw = RWLock(client, "crash", ttl=0.2, auto_renew=False)
    reader = rw.read()
    assert reader.acquire(blocking=False)  # and never released
    start = time.monotonic()
    w = rw.write(ttl=5)
    assert w.acquire(timeout=3)
    assert time.monotonic() - start < 1.0  # woke when the share's lease ran out, not later
    assert reader.lost
    w.release()


def test_a_granted_waiter_that_died_is_passed_over(client: pyredislua.Client) -> None:
    """A grant made to a registered waiter that never comes back lapses with its registration,
    and the next waiter gets the lock."""
    keys = RWLockKeys("dead")
    run = client.run
    assert run(acquire_call(keys, "w1", "write", 10_000)).acquired
    assert not run(acquire_call(keys, "ghost", "write", 10_000, 150)).acquired  # then dies
    rw = RWLock(client, "dead", ttl=5, auto_renew=False)
    waiter = rw.write()
    done = threading.Event()

    def wait() -> None:
        assert waiter.acquire(timeout=5)
        done.set()

    t = threading.Thread(target=wait)
    t.start()
    _until(lambda: run(inspect_call(keys)).waiters == 2)
    run(release_call(keys, "w1", "write"))  # grants the ghost
    assert run(inspect_call(keys)).writer == "ghost"
    t.join(5)
    # the ghost's grant was made again (a new fence each time) until its registration ended
    assert done.is_set() and waiter.fence is not None and waiter.fence >= 3
    waiter.release()


def test_the_watchdog_keeps_a_share_and_a_write_lock(client: pyredislua.Client) -> None:
    rw = RWLock(client, "dog", ttl=0.3)
    with rw.read() as share:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            assert not rw.write().acquire(blocking=False)
            time.sleep(0.05)
        assert share.held
    with rw.write() as w:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            assert not rw.read().acquire(blocking=False)
            time.sleep(0.05)
        assert w.held


def test_a_lost_lease_is_reported_on_leaving_with(client: pyredislua.Client) -> None:
    rw = RWLock(client, "lost", ttl=0.05, auto_renew=False)
    lost: list[object] = []
    with pytest.raises(LockLostError), rw.write() as w:
        _until(lambda: w.lost)
        other = rw.write()
        assert other.acquire(timeout=1) and other.fence == w.fence + 1  # type: ignore[operator]
        lost.append(w)
    assert lost


async def test_asyncio(aclient: pyredislua.AsyncClient) -> None:
    rw = RWLock(aclient, "async", ttl=5)
    inside = 0
    most = 0
    writers_inside = 0
    fences: list[int] = []

    async def reader() -> None:
        nonlocal inside, most
        async with rw.read():
            inside += 1
            most = max(most, inside)
            assert writers_inside == 0
            await asyncio.sleep(0.02)
            inside -= 1

    async def writer() -> None:
        nonlocal writers_inside
        async with rw.write() as w:
            writers_inside += 1
            assert inside == 0 and writers_inside == 1
            assert w.fence is not None
            fences.append(w.fence)
            await asyncio.sleep(0.01)
            writers_inside -= 1

    await asyncio.gather(*[reader() for _ in range(6)], writer(), writer(),
                         *[reader() for _ in range(4)], writer())
    assert most >= 2 and fences == sorted(fences) and len(set(fences)) == 3
    state = await rw.inspect()
    assert (state.writer, state.readers, state.waiters) == (None, 0, 0)


def test_any_client_with_fcall(r: redis.Redis) -> None:
    pyredislua.Client(r, mode="function").load()
    keys = RWLockKeys("cli").all
    fcall = r.fcall
    assert fcall("pyredislua_v1_rwlock_acquire", 6, *keys, "r1", "read", 10_000) == [1, 0, 10_000]
    assert fcall("pyredislua_v1_rwlock_acquire", 6, *keys, "w1", "write", 10_000, 5_000)[0] == 0
    assert fcall("pyredislua_v1_rwlock_release", 6, *keys, "r1", "read") == 1
    # the release granted the waiting writer: its next call claims it
    assert fcall("pyredislua_v1_rwlock_acquire", 6, *keys, "w1", "write", 10_000, 0) == [
        1, 1, 10_000]
    assert fcall("pyredislua_v1_rwlock_extend", 2, keys[0], keys[1], "w1", "write", 20_000) == 1
    writer, pttl, *rest = r.fcall_ro("pyredislua_v1_rwlock_inspect", 6, *keys)
    assert writer == b"w1" and 10_000 < pttl <= 20_001 and rest == [1, 0, 0]  # 1 ms slack
    assert fcall("pyredislua_v1_rwlock_release", 6, *keys, "w1", "write") == 1
    with pytest.raises(redis.ResponseError, match="PYREDISLUA:BADARG"):
        fcall("pyredislua_v1_rwlock_acquire", 6, *keys, "x", "upgrade", 10_000)


def test_keys_left_behind(client: pyredislua.Client) -> None:
    """After holds, waits and hand-offs, only the fence counter has no TTL; the rest expires."""
    rw = RWLock(client, "life", ttl=5, auto_renew=False)
    w = rw.write()
    assert w.acquire(blocking=False)
    assert not rw.read().acquire(timeout=0.2)
    w.release()
    with rw.read(), rw.read():
        pass
    keys = RWLockKeys("life")
    r = client.redis
    no_ttl = [k for k in keys.all if r.exists(k) and r.pttl(k) < 0]
    assert no_ttl == [keys.fence]
    assert not r.exists(keys.rwlock, keys.queue, keys.deadlines)


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_the_readme_redis_cli_recipe(r: redis.Redis) -> None:
    pyredislua.Client(r, mode="function").load()
    port = str(r.connection_pool.connection_kwargs["port"])
    k = "prl:rwlock:{catalog}"
    keys = [k, f"{k}:readers", f"{k}:fence", f"{k}:queue", f"{k}:deadlines", f"{k}:signal"]

    def cli(*args: str) -> list[str]:
        done = subprocess.run(["redis-cli", "-p", port, *args], capture_output=True, text=True,
                              timeout=10, check=True)
        return done.stdout.split()

    acquire = ["FCALL", "pyredislua_v1_rwlock_acquire", "6", *keys]
    assert cli(*acquire, "reader-1", "read", "30000") == ["1", "0", "30000"]
    busy = cli(*acquire, "writer-1", "write", "30000", "5000")
    assert busy[0] == "0" and 0 < int(busy[1]) <= 30000 and busy[2] == "0"
    assert cli("FCALL", "pyredislua_v1_rwlock_extend", "2", k, f"{k}:readers", "reader-1",
               "read", "30000") == ["1"]
    assert cli("FCALL", "pyredislua_v1_rwlock_release", "6", *keys, "reader-1", "read") == ["1"]
    assert cli(*acquire, "writer-1", "write", "30000", "5000") == ["1", "1", "30000"]
    state = cli("FCALL_RO", "pyredislua_v1_rwlock_inspect", "6", *keys)
    assert state[0] == "writer-1" and state[2:] == ["1", "0", "0"]


async def test_asyncio_cancelled_waiters_and_holders(redis_url: str, r: redis.Redis,
                                                     mode: str) -> None:
    """A cancelled holder releases (shielded); a cancelled waiter's registration, and a grant
    made to it, lapse with its registration, and the next waiter gets the lock."""
    import redis.asyncio

    # a short socket timeout: short BLPOPs, registrations of 0.4 + 0.25 s
    conn = redis.asyncio.Redis.from_url(redis_url, socket_timeout=0.5)
    client = pyredislua.AsyncClient(conn, mode=mode)  # type: ignore[arg-type]
    rw = RWLock(client, "cancel", ttl=5)
    entered = asyncio.Event()

    async def hold_forever() -> None:
        async with rw.read():
            entered.set()
            await asyncio.Event().wait()

    holder = asyncio.create_task(hold_forever())
    await entered.wait()
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    w = rw.write()
    assert await w.acquire(blocking=False)  # the share was released on cancellation

    waiter = asyncio.create_task(rw.read().acquire(timeout=30))
    while (await rw.inspect()).waiters < 1:
        await asyncio.sleep(0.005)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (await rw.inspect()).waiters == 1  # still registered: nobody ended it
    await w.release()  # grants the cancelled waiter's registration
    start = time.monotonic()
    w2 = rw.write()
    assert await w2.acquire(timeout=5)
    assert time.monotonic() - start < 1.5  # its registration (0.65 s) ended, then w2 went
    await w2.release()
    await conn.aclose()
