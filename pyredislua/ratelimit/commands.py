"""``pyredislua ratelimit ...``: inspect, check, hit or reset a rate limiter key."""

from __future__ import annotations

import argparse
from typing import Any

from .. import cli
from .ops import ALGORITHMS, Decision, Limit, Rate, decide_call, inspect_call, reset_call


def _decision_dict(d: Decision) -> dict[str, Any]:
    return {"allowed": d.allowed, "remaining": d.remaining, "retry_after_ms": d.retry_after_ms,
            "reset_after_ms": d.reset_after_ms, "now_ms": d.now_ms}


def _inspect(args: argparse.Namespace) -> int:
    client = cli.connect(args.url, args.mode, cluster=args.cluster)
    states = [client.run(inspect_call(key)) for key in args.key]
    if args.json:
        cli.print_json([vars(s) for s in states])
        return 0
    for s in states:
        if s.type == "none":
            print(f"{s.key}: absent (the limiter is full)")
            continue
        ttl = f"expires in {s.pttl_ms} ms" if s.pttl_ms >= 0 else "NO TTL"
        if s.type == "zset":
            detail = f"{s.count} entries, oldest {s.oldest}, newest {s.newest}"
        elif s.fields is not None:
            detail = " ".join(f"{k}={v}" for k, v in s.fields.items())
        else:
            detail = repr(s.value) if s.value is not None else ""
        what = s.algorithm if s.algorithm != "unknown" else f"NOT rate limiter state ({s.type})"
        print(f"{s.key}: {what} {detail}; {ttl} (server time {s.now_ms})")
    return 0


def _reset(args: argparse.Namespace) -> int:
    client = cli.connect(args.url, args.mode, cluster=args.cluster)
    # one call per key: keys given here need not share a hash tag
    existed = sum(client.run(reset_call([key])) for key in args.key)
    print(f"reset {len(args.key)} key(s); {existed} held state")
    return 0


def _decide(args: argparse.Namespace, peek: bool) -> int:
    client = cli.connect(args.url, args.mode, cluster=args.cluster)
    rate = Rate.parse(args.rate).with_burst(args.burst)
    d = client.run(decide_call([Limit(args.algorithm, rate, args.key)], args.cost, peek=peek))
    if args.json:
        cli.print_json(_decision_dict(d))
    else:
        verdict = "allowed" if d.allowed else "denied"
        retry = "never" if d.retry_after_ms < 0 else f"{d.retry_after_ms} ms"
        print(f"{verdict}: remaining {d.remaining}, retry after {retry}, "
              f"reset after {d.reset_after_ms} ms")
    return 0 if d.allowed else 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ratelimit", help="inspect, check, hit or reset rate limiter keys",
        description="Rate limiter keys (prl:rl:{tag}:<algorithm>:<name>:<identity>:<period_ms>).")
    sub = parser.add_subparsers(dest="ratelimit_command", required=True, metavar="ACTION")

    p = sub.add_parser("inspect", help="show the raw state of keys (read-only)")
    cli.add_url(p)
    p.add_argument("key", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_inspect)

    p = sub.add_parser("reset", help="forget the state of keys (back to full); refuses keys "
                       "that hold anything else")
    cli.add_url(p)
    p.add_argument("key", nargs="+")
    p.set_defaults(run=_reset)

    for name, peek, text in (("check", True, "what a hit would decide, charging nothing"),
                             ("hit", False, "charge a hit")):
        p = sub.add_parser(name, help=text, description=f"{text}; exit status 2 when denied")
        cli.add_url(p)
        p.add_argument("key")
        p.add_argument("--algorithm", choices=ALGORITHMS, default="gcra")
        p.add_argument("--rate", required=True, help="e.g. 100/s, 10/100ms, 1000/hour")
        p.add_argument("--burst", type=int, default=None, help="gcra/token_bucket burst")
        p.add_argument("--cost", type=int, default=0 if peek else 1)
        p.add_argument("--json", action="store_true")
        p.set_defaults(run=lambda a, peek=peek: _decide(a, peek))
