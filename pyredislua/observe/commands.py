"""``pyredislua doctor``, ``memory``, ``metrics`` and ``top``."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from .. import cli
from .doctor import examine, worst
from .memory import MemoryReport, measure_all

_MARK = {"ok": "ok    ", "warn": "WARN  ", "unsafe": "UNSAFE"}


def _doctor(args: argparse.Namespace) -> int:
    client = cli.connect(args.url, "auto", cluster=args.cluster)
    findings = examine(client.redis, client.library)
    verdict = worst(findings)
    if args.json:
        cli.print_json({"verdict": verdict, "findings": [f.as_dict() for f in findings]})
    else:
        for f in findings:
            if f.level == "ok" and args.quiet:
                continue
            print(f"{_MARK[f.level]} {f.node} {f.check}: {f.found}")
            if f.fix and f.level != "ok":
                print(textwrap.indent(textwrap.fill(f"fix: {f.fix}", 96), " " * 7))
        counts = {level: sum(f.level == level for f in findings) for level in _MARK}
        print(f"{counts['unsafe']} unsafe, {counts['warn']} warnings, {counts['ok']} ok")
    return 1 if verdict == "unsafe" else 0


def _print_memory(report: MemoryReport) -> None:
    state = "complete" if report.scan_complete else "stopped at --scan-limit"
    print(f"node {report.node}: {report.keys_seen:,} library keys seen (scan {state})")
    print(f"  {'area':<12} {'unit':<12} {'instances':>9} {'sampled':>8} {'units':>9} "
          f"{'bytes':>12} {'bytes/unit':>10} {'est. total':>12}")
    for a in report.areas:
        if not a.instances_seen:
            continue
        per = f"{a.bytes_per_unit:,.0f}" if a.bytes_per_unit is not None else "-"
        total = a.bytes * a.instances_seen // max(a.instances_sampled, 1)
        print(f"  {a.area:<12} {a.unit:<12} {a.instances_seen:>9,} {a.instances_sampled:>8,} "
              f"{a.units:>9,} {a.bytes:>12,} {per:>10} {total:>12,}")
    for a in report.areas:
        for role, encodings in sorted(a.encodings.items()):
            keys, used = a.by_role[role]
            shown = ", ".join(f"{enc} {n}" for enc, n in sorted(encodings.items()))
            print(f"    {a.area} {role}: {keys} keys, {used:,} bytes ({shown})")
    if any(a.beyond_compact for a in report.areas):
        print("  beyond their compact encoding (each element costs more; see the limits):")
        for a in report.areas:
            for line in a.beyond_compact[:10]:
                print(f"    {line}")
    limits = ", ".join(f"{k} {v}" for k, v in sorted(report.compact_limits.items()))
    print(f"  compact limits: {limits or 'unknown (CONFIG GET refused)'}")
    if report.no_ttl:
        print(f"  {len(report.no_ttl)} library key(s) without a TTL or a documented lifecycle:")
        for key in report.no_ttl[:50]:
            print(f"    {key}")
    else:
        print("  every library key seen has a TTL or a documented lifecycle")
    if report.other_keys:
        print(f"  {report.other_keys:,} other key(s) under the prefix (compare-and-set values, "
              "or not the library's)")


def _memory(args: argparse.Namespace) -> int:
    client = cli.connect(args.url, "auto", cluster=args.cluster)
    reports = measure_all(client.redis, prefix=args.prefix, sample=args.sample,
                          scan_limit=args.scan_limit)
    if args.json:
        cli.print_json([r.as_dict() for r in reports])
        return 0
    for report in reports:
        _print_memory(report)
    return 0


def _collector(args: argparse.Namespace) -> Any:
    from .prometheus import PyRedisLuaCollector

    client = cli.connect(args.url, "auto", cluster=args.cluster)
    streams = [tuple(s.split(":", 1)) if ":" in s else s for s in args.stream]
    series = []
    for text in args.series:
        parts = text.split(":", 2)
        if len(parts) < 2 or not all(parts):
            raise SystemExit(f"--series takes KIND:NAME[:TAG], got {text!r}")
        series.append((parts[0], parts[1], parts[2] if len(parts) > 2 else None))
    return PyRedisLuaCollector(client, queues=args.queue, streams=streams, stores=args.store,
                               locks=args.lock, prefix=args.prefix, series=series)


def _targets(args: argparse.Namespace) -> Any:
    from .figures import Targets

    streams = tuple((s.split(":", 1)[0], s.split(":", 1)[1]) if ":" in s else (s, "workers")
                    for s in args.stream)
    return Targets(tuple(args.queue), streams, tuple(args.store), tuple(args.lock), args.prefix)


def _shown_url(url: str) -> str:
    """The URL without its credentials, for a header line."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _top(args: argparse.Namespace) -> int:
    from .top import run

    if args.interval <= 0:
        raise ValueError("--interval must be positive")
    client = cli.connect(args.url, "auto", cluster=args.cluster)
    return run(client, _targets(args), server=_shown_url(args.url), interval=args.interval,
               once=args.once)


