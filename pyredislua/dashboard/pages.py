"""The dashboard's HTML: one function per page, from the data :mod:`.data` read. Everything
shown is escaped; charts are inline SVG drawn by :mod:`.charts`; no script, no external asset."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from urllib.parse import quote, urlencode

from ..lock.ops import LockState
from ..queue.ops import STATES, JobInfo, QueueStats
from ..stream.ops import StreamStats
from ..writebehind.ops import StoreStats
from . import charts
from .charts import SeriesLike
from .data import Config, Overview, QueuePage, Series, StorePage

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#0f172a;background:#f8fafc}
header{background:#0f172a;color:#f8fafc;padding:10px 20px;display:flex;gap:16px;
 align-items:baseline}
header a{color:#f8fafc;text-decoration:none;font-weight:600}
header .server{color:#94a3b8;font-size:12px}
.badge{font-size:11px;padding:2px 8px;border-radius:9px;background:#334155}
.badge.on{background:#b91c1c}
main{padding:16px 20px;max-width:1200px}
h1{font-size:20px;margin:4px 0 12px}h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;margin-bottom:8px;min-width:50%}
th,td{border-bottom:1px solid #e2e8f0;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f1f5f9;font-weight:600;font-size:12px}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#64748b}.error{color:#b91c1c}.note{color:#b45309}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:6px;padding:8px 10px}
.tabs a{margin-right:10px}.tabs a.on{font-weight:700;text-decoration:none;color:#0f172a}
code{font-size:12px}.flash{background:#dcfce7;border:1px solid #86efac;padding:6px 10px}
form.inline{display:inline}button{font-size:12px}
"""


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _link(root: str, *parts: str, **query: str | int) -> str:
    path = root + "/" + "/".join(quote(p, safe="") for p in parts)
    shown = {k: v for k, v in query.items() if v != ""}
    return path + ("?" + urlencode(shown) if shown else "")


def layout(config: Config, root: str, title: str, body: str, *, refresh: bool = True) -> str:
    mode = ('<span class="badge on" id="mode">actions enabled</span>' if config.allow_actions
            else '<span class="badge" id="mode">read-only</span>')
    meta = (f'<meta http-equiv="refresh" content="{config.refresh}">'
            if refresh and config.refresh > 0 else "")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>{meta}"
            f"<title>{e(title)} · {e(config.title)}</title><style>{CSS}</style></head><body>"
            f'<header><a href="{e(root)}/">{e(config.title)} dashboard</a>'
            f'<span class="server">{e(config.server)}</span>{mode}</header>'
            f"<main>{body}</main></body></html>")


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "",
           numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _pcts(series: SeriesLike | None, name: str) -> str:
    if series is None or not any(series.histograms.get(name, ())):
        return '<span class="muted">-</span>'
    got = charts.percentiles(series.histograms[name])
    return " / ".join(e(b.text) if b else "-" for b in got.values())


def _rate(series: SeriesLike | None, counter: str) -> str:
    if series is None or counter not in series.counters:
        return '<span class="muted">-</span>'
    return f"{charts.per_minute_rate(series.counters[counter]):.1f}"


def _hour(series: SeriesLike | None, counter: str) -> str:
    if series is None or counter not in series.counters:
        return '<span class="muted">-</span>'
    return str(sum(series.counters[counter]))


def _ms(ms: int) -> str:
    if ms < 0:
        return "-"
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms} ms"


def _when(ms: int | None) -> str:
    if ms is None or ms <= 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _payload(payload: bytes, limit: int = 80) -> str:
    text = payload[:limit].decode("utf-8", "replace")
    return e(text) + ("…" if len(payload) > limit else "")


def _no_series(series: Series) -> str:
    return f'<p class="muted no-metrics">{e(series.note or "no metrics recorded")}</p>'


# -- overview ------------------------------------------------------------------------------------


def _failed(lead: list[str], error: str | None, head: Sequence[str]) -> list[str]:
    """A table row for a primitive whose figures could not be read: its leading cells, the
    error, and empty cells to the table's width."""
    return [*lead, f'<span class="error">{e(error)}</span>', *[""] * (len(head) - len(lead) - 1)]


