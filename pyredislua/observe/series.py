"""The metrics the Lua operations record themselves, read back (docs/design/metrics-in-redis.md).

A primitive built with ``metrics=True`` (``Queue(client, "emails", metrics=True)``) passes its
metrics key, ``prl:<base>:{name}:metrics``, to the operations that record: they count per minute
(a ring of 60 one-minute slots) and sample durations into log2-millisecond histograms (twelve
five-minute periods), atomically with the work they count, whoever calls them (any language).
:func:`series_call` reads one primitive's figures with its area's ``no-writes`` operation
(``queue.metrics``, ...), so it runs with ``FCALL_RO`` on a replica too::

    s = client.run(series_call("queue", "emails"))
    s.counters["completed"][-1]   # jobs completed so far this minute
    s.histograms["wait"]          # 17 buckets: < 1 ms, [1, 2) ms, [2, 4) ms, ... >= 32768 ms

Key per kind: ``queue`` ``prl:q:{name}:metrics``, ``lock`` ``prl:lock:{name}:metrics``,
``store`` (write-behind) ``prl:wb:{name}:metrics``, ``cache`` ``prl:cache:{namespace}:metrics``,
``limiter`` ``prl:rl:{tag}:metrics:<limiter name>``: a limiter's calls span the identities of
one hash tag (by default the identity itself), so its figures are kept per (tag, limiter name),
and ``tag`` says which (default: the name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..engine.protocol import Call
from ..kit import as_text, hash_tag, tagged_name

SeriesKind = Literal["queue", "lock", "limiter", "store", "cache"]
KINDS: tuple[str, ...] = ("queue", "lock", "limiter", "store", "cache")
BUCKETS = 17  # log2 ms: 0 under 1 ms, b in [2^(b-1), 2^b) ms, 16 from 2^15 ms (32.768 s) on
MINUTES = 60

_OPS = {"queue": "queue.metrics", "lock": "lock.metrics", "limiter": "ratelimit.metrics",
        "store": "writebehind.metrics", "cache": "cache.metrics"}


@dataclass(frozen=True)
class MinuteSeries:
    """One primitive's recorded metrics at one reading."""

    kind: str        # "queue" | "lock" | "limiter" | "store" | "cache"
    name: str
    minute: int      # the server's current minute (unix seconds // 60)
    # counter -> 60 ints, oldest first, last = current minute; stale slots read 0
    counters: Mapping[str, Sequence[int]]
    # histogram -> 17 ints, log2-ms buckets 0..16, summed over the last hour
    histograms: Mapping[str, Sequence[int]]

    def last(self, counter: str) -> int:
        """The count of ``counter`` in the current (partial) minute."""
        return self.counters[counter][-1]

    def total(self, counter: str) -> int:
        """The count of ``counter`` over the last hour."""
        return sum(self.counters[counter])


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """The milliseconds a histogram bucket holds: [low, high)."""
    if bucket == 0:
        return 0.0, 1.0
    if bucket >= BUCKETS - 1:
        return float(2 ** (BUCKETS - 2)), float("inf")
    return float(2 ** (bucket - 1)), float(2 ** bucket)


def metrics_key(kind: str, name: str, *, tag: str | None = None, prefix: str = "prl") -> str:
    """The metrics key of one primitive (see the module docstring)."""
    if kind == "queue":
        return f"{prefix}:q:{tagged_name(name)}:metrics"
    if kind == "lock":
        return f"{prefix}:lock:{tagged_name(name)}:metrics"
    if kind == "store":
        return f"{prefix}:wb:{tagged_name(name)}:metrics"
    if kind == "cache":
        return f"{prefix}:cache:{tagged_name(name)}:metrics"
    if kind == "limiter":
        return f"{prefix}:rl:{hash_tag(name if tag is None else tag)}:metrics:{name}"
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def parse_series(kind: str, name: str) -> Any:
    """The parser of a ``<area>.metrics`` reply."""
    def parse(reply: Any) -> MinuteSeries:
        minute, flat_c, flat_h = reply
        counters = {as_text(flat_c[i]): tuple(int(v) for v in flat_c[i + 1])
                    for i in range(0, len(flat_c), 2)}
        histograms = {as_text(flat_h[i]): tuple(int(v) for v in flat_h[i + 1])
                      for i in range(0, len(flat_h), 2)}
        return MinuteSeries(kind, name, int(minute), counters, histograms)
    return parse


def series_call(kind: str, name: str, *, tag: str | None = None, prefix: str = "prl"
                ) -> Call[MinuteSeries]:
    """The read of one primitive's recorded metrics (read-only: ``FCALL_RO``-able), for
    ``client.run`` / ``aclient.run`` / ``client.run_many``. ``tag``: a limiter's hash tag
    (default: its name); ignored for the other kinds."""
    key = metrics_key(kind, name, tag=tag, prefix=prefix)
    return Call(_OPS[kind], (key,), (), parse_series(kind, name))
