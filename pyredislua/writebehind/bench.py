"""Write-behind throughput: records/s reaching PostgreSQL (and SQLite) through write-behind
batches versus one write-through statement per record, in the same run; writes/s accepted by
Redis; flush lag; where a flushed record's time goes (claim, sink write, ack: wall and CPU time
in this process, and time inside Redis). Target: batches reach the sink at >= 20x the
per-record rate.

PostgreSQL: --pg DSN (default host=127.0.0.1 dbname=test, user postgres or root); a uniquely
named schema is created and dropped. Skipped, with the reason, when unreachable.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redis

from ..bench._common import emit_json, print_table, server_url
from ..client import Client
from ..writebehind import FlushEvent, Record, WriteBehind
from .sinks import SQLiteSink


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=20_000,
                        help="records flushed through write-behind per sink (default 20000)")
    parser.add_argument("--baseline-records", type=int, default=2_000,
                        help="records written one statement each (default 2000)")
    parser.add_argument("--batch", type=int, default=1000, help="flush batch size (<= 1000)")
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--flushers", type=int, default=2,
                        help="flusher workers in parallel (default 2)")
    parser.add_argument("--pg", default="host=127.0.0.1 port=5432 dbname=test",
                        help="PostgreSQL connection string ('' to skip)")


def _pg_sink(dsn: str) -> tuple[Any, str | None]:
    if not dsn:
        return None, "skipped (--pg '')"
    try:
        import psycopg

        from .sinks.postgres import PostgresSink
    except ImportError:
        return None, 'psycopg not installed (pip install "psycopg[binary]")'
    error = ""
    for user in ("", "postgres", "root"):
        full = dsn + (f" user={user}" if user else "")
        try:
            psycopg.connect(full, connect_timeout=3).close()
        except psycopg.OperationalError as exc:
            error = str(exc).strip().splitlines()[0]
            continue
        return PostgresSink(full, schema=f"prl_bench_{secrets.token_hex(4)}"), None
    return None, f"PostgreSQL unreachable: {error}"


def _records(n: int, size: int, offset: int = 0) -> list[Record]:
    value = os.urandom(size // 2).hex().encode()
    return [Record(f"rec:{offset + i}", offset + i + 1, value) for i in range(n)]


def _per_record(sink: Any, records: list[Record]) -> float:
    one = getattr(sink, "write_one", None) or (lambda r: sink.write([r]))
    started = time.perf_counter()
    for rec in records:
        one(rec)
    return len(records) / (time.perf_counter() - started)


def _through_write_behind(client: Client, sink: Any, n: int, size: int, batch: int,
                          name: str, workers: int) -> dict[str, float]:
    store = WriteBehind(client, name, batch_size=batch, max_delay=0.05)
    if store.stats().pending:
        raise RuntimeError(f"write-behind store {name!r} is not empty on this server")
    value = os.urandom(size // 2).hex().encode()
    # writes accepted by Redis, batched the way an application with bursts writes
    started = time.perf_counter()
    for i in range(0, n, 500):
        store.write_many([(f"wb:{j}", value) for j in range(i, min(n, i + 500))])
    accepted_batched = n / (time.perf_counter() - started)
    # the flush: claim a batch, one statement per batch, ack, until all is in the sink
    # the flush: background flusher workers claim batches, one statement per batch, ack;
    # stop() returns once every due record is in the sink
    events: list[FlushEvent] = []
    flusher = store.flusher(sink, workers=workers, on_flush=events.append)
    started = time.perf_counter()
    flusher.start()
    flusher.stop(timeout=None)
    flush_rate = sum(e.acked for e in events) / (time.perf_counter() - started)
    # single writes accepted by Redis while a background flusher runs: end-to-end lag
    lag_events: list[FlushEvent] = []
    singles = min(n, 5000)
    with store.flusher(sink, on_flush=lag_events.append):
        started = time.perf_counter()
        for i in range(singles):
            store.set(f"single:{i}", value)
        accepted_single = singles / (time.perf_counter() - started)
    lags = sorted(e.lag_ms for e in lag_events) or [0]
    return {"flush_records_per_s": flush_rate, "redis_writes_per_s_single": accepted_single,
            "redis_writes_per_s_batched": accepted_batched,
            "batches": float(len(events)), "lag_ms_median": float(lags[len(lags) // 2]),
            "lag_ms_max": float(lags[-1])}


def _redis_usec(r: redis.Redis) -> float:
    """Microseconds Redis spent inside FCALL and EVALSHA so far (INFO commandstats)."""
    stats = r.info("commandstats")
    return float(sum(stats.get(f"cmdstat_{verb}", {}).get("usec", 0)
                     for verb in ("fcall", "evalsha", "eval")))


def _breakdown(client: Client, r: redis.Redis, sink: Any, n: int, size: int, batch: int,
               name: str) -> dict[str, float]:
    """Where a flushed record's time goes: batch after batch in this thread, the claim, the
    sink write and the ack, each as wall time and as this process's CPU time, and the time
    Redis spent inside the claim and ack calls; microseconds per record."""
    store = WriteBehind(client, name, batch_size=batch, max_delay=60)
    value = os.urandom(size // 2).hex().encode()
    for i in range(0, n, 500):
        store.write_many([(f"bd:{j}", value) for j in range(i, min(n, i + 500))])
    spent = {"claim": [0.0, 0.0], "sink": [0.0, 0.0], "ack": [0.0, 0.0]}

    def timed(what: str, step: Callable[..., Any], *args: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        out = step(*args)
        spent[what][0] += time.perf_counter() - wall
        spent[what][1] += time.process_time() - cpu
        return out

    inside = _redis_usec(r)
    records = 0
    while True:
        claim = timed("claim", store.claim, batch)
        if not claim.records:
            break
        timed("sink", sink.write, claim.records)
        timed("ack", store.ack, claim)
        records += len(claim.records)
    inside = _redis_usec(r) - inside
    out = {f"{what}_{kind}": seconds * 1e6 / max(records, 1)
           for what, pair in spent.items() for kind, seconds in zip(("wall", "cpu"), pair)}
    out["redis"] = inside / max(records, 1)
    out["total_wall"] = sum(pair[0] for pair in spent.values()) * 1e6 / max(records, 1)
    return out


def run(args: argparse.Namespace) -> int:
    results: dict[str, Any] = {"records": args.records, "baseline_records": args.baseline_records,
                               "batch": args.batch, "value_bytes": args.value_bytes,
                               "flushers": args.flushers}
    with server_url(args.url) as url, tempfile.TemporaryDirectory() as tmp:
        r = redis.Redis.from_url(url)
        client = Client(r)
        client.load()
        sinks: dict[str, Any] = {}
        sinks["sqlite"] = SQLiteSink(os.path.join(tmp, "bench.db"))
        pg, why = _pg_sink(args.pg)
        if pg is not None:
            sinks["postgresql"] = pg
        else:
            results["postgresql_skipped"] = why
        try:
            for name, sink in sinks.items():
                per_record = _per_record(sink, _records(args.baseline_records,
                                                        args.value_bytes, 10**9))
                wb: dict[str, Any] = _through_write_behind(
                    client, sink, args.records, args.value_bytes, args.batch, f"bench-{name}",
                    args.flushers)
                wb["per_record_statements_per_s"] = per_record
                wb["breakdown_us_per_record"] = _breakdown(
                    client, r, sink, min(args.records, 10_000), args.value_bytes, args.batch,
                    f"bench-{name}-breakdown")
                wb["ratio"] = wb["flush_records_per_s"] / per_record
                results[name] = wb
        finally:
            for sink in sinks.values():
                if hasattr(sink, "drop"):
                    sink.drop()
                sink.close()
            r.delete(*[k for k in r.scan_iter("prl:wb:*")] or ["none"])
    if args.json:
        emit_json(results)
        return 0
    rows = []
    for name in ("postgresql", "sqlite"):
        if name not in results:
            continue
        m = results[name]
        rows += [
            (f"{name}: one statement per record", f"{m['per_record_statements_per_s']:,.0f}/s",
             "write-through baseline"),
            (f"{name}: write-behind, {args.flushers} workers x {args.batch}",
             f"{m['flush_records_per_s']:,.0f}/s",
             f"{m['ratio']:.1f} x per-record (target >= 20)"),
            (f"{name}: Redis accepts, single writes", f"{m['redis_writes_per_s_single']:,.0f}/s",
             "1 round trip each"),
            (f"{name}: Redis accepts, 500 per call", f"{m['redis_writes_per_s_batched']:,.0f}/s",
             "write_many"),
            (f"{name}: lag while flushing", f"{m['lag_ms_median']:.0f} ms median",
             f"{m['lag_ms_max']:.0f} ms max (max_delay 50 ms)"),
        ]
        b = m["breakdown_us_per_record"]
        rows += [
            (f"{name}: a flushed record, one worker", f"{b['total_wall']:.1f} us",
             f"inside Redis {b['redis']:.1f} us (claim + ack)"),
            *((f"{name}:   {what}", f"{b[what + '_wall']:.1f} us",
               f"{b[what + '_cpu']:.1f} us of it CPU in this process")
              for what in ("claim", "sink", "ack")),
        ]
    print_table(f"write-behind: {args.records} records of {args.value_bytes} bytes", rows,
                ("what", "rate", "note"))
    if "postgresql_skipped" in results:
        print(f"\nPostgreSQL: {results['postgresql_skipped']}")
    return 0