def overview(config: Config, root: str, data: Overview) -> str:
    parts = ["<h1>Overview</h1>"]
    queues = [f for f in data.figures if f.kind == "queue"]
    streams = [f for f in data.figures if f.kind == "stream"]
    stores = [f for f in data.figures if f.kind == "store"]
    locks = [f for f in data.figures if f.kind == "lock"]
    if queues:
        head = ["queue", "ready", "delayed", "active", "dead", "enqueued (total)",
                "enqueued/min", "completed/min", "completed (last hour)", "wait p50 / p90 / p99",
                "run p50 / p90 / p99"]
        rows = []
        for f in queues:
            s = data.series.get(("queue", f.name), Series(None)).value
            link = f'<a href="{e(_link(root, "queue", f.name))}">{e(f.name)}</a>'
            if not isinstance(f.stats, QueueStats):
                rows.append(_failed([link], f.error, head))
                continue
            st = f.stats
            active = f"{st.active}" + (f' <span class="note">({st.expired_leases} expired)</span>'
                                       if st.expired_leases else "")
            rows.append([link, str(st.ready), str(st.delayed), active, str(st.dead),
                         str(st.counters.get("enqueued", 0)), _rate(s, "enqueued"),
                         _rate(s, "completed"), _hour(s, "completed"), _pcts(s, "wait"),
                         _pcts(s, "run")])
        parts.append("<h2>Queues</h2>" + _table(
            head, rows, cls="queues", numeric=(1, 2, 3, 4, 5, 6, 7, 8)))
    if streams:
        head = ["queue", "group", "length", "pending", "dead", "consumers (pending)"]
        rows = []
        for f in streams:
            if not isinstance(f.stats, StreamStats):
                rows.append(_failed([e(f.name), e(f.group)], f.error, head))
                continue
            sst = f.stats
            rows.append([e(f.name), e(f.group), str(sst.length),
                         str(sst.pending) if sst.pending >= 0 else "no group", str(sst.dead),
                         e(", ".join(f"{k} {v}" for k, v in sorted(sst.consumers.items())))])
        parts.append("<h2>Streams queues</h2>" + _table(
            head, rows, cls="streams", numeric=(2, 3, 4)))
    if locks:
        head = ["lock", "state", "owner", "fence", "lease left", "waiters", "acquired/min",
                "acquired (last hour)", "wait p50 / p90 / p99"]
        rows = []
        for f in locks:
            s = data.series.get(("lock", f.name), Series(None)).value
            if not isinstance(f.stats, LockState):
                rows.append(_failed([e(f.name)], f.error, head))
                continue
            lst = f.stats
            rows.append([e(f.name), "held" if lst.held else '<span class="muted">free</span>',
                         f"<code>{e(lst.owner)}</code>" if lst.owner else "-", str(lst.fence),
                         _ms(lst.pttl_ms) if lst.held else "-", str(lst.waiters),
                         _rate(s, "acquired"), _hour(s, "acquired"), _pcts(s, "wait")])
        parts.append("<h2>Locks</h2>" + _table(head, rows, cls="locks", numeric=(3, 4, 5, 6, 7)))
    if data.limiters:
        rows, drawn = [], []
        for name in data.limiters:
            ser = data.series.get(("limiter", name), Series(None))
            s = ser.value
            if not charts.recorded(s) or s is None:
                rows.append([e(name), '<span class="muted no-metrics">'
                             f'{e(ser.note or "no metrics recorded")}</span>', "", "", "", ""])
                continue
            allowed = sum(s.counters.get("allowed", ()))
            denied = sum(s.counters.get("denied", ()))
            part = charts.share(denied, allowed + denied)
            rows.append([e(name), _rate(s, "allowed"), _rate(s, "denied"), str(allowed),
                         str(denied), "-" if part is None else f"{100 * part:.1f} %"])
            lines = {k: s.counters[k] for k in ("allowed", "denied") if k in s.counters}
            if lines:
                chart = charts.line_chart(
                    lines, minute=s.minute, title=f"limiter {name}: allowed and denied per minute")
                drawn.append(f'<div class="card">{chart}</div>')
        parts.append("<h2>Rate limiters</h2>" + _table(
            ["limiter", "allowed/min", "denied/min", "allowed (last hour)", "denied (last hour)",
             "denied share (last hour)"], rows, cls="limiters", numeric=(1, 2, 3, 4, 5)))
        if drawn:
            parts.append(f'<div class="charts">{"".join(drawn)}</div>')
    if stores:
        head = ["store", "pending", "retrying", "dead", "lag now", "flushed/min",
                "lag p50 / p90 / p99"]
        rows = []
        for f in stores:
            s = data.series.get(("store", f.name), Series(None)).value
            link = f'<a href="{e(_link(root, "store", f.name))}">{e(f.name)}</a>'
            if not isinstance(f.stats, StoreStats):
                rows.append(_failed([link], f.error, head))
                continue
            wst = f.stats
            rows.append([link, str(wst.pending), str(wst.retry), str(wst.dead), _ms(wst.lag_ms),
                         _rate(s, "flushed"), _pcts(s, "lag")])
        parts.append("<h2>Write-behind stores</h2>" + _table(
            head, rows, cls="stores", numeric=(1, 2, 3, 4, 5)))
    if len(parts) == 1:
        parts.append('<p class="muted">Nothing to show: name primitives with --queue, '
                     "--stream, --store, --lock or --limiter.</p>")
    return layout(config, root, "overview", "".join(parts))


