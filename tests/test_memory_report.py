"""``pyredislua memory`` on a server where every primitive is in use."""

from __future__ import annotations

import json

import pytest
import redis

import pyredislua
from pyredislua.cache import Cache
from pyredislua.cli import main
from pyredislua.lock import Lock
from pyredislua.observe.memory import measure, split_key
from pyredislua.queue import Queue, StreamQueue
from pyredislua.ratelimit import GCRA, SlidingLog
from pyredislua.semaphore import Semaphore
from pyredislua.writebehind import WriteBehind

pytestmark = pytest.mark.cli


def test_split_key() -> None:
    assert split_key("prl:q:{orders}:jobs") == ("q", "prl:q:{orders}", "jobs")
    assert split_key("prl:lock:{a}") == ("lock", "prl:lock:{a}", "")
    assert split_key("prl:rl:{u}:gcra:api:u:1000") == ("rl", "prl:rl:{u}", "gcra")
    assert split_key("prl:cache:{ns}:e:user:1") == ("cache", "prl:cache:{ns}", "e")
    assert split_key("other:q:{x}") is None and split_key("prl:q:nobrace") is None


def _use_everything(client: pyredislua.Client) -> None:
    for i in range(3):
        assert Lock(client, f"res-{i}", ttl=60, auto_renew=False).acquire(blocking=False)
    small, big = Queue(client, "small"), Queue(client, "big")
    small.enqueue_many([small.job(f"job {i}") for i in range(10)])
    big.enqueue_many([big.job("x" * 100) for _ in range(300)])  # past 128: a hashtable
    store = WriteBehind(client, "store")
    store.write_many([(f"k{i}", f"value {i}") for i in range(20)])
    # 10 a minute: one hit keeps a key for seconds (at 10/s a GCRA key lasts 100 ms and, on a
    # loaded machine, expired before the report counted it)
    limiter, log = GCRA(client, "api", "10/60s"), SlidingLog(client, "api", "10/60s")
    for user in ("alice", "bob", "carol"):
        limiter.hit(user)
        log.hit(user)
    cache = Cache(client, "app", ttl=60)
    for i in range(5):
        cache.set(f"user:{i}", {"id": i}, tags=["users"])
    StreamQueue(client, "events").produce([b"e1", b"e2", b"e3"])
    for i in range(2):
        sem = Semaphore(client, f"pool-{i}", 4, ttl=60, auto_renew=False)
        assert sem.acquire(2, blocking=False) is not None
        assert sem.acquire(1, blocking=False) is not None
        sem.acquire(3, timeout=0.01)  # queues, then gives up


def test_the_report_counts_units_and_finds_no_undocumented_key(
        client: pyredislua.Client, r: redis.Redis) -> None:
    _use_everything(client)
    report = measure(r)
    assert report.scan_complete and not report.other_keys
    areas = {a.area: a for a in report.areas}
    assert (areas["lock"].instances_seen, areas["lock"].units) == (3, 3)
    assert (areas["queue"].instances_seen, areas["queue"].units) == (2, 310)
    assert areas["writebehind"].units == 20
    assert areas["ratelimit"].units == 6
    assert areas["cache"].units == 5
    assert areas["cache tags"].units == 1  # the one tag set the entries share, counted apart
    assert areas["stream"].units == 3
    assert (areas["semaphore"].instances_seen, areas["semaphore"].units) == (2, 2)
    for a in areas.values():
        if a.instances_seen:
            assert a.bytes_per_unit is not None and 10 < a.bytes_per_unit < 5000, a
    # the big queue went past the compact limits (300 ready jobs, 100-byte payloads), and the
    # report says which structures did
    beyond = "\n".join(areas["queue"].beyond_compact)
    assert "prl:q:{big}:ready: zset of 300 is skiplist (more than zset-max-listpack-" in beyond
    # (a job's record and payload are two fields of its jobs hash)
    assert ("prl:q:{big}:jobs: hash of 600 is hashtable (more than "
            "hash-max-listpack-entries 512)") in beyond
    assert not any("{small}" in line for line in areas["queue"].beyond_compact)
    assert report.no_ttl == []  # fences and queue structures stay by design; all else expires


