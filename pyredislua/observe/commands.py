"""``pyredislua doctor`` and ``pyredislua memory``."""

from __future__ import annotations

import argparse
import textwrap

from .. import cli
from .doctor import examine, worst

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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check a server (or every node of a cluster) against "
                       "what the primitives need; exit 1 when something is unsafe")
    p.add_argument("--url", required=True, help="Redis URL (any node of a cluster)")
    p.add_argument("--cluster", action=argparse.BooleanOptionalAction, default=None,
                   help="talk to a Redis Cluster (default: detected from INFO cluster)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--quiet", action="store_true", help="print only warnings and unsafe findings")
    p.set_defaults(run=_doctor)
