"""``pyredislua writebehind ...``: statistics and dead letters of a write-behind store."""

from __future__ import annotations

import argparse
from typing import Any

from ..cli import add_url, connect, print_json


def _store(args: argparse.Namespace) -> Any:
    from .store import WriteBehind

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


def register(sub: Any) -> None:
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

