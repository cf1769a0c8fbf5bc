"""Optimistic concurrency on a 3-primary cluster: compare-and-set and WATCH transactions on every
primary (sync and asyncio), keys of several slots refused, a WATCH whose connection dies never
turning into a lost update, and a slot that moves in the middle of a transaction.

(The operations themselves also run in tests/test_cluster_conformance.py, like every one.)"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import CrossSlotTransactionError

import pyredislua
from pyredislua.optimistic import Backoff, Optimistic, Versioned
from pyredislua.topology import LocalCluster
from tests.clusterkit import on_node, slot_of, tags_by_primary

pytestmark = [pytest.mark.cluster, pytest.mark.optimistic]

FAST = Backoff(attempts=8, base=0.001, cap=0.05)


def _incr(key: str) -> Any:
    def fn(pipe: Any) -> int:
        n = int(pipe.get(key) or 0)
        pipe.multi()
        pipe.set(key, n + 1)
        pipe.incr(key + ":count")
        return n + 1

    return fn


def _aincr(key: str) -> Any:
    async def fn(pipe: Any) -> int:
        n = int(await pipe.get(key) or 0)
        pipe.multi()
        pipe.set(key, n + 1)
        return n + 1

    return fn


def test_on_every_primary(cluster: LocalCluster, cluster_client: pyredislua.Client,
                          rc: redis.RedisCluster) -> None:
    store = Versioned(cluster_client, "accounts")
    opt = Optimistic(cluster_client)
    for [tag] in tags_by_primary(cluster).values():
        a, b = f"{{{tag}}}a", f"{{{tag}}}b"
        assert store.set(a, "1", version=0).ok
        assert store.update(a, lambda v: str(int(v or 0) + 1)).value == b"2"
        both = store.update_many([a, b], lambda d, a=a, b=b: {a: "0", b: "2"})
        assert store.get_many([a, b]) == {
            n: pyredislua.optimistic.Entry(both.values[n], both.versions[n]) for n in (a, b)}
        assert store.delete(b, version=both.versions[b]).ok
        for _ in range(2):
            opt.transaction(_incr(f"{{{tag}}}n"), f"{{{tag}}}n", f"{{{tag}}}n:count")
        assert rc.get(f"{{{tag}}}n") == b"2" and rc.get(f"{{{tag}}}n:count") == b"2"
    with pytest.raises(CrossSlotTransactionError):
        opt.transaction(_incr("{x}n"), "{x}n", "{y}n")
    with pytest.raises(ValueError, match="hash tag"):
        store.set_many({"a": (0, "1"), "b": (0, "2")})


async def test_on_every_primary_asyncio(cluster: LocalCluster,
                                        cluster_aclient: pyredislua.AsyncClient,
                                        rc: redis.RedisCluster) -> None:
    store = Versioned(cluster_aclient, "accounts")
    opt = Optimistic(cluster_aclient)
    for [tag] in tags_by_primary(cluster).values():
        assert (await store.update(f"{{{tag}}}a", lambda v: b"1")).attempts == 1
        for _ in range(3):
            await opt.transaction(_aincr(f"{{{tag}}}n"), f"{{{tag}}}n")
        assert rc.get(f"{{{tag}}}n") == b"3"
    with pytest.raises(CrossSlotTransactionError):
        await opt.transaction(_aincr("{x}n"), "{x}n", "{y}n")


def test_a_dead_watch_connection_never_becomes_a_lost_update(
        cluster: LocalCluster, cluster_client: pyredislua.Client, rc: redis.RedisCluster) -> None:
    """redis-py 8.1's own cluster pipeline reconnects and goes on without the WATCH (the
    transaction then commits over a concurrent write); the helper's attempt runs on the node's
    own client, which raises on a dead WATCH, and retries."""
    key = "{dead}n"
    port = cluster.owner_of(slot_of("dead"))
    rc.set(key, 10)
    other = redis.RedisCluster.from_url(cluster.url)
    calls: list[int] = []

    def fn(pipe: Any) -> None:
        n = int(pipe.get(key))
        calls.append(n)
        if len(calls) == 1:
            on_node(port, "CLIENT", "KILL", "TYPE", "normal")
            other.incr(key)  # a lost WATCH would let our write overwrite this
            pipe.get(key)
        pipe.multi()
        pipe.set(key, n + 1)

    opt = Optimistic(cluster_client, backoff=FAST)
    done = opt.transaction(fn, key)
    assert (done.attempts, opt.stats.interrupted) == (2, 1)
    assert rc.get(key) == b"12"
    other.close()


@pytest.mark.parametrize("asyncio_client", [False, True], ids=["sync", "asyncio"])
async def test_a_slot_moving_during_a_transaction(cluster: LocalCluster, rc: redis.RedisCluster,
                                                  asyncio_client: bool) -> None:
    tag = "moving"
    key = f"{{{tag}}}n"
    owner = cluster.owner_of(slot_of(tag))
    target = next(p for p in cluster.primaries() if p != owner)
    rc.set(key, 5)
    calls: list[int] = []

    def read_then_move(n: int) -> None:
        calls.append(n)
        if len(calls) == 1:  # the slot, key included, goes to another primary before EXEC
            cluster.move_slot(slot_of(tag), target)

    try:
        if asyncio_client:
            arc = redis.asyncio.RedisCluster.from_url(cluster.url)

            async def afn(pipe: Any) -> None:
                n = int(await pipe.get(key))
                read_then_move(n)
                pipe.multi()
                pipe.set(key, n + 1)

            done = await Optimistic(pyredislua.AsyncClient(arc), backoff=FAST).transaction(
                afn, key)
            await arc.aclose()
        else:
            def fn(pipe: Any) -> None:
                n = int(pipe.get(key))
                read_then_move(n)
                pipe.multi()
                pipe.set(key, n + 1)

            done = Optimistic(pyredislua.Client(rc), backoff=FAST).transaction(fn, key)
        assert done.attempts >= 2
        assert calls[-1] == 5 and rc.get(key) == b"6"
        assert cluster.owner_of(slot_of(tag)) == target
    finally:
        cluster.move_slot(slot_of(tag), owner)