# -- a queue -------------------------------------------------------------------------------------


def _job_rows(root: str, name: str, jobs: Sequence[JobInfo]) -> list[list[str]]:
    rows = []
    for j in jobs:
        score = (str(j.score) if j.state == "ready" else _when(j.score))
        rows.append([f'<a href="{e(_link(root, "queue", name, id=j.id))}"><code>{e(j.id)}</code>'
                     "</a>", e(j.state), score, str(j.priority),
                     f"{j.attempts}/{j.max_attempts}", e(j.reason or ""), _payload(j.payload)])
    return rows


def _action(config: Config, root: str, token: str, kind: str, name: str, action: str,
            ids: Sequence[str], label: str) -> str:
    hidden = "".join(f'<input type="hidden" name="id" value="{e(i)}">' for i in ids)
    return (f'<form class="inline" method="post" action="{e(_link(root, kind, name, action))}">'
            f'<input type="hidden" name="csrf" value="{e(token)}">{hidden}'
            f'<button type="submit" class="{e(action)}">{e(label)}</button></form>')


HISTOGRAMS = {"wait": "wait time (enqueued → leased)", "run": "run time (leased → acked)",
              "lag": "lag (written → taken by the sink)"}


def _series_charts(series: Series, lines: dict[str, Sequence[str]], hists: Sequence[str],
                   title: str, extra: dict[str, Sequence[int]] | None = None) -> str:
    s = series.value
    if not charts.recorded(s) or s is None:
        return _no_series(series)
    cards = []
    if extra:
        for label, values in extra.items():
            cards.append(charts.line_chart({label: values}, minute=s.minute,
                                           title=f"{title}: {label}"))
    for label, names in lines.items():
        got = {n: s.counters[n] for n in names if n in s.counters}
        if got:
            cards.append(charts.line_chart(got, minute=s.minute, title=f"{title}: {label}"))
    rows = []
    for h in hists:
        hist = s.histograms.get(h)
        if hist is not None and any(hist):
            values = list(hist)
            cards.append(charts.histogram_chart(values, title=HISTOGRAMS.get(h, h)))
            pct = charts.percentiles(values)
            rows.append([e(h), *(e(b.text) if b else "-" for b in pct.values()),
                         str(sum(values))])
    out = f'<div class="charts">{"".join(f"<div class=card>{c}</div>" for c in cards)}</div>'
    if rows:
        out += _table(["time", "p50", "p90", "p99", "samples (last hour)"], rows,
                      cls="percentiles", numeric=(4,))
    return out


