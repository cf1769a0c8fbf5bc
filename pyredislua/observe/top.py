"""``pyredislua top``: a live terminal view of the figures Redis keeps about named primitives.

Each refresh is one :func:`pyredislua.observe.figures.read` (the round trip the Prometheus
collector makes per scrape). Rates are computed here, between two refreshes, from the deltas of
the cumulative totals the Lua operations keep: over the server's clock where the operation
returns it (write-behind stats), else over this process's monotonic clock. Plain ANSI: a TTY
gets "home cursor, clear screen" between frames; ``--once`` prints one frame without escape
codes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ..lock.ops import LockState
from ..queue.ops import QueueStats
from ..stream.ops import StreamStats
from ..writebehind.ops import StoreStats
from .figures import Figure, Reading, Targets, read

# rate column -> the cumulative counters whose sum it is the rate of
QUEUE_RATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("enq/s", ("enqueued",)),
    ("ack/s", ("acked",)),
    ("fail/s", ("retried", "dead")),  # every failed attempt ends retried or dead-lettered
    ("dead/s", ("dead",)),
)
STORE_RATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("writes/s", ("writes",)),
    ("ack/s", ("acked",)),
)
CLEAR = "\x1b[H\x1b[2J"
Rates = dict[tuple[str, str], dict[str, float | None]]


def rates(prev: Reading | None, cur: Reading) -> Rates:
    """Per-second rates of the cumulative totals between two readings, per (kind, name).

    The interval is the server's clock delta when both readings of a primitive carry it, else
    the local monotonic delta. A rate is None when there is no previous reading of the
    primitive, the interval is not positive, or a total went down (the counters were reset).
    """
    out: Rates = {}
    for fig in cur.figures:
        columns = QUEUE_RATES if fig.kind == "queue" else STORE_RATES if fig.kind == "store" \
            else ()
        if not columns:
            continue
        before = prev.get(fig.kind, fig.name) if prev is not None else None
        row: dict[str, float | None] = {label: None for label, _ in columns}
        out[fig.key] = row
        if before is None or before.stats is None or fig.stats is None or prev is None:
            continue
        if fig.server_ms is not None and before.server_ms is not None:
            seconds = (fig.server_ms - before.server_ms) / 1000
        else:
            seconds = cur.monotonic - prev.monotonic
        if seconds <= 0:
            continue
        now_c, then_c = fig.counters, before.counters
        if any(now_c.get(n, 0) < v for n, v in then_c.items()):
            continue  # a total went down: the counters were reset, no rate this time
        for label, names in columns:
            delta = sum(now_c.get(n, 0) for n in names) - sum(then_c.get(n, 0) for n in names)
            row[label] = delta / seconds
    return out


# -- rendering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    title: str
    head: Sequence[str]
    rows: list[list[str]]


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _short(text: str | None, width: int) -> str:
    if text is None:
        return "-"
    return text if len(text) <= width else text[:width - 2] + ".."


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.1f}s"


def _error_row(fig: Figure, columns: int) -> list[str]:
    return [fig.name, f"ERROR {fig.error}"] + [""] * (columns - 2)


def _tables(reading: Reading, rated: Rates) -> list[_Table]:
    queues = _Table("queues", ("queue", "ready", "delayed", "active", "dead", "expired",
                               *(c for c, _ in QUEUE_RATES)), [])
    streams = _Table("streams", ("stream", "group", "entries", "pending", "dead", "consumers"),
                     [])
    stores = _Table("write-behind stores", ("store", "dirty", "retry", "claimed", "dead", "lag",
                                            *(c for c, _ in STORE_RATES)), [])
    locks = _Table("locks", ("lock", "held", "owner", "fence", "waiters", "lease left"), [])
    for fig in reading.figures:
        s = fig.stats
        r = rated.get(fig.key, {})
        if fig.kind == "queue":
            queues.rows.append(_error_row(fig, len(queues.head)) if not isinstance(s, QueueStats)
                               else [fig.name, str(s.ready), str(s.delayed), str(s.active),
                                     str(s.dead), str(s.expired_leases),
                                     *(_rate(r.get(c)) for c, _ in QUEUE_RATES)])
        elif fig.kind == "stream":
            streams.rows.append(
                _error_row(fig, len(streams.head)) if not isinstance(s, StreamStats)
                else [fig.name, fig.group or "-", str(s.length),
                      str(s.pending) if s.pending >= 0 else "no group", str(s.dead),
                      str(len(s.consumers))])
        elif fig.kind == "store":
            stores.rows.append(_error_row(fig, len(stores.head)) if not isinstance(s, StoreStats)
                               else [fig.name, str(s.dirty), str(s.retry), str(s.claimed),
                                     str(s.dead), _seconds(s.lag_ms),
                                     *(_rate(r.get(c)) for c, _ in STORE_RATES)])
        else:
            locks.rows.append(
                _error_row(fig, len(locks.head)) if not isinstance(s, LockState)
                else [fig.name, "yes" if s.held else "no", _short(s.owner, 18), str(s.fence),
                      str(s.waiters), _seconds(max(s.pttl_ms, 0)) if s.held else "-"])
    return [t for t in (queues, streams, stores, locks) if t.rows]


def _format(table: _Table) -> list[str]:
    # an error cell spans the rest of its row: it does not widen the columns
    widths = [len(h) for h in table.head]
    for row in table.rows:
        if row[1].startswith("ERROR "):
            widths[0] = max(widths[0], len(row[0]))
            continue
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = [table.title]
    for row in [list(table.head), *table.rows]:
        if row[1].startswith("ERROR "):
            lines.append(f"  {row[0]:<{widths[0]}}  {row[1]}")
            continue
        cells = [f"{row[0]:<{widths[0]}}"] + [f"{c:>{w}}" for c, w in zip(row[1:], widths[1:])]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def render(reading: Reading | None, rated: Rates, *, server: str, refresh: int,
           interval: float, error: str | None = None) -> str:
    """One frame: a header line (server, time, refresh count, period unless ``interval`` is 0),
    then a table per kind of primitive."""
    wall = reading.wall if reading is not None else time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))
    every = f"  every {interval:g}s" if interval > 0 else ""
    lines = [f"pyredislua top  {server}  {stamp}  refresh {refresh}{every}"]
    if error is not None:
        lines.append(f"ERROR reading the server: {error}")
    if reading is not None:
        for table in _tables(reading, rated):
            lines.append("")
            lines.extend(_format(table))
        if not reading.figures:
            lines.append("(nothing to watch: name primitives with --queue, --stream, --store, "
                         "--lock)")
    return "\n".join(lines) + "\n"


# -- the loop -----------------------------------------------------------------------------------


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run(client: Any, targets: Targets, *, server: str, interval: float = 2.0,
        once: bool = False, out: TextIO | None = None, tty: bool | None = None,
        frames: int | None = None,
        on_frame: Callable[[int, Reading | None, Rates], None] | None = None) -> int:
    """Read, render and print frames every ``interval`` seconds until interrupted (Ctrl-C:
    exit 0), or one frame without escape codes with ``once``. ``frames`` stops after that many
    frames and ``on_frame(refresh, reading, rates)`` is called after each frame is printed (for
    tests). Exit status: 0, or 1 when ``once`` could not read the server at all."""
    stream = out if out is not None else sys.stdout
    ansi = (not once) and (stream.isatty() if tty is None else tty)
    previous: Reading | None = None
    refresh = 0
    try:
        while True:
            refresh += 1
            reading: Reading | None
            error: str | None = None
            try:
                reading = read(client, targets)
            except Exception as exc:  # the server is away: say so and keep watching
                reading, error = None, _describe(exc)
            rated = rates(previous, reading) if reading is not None else {}
            frame = render(reading, rated, server=server, refresh=refresh,
                           interval=0 if once else interval, error=error)
            stream.write((CLEAR if ansi else "") + frame)
            stream.flush()
            if on_frame is not None:
                on_frame(refresh, reading, rated)
            if once:
                return 1 if error is not None else 0
            if frames is not None and refresh >= frames:
                return 0
            if reading is not None:
                previous = reading
            time.sleep(interval)  # the refresh period, not a wait on any condition
    except KeyboardInterrupt:
        if ansi:
            stream.write("\n")
            stream.flush()
        return 0
