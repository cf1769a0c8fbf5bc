#!/usr/bin/env python3
"""CPU instructions Redis executes inside FCALL per lock operation: a cost figure that load on a
shared machine does not move, to compare Lua changes (``INFO commandstats`` microseconds, as
``pyredislua bench server`` reports them, swing by 2x on a busy 2-core box).

    .venv/bin/python tools/lock_instructions.py [--against CHECKOUT] [--n 300] [--only TEXT]

Runs ``redis-server`` under valgrind's callgrind, collecting only inside ``fcallCommand`` and
``fcallroCommand`` (the whole call: argument checks, Lua, the commands it runs, the reply). Per
path, N independent locks are put on the path first; the figure is (instructions of a session
that also runs the measured call once per lock - instructions of a session that does not) / N.
Both sessions run a full Lua GC after each phase (the garbage a call leaves is part of its cost)
and wait for Redis' incremental rehashing to finish first, so the figure is repeatable to about
0.5%. ``--against`` measures another checkout's ``lua/`` the same way (e.g. a main worktree).
Needs valgrind and a ``redis-server`` with DEBUG enabled by flag (started here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parents[1]
ACQUIRE, RELEASE = "pyredislua_v1_lock_acquire", "pyredislua_v1_lock_release"
EXTEND, INSPECT = "pyredislua_v1_lock_extend", "pyredislua_v1_lock_inspect"
TTL, WAIT = 3_000_000, 80_000_000  # nothing expires while valgrind runs slowly
Cmds = Callable[[int], list[tuple[Any, ...]]]


def _keys(n: int) -> list[str]:
    k = f"prl:lock:{{c{n}}}"
    return [k, k + ":fence", k + ":signal", k + ":waiters"]


def _fc(fn: str, n: int, *args: Any) -> tuple[Any, ...]:
    return ("FCALL", fn, 4, *_keys(n), *args)


def _held(n: int) -> list[tuple[Any, ...]]:
    return [_fc(ACQUIRE, n, "holder", TTL)]


def _used(n: int) -> list[tuple[Any, ...]]:
    return [_fc(ACQUIRE, n, "before", TTL), _fc(RELEASE, n, "before")]


def _waited(n: int) -> list[tuple[Any, ...]]:
    return [*_held(n), _fc(ACQUIRE, n, "w", TTL, WAIT)]


def _granted(n: int) -> list[tuple[Any, ...]]:
    return [*_waited(n), _fc(RELEASE, n, "holder")]


def _popped(n: int) -> list[tuple[Any, ...]]:
    return [*_granted(n), ("LPOP", _keys(n)[2])]


PATHS: dict[str, tuple[Cmds, Cmds]] = {
    "cycle: acquire a free lock, release it": (
        _used, lambda n: [_fc(ACQUIRE, n, "me", TTL), _fc(RELEASE, n, "me")]),
    "acquire: free (used before)": (_used, lambda n: [_fc(ACQUIRE, n, "me", TTL)]),
    "release: held, nobody waiting": (_held, lambda n: [_fc(RELEASE, n, "holder")]),
    "acquire: busy, registers as a waiter": (
        _held, lambda n: [_fc(ACQUIRE, n, "me", TTL, WAIT)]),
    "release: grants to a registered waiter": (_waited, lambda n: [_fc(RELEASE, n, "holder")]),
    "acquire: a newcomer takes over an unpopped grant": (
        _granted, lambda n: [_fc(ACQUIRE, n, "new", TTL, WAIT)]),
    "acquire: busy (a popped grant), registers": (
        _popped, lambda n: [_fc(ACQUIRE, n, "new", TTL, WAIT)]),
    "release: by the grant's popper": (
        _popped, lambda n: [_fc(RELEASE, n, f"grant:2:{TTL}")]),
    "extend: held": (_held, lambda n: [("FCALL", EXTEND, 1, _keys(n)[0], "holder", TTL)]),
    "inspect: held": (_held, lambda n: [("FCALL_RO", INSPECT, 3, *_keys(n)[:2],
                                         _keys(n)[3])]),
}
GC = ("FCALL", "prl_bench_gc", 0)
GC_LIBRARY = ("#!lua name=prl_bench_gc\nredis.register_function('prl_bench_gc', "
              "function() collectgarbage('collect') return 1 end)")


def render(checkout: Path) -> str:
    """The Functions library of a checkout, rendered by that checkout's own renderer."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from pyredislua.engine.render import render_library; print(render_library().code)")
    return subprocess.run([sys.executable, "-c", code, str(checkout)], capture_output=True,
                          text=True, check=True, cwd=tempfile.gettempdir()).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settled(r: redis.Redis) -> None:
    """Wait until no incremental rehashing is pending: it would land inside the next calls."""
    for _ in range(2400):
        if b"rehashing" not in r.execute_command("DEBUG", "HTSTATS", 0):
            return
        time.sleep(0.05)
    raise RuntimeError("Redis kept rehashing")


def session(code: str, setup: list[tuple[Any, ...]], measure: list[tuple[Any, ...]]) -> int:
    """Instructions inside FCALL of one redis-server run: setup, GC, measure, GC."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "callgrind.out")
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             "--toggle-collect=fcallCommand", "--toggle-collect=fcallroCommand",
             f"--callgrind-out-file={out}", "redis-server", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", d, "--enable-debug-command", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = redis.Redis(port=port)
        for _ in range(1200):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        # keyspace and expires sized up front, so the measured keys never make them grow
        r.execute_command("DEBUG", "POPULATE", 20000)
        r.eval("for i = 1, 3000 do redis.call('SET', 'pre:' .. i, 'x', 'PX', 1e9) end", 0)
        r.execute_command("FUNCTION", "LOAD", "REPLACE", code)
        r.execute_command("FUNCTION", "LOAD", "REPLACE", GC_LIBRARY)
        for commands in (setup, measure):
            _settled(r)
            pipe = r.pipeline(transaction=False)
            for command in [*commands, GC]:
                pipe.execute_command(*command)
            failed = [x for x in pipe.execute(raise_on_error=False) if isinstance(x, Exception)]
            if failed:
                raise RuntimeError(f"a call failed: {failed[0]}")
        with contextlib.suppress(redis.ConnectionError):
            r.shutdown(nosave=True)
        server.wait(120)
        found = re.search(r"^summary: (\d+)", Path(out).read_text(), re.M)
        assert found is not None
        return int(found.group(1))


def measure(code: str, n: int, only: str | None) -> dict[str, float]:
    out = {}
    for name, (setup, measured) in PATHS.items():
        if only and only not in name:
            continue
        calls = [c for i in range(n) for c in setup(i)]
        base = session(code, calls, [])
        full = session(code, calls, [c for i in range(n) for c in measured(i)])
        out[name] = (full - base) / n
        print(f"  {name}: {out[name]:,.0f}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout, measured the same way")
    parser.add_argument("--n", type=int, default=300, help="locks per path (default 300)")
    parser.add_argument("--only", help="only paths whose name contains this")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ours = measure(render(HERE), args.n, args.only)
    theirs = measure(render(args.against), args.n, args.only) if args.against else {}
    if args.json:
        print(json.dumps({"ours": ours, "against": theirs}, indent=1))
        return
    print("| path | instructions inside FCALL" + (" | against | ratio |" if theirs else " |"))
    print("|---|---:" + ("|---:|---:|" if theirs else "|"))
    for name, value in ours.items():
        row = f"| {name} | {value:,.0f}"
        if name in theirs:
            row += f" | {theirs[name]:,.0f} | {value / theirs[name]:.2f}"
        print(row + " |")


if __name__ == "__main__":
    main()
