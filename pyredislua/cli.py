"""The ``pyredislua`` command line.

Core commands live here. Each area package adds its own: ``pyredislua/<area>/commands.py``
exposes ``register(subparsers)`` (``pyredislua queue ...``), ``pyredislua/<area>/bench.py``
exposes ``add_arguments(parser)`` and ``run(args) -> int`` (``pyredislua bench <area>``); the
benchmarks that span areas live in ``pyredislua/bench/``.
Errors print as one line on stderr (exit status 1), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import pkgutil
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from .areas import area_modules
from .engine.protocol import MODES
from .engine.render import render_library

_TRUE = ("1", "true", "yes", "on")


def _cluster_in_url(url: str) -> tuple[str, bool | None]:
    """``url`` without a ``cluster=`` query parameter (redis-py rejects it), and its value."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [v for k, v in query if k.lower() == "cluster"]
    if not flags:
        return url, None
    rest = urlencode([(k, v) for k, v in query if k.lower() != "cluster"])
    return urlunsplit(parts._replace(query=rest)), flags[-1].lower() in _TRUE


def _is_cluster_node(conn: redis.Redis) -> bool:
    """Whether the server at the other end runs in cluster mode (``INFO cluster``); a server
    that refuses INFO is taken for a standalone one."""
    try:
        return bool(int(conn.info("cluster").get("cluster_enabled", 0)))
    except redis.ResponseError:
        return False


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
_SENTINEL_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")


