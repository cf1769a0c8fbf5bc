"""Pure figures and drawings for the dashboard: percentiles from log2-millisecond histograms,
per-minute rates, the depth history of a queue, and inline SVG charts. No I/O: every function
here takes plain values (a per-minute series is anything shaped like
``pyredislua.observe.series.MinuteSeries``) and returns plain values or SVG text."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

MINUTES = 60
BUCKETS = 17  # 0: < 1 ms; b in 1..15: [2^(b-1), 2^b) ms; 16: 2^15 ms or longer

# Colours of the drawn series, by name (anything else takes the next of PALETTE).
COLOURS = {
    "enqueued": "#2563eb", "completed": "#16a34a", "failed": "#f59e0b", "retried": "#a855f7",
    "dead": "#dc2626", "unfinished": "#0f766e", "acquired": "#2563eb", "contended": "#f59e0b",
    "handoffs": "#a855f7", "expired": "#dc2626", "allowed": "#16a34a", "denied": "#dc2626",
    "written": "#2563eb", "flushed": "#16a34a",
}
PALETTE = ("#2563eb", "#16a34a", "#f59e0b", "#a855f7", "#dc2626", "#0f766e", "#64748b")


class SeriesLike(Protocol):
    """The shape of ``pyredislua.observe.series.MinuteSeries`` that the dashboard reads."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def minute(self) -> int: ...
    @property
    def counters(self) -> Mapping[str, Sequence[int]]: ...
    @property
    def histograms(self) -> Mapping[str, Sequence[int]]: ...


def recorded(series: SeriesLike | None) -> bool:
    """Whether the series holds anything: False when absent, or when every counter and
    histogram of the last hour is zero (recording off, or nothing happened)."""
    if series is None:
        return False
    return any(any(v) for v in series.counters.values()) or any(
        any(v) for v in series.histograms.values())


