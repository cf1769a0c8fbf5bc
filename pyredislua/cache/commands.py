"""``pyredislua cache ...``: cache maintenance."""

from __future__ import annotations

import argparse
from typing import Any

from ..cli import add_url, connect


def _cache_invalidate(args: argparse.Namespace) -> int:
    from .cache import Cache

    client = connect(args.url, args.mode, cluster=args.cluster)
    result = Cache(client, args.namespace).invalidate_tag(args.tag)
    print(f"tag {args.tag!r}: generation {result.generation}, deleted {result.deleted}")
    return 0


def register(sub: Any) -> None:
    c = sub.add_parser("cache", help="cache maintenance", description="Cache maintenance.")
    csub = c.add_subparsers(dest="cache_command", required=True, metavar="COMMAND")
    i = csub.add_parser("invalidate-tag", help="invalidate every entry carrying a tag")
    add_url(i)
    i.add_argument("--namespace", required=True)
    i.add_argument("--tag", required=True)
    i.set_defaults(run=_cache_invalidate)
