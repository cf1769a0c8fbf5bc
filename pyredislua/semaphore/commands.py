"""``pyredislua semaphore ...``: inspect a semaphore, or release a lease by its id."""

from __future__ import annotations

import argparse
from typing import Any

from .. import cli
from .ops import SemaphoreKeys, inspect_call, release_call


def _inspect(args: argparse.Namespace) -> int:
    client = cli.connect(args.url, args.mode, cluster=args.cluster)
    rows = []
    for name in args.name:
        state = client.run(inspect_call(SemaphoreKeys(name, args.prefix)))
        rows.append({"name": name, "in_use": state.in_use, "queued": state.queued,
                     "fence": state.fence, "now_ms": state.now_ms})
    if args.json:
        cli.print_json(rows)
        return 0
    for row in rows:
        print(f"{row['name']}: {row['in_use']} permit(s) in use, {row['queued']} waiter(s) "
              f"queued, last fence {row['fence']} (server time {row['now_ms']})")
    return 0


def _release(args: argparse.Namespace) -> int:
    client = cli.connect(args.url, args.mode, cluster=args.cluster)
    reply = client.run(release_call(SemaphoreKeys(args.name, args.prefix), args.lease,
                                    args.permits))
    print(f"{'released' if reply.released else 'not held (ended or released before)'}; "
          f"{reply.in_use} in use, {reply.waiters} queued, {reply.granted} grant(s) made")
    return 0 if reply.released else 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "semaphore", help="inspect a counting semaphore, release a lease",
        description="Counting semaphores (prl:sem:{name} and its suffixes).")
    sub = parser.add_subparsers(dest="semaphore_command", required=True, metavar="ACTION")

    p = sub.add_parser("inspect", help="permits in use, waiters queued, last fence (read-only)")
    cli.add_url(p)
    p.add_argument("name", nargs="+")
    p.add_argument("--prefix", default="prl")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_inspect)

    p = sub.add_parser("release", help="release a lease by its id (a stuck holder's)",
                       description="release a lease by its id; exit status 2 when not held")
    cli.add_url(p)
    p.add_argument("name")
    p.add_argument("lease")
    p.add_argument("--permits", type=int, required=True,
                   help="the semaphore's N (decides the grants to queued waiters)")
    p.add_argument("--prefix", default="prl")
    p.set_defaults(run=_release)
