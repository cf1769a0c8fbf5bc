#!/usr/bin/env python3
"""Server-side cost of each rate-limit path, from INFO commandstats: microseconds per call of
the operation (FCALL or EVALSHA) and how many Redis commands it ran inside.

    tools/ratelimit_cost.py [--mode function|script] [--rounds 5] [--calls 400] [--base DIR]

``--base DIR`` measures another tree's Lua (e.g. ``git archive main | tar -x -C DIR``) side by
side on the same throwaway server, alternating phases between the two, so load on a shared
machine hits both alike; each figure is the median over the rounds. Paths: an admitted hit on
existing state (far from the limit), a denied hit, a read-only check, a fresh key, and a
two-algorithm all-or-none hit, each over 20 identities with periods of an hour.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyredislua.engine.render import Library, render_library  # noqa: E402
from pyredislua.server import RedisServer  # noqa: E402

ALGORITHMS = ("gcra", "token_bucket", "sliding_log", "sliding_window", "fixed_window")
HOUR = "3600000"


def _paths() -> list[tuple[str, str, int, tuple[str, ...], int, bool]]:
    """(name, operation, keys, args, hits before, fresh keys per call)"""
    out = []
    for a in ALGORITHMS:
        big = "10000" if a == "sliding_log" else "1000000"
        out += [
            (f"{a} hit, admitted", f"ratelimit.{a}", 1, ("1", big, HOUR, "0"), 1, False),
            (f"{a} hit, fresh key", f"ratelimit.{a}", 1, ("1", big, HOUR, "0"), 0, True),
            (f"{a} hit, denied", f"ratelimit.{a}", 1, ("1", "5", HOUR, "0"), 5, False),
            (f"{a} check", f"ratelimit.{a}_peek", 1, ("1", big, HOUR, "0"), 3, False),
        ]
    out.append(("multi gcra + fixed_window, admitted", "ratelimit.multi", 2,
                ("1", "gcra", "1000000", HOUR, "0", "fixed_window", "1000000", HOUR, "0"), 1,
                False))
    return out


class Variant:
    def __init__(self, name: str, lib: Library, r: redis.Redis, mode: str, rename: str | None):
        self.name, self.lib, self.r, self.mode = name, lib, r, mode
        self.target: dict[str, str] = {}
        if mode == "function":
            code = lib.code if rename is None else lib.code.replace(lib.name, rename)
            r.function_load(code, replace=True)
        for op_name, op in lib.operations.items():
            if mode == "function":
                self.target[op_name] = (op.function if rename is None
                                        else op.function.replace(lib.name, rename))
            else:
                self.target[op_name] = r.script_load(op.script)

    def call(self, op: str, keys: list[str], args: tuple[str, ...]) -> Any:
        ro = self.lib.operation(op).read_only
        verb = ("FCALL" if self.mode == "function" else "EVALSHA") + ("_RO" if ro else "")
        return self.r.execute_command(verb, self.target[op], len(keys), *keys, *args)


def measure(variants: list[Variant], r: redis.Redis, rounds: int, calls: int
            ) -> dict[tuple[str, str], tuple[float, float]]:
    samples: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    ids = [f"u{i}" for i in range(20)]
    for rnd in range(rounds):
        for name, op, nkeys, args, before, fresh in _paths():
            order = variants if rnd % 2 == 0 else variants[::-1]
            for v in order:
                r.flushall()
                hit = op.replace("_peek", "")

                def keys(u: str, i: int = 0, v: Variant = v, path: str = name.split()[0],
                         nkeys: int = nkeys, fresh: bool = fresh) -> list[str]:
                    tail = f":{i}" if fresh else ""
                    return [f"{{{v.name}:{u}}}:{path}:{k}{tail}" for k in range(nkeys)]

                for u in ids:
                    for _ in range(before):
                        v.call(hit, keys(u), ("1", *args[1:]))
                r.config_resetstat()
                n = 0
                while n < calls:
                    for u in ids:
                        v.call(op, keys(u, n), args)
                        n += 1
                stats = r.info("commandstats")
                verb = "cmdstat_" + ("fcall" if v.mode == "function" else "evalsha")
                if op.endswith("_peek"):
                    verb += "_ro"
                usec = float(stats[verb]["usec_per_call"])
                inner = sum(int(s["calls"]) for k, s in stats.items()
                            if k not in (verb, "cmdstat_config", "cmdstat_info")) / n
                samples[(name, v.name)].append((usec, inner))
    return {k: (statistics.median(u for u, _ in s), statistics.median(c for _, c in s))
            for k, s in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("function", "script"), default="function")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--base", type=Path, help="another tree (its lua/) to compare with")
    opts = parser.parse_args()
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        variants = [Variant("this", render_library(ROOT / "lua"), r, opts.mode, None)]
        if opts.base:
            variants.append(Variant("base", render_library(opts.base / "lua"), r, opts.mode,
                                    "pyredislua_vbase"))
        results = measure(variants, r, opts.rounds, opts.calls)
    head = f"{'path':38} {'us/call':>8} {'calls':>6}"
    if opts.base:
        head += f" {'base us':>8} {'calls':>6} {'ratio':>6}"
    print(f"{opts.mode} mode, median of {opts.rounds} rounds of {opts.calls} calls\n{head}")
    for name, *_ in _paths():
        usec, inner = results[(name, "this")]
        line = f"{name:38} {usec:8.2f} {inner:6.2f}"
        if opts.base:
            busec, binner = results[(name, "base")]
            line += f" {busec:8.2f} {binner:6.2f} {usec / busec:6.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
