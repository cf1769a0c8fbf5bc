"""The read-write lock on a 3-primary Redis Cluster, sync and asyncio: every key of a lock
shares its hash tag, so sharing, exclusion and the BLPOP hand-off work as on one server."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis
import redis.asyncio

import pyredislua
from pyredislua.rwlock import RWLock

pytestmark = [pytest.mark.cluster, pytest.mark.lock]


@pytest.mark.parametrize("mode", ["function", "script"])
def test_sync_on_a_cluster(rc: redis.RedisCluster, mode: str) -> None:
    client = pyredislua.Client(rc, mode=mode)  # type: ignore[arg-type]
    for name in ("orders", "users", "stock"):  # tags on different primaries
        rw = RWLock(client, name, ttl=5)
        a, b = rw.read(), rw.read()
        assert a.acquire(blocking=False) and b.acquire(blocking=False)
        w = rw.write()
        got: list[bool] = []
        t = threading.Thread(target=lambda w=w, got=got: got.append(w.acquire(timeout=5)))
        t.start()
        end = time.monotonic() + 5
        while rw.inspect().waiters < 1:  # the writer is registered and blocks
            assert time.monotonic() < end
            time.sleep(0.005)
        a.release()
        b.release()  # grants the waiting writer through the signal list
        t.join(6)
        assert got == [True] and w.fence == 1
        assert not rw.read().acquire(blocking=False)
        w.release()
        state = rw.inspect()
        assert (state.writer, state.readers, state.waiters, state.fence) == (None, 0, 0, 1)


async def test_asyncio_on_a_cluster(arc: redis.asyncio.RedisCluster) -> None:
    client = pyredislua.AsyncClient(arc)
    rw = RWLock(client, "async-cluster", ttl=5)
    order: list[str] = []

    async def reader(i: int) -> None:
        async with rw.read():
            order.append(f"r{i}")
            await asyncio.sleep(0.01)

    async def writer() -> None:
        async with rw.write() as w:
            order.append(f"w{w.fence}")

    await asyncio.gather(reader(0), writer(), reader(1), writer())
    assert sorted(order) == ["r0", "r1", "w1", "w2"]
    assert (await rw.inspect()).waiters == 0
