"""``pyredislua load-data``, ``pyredislua writebehind ...`` and ``pyredislua cache ...``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..cli import add_url, connect, print_json

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _load_data(args: argparse.Namespace) -> int:
    from ..sample_data import generate, load

    client = connect(args.url or DEFAULT_URL, args.mode, cluster=args.cluster)
    data = generate(scale=args.scale, seed=args.seed)

    def progress(kind: str, done: int) -> None:
        if not args.quiet:
            print(f"\r  {kind:<13} {done:>7}", end="", file=sys.stderr, flush=True)

    counts = load(client, data, progress=progress)
    if not args.quiet:
        print(file=sys.stderr)
    for kind, n in counts.items():
        print(f"{kind:<13} {n:>7}")
    return 0


def _store(args: argparse.Namespace) -> Any:
    from ..writebehind import WriteBehind

    return WriteBehind(connect(args.url, args.mode, cluster=args.cluster), args.store)


def _wb_stats(args: argparse.Namespace) -> int:
    s = _store(args).stats()
    out = {"dirty": s.dirty, "retry": s.retry, "claimed": s.claimed, "dead": s.dead,
           "lag_ms": s.lag_ms, "counters": s.counters}
    if args.json:
        print_json(out)
    else:
        print(f"store {args.store}: dirty {s.dirty}, in backoff {s.retry}, claimed {s.claimed}, "
              f"dead {s.dead}, lag {s.lag_ms} ms")
        print("  " + ", ".join(f"{k} {v}" for k, v in sorted(s.counters.items())))
    return 0


def _wb_dead(args: argparse.Namespace) -> int:
    for d in _store(args).dead(args.offset, args.count):
        print(f"{d.key}\tv{d.version}\tattempts {d.attempts}\t{d.error}")
    return 0


def _wb_requeue(args: argparse.Namespace) -> int:
    print(f"requeued {_store(args).requeue(args.keys, args.limit)}")
    return 0


def _cache_invalidate(args: argparse.Namespace) -> int:
    from ..cache import Cache

    client = connect(args.url, args.mode, cluster=args.cluster)
    result = Cache(client, args.namespace).invalidate_tag(args.tag)
    print(f"tag {args.tag!r}: generation {result.generation}, deleted {result.deleted}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("load-data", help="load the sample enterprise data set",
                       description="Load customers in tiers, product inventory, transactions, "
                       "performance metrics and active sessions (cache entries and write-behind "
                       f"stores). --url defaults to {DEFAULT_URL}.")
    add_url(p, required=False)
    p.add_argument("--scale", type=float, default=1.0, help="size multiplier (default 1)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=_load_data)

    wb = sub.add_parser("writebehind", help="inspect write-behind stores",
                        description="Write-behind store statistics and dead letters.")
    wsub = wb.add_subparsers(dest="wb_command", required=True, metavar="COMMAND")
    s = wsub.add_parser("stats", help="counts, lag and counters of a store")
    add_url(s)
    s.add_argument("--store", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=_wb_stats)
    d = wsub.add_parser("dead", help="list dead-lettered records")
    add_url(d)
    d.add_argument("--store", required=True)
    d.add_argument("--offset", type=int, default=0)
    d.add_argument("--count", type=int, default=100)
    d.set_defaults(run=_wb_dead)
    q = wsub.add_parser("requeue", help="make dead-lettered records dirty again")
    add_url(q)
    q.add_argument("--store", required=True)
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("keys", nargs="*", help="record keys (default: the oldest --limit)")
    q.set_defaults(run=_wb_requeue)

    c = sub.add_parser("cache", help="cache maintenance", description="Cache maintenance.")
    csub = c.add_subparsers(dest="cache_command", required=True, metavar="COMMAND")
    i = csub.add_parser("invalidate-tag", help="invalidate every entry carrying a tag")
    add_url(i)
    i.add_argument("--namespace", required=True)
    i.add_argument("--tag", required=True)
    i.set_defaults(run=_cache_invalidate)
