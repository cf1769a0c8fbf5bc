#!/usr/bin/env python3
"""Instructions Redis executes per operation (callgrind), this tree's Lua beside another
checkout's, on the paths of ``pyredislua bench server``.

    tools/callgrind_cost.py --only queue,stream --against ../main [--calls 300] [--match TEXT]

Microseconds measured on a shared 2-core machine swing by 2-4x from round to round; instruction
counts do not. A ``redis-server`` runs under ``valgrind --tool=callgrind``, collecting only inside
``fcallCommand`` (so read-only operations, called with FCALL_RO, show 0); both libraries are
loaded side by side (the other one renamed), and for each case and library the counters are
zeroed after the setup, the measured calls are pipelined, and the dump's total is divided by
the number of calls. Needs ``valgrind`` and ``callgrind_control`` on PATH.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyredislua.bench import server as bench  # noqa: E402
from pyredislua.engine.render import render_library  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="queue,stream", help="areas, comma-separated")
    parser.add_argument("--against", type=Path, help="another checkout (its lua/ is measured)")
    parser.add_argument("--calls", type=int, default=300, help="measured calls per case")
    parser.add_argument("--match", default="", help="only cases whose operation contains this")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="callgrind-cost-")) / "cg"
    port = _free_port()
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=fcallCommand",
         f"--callgrind-out-file={out}.%p", "redis-server", "--port", str(port), "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port)
        for _ in range(600):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        variants = [bench.Variant("this", r, "function", render_library())]
        if args.against is not None:
            other = render_library(args.against.resolve() / "lua")
            variants.append(bench.Variant("against", r, "function",
                                          bench.renamed(other, "prlagainst_v1")))

        def control(flag: str) -> None:
            subprocess.run(["callgrind_control", flag, str(proc.pid)], check=True,
                           capture_output=True)

        def measure(variant: bench.Variant, case: bench.Case) -> float:
            r.flushall()
            names = [f"n{i}" for i in range(args.calls)]
            ctx: list[Any] = [case.setup(variant.client, n) for n in names]
            commands = [a for n, x in zip(names, ctx)
                        for a in variant.commands(case.measure(variant.client, n, x))]
            control("-z")
            for reply in bench._pipeline(r, commands):
                if isinstance(reply, Exception):
                    raise RuntimeError(reply)
            control("-d")
            dump = max(glob.glob(f"{out}.*"), key=os.path.getmtime)
            m = re.search(r"^(?:summary|totals):\s*(\d+)", Path(dump).read_text(), re.M)
            return int(m.group(1)) / args.calls if m else float("nan")

        head = "| operation | path | k instructions |"
        if len(variants) > 1:
            head += " against | ratio |"
        print(head + "\n|---|---|---:|" + ("---:|---:|" if len(variants) > 1 else ""))
        for area in args.only.split(","):
            for case in bench.AREAS[area]():
                if args.match not in case.row:
                    continue
                cells = [f"{measure(variants[0], case) / 1000:.1f}"]
                if len(variants) > 1:
                    try:
                        theirs = measure(variants[1], case)
                        cells += [f"{theirs / 1000:.1f}",
                                  f"{float(cells[0]) * 1000 / theirs:.2f}"]
                    except Exception as error:  # an op or a call the other tree lacks
                        print(f"<!-- {case.row} [{case.path}], against: {error} -->",
                              file=sys.stderr)
                        cells += ["n/a", ""]
                print(f"| {case.row} | {case.path} | " + " | ".join(cells) + " |", flush=True)
    finally:
        proc.terminate()
        proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
