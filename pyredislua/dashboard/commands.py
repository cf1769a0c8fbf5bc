"""``pyredislua dashboard``: serve the web dashboard with uvicorn."""

from __future__ import annotations

import argparse

from .. import cli


def _dashboard(args: argparse.Namespace) -> int:
    from ..observe.commands import _shown_url, _targets
    from . import app

    try:
        import uvicorn
    except ImportError:
        raise RuntimeError("the dashboard is served by uvicorn: pip install "
                           "'pyredislua[dashboard]'") from None
    if args.refresh < 0:
        raise ValueError("--refresh must be 0 (none) or positive")
    client = cli.connect(args.url, "auto", cluster=args.cluster)
    limiters = [tuple(lim.split(":", 1)) if ":" in lim else lim for lim in args.limiter]
    served = app(client, targets=_targets(args), limiters=limiters,
                 allow_actions=args.allow_actions, server=_shown_url(args.url),
                 refresh=args.refresh)
    mode = "actions enabled" if args.allow_actions else "read-only"
    print(f"serving the dashboard ({mode}) on http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(served, host=args.host, port=args.port, log_level="warning",
                lifespan="off")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..observe.commands import _add_targets, add_server_arguments

    p = sub.add_parser("dashboard", help="serve a web dashboard of named queues, streams, "
                       "locks, limiters and write-behind stores (read-only by default)")
    add_server_arguments(p, url_help="Redis URL (any node of a cluster; a replica is fine "
                         "while actions are off)")
    _add_targets(p)
    p.add_argument("--limiter", action="append", default=[],
                   help="a rate limiter, NAME or NAME:TAG (the hash tag its calls use, when "
                   "not the name), shown from its per-minute series (repeatable)")
    p.add_argument("--allow-actions", action="store_true",
                   help="serve the requeue and purge actions on dead letters (default: "
                   "read-only, every POST refused with 403)")
    p.add_argument("--port", type=int, default=8155, help="HTTP port (default 8155)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--refresh", type=int, default=10,
                   help="seconds between page reloads (default 10, 0 for none)")
    p.set_defaults(run=_dashboard)
