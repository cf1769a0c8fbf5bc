"""Optional compression of cache values (and the Compressor itself) against real Redis."""

from __future__ import annotations

import json
import zlib

import pytest
import redis

import pyredislua
from pyredislua.cache import Cache
from pyredislua.compression import RAW, ZLIB, ZSTD, Compressor, _zstd
from pyredislua.sample_data import generate

pytestmark = pytest.mark.cache

ALGORITHMS = ["zlib", *(["zstd"] if _zstd() is not None else [])]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trips_and_headers(algorithm: str) -> None:
    c = Compressor(algorithm, min_size=64)  # type: ignore[arg-type]
    big = json.dumps(generate(scale=0.05).customers).encode()
    packed = c.compress(big)
    assert packed[:1] == (ZSTD if algorithm == "zstd" else ZLIB)
    assert len(packed) < len(big) / 2
    assert c.decompress(packed) == big
    assert c.compress(b"tiny") == RAW + b"tiny"  # under min_size: raw
    noise = bytes(range(256)) * 1  # does not shrink: stored raw
    incompressible = zlib.compress(noise * 4)
    assert c.compress(incompressible)[:1] == RAW
    assert c.decompress(c.compress(b"")) == b""
    # any reader decodes any writer's header
    other = Compressor("zlib", min_size=0)
    assert other.decompress(packed) == big if algorithm == "zlib" or _zstd() else True


def test_unknown_headers_are_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="not a value written by a Compressor"):
        Compressor().decompress(b'{"plain": "json"}')
    with pytest.raises(ValueError):
        Compressor("brotli")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Compressor(min_size=-1)


def test_a_compressed_cache_stores_less_and_reads_the_same(client: pyredislua.Client,
                                                           r: redis.Redis) -> None:
    products = generate(scale=0.2).products
    pages = [products[i:i + 20] for i in range(0, len(products), 20)]  # ~2.4 kB each
    plain = Cache(client, "plain", ttl=60)
    packed = Cache(client, "packed", ttl=60, compress=Compressor(min_size=128))
    for i, page in enumerate(pages):
        plain.set(f"page:{i}", page)
        packed.set(f"page:{i}", page)
    for i, page in enumerate(pages):
        assert packed.get_or_compute(f"page:{i}", lambda: pytest.fail("a miss")) == page
    used = {ns: sum(r.memory_usage(k, samples=0) or 0
                    for k in r.scan_iter(f"prl:cache:{{{ns}}}:e:*")) for ns in ("plain", "packed")}
    assert used["packed"] < used["plain"] * 0.6, used
    # a value stored before compression was turned on is refused with a clear error
    mixed = Cache(client, "plain", ttl=60, compress=Compressor())
    with pytest.raises(ValueError, match="compression turned on with values already stored"):
        mixed.get_or_compute("page:0", lambda: pytest.fail("a miss"))


async def test_the_asyncio_cache_compresses_the_same(aclient: pyredislua.AsyncClient) -> None:
    cache = Cache(aclient, "acache", ttl=60, compress=Compressor(min_size=0))
    value = {"text": "abc " * 200}
    await cache.set("k", value)
    assert await cache.get_or_compute("k", lambda: pytest.fail("a miss")) == value
    sync_view = await aclient.redis.hget("prl:cache:{acache}:e:k", "v")
    assert sync_view[:1] in (ZLIB, ZSTD)


def test_the_benchmark_tool_runs(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A smoke run of ``pyredislua bench compression`` (a tool, not a timed test)."""
    from pyredislua.cli import main

    assert main(["bench", "compression", "--url", redis_url, "--scale", "0.02", "--json"]) == 0
    rows = {row["shape"]: row for row in json.loads(capsys.readouterr().out)["compression"]}
    assert rows["page of 20 customers"]["zlib_saved"] > 0.3
    assert abs(rows["customer"]["zlib_saved"]) < 0.05  # 110-byte records: stored raw


# -- queue payloads ------------------------------------------------------------------------------


def test_a_compressed_queue_round_trips_and_stores_less(client: pyredislua.Client,
                                                        r: redis.Redis) -> None:
    from pyredislua.queue import Queue

    page = json.dumps(generate(scale=0.05).transactions[:20]).encode()  # ~2.2 kB
    plain, packed = Queue(client, "plain"), Queue(client, "packed", compress=Compressor())
    plain.enqueue(page)
    packed.enqueue_many([packed.job(page), b"tiny"])
    # a payload is stored beside its job's record, in the jobs hash
    assert r.hstrlen("prl:q:{packed}:jobs", "0000000000000001:p") < len(page) / 2
    assert r.hget("prl:q:{packed}:jobs", "0000000000000002:p") == RAW + b"tiny"
    assert [i.payload for i in packed.peek()] == [page, b"tiny"]  # inspection shows them opened
    assert packed.get("0000000000000001").payload == page  # type: ignore[union-attr]
    jobs = packed.dequeue(2)
    assert [j.payload for j in jobs] == [page, b"tiny"]
    packed.nack(jobs[0], "no", action="dead")
    assert packed.dead()[1][0].payload == page
    # a plain producer's payload on a compressing queue is not misread: peek shows it as stored
    r.hset("prl:q:{packed}:jobs", "0000000000000002:p", b"{}")
    assert any(i.payload == b"{}" for i in packed.peek("active"))


def test_a_worker_opens_payloads_and_dead_letters_foreign_ones(client: pyredislua.Client) -> None:
    import threading
    import time

    from pyredislua.queue import Job, Queue
    from pyredislua.queue.worker import Worker

    big = b"payload " * 100
    producer = Queue(client, "w", compress=Compressor())
    producer.enqueue(big)
    Queue(client, "w").enqueue(b"\x07not compressed", max_attempts=2, backoff=0)  # plain producer
    seen: list[bytes] = []

    def handle(job: Job) -> None:
        seen.append(job.payload)

    worker = Worker(producer, handle, concurrency=1)
    t = threading.Thread(target=worker.run)
    t.start()
    deadline = time.monotonic() + 10
    while producer.stats().unfinished:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    worker.stop()
    t.join(10)
    assert seen == [big]  # the handler never saw the foreign payload
    [dead] = producer.dead()[1]
    assert dead.payload == b"\x07not compressed" and "Compressor" in (dead.reason or "")


async def test_an_asyncio_queue_compresses_the_same(aclient: pyredislua.AsyncClient) -> None:
    from pyredislua.queue import Queue

    q = Queue(aclient, "aq", compress=Compressor(min_size=0))
    await q.enqueue(b"x" * 500)
    [job] = await q.dequeue(1)
    assert job.payload == b"x" * 500
