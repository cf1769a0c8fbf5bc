"""``pyredislua queue ...``: stats, peek, job lookup, and dead-letter list/requeue/purge."""

from __future__ import annotations

import argparse
from typing import Any

from .. import cli
from ..client import Client
from .ops import JobInfo
from .queue import Queue


def _queue(args: argparse.Namespace) -> Queue[Client]:
    client = cli.connect(args.url, args.mode, cluster=args.cluster)
    return Queue(client, args.queue, prefix=args.prefix)


def _payload(raw: bytes, width: int = 60) -> str:
    try:
        shown = raw.decode()
    except UnicodeDecodeError:
        shown = repr(raw)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def _info_dict(info: JobInfo) -> dict[str, Any]:
    return {"id": info.id, "state": info.state, "score": info.score, "priority": info.priority,
            "attempts": info.attempts, "max_attempts": info.max_attempts,
            "reason": info.reason, "payload": _payload(info.payload, 10_000)}


def _print_rows(rows: list[JobInfo], score_name: str) -> None:
    if not rows:
        print("(none)")
        return
    print(f"{'id':<16}  {'prio':>6}  {'tries':>7}  {score_name:>14}  payload / reason")
    for r in rows:
        tail = _payload(r.payload) + (f"  [{r.reason}]" if r.reason else "")
        print(f"{r.id:<16}  {r.priority:>6}  {r.attempts:>3}/{r.max_attempts:<3}  "
              f"{r.score:>14}  {tail}")


def _stats(args: argparse.Namespace) -> int:
    s = _queue(args).stats()
    if args.json:
        cli.print_json(s.as_dict())
        return 0
    print(f"queue {args.queue!r}: ready {s.ready}, delayed {s.delayed}, active {s.active} "
          f"({s.expired_leases} expired, waiting for a reap), dead {s.dead}")
    totals = ", ".join(f"{k} {v}" for k, v in sorted(s.counters.items())
                       if k not in ("seq", "tokens"))
    print(f"totals: {totals or 'none yet'}")
    if s.priorities is None:
        print("per priority: too many distinct priorities to list")
    elif s.priorities:
        print("per priority (unfinished / ready):")
        for p in s.priorities:
            print(f"  {p.priority:>11}: {p.unfinished} / {p.ready}")
    return 0


_SCORES = {"ready": "priority", "delayed": "due at (ms)", "active": "deadline (ms)",
           "dead": "died at (ms)"}


def _peek(args: argparse.Namespace) -> int:
    rows = _queue(args).peek(args.state, args.count)
    if args.json:
        cli.print_json([_info_dict(r) for r in rows])
    else:
        _print_rows(rows, _SCORES[args.state])
    return 0


def _get(args: argparse.Namespace) -> int:
    info = _queue(args).get(args.id)
    if info is None:
        print(f"job {args.id} not found (finished or purged)")
        return 1
    d = _info_dict(info)
    d.update(backoff_ms=info.backoff_ms, key=info.key, enqueued_at_ms=info.enqueued_at_ms)
    cli.print_json(d)
    return 0


def _dead_list(args: argparse.Namespace) -> int:
    total, rows = _queue(args).dead(args.offset, args.count)
    if args.json:
        cli.print_json({"total": total, "jobs": [_info_dict(r) for r in rows]})
        return 0
    print(f"{total} dead letter(s) in {args.queue!r}")
    _print_rows(rows, "died at (ms)")
    return 0


def _dead_requeue(args: argparse.Namespace) -> int:
    done = _queue(args).requeue(args.ids, limit=args.limit)
    print(f"requeued {len(done)} job(s)" + (": " + " ".join(done) if done else ""))
    return 0


def _dead_purge(args: argparse.Namespace) -> int:
    if not args.ids and not args.yes:
        print("refusing to purge the oldest dead letters without --yes (or name the ids)")
        return 2
    n = _queue(args).purge(args.ids, limit=args.limit)
    print(f"purged {n} job(s)")
    return 0


def register(sub: Any) -> None:
    qp = sub.add_parser("queue", help="inspect a queue and its dead letters",
                        description="Inspect a pyredislua priority queue and manage dead letters.")
    qs = qp.add_subparsers(dest="queue_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, json: bool = True) -> None:
        p.add_argument("queue", help="queue name")
        cli.add_url(p)
        p.add_argument("--prefix", default="prl", help="key prefix (default prl)")
        if json:
            p.add_argument("--json", action="store_true", help="machine-readable output")

    p = qs.add_parser("stats", help="counts per state and priority, totals")
    common(p)
    p.set_defaults(run=_stats)

    p = qs.add_parser("peek", help="the next jobs of a state, without leasing them")
    common(p)
    p.add_argument("--state", choices=list(_SCORES), default="ready")
    p.add_argument("--count", type=int, default=10)
    p.set_defaults(run=_peek)

    p = qs.add_parser("get", help="one job by id")
    common(p, json=False)
    p.add_argument("id")
    p.set_defaults(run=_get)

    dp = qs.add_parser("dead", help="dead letters: list, requeue, purge")
    ds = dp.add_subparsers(dest="dead_command", required=True, metavar="ACTION")
    p = ds.add_parser("list", help="oldest first, with reason and attempts")
    common(p)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--count", type=int, default=20)
    p.set_defaults(run=_dead_list)
    p = ds.add_parser("requeue", help="back to ready with fresh attempts")
    common(p, json=False)
    p.add_argument("ids", nargs="*", help="job ids (default: the oldest --limit)")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(run=_dead_requeue)
    p = ds.add_parser("purge", help="delete for good")
    common(p, json=False)
    p.add_argument("ids", nargs="*", help="job ids (default: the oldest --limit, needs --yes)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--yes", action="store_true", help="purge the oldest without naming ids")
    p.set_defaults(run=_dead_purge)