def queue(config: Config, root: str, token: str, page: QueuePage, flash: str = "") -> str:
    name = page.name
    parts = [f"<h1>Queue <code>{e(name)}</code></h1>"]
    if flash:
        parts.append(f'<p class="flash" id="flash">{e(flash)}</p>')
    st = page.figure.stats
    if not isinstance(st, QueueStats):
        parts.append(f'<p class="error">{e(page.figure.error)}</p>')
        return layout(config, root, f"queue {name}", "".join(parts))
    parts.append(_table(
        ["ready", "delayed", "active", "expired leases", "dead", "unfinished",
         *(f"{e(k)} (total)" for k in sorted(page.figure.counters))],
        [[str(st.ready), str(st.delayed), str(st.active), str(st.expired_leases),
          str(st.dead), str(st.unfinished),
          *(str(page.figure.counters[k]) for k in sorted(page.figure.counters))]],
        cls="depth", numeric=tuple(range(6 + len(page.figure.counters)))))
    if st.priorities:
        parts.append(_table(["priority", "unfinished", "ready"],
                            [[str(p.priority), str(p.unfinished), str(p.ready)]
                             for p in st.priorities], cls="priorities", numeric=(0, 1, 2)))
    parts.append("<h2>Last hour</h2>")
    s = page.series.value
    extra: dict[str, Sequence[int]] | None = None
    if s is not None and all(k in s.counters for k in ("enqueued", "completed", "dead")):
        extra = {"unfinished": charts.depth_history(st.unfinished, s.counters["enqueued"],
                                                     s.counters["completed"],
                                                     s.counters["dead"])}
    parts.append(_series_charts(
        page.series, {"throughput per minute": ("enqueued", "completed", "failed", "retried",
                                                "dead")},
        ("wait", "run"), f"queue {name}", extra))
    # search
    by, value = page.search or ("id", "")
    parts.append(
        "<h2>Find a job</h2>"
        f'<form method="get" action="{e(_link(root, "queue", name))}" id="search">'
        '<select name="by">'
        f'<option value="id"{" selected" if by == "id" else ""}>job id</option>'
        f'<option value="key"{" selected" if by == "key" else ""}>idempotency key</option>'
        f'</select> <input name="q" value="{e(value)}" size="40"> '
        '<button type="submit">find</button></form>')
    if page.search is not None:
        if page.search_error:
            parts.append(f'<p class="error" id="found">{e(page.search_error)}</p>')
        elif page.found is None:
            why = ("no unfinished job holds that idempotency key (a finished, dead or purged "
                   "job releases it)" if by == "key" else "no such job (finished or purged)")
            parts.append(f'<p class="muted" id="found">{e(why)}</p>')
        else:
            j = page.found
            parts.append('<div id="found">' + _table(
                ["id", "state", "score", "priority", "attempts", "last reason", "payload",
                 "idempotency key", "enqueued"],
                [[f"<code>{e(j.id)}</code>", e(j.state),
                  str(j.score) if j.state == "ready" else _when(j.score), str(j.priority),
                  f"{j.attempts}/{j.max_attempts}", e(j.reason or ""), _payload(j.payload),
                  e(j.key or ""), _when(j.enqueued_at_ms)]], cls="found") + "</div>")
    # jobs by state
    tabs = " ".join(
        f'<a class="{"on" if s_ == page.state else ""}" '
        f'href="{e(_link(root, "queue", name, state=s_))}">{e(s_)}</a>' for s_ in STATES)
    parts.append(f'<h2>Jobs</h2><p class="tabs">{tabs}</p>')
    if page.jobs_error:
        parts.append(f'<p class="error">{e(page.jobs_error)}</p>')
    elif not page.jobs:
        parts.append(f'<p class="muted">no {e(page.state)} jobs</p>')
    else:
        what = {"ready": "score", "delayed": "due", "active": "lease deadline",
                "dead": "died"}[page.state]
        parts.append(_table(["id", "state", what, "priority", "attempts", "last reason",
                             "payload"], _job_rows(root, name, page.jobs),
                            cls=f"jobs {page.state}"))
        if len(page.jobs) >= 50:
            parts.append(f'<p class="muted">the first {len(page.jobs)} shown</p>')
    # dead letters
    parts.append(f'<h2>Dead letters <span class="muted">({page.dead_total})</span></h2>')
    if page.dead_error:
        parts.append(f'<p class="error">{e(page.dead_error)}</p>')
    elif not page.dead:
        parts.append('<p class="muted">no dead letters</p>')
    else:
        rows = []
        for j in page.dead:
            row = [f"<code>{e(j.id)}</code>", _when(j.score), e(j.reason or ""),
                   f"{j.attempts}/{j.max_attempts}", _payload(j.payload)]
            if config.allow_actions:
                row.append(_action(config, root, token, "queue", name, "requeue", [j.id],
                                   "requeue")
                           + " " + _action(config, root, token, "queue", name, "purge", [j.id],
                                           "purge"))
            rows.append(row)
        parts.append(_table(["id", "died", "reason", "attempts", "payload",
                             *(["actions"] if config.allow_actions else [])], rows,
                            cls="dead"))
        ids = [j.id for j in page.dead]
        if config.allow_actions:
            parts.append(_action(config, root, token, "queue", name, "requeue", ids,
                                 f"requeue these {len(ids)}") + " "
                         + _action(config, root, token, "queue", name, "purge", ids,
                                   f"purge these {len(ids)}"))
        else:
            parts.append('<p class="muted">read-only: start with --allow-actions to requeue '
                         "or purge</p>")
        nav = []
        if page.dead_offset > 0:
            newer = _link(root, "queue", name, dead=max(0, page.dead_offset - 50))
            nav.append(f'<a href="{e(newer)}">newer</a>')
        if page.dead_offset + len(page.dead) < page.dead_total:
            older = _link(root, "queue", name, dead=page.dead_offset + 50)
            nav.append(f'<a href="{e(older)}">older</a>')
        if nav:
            parts.append(f'<p>{" ".join(nav)}</p>')
    return layout(config, root, f"queue {name}", "".join(parts))


