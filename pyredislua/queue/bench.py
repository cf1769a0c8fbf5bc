"""Queue throughput side by side: pyredislua vs rq, saq and BullMQ (Node.js) in one run.

Measures enqueue jobs/s (one at a time, and batched) and no-op processing jobs/s at concurrency
1 and 16, every system against the same Redis, one after the other, the database flushed in
between. rq and saq come from the ``bench`` extra; BullMQ 6.7 and ioredis are installed with npm
into a temporary folder at benchmark time (never into the repository) when Node.js is present.
A tool, not a test: numbers depend on the machine; the ratios are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

from ..server import RedisServer

Row = dict[str, Any]


def noop(*_: Any, **__: Any) -> None:
    """The rq job (must be importable by rq's workers)."""


async def saq_noop(ctx: Any, **_: Any) -> None:
    """The saq job."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=10_000,
                        help="jobs per processing/batch measurement (default 10000)")
    parser.add_argument("--single", type=int, default=2_000,
                        help="jobs enqueued one at a time (default 2000)")
    parser.add_argument("--rq-jobs", type=int, default=2_000,
                        help="jobs for rq processing, which is slow (default 2000)")
    parser.add_argument("--skip", default="",
                        help="comma-separated systems to skip: rq,saq,bullmq")


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


# -- pyredislua --------------------------------------------------------------------------------


def _bench_pyredislua(url: str, n: int, single: int) -> dict[str, float]:
    import pyredislua
    from pyredislua.queue import AsyncWorker, Queue, Worker

    r = redis.Redis.from_url(url)
    r.flushall()
    client = pyredislua.Client(r, mode="function")
    q = Queue(client, "bench")
    q.stats()  # loads the library outside the timings
    out: dict[str, float] = {}
    t = time.perf_counter()
    for _ in range(single):
        q.enqueue(b"{}")
    out["enqueue_single"] = _rate(single, time.perf_counter() - t)
    r.flushall()
    q.stats()
    t = time.perf_counter()
    for start in range(0, n, 1000):
        q.enqueue_many([b"{}"] * min(1000, n - start))
    out["enqueue_batch"] = _rate(n, time.perf_counter() - t)

    for conc in (1, 16):
        r.flushall()
        q.enqueue_many([b"{}"] * n)
        worker = Worker(q, noop, concurrency=conc)
        th = threading.Thread(target=worker.run)
        t = time.perf_counter()
        th.start()
        while worker.metrics.acked < n:
            time.sleep(0.002)
        out[f"process_c{conc}_threads"] = _rate(n, time.perf_counter() - t)
        worker.stop()
        th.join()

    async def run_async() -> None:
        conn = redis.asyncio.Redis.from_url(url)
        aq = Queue(pyredislua.AsyncClient(conn, mode="function"), "bench")

        async def handler(job: Any) -> None:
            return None

        for conc in (1, 16):
            r.flushall()
            await aq.enqueue_many([b"{}"] * n)
            worker = AsyncWorker(aq, handler, concurrency=conc)
            t = time.perf_counter()
            task = asyncio.ensure_future(worker.run())
            while worker.metrics.acked < n:
                await asyncio.sleep(0.002)
            out[f"process_c{conc}_asyncio"] = _rate(n, time.perf_counter() - t)
            worker.stop()
            await task
        await conn.aclose()

    asyncio.run(run_async())
    out["process_c1"] = max(out["process_c1_threads"], out["process_c1_asyncio"])
    out["process_c16"] = max(out["process_c16_threads"], out["process_c16_asyncio"])
    r.close()
    return out


# -- rq ------------------------------------------------------------------------------------------


def _rq_work(url: str) -> None:
    from rq import Queue
    from rq.worker import SimpleWorker

    r = redis.Redis.from_url(url)
    SimpleWorker([Queue("bench", connection=r)], connection=r).work(burst=True,
                                                                    logging_level="WARNING")


def _bench_rq(url: str, n: int, single: int) -> dict[str, float]:
    from rq import Queue

    r = redis.Redis.from_url(url)
    r.flushall()
    q = Queue("bench", connection=r)
    out: dict[str, float] = {}
    t = time.perf_counter()
    for _ in range(single):
        q.enqueue(noop, result_ttl=0)
    out["enqueue_single"] = _rate(single, time.perf_counter() - t)
    r.flushall()
    t = time.perf_counter()
    for start in range(0, n, 1000):
        q.enqueue_many([Queue.prepare_data(noop, result_ttl=0)
                        for _ in range(min(1000, n - start))])
    out["enqueue_batch"] = _rate(n, time.perf_counter() - t)
    ctx = multiprocessing.get_context("fork")
    for conc in (1, 16):
        r.flushall()
        q.enqueue_many([Queue.prepare_data(noop, result_ttl=0) for _ in range(n)])
        procs = [ctx.Process(target=_rq_work, args=(url,)) for _ in range(conc)]
        t = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        out[f"process_c{conc}"] = _rate(n, time.perf_counter() - t)
    r.close()
    return out


# -- saq -----------------------------------------------------------------------------------------


def _bench_saq(url: str, n: int, single: int) -> dict[str, float]:
    from saq import Queue, Worker

    async def main() -> dict[str, float]:
        out: dict[str, float] = {}
        flush = redis.Redis.from_url(url)
        flush.flushall()
        q = Queue.from_url(url, name="bench")
        await q.connect()
        t = time.perf_counter()
        for _ in range(single):
            await q.enqueue("saq_noop")
        out["enqueue_single"] = _rate(single, time.perf_counter() - t)
        flush.flushall()
        t = time.perf_counter()
        for start in range(0, n, 1000):  # saq has no bulk enqueue: 1000 concurrent enqueues
            await asyncio.gather(*(q.enqueue("saq_noop") for _ in range(min(1000, n - start))))
        out["enqueue_batch"] = _rate(n, time.perf_counter() - t)
        for conc in (1, 16):
            flush.flushall()
            for start in range(0, n, 1000):
                await asyncio.gather(*(q.enqueue("saq_noop")
                                       for _ in range(min(1000, n - start))))
            worker = Worker(q, functions=[("saq_noop", saq_noop)], concurrency=conc)
            t = time.perf_counter()
            task = asyncio.ensure_future(worker.start())
            while await q.count("incomplete") > 0:
                await asyncio.sleep(0.005)
            out[f"process_c{conc}"] = _rate(n, time.perf_counter() - t)
            await worker.stop()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await q.disconnect()
        flush.close()
        return out

    return asyncio.run(main())


# -- BullMQ --------------------------------------------------------------------------------------

BULLMQ_SCRIPT = r"""
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');
const url = process.argv[2], N = +process.argv[3], S = +process.argv[4];
const conn = () => new IORedis(url, { maxRetriesPerRequest: null });
const bulk = (n) => Array.from({ length: n }, (_, i) => (
  { name: 'j', data: { i }, opts: { removeOnComplete: true } }));
async function fill(q) {
  for (let i = 0; i < N; i += 1000) await q.addBulk(bulk(Math.min(1000, N - i)));
}
(async () => {
  const out = {};
  const q = new Queue('bench', { connection: conn() });
  await q.waitUntilReady();
  await q.obliterate({ force: true });
  let t = performance.now();
  for (let i = 0; i < S; i++) await q.add('j', { i }, { removeOnComplete: true });
  out.enqueue_single = S / ((performance.now() - t) / 1000);
  await q.obliterate({ force: true });
  t = performance.now();
  await fill(q);
  out.enqueue_batch = N / ((performance.now() - t) / 1000);
  for (const c of [1, 16]) {
    await q.obliterate({ force: true });
    await fill(q);
    let done = 0, finish;
    const finished = new Promise((r) => (finish = r));
    t = performance.now();
    const w = new Worker('bench', async () => {}, { connection: conn(), concurrency: c });
    w.on('completed', () => { if (++done === N) finish(); });
    await finished;
    out['process_c' + c] = N / ((performance.now() - t) / 1000);
    await w.close();
  }
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
"""


def _bench_bullmq(url: str, n: int, single: int) -> dict[str, float] | str:
    if not (shutil.which("node") and shutil.which("npm")):
        return "Node.js/npm not found"
    with tempfile.TemporaryDirectory(prefix="pyredislua-bullmq-") as tmp:
        install = subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", "bullmq@6.7", "ioredis"],
            cwd=tmp, capture_output=True, text=True, timeout=600)
        if install.returncode != 0:
            return f"npm install failed: {install.stderr.strip().splitlines()[-1:]}"
        script = os.path.join(tmp, "bench.js")
        with open(script, "w") as f:
            f.write(BULLMQ_SCRIPT)
        redis.Redis.from_url(url).flushall()
        done = subprocess.run(["node", script, url, str(n), str(single)], cwd=tmp,
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"bullmq failed: {done.stderr.strip()[-300:]}"
        version = subprocess.run(["node", "-e", "console.log(require('bullmq/package.json')"
                                  ".version)"], cwd=tmp, capture_output=True, text=True)
        result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        result["version"] = version.stdout.strip()  # type: ignore[assignment]
        return result


# -- the run -------------------------------------------------------------------------------------

METRICS = [("enqueue_single", "enqueue, one at a time"), ("enqueue_batch", "enqueue, batched"),
           ("process_c1", "process no-op, concurrency 1"),
           ("process_c16", "process no-op, concurrency 16")]


def run(args: argparse.Namespace) -> int:
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            url = stack.enter_context(RedisServer()).url
        results: dict[str, dict[str, float] | str] = {}
        systems: list[tuple[str, Callable[[], dict[str, float] | str]]] = [
            ("pyredislua", lambda: _bench_pyredislua(url, args.jobs, args.single)),
            ("rq", lambda: _bench_rq(url, args.rq_jobs, min(args.single, args.rq_jobs))),
            ("saq", lambda: _bench_saq(url, args.jobs, args.single)),
            ("bullmq", lambda: _bench_bullmq(url, args.jobs, args.single)),
        ]
        for name, fn in systems:
            if name in skip:
                continue
            try:
                results[name] = fn()
            except ImportError as error:
                results[name] = f"not installed ({error.name}); pip install 'pyredislua[bench]'"
            except Exception as error:
                results[name] = f"failed: {type(error).__name__}: {error}"
        redis.Redis.from_url(url).flushall()

    ours = results["pyredislua"]
    peers = {k: v for k, v in results.items() if k != "pyredislua" and isinstance(v, dict)}
    ratios: dict[str, Any] = {}
    if isinstance(ours, dict):
        best = {m: max((p[m] for p in peers.values() if m in p), default=None)
                for m, _ in METRICS}
        for m, _ in METRICS:
            if best[m]:
                ratios[m] = round(ours[m] / best[m], 2)  # type: ignore[operator]
        bull = results.get("bullmq")
        if isinstance(bull, dict):
            ratios["batch_vs_bullmq_addBulk"] = round(
                ours["enqueue_batch"] / float(bull["enqueue_batch"]), 2)
    if args.json:
        print(json.dumps({"jobs": args.jobs, "results": results, "ratio_vs_best_peer": ratios},
                         indent=2, default=str))
        return 0
    names = list(results)
    print(f"queue benchmark: {args.jobs} jobs per batch/processing run "
          f"(rq processing: {args.rq_jobs}), jobs/s, higher is better")
    print(f"{'':34}" + "".join(f"{n:>14}" for n in names) + f"{'vs best peer':>14}")
    for m, label in METRICS:
        cells = []
        for n in names:
            v = results[n]
            cells.append(f"{v[m]:>14,.0f}" if isinstance(v, dict) and m in v else f"{'-':>14}")
        ratio = f"{ratios[m]:.2f}x" if m in ratios else "-"
        print(f"{label:34}" + "".join(cells) + f"{ratio:>14}")
    if isinstance(ours, dict):
        print(f"{'  (threads / asyncio, c=1)':34}{ours['process_c1_threads']:>14,.0f} / "
              f"{ours['process_c1_asyncio']:,.0f}")
        print(f"{'  (threads / asyncio, c=16)':34}{ours['process_c16_threads']:>14,.0f} / "
              f"{ours['process_c16_asyncio']:,.0f}")
    if "batch_vs_bullmq_addBulk" in ratios:
        print(f"batch enqueue vs BullMQ addBulk: {ratios['batch_vs_bullmq_addBulk']:.2f}x")
    for n, v in results.items():
        if isinstance(v, str):
            print(f"{n}: {v}")
    return 0