def test_keys_without_a_ttl_outside_the_documented_lifecycles_are_listed(
        client: pyredislua.Client, r: redis.Redis) -> None:
    lock = Lock(client, "held", ttl=60, auto_renew=False)
    assert lock.acquire(blocking=False)
    r.persist(lock.keys.lock)  # a held lock that would never expire
    r.set("prl:q:{jobs}:req:abc", "1")  # a request record without its TTL
    r.set("prl:rl:{u}:gcra:api:u:1000", "junk")  # limiter keys always expire
    report = measure(r)
    assert report.no_ttl == sorted([lock.keys.lock, "prl:q:{jobs}:req:abc",
                                    "prl:rl:{u}:gcra:api:u:1000"])
    assert lock.keys.fence not in report.no_ttl  # durable fences are documented


def test_sampling_and_scan_limits_bound_the_work(client: pyredislua.Client,
                                                 r: redis.Redis) -> None:
    for i in range(40):
        assert Lock(client, f"many-{i}", ttl=60, auto_renew=False).acquire(blocking=False)
    report = measure(r, sample=5)
    lock = next(a for a in report.areas if a.area == "lock")
    assert (lock.instances_seen, lock.instances_sampled, lock.units) == (40, 5, 5)
    partial = measure(r, scan_limit=10)
    assert not partial.scan_complete and partial.keys_seen < 80


def test_the_command(client: pyredislua.Client, r: redis.Redis, redis_url: str,
                     capsys: pytest.CaptureFixture[str]) -> None:
    _use_everything(client)
    assert main(["memory", "--url", redis_url]) == 0
    out = capsys.readouterr().out
    assert "queue        job" in out and "compact limits: hash-max-listpack-entries" in out
    assert "every library key seen has a TTL or a documented lifecycle" in out
    assert main(["memory", "--url", redis_url, "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert {a["area"] for a in report["areas"] if a["units"]} == {
        "lock", "queue", "stream", "writebehind", "ratelimit", "cache", "cache tags",
        "semaphore"}


def test_a_cluster_is_reported_per_primary(cluster_client: pyredislua.Client,
                                           rc: redis.RedisCluster,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(12):
        assert Lock(cluster_client, f"c-{i}", ttl=60, auto_renew=False).acquire(blocking=False)
    url = f"redis://127.0.0.1:{rc.get_primaries()[0].port}/0"
    assert main(["memory", "--url", url, "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert len(reports) == 3
    assert sum(a["units"] for rep in reports for a in rep["areas"] if a["area"] == "lock") == 12


def test_the_lock_family_and_tagged_names(client: pyredislua.Client, r: redis.Redis) -> None:
    """Key-set areas are split by their set's suffixes (lua/keysets), so names carrying their own
    hash tag (a LockSet's ``{acct}:alice``) are instances of their own, and their durable fence
    counters are not mistaken for keys without a lifecycle."""
    from pyredislua.lock import LockSet, ReentrantLock
    from pyredislua.rwlock import RWLock

    locks = LockSet(client, ["{acct}:alice", "{acct}:bob", "{acct}:carol"], ttl=60,
                    auto_renew=False)
    assert locks.acquire(blocking=False)
    reentrant = ReentrantLock(client, "nested", ttl=60, auto_renew=False)
    assert reentrant.acquire(blocking=False) and reentrant.acquire(blocking=False)
    rw = RWLock(client, "doc", ttl=60, auto_renew=False)
    writer = rw.write()
    assert writer.acquire(blocking=False)
    locks.release()  # the fences stay, durable by design
    report = measure(r)
    areas = {a.area: a for a in report.areas}
    assert (areas["lock"].instances_seen, areas["lock"].units) == (3, 3)
    assert areas["reentrant lock"].units == 1 and areas["read-write lock"].units == 1
    assert report.no_ttl == [] and report.other_keys == 0
    writer.release()
    reentrant.release()
    reentrant.release()


def test_every_fence_counter_that_stays_is_in_the_readme_table() -> None:
    """Issue 8 §3: every key kept without a TTL on purpose is listed, with its reason, in the
    README's "keys that stay" table. The fence counters of the lock family are such keys (the
    report tolerates them: DOCUMENTED_STAYING); each must have its row."""
    from pathlib import Path

    from pyredislua.observe.memory import DOCUMENTED_STAYING

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("| area | keys that stay | why |")
    rows = readme[start:readme.index("\n\n", start)]
    missing = [f"prl:{base}:{{name}}:fence" for base, roles in DOCUMENTED_STAYING.items()
               if "fence" in roles and f"`prl:{base}:{{name}}:fence`" not in rows]
    assert not missing, f"README 'keys that stay' table lacks {missing}"
