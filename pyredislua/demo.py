"""``pyredislua demo``: every primitive at work, in plain words."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator

from .server import RedisServer


def say(text: str) -> None:
    print(textwrap.fill(text, width=96, subsequent_indent="    ") if len(text) > 96 else text)


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url:
        say(f"Using the Redis at {url}; the demo writes only its own keys "
            "(names starting with prl:).")
        yield url
        return
    with RedisServer() as server:
        say(f"Started a throwaway redis-server on {server.url} (stopped when the demo ends).")
        yield server.url


def section_title(doc: str) -> str:
    """A demo module's title: the first paragraph of its docstring, whole."""
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


def run_demo(url: str | None, *, cluster: bool | None = None) -> int:
    """``cluster``: as for every command (None: detected from ``INFO cluster``, or
    ``?cluster=true`` in the URL)."""
    from .areas import area_modules
    from .cli import connect

    # each area's demo module: ORDER (int) and demo(client, say), on a flushed server
    sections = sorted(area_modules("demo"), key=lambda module: getattr(module, "ORDER", 100))
    with _server(url) as server_url:
        client = connect(server_url, "auto", cluster=cluster)
        report = client.load()
        say(f"Loaded the Lua library {report.library} {report.version} "
            f"({report.action}, {client.mode} mode): every operation is one round trip.")
        for module in sections:
            print(f"\n== {section_title(module.__doc__ or module.__name__)}")
            module.demo(client, say)
        client.redis.close()
    print("\nDone.")
    return 0
