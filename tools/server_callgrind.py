#!/usr/bin/env python3
"""Instructions inside Redis per operation, under callgrind: a noise-free companion to
``pyredislua bench server`` (whose microseconds move ±30 % on a shared machine).

    .venv/bin/python tools/server_callgrind.py [--only PREFIX ...] [--calls 200]
        [--against CHECKOUT] [--no-peers]

Runs a redis-server under ``valgrind --tool=callgrind`` collecting only inside
``processCommand`` (a command sent by a client, from its parsed arguments to its queued reply,
including everything a script runs inside; network reads and writes excluded). Each case of
``pyredislua bench server`` (same paths, same setup) is put on its path unmeasured, the
counters are zeroed, the measured calls sent pipelined, and the counters dumped: the figure is
instructions per operation (Ir), exact and repeatable to well under 1 %. Peers (``limits``,
redis-py ``Lock``, python-redis-lock) are recorded and replayed as in the bench, and the
reference points (an empty FCALL, ``EVALSHA 'return 1'``) are measured alike. ``--against``
renders another checkout's ``lua/`` under a second library name and measures it beside.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from pyredislua.bench import server as bench
from pyredislua.engine.render import render_library
from pyredislua.server import free_port, redis_server_binary


class Callgrind:
    def __init__(self, workdir: str) -> None:
        self.port = free_port()
        self.dir = workdir
        self.out = os.path.join(workdir, "cg.out")
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             "--toggle-collect=processCommand", f"--callgrind-out-file={self.out}",
             redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.r = redis.Redis(port=self.port, socket_timeout=120)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.2)
        self.dumps = 0

    def _control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def zero(self) -> None:
        self.r.ping()
        self._control("-z")

    def instructions(self) -> int:
        """Instructions collected since the last zero (dumped to a file and read back)."""
        self._control("-d")
        self.dumps += 1
        path = f"{self.out}.{self.dumps}"
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        for line in Path(path).read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
        raise RuntimeError(f"no totals in {path}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def per_op(cg: Callgrind, commands: list[tuple[Any, ...]], instances: int) -> float:
    cg.zero()
    replies = bench._pipeline(cg.r, commands)
    total = cg.instructions()
    for reply in replies:
        if isinstance(reply, Exception):
            raise RuntimeError(f"{type(reply).__name__}: {reply}")
    return total / instances


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="PREFIX")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--mode", choices=("function", "script"), default="function")
    parser.add_argument("--against", type=Path, metavar="CHECKOUT")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="prl-callgrind-") as workdir:
        cg = Callgrind(workdir)
        try:
            r = cg.r
            r.function_load(
                "#!lua name=prlbench\nredis.register_function{function_name='prlbench_empty',"
                " callback=function() return 1 end, flags={'no-writes'}}\n"
                "redis.register_function{function_name='prlbench_floor', callback="
                f"function(KEYS) {bench._CHECK_FLOOR} end}}", replace=True)
            variants = [bench.Variant("this", r, args.mode, render_library())]
            if args.against is not None:
                other = render_library(args.against.resolve() / "lua")
                variants.append(bench.Variant("against", r, args.mode,
                                              bench.renamed(other, "prlagainst_v1")))
            names = [f"c{i}" for i in range(args.calls)]
            rows: list[tuple[str, str, list[str]]] = []
            for case in bench.cases():
                if not bench._selected(case.row, args.only):
                    continue
                figures = []
                for v in variants:
                    try:
                        r.flushall()
                        ctx = [case.setup(v.client, n) for n in names]
                        commands = [a for n, x in zip(names, ctx)
                                    for a in v.commands(case.measure(v.client, n, x))]
                        figures.append(f"{per_op(cg, commands, len(names)) / 1000:.1f}k")
                    except Exception as error:  # an op the other tree lacks
                        figures.append(f"error {type(error).__name__}")
                if len(figures) == 2 and not figures[1].startswith("error") and \
                        not figures[0].startswith("error"):
                    figures.append(f"{float(figures[0][:-1]) / float(figures[1][:-1]):.2f}")
                rows.append((case.row, case.path, figures))
                print(f"{case.row} [{case.path}]: {' '.join(figures)}", file=sys.stderr)
            empty = [("FCALL", "prlbench_empty", 0)] * len(names)
            rows.append(("FCALL of an empty function", "reference",
                         [f"{per_op(cg, empty, len(names)) / 1000:.1f}k"]))
            sha = r.script_load("return 1")
            ret1 = [("EVALSHA", sha, 0)] * len(names)
            rows.append(("EVALSHA 'return 1'", "reference",
                         [f"{per_op(cg, ret1, len(names)) / 1000:.1f}k"]))
            for label, path, verb, name in (
                    ("FCALL of a check's commands only", "TIME, GET, SET PX, 10-number reply",
                     "FCALL", "prlbench_floor"),
                    ("EVALSHA of a check's commands only", "the same, in the scripts' Lua",
                     "EVALSHA", r.script_load(bench._CHECK_FLOOR))):
                r.flushall()
                keys = [f"{{{n}}}:floor" for n in names]
                bench._pipeline(r, [("SET", k, "gcra:1764000000123:123456:1000", "PX",
                                     3_600_000) for k in keys])
                rows.append((label, path, [
                    f"{per_op(cg, [(verb, name, 1, k) for k in keys], len(names)) / 1000:.1f}k"]))
            if not args.no_peers:
                url = f"redis://127.0.0.1:{cg.port}/0"
                for peer in bench.peers():
                    if not bench._selected(peer.row, args.only):
                        continue
                    conn, setup, op = peer.make(url)
                    setup("warm-up")
                    op("warm-up")
                    r.flushall()
                    rec = bench.Recorder(conn)
                    for n in names:
                        rec.phase = "setup"
                        setup(n)
                        rec.phase = "op"
                        op(n)
                    rec.phase = None
                    r.flushall()
                    bench._pipeline(r, rec.commands("setup"))
                    rows.append((peer.row, peer.path,
                                 [f"{per_op(cg, rec.commands('op'), len(names)) / 1000:.1f}k"]))
                    conn.close()
        finally:
            cg.close()
            for f in glob.glob(os.path.join(workdir, "cg.out*")):
                os.unlink(f)
    head = ["operation", "path", "instructions"] + (
        ["against", "ratio"] if args.against else [])
    table = [head] + [[op, path, *figs] for op, path, figs in rows]
    widths = [max(len(row[i]) if i < len(row) else 0 for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row + [""] * (len(head) - len(row)),
                                                          widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return 0


if __name__ == "__main__":
    sys.exit(main())