def _sentinel_client(url: str, mode: str) -> Any:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``: a Client
    on the primary the sentinels name for ``service`` (asked again after a failover). The
    user and password are the primary's; ``?sentinel_password=`` authenticates to the
    sentinels, ``?socket_timeout=`` and ``?socket_connect_timeout=`` (seconds) apply to both;
    ``rediss+sentinel`` reaches the primary over TLS."""
    from redis.sentinel import Sentinel

    from .client import Client

    parts = urlsplit(url)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    sentinels = []
    for host in filter(None, hosts.split(",")):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"a Sentinel URL lists host:port pairs, got {host!r} in {url!r}")
        sentinels.append((name.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path or len(path) > 2 or not (len(path) == 1 or path[1].isdigit()):
        raise ValueError(f"expected redis+sentinel://host:port[,host:port...]/service[/db], "
                         f"got {url!r}")
    query = dict(parse_qsl(parts.query))
    timeouts = {k: float(query[k]) for k in _SENTINEL_TIMEOUTS if k in query}
    sentinel_kwargs: dict[str, Any] = dict(timeouts)
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query["sentinel_password"]
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs,  # type: ignore[no-untyped-call]
                       **timeouts)
    conn = manager.master_for(  # type: ignore[no-untyped-call]
        path[0], db=int(path[1]) if len(path) > 1 else 0, username=parts.username or None,
        password=parts.password or None, ssl=parts.scheme.startswith("rediss"), **timeouts)
    return Client(conn, mode=mode)  # type: ignore[arg-type]


def connect(url: str, mode: str = "auto", *, cluster: bool | None = None) -> Any:
    """A sync Client on ``url``: on a Redis Cluster (``cluster=True``, ``?cluster=true`` in the
    URL, or detected from ``INFO cluster`` when ``cluster`` is None) a ``redis.RedisCluster``
    client that reaches every primary; on a ``redis+sentinel://`` URL the primary the
    sentinels name (see :func:`_sentinel_client`); else a ``redis.Redis`` one."""
    from .client import Client

    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        if cluster:
            raise ValueError("a Sentinel URL names a primary, not a cluster (drop --cluster)")
        return _sentinel_client(url, mode)
    url, in_url = _cluster_in_url(url)
    if cluster is None:
        cluster = in_url
    if cluster:
        return Client(redis.RedisCluster.from_url(url), mode=mode)  # type: ignore[arg-type]
    conn = redis.Redis.from_url(url)
    if cluster is None and _is_cluster_node(conn):
        conn.close()
        return Client(redis.RedisCluster.from_url(url), mode=mode)  # type: ignore[arg-type]
    return Client(conn, mode=mode)  # type: ignore[arg-type]


def add_url(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--url", required=required,
                        help="Redis URL, e.g. redis://127.0.0.1:6379/0 (any node of a cluster; "
                        "redis+sentinel://host:26379[,host:port...]/service for Sentinel)")
    parser.add_argument("--mode", choices=MODES, default="auto",
                        help="function (FCALL), script (EVALSHA) or auto (default)")
    parser.add_argument("--cluster", action=argparse.BooleanOptionalAction, default=None,
                        help="talk to a Redis Cluster (default: detected from INFO cluster)")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _cmd_render(args: argparse.Namespace) -> int:
    lib = render_library()
    if args.script:
        print(lib.operation(args.script).script, end="")
    else:
        print(lib.code, end="")
    return 0


def _cmd_reference(args: argparse.Namespace) -> int:
    from .engine.reference import render_reference

    print(render_reference(render_library()), end="")
    return 0


def _cmd_load(args: argparse.Namespace) -> int:
    client = connect(args.url, args.mode, cluster=args.cluster)
    report = client.load(force=args.force)
    print(f"{report.library} {report.version}: {report.action} ({report.mode} mode)"
          + (f"; server had {report.server_version}" if report.server_version else ""))
    if _is_cluster_client(client):
        width = max((len(n) for n in report.nodes), default=0)
        for node, action in sorted(report.nodes.items()):
            print(f"  {node:<{width}}  {action}")
    unreachable = sorted(n for n, a in report.nodes.items() if a == "unreachable")
    if unreachable:
        print(f"pyredislua: error: not loaded on {', '.join(unreachable)} (unreachable)",
              file=sys.stderr)
        return 1
    return 0


def _is_cluster_client(client: Any) -> bool:
    return hasattr(client.redis, "get_primaries")


def _describe(name: str, functions: dict[str, str], lib: Any) -> str:
    info = functions.get(f"{name}_library", "")  # "pyredislua <version> sha1=<sha>"
    parts = info.split()
    version = parts[1] if len(parts) > 1 else "?"
    sha = parts[2].removeprefix("sha1=") if len(parts) > 2 else ""
    build = ""
    if name == lib.name:
        build = ", the same build" if sha == lib.sha else ", another build"
    return f"{name} {version} (sha1 {sha[:12]}{build})"


def _cmd_list(args: argparse.Namespace) -> int:
    client = connect(args.url, "function", cluster=args.cluster)
    lib = client.library
    by_node = client.server_libraries_by_node()
    shipped = {op.function: f"{op.name} {op.header.version}" for op in lib.operations.values()}
    reached = {n: s for n, s in by_node.items() if not isinstance(s, BaseException)}
    several = _is_cluster_client(client)
    rows = []
    for function, desc in sorted(shipped.items()):
        states = {n: s.get(lib.name, {}).get(function) for n, s in reached.items()}
        if all(state == desc for state in states.values()):
            status = "same"
        elif not several:
            state = next(iter(states.values()), None)
            status = "missing" if state is None else f"server: {state}"
        else:
            status = "; ".join(
                f"{n}: {'missing' if state is None else state}"
                for n, state in sorted(states.items()) if state != desc)
        rows.append((function, desc, status))
    if args.json:
        server: dict[str, Any] = {}
        for state in reached.values():
            for name, functions in state.items():
                server.setdefault(name, {}).update(functions)
        print_json({"package": {"library": lib.name, "version": lib.version, "sha1": lib.sha},
                    "server": server, "functions": rows,
                    "nodes": {n: (s if n in reached else f"unreachable: {s}")
                              for n, s in by_node.items()}})
        return 0 if len(reached) == len(by_node) else 1
    print(f"package ships {lib.name} {lib.version} (sha1 {lib.sha[:12]})")
    for node, state in sorted(by_node.items()):
        where = f"{node}: " if several else ""
        if isinstance(state, BaseException):
            print(f"{where}unreachable ({state})")
        elif not state:
            print(f"{where}server holds no pyredislua library")
        for name, functions in sorted(state.items() if node in reached else []):
            print(f"{where}server holds {_describe(name, functions, lib)}")
    width = max(len(r[0]) for r in rows)
    for function, desc, status in rows:
        print(f"  {function:<{width}}  {desc:<24}  {status}")
    return 0 if len(reached) == len(by_node) else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.url, cluster=args.cluster)


def _cmd_bench(args: argparse.Namespace) -> int:
    runner: Callable[[argparse.Namespace], int] = args.bench_run
    return runner(args)


DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _load_data(args: argparse.Namespace) -> int:
    from .sample_data import generate, load

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


def _benchmarks() -> list[tuple[str, Any]]:
    """(name, module) of every benchmark: an area's ``bench`` module is named after the area,
    the cross-area ones in ``pyredislua/bench/`` after their module."""
    import pyredislua.bench as shared

    found = [(m.__name__.split(".")[1], m) for m in area_modules("bench")]
    for info in pkgutil.iter_modules(shared.__path__):
        if not info.name.startswith("_"):
            found.append((info.name, importlib.import_module(f"pyredislua.bench.{info.name}")))
    return sorted(found, key=lambda item: item[0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyredislua",
        description="Atomic Redis primitives as versioned Lua: render, load, inspect, demo, bench.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("render", help="print the Functions library (pipe to FUNCTION LOAD)",
                       description="Print the Functions library: "
                       "pyredislua render | redis-cli -x FUNCTION LOAD REPLACE")
    p.add_argument("--script", metavar="OP",
                   help="print one operation's standalone EVAL script instead, e.g. lock.acquire")
    p.set_defaults(run=_cmd_render)

    p = sub.add_parser("reference", help="print the operations reference (Markdown)",
                       description="Print the reference of every operation, generated from "
                       "the contract headers in lua/.")
    p.set_defaults(run=_cmd_reference)

    p = sub.add_parser("load", help="load the library (or scripts) into a server",
                       description="Load the Lua code: version-aware, never downgrades.")
    add_url(p)
    p.add_argument("--force", action="store_true",
                   help="replace a same-version library built from other code")
    p.set_defaults(run=_cmd_load)

    p = sub.add_parser("list", help="what the server has vs what the package ships",
                       description="Compare the server's pyredislua functions with this package's.")
    add_url(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=_cmd_list)

    p = sub.add_parser("demo", help="show the primitives at work",
                       description="Run the demo against --url, or a throwaway redis-server.")
    p.add_argument("--url", help="Redis URL (default: start a throwaway redis-server; "
                   "any node of a cluster)")
    p.add_argument("--cluster", action=argparse.BooleanOptionalAction, default=None,
                   help="talk to a Redis Cluster (default: detected from INFO cluster)")
    p.set_defaults(run=_cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks against peers and the round-trip ceiling",
                           description="Benchmarks (tools, not tests).")
    bench_sub = bench.add_subparsers(dest="area", required=True, metavar="AREA")
    for area, module in _benchmarks():
        bp = bench_sub.add_parser(area, help=module.__doc__.strip().splitlines()[0]
                                  if module.__doc__ else area,
                                  description=module.__doc__)
        bp.add_argument("--url", help="Redis URL (default: start a throwaway redis-server)")
        bp.add_argument("--json", action="store_true", help="machine-readable results")
        module.add_arguments(bp)
        bp.set_defaults(run=_cmd_bench, bench_run=module.run)

    p = sub.add_parser("load-data", help="load the sample enterprise data set",
                       description="Load customers in tiers, product inventory, transactions, "
                       "performance metrics and active sessions (cache entries and write-behind "
                       f"stores). --url defaults to {DEFAULT_URL}.")
    add_url(p, required=False)
    p.add_argument("--scale", type=float, default=1.0, help="size multiplier (default 1)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=_load_data)

    for module in area_modules("commands"):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except KeyboardInterrupt:
        print("pyredislua: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # one clear line, not a traceback
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"pyredislua: error: {type(error).__name__}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