# -- histograms ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """Where a percentile falls: in the bucket ``[low_ms, high_ms)`` (``high_ms`` None: the
    open last bucket)."""

    bucket: int
    low_ms: int
    high_ms: int | None

    @property
    def text(self) -> str:
        if self.high_ms is None:
            return f"≥ {_duration(self.low_ms)}"
        return f"< {_duration(self.high_ms)}"


def bucket_bounds(bucket: int) -> tuple[int, int | None]:
    """The milliseconds one log2 bucket covers: [low, high), high None for the last."""
    if not 0 <= bucket < BUCKETS:
        raise ValueError(f"a bucket is 0..{BUCKETS - 1}, got {bucket}")
    if bucket == 0:
        return 0, 1
    if bucket == BUCKETS - 1:
        return 2 ** (bucket - 1), None
    return 2 ** (bucket - 1), 2 ** bucket


def percentile(histogram: Sequence[int], q: float) -> Bound | None:
    """The bucket holding the ``q``-quantile (0 < q <= 1) of the counts, None when empty.
    The smallest bucket whose cumulative count reaches ``q`` of the total (nearest rank)."""
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    if len(histogram) != BUCKETS:
        raise ValueError(f"a histogram has {BUCKETS} buckets, got {len(histogram)}")
    if any(c < 0 for c in histogram):
        raise ValueError("a histogram count cannot be negative")
    total = sum(histogram)
    if total == 0:
        return None
    rank = max(1, -(-int(q * total * 1_000_000) // 1_000_000))  # ceil, without float drift
    seen = 0
    for bucket, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            low, high = bucket_bounds(bucket)
            return Bound(bucket, low, high)
    raise AssertionError("unreachable: the ranks sum to the total")


QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def percentiles(histogram: Sequence[int]) -> dict[str, Bound | None]:
    """p50, p90 and p99 of one histogram."""
    return {label: percentile(histogram, q) for label, q in QUANTILES}


def _duration(ms: int) -> str:
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.3g} s"
    return f"{ms / 60_000:.3g} min"


# -- per-minute counts ----------------------------------------------------------------------------


def per_minute_rate(counts: Sequence[int], minutes: int = 5) -> float:
    """The mean per minute over the last ``minutes`` complete minutes (the current, partial
    minute, the last value, left out)."""
    if minutes < 1:
        raise ValueError("minutes must be at least 1")
    done = list(counts[:-1])[-minutes:]
    return sum(done) / len(done) if done else 0.0


def share(part: int, whole: int) -> float | None:
    """``part / whole``, None when ``whole`` is 0."""
    return None if whole == 0 else part / whole


def depth_history(unfinished_now: int, enqueued: Sequence[int], completed: Sequence[int],
                  dead: Sequence[int]) -> list[int]:
    """A queue's unfinished jobs at the end of each minute of the series (oldest first, the
    last being now), walked back from the depth now: each minute added its enqueued jobs and
    removed its completed and dead-lettered ones. Requeued and purged dead letters are not in
    the counts, so this is a reconstruction, clamped at zero."""
    if not len(enqueued) == len(completed) == len(dead):
        raise ValueError("the series must have the same length")
    out = [max(0, unfinished_now)]
    for i in range(len(enqueued) - 1, 0, -1):
        out.append(max(0, out[-1] - enqueued[i] + completed[i] + dead[i]))
    out.reverse()
    return out


# -- SVG -----------------------------------------------------------------------------------------


def _nice_top(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^k at or above ``value`` (at least 1)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if top * step >= value:
                return top * step
        top *= 10


def line_chart(lines: Mapping[str, Sequence[int]], *, minute: int, title: str,
               width: int = 560, height: int = 160) -> str:
    """An inline SVG line chart of per-minute series (oldest first, equal lengths): one
    polyline per series, a y axis from 0 to a round top, an x axis in minutes ago, and a
    legend. ``minute`` (unix seconds // 60 of the last point) labels the axis' end."""
    if not lines:
        raise ValueError("nothing to draw")
    lengths = {len(v) for v in lines.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError("the series must be non-empty and of equal length")
    n = lengths.pop()
    left, right, top, bottom = 40, 8, 22, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_top(max(max(v) for v in lines.values()))
    step = plot_w / max(n - 1, 1)

    def x(i: int) -> float:
        return left + i * step

    def y(v: int) -> float:
        return top + plot_h - (v / peak) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'data-minute="{minute}" aria-label="{html.escape(title)}">',
        f"<title>{html.escape(title)}</title>",
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
        f'y2="{top + plot_h}" stroke="#94a3b8"/>',
        f'<line class="grid" x1="{left}" y1="{top}" x2="{left + plot_w}" y2="{top}" '
        f'stroke="#e2e8f0"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10" '
        f'fill="#64748b">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h + 4}" text-anchor="end" font-size="10" '
        f'fill="#64748b">0</text>',
        f'<text x="{left}" y="{height - 4}" font-size="10" fill="#64748b">'
        f"{n - 1} min ago</text>",
        f'<text x="{left + plot_w}" y="{height - 4}" text-anchor="end" font-size="10" '
        f'fill="#64748b">now</text>',
    ]
    lx = left
    for index, (name, values) in enumerate(lines.items()):
        colour = COLOURS.get(name, PALETTE[index % len(PALETTE)])
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        label = html.escape(name)
        parts.append(f'<polyline class="series" data-series="{label}" fill="none" '
                     f'stroke="{colour}" stroke-width="1.5" points="{points}">'
                     f"<title>{label}: {sum(values)} in the last hour</title></polyline>")
        parts.append(f'<rect x="{lx}" y="6" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{lx + 14}" y="15" font-size="11" fill="#334155">{label}</text>')
        lx += 22 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(histogram: Sequence[int], *, title: str, width: int = 560,
                    height: int = 140) -> str:
    """An inline SVG bar chart of one log2-millisecond histogram (17 buckets), captioned
    with ``title``."""
    if len(histogram) != BUCKETS:
        raise ValueError(f"a histogram has {BUCKETS} buckets, got {len(histogram)}")
    left, right, top, bottom = 40, 8, 22, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_top(max(histogram))
    bar = plot_w / BUCKETS
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart histogram" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="{html.escape(title)}">',
        f"<title>{html.escape(title)}</title>",
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
        f'y2="{top + plot_h}" stroke="#94a3b8"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10" '
        f'fill="#64748b">{peak}</text>',
        f'<text x="{left}" y="15" font-size="11" fill="#334155">{html.escape(title)}</text>',
    ]
    for b, count in enumerate(histogram):
        low, high = bucket_bounds(b)
        h = (count / peak) * plot_h
        label = f"< {_duration(high)}" if high is not None else f"≥ {_duration(low)}"
        parts.append(f'<rect class="bar" data-bucket="{b}" x="{left + b * bar + 1:.1f}" '
                     f'y="{top + plot_h - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                     f'fill="#2563eb"><title>{html.escape(label)}: {count}</title></rect>')
        if b % 4 == 0 or b == BUCKETS - 1:
            parts.append(f'<text x="{left + b * bar + bar / 2:.1f}" y="{height - 6}" '
                         f'text-anchor="middle" font-size="9" fill="#64748b">'
                         f"{html.escape(label)}</text>")
    parts.append("</svg>")
    return "".join(parts)
