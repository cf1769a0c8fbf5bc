"""Shared benchmark plumbing: a server to measure on, timed loops, a ratio table."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..server import RedisServer


@contextlib.contextmanager
def server_url(url: str | None) -> Iterator[str]:
    """The given URL, or a throwaway redis-server's for the length of the run."""
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


def rate(step: Callable[[], Any], seconds: float, *, per_step: int = 1) -> float:
    """Operations per second of ``step`` run back to back for about ``seconds``."""
    for _ in range(50):  # warm up connections, script caches, branch predictors
        step()
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            step()
        done += 100
        now = time.perf_counter()
        if now >= deadline:
            return done * per_step / (now - start)


def print_table(title: str, rows: list[tuple[str, str, str]], header: tuple[str, str, str]
                ) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(3)]
    print(f"\n{title}")
    print("  " + "  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def emit_json(results: dict[str, Any]) -> None:
    print(json.dumps(results, indent=2, sort_keys=True))
