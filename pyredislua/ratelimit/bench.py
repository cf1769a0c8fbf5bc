"""Rate limiter checks/s per algorithm vs the `limits` library and the raw EVALSHA ceiling.

Measured side by side in one run on one server: single checks (one round trip each), a
pipelined batch mode (many keys per round trip), and an accuracy probe (limit 100/s, 1,000 hits
from 4 threads over ~2.5 s: the most admitted in any 1-second window).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from .. import ratelimit as rl
from ..bench._common import rate as measure_rate
from ..bench._common import server_url
from ..client import Client

ALGOS = ("gcra", "token_bucket", "sliding_log", "sliding_window", "fixed_window")
# the limit for throughput runs: high enough that every check is admitted (the writing path)
BIG = "1000000/s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="duration of each throughput measurement (default 1.0)")
    parser.add_argument("--batch", type=int, default=100,
                        help="checks per pipelined round trip in batch mode (default 100)")
    parser.add_argument("--mode", choices=("function", "script"), default="script",
                        help="how pyredislua runs its Lua (default script: EVALSHA, like the "
                        "raw ceiling it is compared with)")
    parser.add_argument("--no-probe", action="store_true", help="skip the accuracy probe")
    parser.add_argument("--no-peers", action="store_true", help="skip the limits library")


def _paired(a: Callable[[], Any], b: Callable[[], Any], seconds: float,
            per_call: int = 1, per_call_b: int = 1) -> tuple[float, float]:
    """Rates of a and b measured in alternating 50 ms slices, so load on a shared machine hits
    both alike."""
    for _ in range(50):
        a()
        b()
    counts, spent = [0, 0], [0.0, 0.0]
    end = time.perf_counter() + 2 * seconds
    while time.perf_counter() < end:
        for i, fn in enumerate((a, b)):
            start = time.perf_counter()
            stop = start + 0.05
            n = 0
            while True:
                for _ in range(10):
                    fn()
                n += 10
                now = time.perf_counter()
                if now >= stop:
                    break
            counts[i] += n * (per_call if i == 0 else per_call_b)
            spent[i] += now - start
    return counts[0] / spent[0], counts[1] / spent[1]


def _bind(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: fn(*args)


def _limiter(client: Client, algo: str, rate: str, burst: int | None = None) -> Any:
    cls = rl.ALGORITHM_CLASSES[algo]
    if burst is not None:
        return cls(client, f"bench-{algo}", rate, burst=burst)
    return cls(client, f"bench-{algo}", rate)


def _peers(url: str) -> dict[str, Any]:
    try:
        import limits
        import limits.storage
        import limits.strategies
    except ImportError:
        return {}
    storage = limits.storage.storage_from_string(url.replace("redis://", "redis://", 1))
    return {
        "limits fixed-window": limits.strategies.FixedWindowRateLimiter(storage),
        "limits moving-window": limits.strategies.MovingWindowRateLimiter(storage),
        "limits sliding-window-counter":
            limits.strategies.SlidingWindowCounterRateLimiter(storage),
    }


def _max_in_window(times_ms: list[float], window_ms: float = 1000.0) -> int:
    times = sorted(times_ms)
    best = j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window_ms:
            j += 1
        best = max(best, i - j + 1)
    return best


def _probe(hit: Callable[[], float | None], threads: int = 4, hits: int = 1000,
           seconds: float = 2.5) -> tuple[int, int]:
    """Run the probe; ``hit`` returns the admission time in ms (None when denied)."""
    per_thread = hits // threads
    gap = seconds / per_thread
    admitted: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.05

    def worker(offset: float) -> None:
        mine = []
        for i in range(per_thread):
            due = start + offset + i * gap
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t = hit()
            if t is not None:
                mine.append(t)
        with lock:
            admitted.extend(mine)

    pool = [threading.Thread(target=worker, args=(k * gap / threads,)) for k in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return len(admitted), _max_in_window(admitted)


def run(args: argparse.Namespace) -> int:
    with server_url(args.url) as url:
        results = measure(url, args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results))
    return 0


def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    r = redis.Redis.from_url(url)
    client = Client(r, mode=args.mode)
    client.load()
    seconds = args.seconds
    out: dict[str, Any] = {"mode": args.mode, "seconds": seconds, "batch": args.batch,
                           "throughput": {}, "probe": {}}
    tp = out["throughput"]

    sha = r.script_load("return 1")
    ceiling = measure_rate(lambda: r.evalsha(sha, 1, "prl:rl:{bench}:raw"), seconds)
    tp["raw EVALSHA of 'return 1' (round-trip ceiling)"] = {"checks_per_s": ceiling,
                                                           "vs_raw": 1.0}

    for algo in ALGOS:
        lim = _limiter(client, algo, "10000/s" if algo == "sliding_log" else BIG)
        call = lim.hit_call("u")
        # the raw call is the very command the limiter sends, in the client's mode
        raw_args = client.engine.args(call)
        raw, ours = _paired(_bind(r.execute_command, *raw_args), _bind(lim.hit, "u"), seconds)
        tp[f"raw {raw_args[0]} of ratelimit.{algo}"] = {"checks_per_s": raw, "vs_raw": 1.0}
        tp[f"pyredislua {algo}.hit()"] = {"checks_per_s": ours, "vs_raw": ours / raw}
        r.delete(*lim.keys("u"))
        peek = lim.check_call("u")
        peek_args = client.engine.args(peek)
        raw, ours = _paired(_bind(r.execute_command, *peek_args), _bind(lim.check, "u"), seconds)
        tp[f"raw {peek_args[0]} of ratelimit.{algo}_peek"] = {"checks_per_s": raw,
                                                               "vs_raw": 1.0}
        tp[f"pyredislua {algo}.check() (read-only)"] = {"checks_per_s": ours,
                                                        "vs_raw": ours / raw}
    lim2 = rl.GCRA(client, "bench-2", "1000000/s", "1000000/h")
    rate = measure_rate(lambda: lim2.hit("u"), seconds)
    tp["pyredislua gcra, 2 rates in one call"] = {"checks_per_s": rate, "vs_raw": rate / ceiling}

    batch = args.batch
    for algo in ("gcra", "sliding_window"):
        blim = _limiter(client, algo, BIG)
        calls = [blim.hit_call(f"user{i}") for i in range(batch)]
        rate, one = _paired(_bind(client.run_many, calls), _bind(blim.hit, "single"), seconds,
                            per_call=batch)
        tp[f"pyredislua {algo} batch x{batch} (pipelined)"] = {
            "checks_per_s": rate, "vs_raw": rate / ceiling, "vs_single": rate / one,
            "single": one}
        users = [f"user{i}" for i in range(min(batch, 256))]
        many = blim.hit_many_call(users, 1, tag="bench")
        rate, one = _paired(_bind(client.run, many), _bind(blim.hit, "single"), seconds,
                            per_call=len(users))
        tp[f"pyredislua {algo}.hit_many x{len(users)} (one call)"] = {
            "checks_per_s": rate, "vs_raw": rate / ceiling, "vs_single": rate / one,
            "single": one}

    if not args.no_peers:
        import limits

        item = limits.parse("1000000/second")
        glim = _limiter(client, "gcra", BIG)
        for name, strategy in _peers(url).items():
            rate, ours = _paired(_bind(strategy.hit, item, "bench", name),
                                 _bind(glim.hit, "peer"), seconds)
            tp[name] = {"checks_per_s": rate, "vs_raw": rate / ceiling, "vs_ours": rate / ours,
                        "ours": ours}

    if not args.no_probe:
        probe = out["probe"]
        cases: list[tuple[str, Any, int]] = [
            ("pyredislua gcra (burst 1)", _limiter(client, "gcra", "100/s", 1), 100),
            ("pyredislua gcra (burst 100)", _limiter(client, "gcra", "100/s"), 199),
            ("pyredislua token_bucket (burst 100)", _limiter(client, "token_bucket", "100/s"),
             199),
            ("pyredislua sliding_log", _limiter(client, "sliding_log", "100/s"), 100),
            ("pyredislua sliding_window", _limiter(client, "sliding_window", "100/s"), 199),
            ("pyredislua fixed_window", _limiter(client, "fixed_window", "100/s"), 200),
        ]
        for name, lim, bound in cases:
            def hit(lim: Any = lim) -> float | None:
                d = lim.hit("probe")
                return float(d.now_ms) if d.allowed else None
            admitted, worst = _probe(hit)
            probe[name] = {"admitted": admitted, "max_in_1s": worst, "bound": bound}
        if not args.no_peers:
            import limits

            item = limits.parse("100/second")
            for name, strategy in _peers(url).items():
                def peer_hit(s: Any = strategy, n: str = name) -> float | None:
                    return time.time() * 1000 if s.hit(item, "probe", n) else None
                admitted, worst = _probe(peer_hit)
                probe[name] = {"admitted": admitted, "max_in_1s": worst, "bound": None}
    return out


def render(results: dict[str, Any]) -> str:
    lines = [f"checks/s, one client thread, pyredislua in {results['mode']} mode; each "
             "pyredislua row measured interleaved with its raw row", ""]
    lines.append(f"| {'implementation':<50} | {'checks/s':>10} | {'ratio':>32} |")
    lines.append(f"|{'-' * 52}|{'-' * 12}|{'-' * 34}|")
    for name, row in results["throughput"].items():
        if "vs_ours" in row:
            ratio = f"{row['vs_ours']:.2f}x gcra.hit() ({row['ours']:,.0f}/s)"
        elif "vs_single" in row:
            ratio = f"{row['vs_single']:.2f}x single hit() ({row['single']:,.0f}/s)"
        elif name.startswith("pyredislua") and "2 rates" not in name:
            ratio = f"{row['vs_raw']:.2f}x its raw call"
        elif name.startswith("raw EVALSHA of 'return 1'") or name.startswith("raw"):
            ratio = ""
        else:
            ratio = f"{row['vs_raw']:.2f}x 'return 1'"
        lines.append(f"| {name:<50} | {row['checks_per_s']:>10,.0f} | {ratio:>32} |")
    if results["probe"]:
        lines += ["", "accuracy probe: limit 100/s, 1,000 hits from 4 threads over ~2.5 s", "",
                  f"| {'algorithm':<40} | {'admitted':>8} | {'max in any 1 s':>14} | "
                  f"{'guaranteed bound':>16} |",
                  f"|{'-' * 42}|{'-' * 10}|{'-' * 16}|{'-' * 18}|"]
        for name, row in results["probe"].items():
            bound = "-" if row["bound"] is None else str(row["bound"])
            lines.append(f"| {name:<40} | {row['admitted']:>8} | {row['max_in_1s']:>14} | "
                         f"{bound:>16} |")
    return "\n".join(lines)
