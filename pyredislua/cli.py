"""The ``pyredislua`` command line.

Core commands live here; each area adds its own (``pyredislua queue ...``) from a module in
``pyredislua/commands/`` exposing ``register(subparsers)``, and its benchmark from a module in
``pyredislua/bench/`` exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Errors print as one line on stderr (exit status 1), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from collections.abc import Callable, Sequence
from typing import Any

import redis

from .engine.protocol import MODES
from .engine.render import render_library


def connect(url: str, mode: str = "auto") -> Any:
    """A sync Client on ``url``."""
    from .client import Client

    return Client(redis.Redis.from_url(url), mode=mode)  # type: ignore[arg-type]


def add_url(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--url", required=required,
                        help="Redis URL, e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--mode", choices=MODES, default="auto",
                        help="function (FCALL), script (EVALSHA) or auto (default)")


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
    report = connect(args.url, args.mode).load(force=args.force)
    print(f"{report.library} {report.version}: {report.action} ({report.mode} mode)"
          + (f"; server had {report.server_version}" if report.server_version else ""))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    client = connect(args.url, "function")
    lib = client.library
    server = client.server_libraries()
    shipped = {op.function: f"{op.name} {op.header.version}" for op in lib.operations.values()}
    on_server = server.get(lib.name, {})
    rows = []
    for function, desc in sorted(shipped.items()):
        state = on_server.get(function)
        status = "missing" if state is None else ("same" if state == desc else f"server: {state}")
        rows.append((function, desc, status))
    if args.json:
        print_json({"package": {"library": lib.name, "version": lib.version, "sha1": lib.sha},
                    "server": server, "functions": rows})
        return 0
    print(f"package ships {lib.name} {lib.version} (sha1 {lib.sha[:12]})")
    if not server:
        print("server holds no pyredislua library")
    for name, functions in sorted(server.items()):
        info = functions.get(f"{name}_library", "")  # "pyredislua <version> sha1=<sha>"
        parts = info.split()
        version = parts[1] if len(parts) > 1 else "?"
        sha = parts[2].removeprefix("sha1=") if len(parts) > 2 else ""
        build = ""
        if name == lib.name:
            build = ", the same build" if sha == lib.sha else ", another build"
        print(f"server holds {name} {version} (sha1 {sha[:12]}{build})")
    width = max(len(r[0]) for r in rows)
    for function, desc, status in rows:
        print(f"  {function:<{width}}  {desc:<24}  {status}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.url)


def _cmd_bench(args: argparse.Namespace) -> int:
    runner: Callable[[argparse.Namespace], int] = args.bench_run
    return runner(args)


def _discover(package: str) -> list[Any]:
    pkg = importlib.import_module(package)
    return [importlib.import_module(f"{package}.{m.name}")
            for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name)
            if not m.name.startswith("_")]


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
    p.add_argument("--url", help="Redis URL (default: start a throwaway redis-server)")
    p.set_defaults(run=_cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks against peers and the round-trip ceiling",
                           description="Benchmarks (tools, not tests).")
    bench_sub = bench.add_subparsers(dest="area", required=True, metavar="AREA")
    for module in _discover("pyredislua.bench"):
        if not hasattr(module, "run"):
            continue
        area = module.__name__.rsplit(".", 1)[1]
        bp = bench_sub.add_parser(area, help=module.__doc__.strip().splitlines()[0]
                                  if module.__doc__ else area,
                                  description=module.__doc__)
        bp.add_argument("--url", help="Redis URL (default: start a throwaway redis-server)")
        bp.add_argument("--json", action="store_true", help="machine-readable results")
        module.add_arguments(bp)
        bp.set_defaults(run=_cmd_bench, bench_run=module.run)

    for module in _discover("pyredislua.commands"):
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
