"""A Prometheus collector for the figures Redis keeps about named primitives.

The queue, Streams and write-behind operations keep their totals in Redis, updated atomically
by the Lua operations themselves (so a Node.js producer and a Python worker count into the same
figures); locks keep their holder, fence and waiters. This collector reads them at each scrape
with :func:`pyredislua.observe.figures.read` (one pipelined round trip, one per node on a
cluster, of the read-only ``*.stats`` and ``lock.inspect`` operations; ``pyredislua top`` reads
them the same way), and exposes them as Prometheus metrics: cumulative ``_total``
counters (Prometheus computes rates) and gauges of depth and state.

Embed it::

    from prometheus_client import REGISTRY
    REGISTRY.register(PyRedisLuaCollector(client, queues=["orders"], locks=["billing"]))

or serve it: ``pyredislua metrics serve --url URL --queue orders --port 9187``. Needs the
``prometheus`` extra (``prometheus_client``).

``series=[("queue", "orders"), ("limiter", "api", "tenant-7")]`` adds the metrics the Lua
operations record themselves (:mod:`pyredislua.observe.series`; (kind, name[, tag])), read in
one more pipelined round trip of ``no-writes`` operations: per counter the last complete
minute's count (``pyredislua_recorded_last_minute``) and the hour's total
(``pyredislua_recorded_last_hour``), and per histogram the hour's cumulative log2 buckets
(``pyredislua_recorded_seconds_bucket{le=...}``, a gauge: the window slides, so counts go down;
``histogram_quantile`` reads it as it reads any bucket series).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..client import Client
from ..lock.ops import LockState
from ..queue.ops import QueueStats
from ..stream.ops import StreamStats
from ..writebehind.ops import StoreStats
from .figures import Targets, read
from .series import MinuteSeries, bucket_bounds, series_call

__all__ = ["PyRedisLuaCollector", "Targets", "exposition"]


class PyRedisLuaCollector:
    """A ``prometheus_client`` custom collector (``collect()`` yields metric families)."""

    def __init__(self, client: Client, *, queues: Iterable[str] = (),
                 streams: Iterable[str | tuple[str, str]] = (), stores: Iterable[str] = (),
                 locks: Iterable[str] = (), prefix: str = "prl",
                 series: Iterable[tuple[str, str] | tuple[str, str, str | None]] = ()
                 ) -> None:
        self.client = client
        self.series = tuple((s[0], s[1], s[2] if len(s) > 2 else None) for s in series)
        self.targets = Targets(
            tuple(queues),
            tuple((s, "workers") if isinstance(s, str) else (s[0], s[1]) for s in streams),
            tuple(stores), tuple(locks), prefix)

    def describe(self) -> list[Any]:
        return []  # families are known only after reading: no describe-time round trip

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        reading = read(self.client, self.targets)

        def gauge(name: str, doc: str, labels: Sequence[str]) -> Any:
            return GaugeMetricFamily(f"pyredislua_{name}", doc, labels=list(labels))

        def counter(name: str, doc: str, labels: Sequence[str]) -> Any:
            return CounterMetricFamily(f"pyredislua_{name}", doc, labels=list(labels))

        errors = gauge("read_errors", "1 when a primitive's figures could not be read at this "
                       "scrape (its other metrics are then absent)", ["kind", "name"])
        q_jobs = gauge("queue_jobs", "jobs by state", ["queue", "state"])
        q_expired = gauge("queue_expired_leases", "active jobs whose lease ran out, awaiting "
                          "a reap", ["queue"])
        q_prio = gauge("queue_priority_jobs", "unfinished jobs by priority", ["queue", "priority"])
        q_events = counter("queue_jobs", "jobs through each transition since the queue began "
                           "(enqueued, acked, retried, dead, requeued, purged, reaped)",
                           ["queue", "event"])
        s_entries = gauge("stream_entries", "entries not yet acked", ["queue"])
        s_pending = gauge("stream_pending", "entries delivered and not acked", ["queue", "group"])
        s_consumer = gauge("stream_consumer_pending", "pending entries per consumer",
                           ["queue", "group", "consumer"])
        s_dead = gauge("stream_dead", "dead-lettered entries", ["queue"])
        w_records = gauge("writebehind_records", "records by state", ["store", "state"])
        w_lag = gauge("writebehind_lag_seconds", "age of the oldest record not yet in the sink",
                      ["store"])
        w_events = counter("writebehind_records", "records through each event since the store "
                           "began", ["store", "event"])
        l_held = gauge("lock_held", "1 while the lock is held", ["lock"])
        l_fence = gauge("lock_fence", "the fence of the current or last holder", ["lock"])
        l_waiters = gauge("lock_waiters", "registered waiters", ["lock"])
        l_left = gauge("lock_lease_remaining_seconds", "time left of the current lease", ["lock"])

        for fig in reading.figures:
            name, reply = fig.name, fig.stats
            errors.add_metric([fig.kind, name], 0.0 if fig.error is None else 1.0)
            if isinstance(reply, QueueStats):
                for state in ("ready", "delayed", "active", "dead"):
                    q_jobs.add_metric([name, state], getattr(reply, state))
                q_expired.add_metric([name], reply.expired_leases)
                for event, value in sorted(fig.counters.items()):
                    q_events.add_metric([name, event], value)
                for p in reply.priorities or ():
                    q_prio.add_metric([name, str(p.priority)], p.unfinished)
            elif isinstance(reply, StreamStats):
                group = fig.group or ""
                s_entries.add_metric([name], reply.length)
                s_pending.add_metric([name, group], max(reply.pending, 0))
                for consumer, count in sorted(reply.consumers.items()):
                    s_consumer.add_metric([name, group, consumer], count)
                s_dead.add_metric([name], reply.dead)
            elif isinstance(reply, StoreStats):
                for state in ("dirty", "retry", "claimed", "dead"):
                    w_records.add_metric([name, state], getattr(reply, state))
                w_lag.add_metric([name], reply.lag_ms / 1000)
                for event, value in sorted(fig.counters.items()):
                    w_events.add_metric([name, event], value)
            elif isinstance(reply, LockState):
                l_held.add_metric([name], 1.0 if reply.held else 0.0)
                l_fence.add_metric([name], reply.fence)
                l_waiters.add_metric([name], reply.waiters)
                l_left.add_metric([name], max(reply.pttl_ms, 0) / 1000 if reply.held else 0.0)
        yield from (errors, q_jobs, q_expired, q_prio, q_events, s_entries, s_pending,
                    s_consumer, s_dead, w_records, w_lag, w_events, l_held, l_fence, l_waiters,
                    l_left)
        if self.series:
            yield from self._recorded(gauge)

    def _recorded(self, gauge: Any) -> Iterator[Any]:
        """The recorded series: one more pipelined round trip."""
        calls = [series_call(kind, name, tag=tag, prefix=self.targets.prefix)
                 for kind, name, tag in self.series]
        replies = self.client.run_many(calls, raise_on_error=False)
        labels = ["kind", "name", "counter"]
        minute = gauge("recorded_last_minute", "what the operations recorded in the last "
                       "complete minute (server time)", labels)
        hour = gauge("recorded_last_hour", "what the operations recorded over the last hour",
                     labels)
        buckets = gauge("recorded_seconds_bucket", "recorded durations over the last hour, "
                        "cumulative per upper bound (log2 ms buckets)",
                        ["kind", "name", "histogram", "le"])
        count = gauge("recorded_seconds_count", "recorded durations over the last hour",
                      ["kind", "name", "histogram"])
        failed = gauge("recorded_read_errors", "1 when a primitive's recorded metrics could "
                       "not be read at this scrape", ["kind", "name"])
        for (kind, name, _), reply in zip(self.series, replies):
            failed.add_metric([kind, name], 1.0 if isinstance(reply, BaseException) else 0.0)
            if not isinstance(reply, MinuteSeries):
                continue
            for counter, values in reply.counters.items():
                minute.add_metric([kind, name, counter], values[-2])
                hour.add_metric([kind, name, counter], sum(values))
            for histogram, values in reply.histograms.items():
                running = 0
                for b, n in enumerate(values):
                    running += n
                    high = bucket_bounds(b)[1]
                    le = "+Inf" if high == float("inf") else repr(high / 1000)
                    buckets.add_metric([kind, name, histogram, le], running)
                count.add_metric([kind, name, histogram], running)
        yield from (minute, hour, buckets, count, failed)


def exposition(collector: PyRedisLuaCollector) -> str:
    """The collector's metrics in Prometheus' text format (one scrape)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()