def _metrics_show(args: argparse.Namespace) -> int:
    from .prometheus import exposition

    print(exposition(_collector(args)), end="")
    return 0


def _metrics_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_collector(args))
    start_http_server(args.port, addr=args.host, registry=registry)
    print(f"serving Prometheus metrics on http://{args.host}:{args.port}/metrics", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check a server (or every node of a cluster) against "
                       "what the primitives need; exit 1 when something is unsafe")
    add_server_arguments(p, prefix=False)
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--quiet", action="store_true", help="print only warnings and unsafe findings")
    p.set_defaults(run=_doctor)

    p = sub.add_parser("memory", help="bytes per lock, job, record, limiter key and cache "
                       "entry, encodings, and keys without a TTL (read-only, sampled)")
    add_server_arguments(p)
    p.add_argument("--sample", type=int, default=50,
                   help="instances measured per area (default 50)")
    p.add_argument("--scan-limit", type=int, default=100_000,
                   help="keys visited by SCAN at most, per node (default 100000)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_memory)

    p = sub.add_parser("metrics", help="the figures Redis keeps about named queues, streams, "
                       "write-behind stores and locks, for Prometheus")
    msub = p.add_subparsers(dest="metrics_command", required=True)
    for name, helptext, run in (
            ("show", "print one scrape in Prometheus' text format", _metrics_show),
            ("serve", "serve /metrics over HTTP until interrupted", _metrics_serve)):
        m = msub.add_parser(name, help=helptext)
        add_server_arguments(m)
        _add_targets(m)
        m.add_argument("--series", action="append", default=[], metavar="KIND:NAME[:TAG]",
                       help="the metrics a primitive's operations record themselves (kind "
                       "queue, lock, limiter, store or cache; a limiter's TAG: its calls' "
                       "hash tag, default the name); repeatable")
        if name == "serve":
            m.add_argument("--port", type=int, default=9187, help="HTTP port (default 9187)")
            m.add_argument("--host", default="127.0.0.1", help="address to bind (default "
                           "127.0.0.1)")
        m.set_defaults(run=run)

    p = sub.add_parser("top", help="a live terminal view of named queues, streams, write-behind "
                       "stores and locks, with rates between refreshes (Ctrl-C exits)")
    add_server_arguments(p)
    _add_targets(p)
    p.add_argument("--interval", type=float, default=2.0,
                   help="seconds between refreshes (default 2)")
    p.add_argument("--once", action="store_true",
                   help="print one frame without escape codes and exit (for scripts)")
    p.set_defaults(run=_top)


def add_server_arguments(p: argparse.ArgumentParser, *, prefix: bool = True,
                         url_help: str = "Redis URL (any node of a cluster)") -> None:
    """--url, --cluster and (``prefix``) --prefix: the server every operating command reads."""
    p.add_argument("--url", required=True, help=url_help)
    p.add_argument("--cluster", action=argparse.BooleanOptionalAction, default=None,
                   help="talk to a Redis Cluster (default: detected from INFO cluster)")
    if prefix:
        p.add_argument("--prefix", default="prl", help="the library's key prefix (default prl)")


def _add_targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", action="append", default=[], help="a queue name (repeatable)")
    p.add_argument("--stream", action="append", default=[],
                   help="a Streams queue, NAME or NAME:GROUP (repeatable; group workers)")
    p.add_argument("--store", action="append", default=[],
                   help="a write-behind store name (repeatable)")
    p.add_argument("--lock", action="append", default=[], help="a lock name (repeatable)")