# -- a write-behind store ------------------------------------------------------------------------


def store(config: Config, root: str, token: str, page: StorePage, flash: str = "") -> str:
    name = page.name
    parts = [f"<h1>Write-behind store <code>{e(name)}</code></h1>"]
    if flash:
        parts.append(f'<p class="flash" id="flash">{e(flash)}</p>')
    st = page.figure.stats
    if not isinstance(st, StoreStats):
        parts.append(f'<p class="error">{e(page.figure.error)}</p>')
        return layout(config, root, f"store {name}", "".join(parts))
    counters = page.figure.counters
    parts.append(_table(
        ["pending", "dirty", "retrying", "claimed", "dead", "lag now",
         *(f"{e(k)} (total)" for k in sorted(counters))],
        [[str(st.pending), str(st.dirty), str(st.retry), str(st.claimed), str(st.dead),
          _ms(st.lag_ms), *(str(counters[k]) for k in sorted(counters))]],
        cls="depth", numeric=tuple(range(6 + len(counters)))))
    parts.append("<h2>Last hour</h2>")
    parts.append(_series_charts(page.series, {"records per minute": (
        "written", "flushed", "failed", "dead")}, ("lag",), f"store {name}"))
    parts.append("<h2>Dead records</h2>")
    if page.dead_error:
        parts.append(f'<p class="error">{e(page.dead_error)}</p>')
    elif not page.dead:
        parts.append('<p class="muted">no dead records</p>')
    else:
        rows = []
        for d in page.dead:
            row = [f"<code>{e(d.key)}</code>", str(d.version), "delete" if d.deleted else "write",
                   str(d.attempts), e(d.error), _when(d.died_at_ms)]
            if config.allow_actions:
                row.append(_action(config, root, token, "store", name, "requeue", [d.key],
                                   "requeue"))
            rows.append(row)
        parts.append(_table(["key", "version", "change", "attempts", "error", "died",
                             *(["actions"] if config.allow_actions else [])], rows,
                            cls="dead"))
    nav = []
    if page.dead_offset > 0:
        newer = _link(root, "store", name, dead=max(0, page.dead_offset - 50))
        nav.append(f'<a href="{e(newer)}">newer</a>')
    if len(page.dead) >= 50:
        older = _link(root, "store", name, dead=page.dead_offset + 50)
        nav.append(f'<a href="{e(older)}">older</a>')
    if nav:
        parts.append(f'<p>{" ".join(nav)}</p>')
    return layout(config, root, f"store {name}", "".join(parts))


def message(config: Config, root: str, status: int, text: str) -> str:
    return layout(config, root, str(status),
                  f'<h1>{status}</h1><p class="error" id="message">{e(text)}</p>'
                  f'<p><a href="{e(root)}/">overview</a></p>', refresh=False)
