"""Reliable queues: a priority queue with leases, retries and dead letters (:class:`Queue`, on a
sync or an asyncio client; :class:`Worker`, :class:`AsyncWorker`).

The Redis Streams variant lives in :mod:`pyredislua.stream`; :class:`StreamQueue` and its
result types are also importable from here, kept for compatibility."""

# kept for compatibility: the Streams queue moved to pyredislua.stream
from ..stream import DeadEntry, Entry, StreamQueue, StreamStats
from .ops import (
    Enqueued,
    Job,
    JobInfo,
    JobSpec,
    PriorityCount,
    QueueKeys,
    QueueStats,
    Settled,
)
from .queue import Queue
from .worker import AsyncWorker, DeadLetter, Worker, WorkerMetrics

__all__ = [
    "AsyncWorker",
    "DeadEntry",
    "DeadLetter",
    "Enqueued",
    "Entry",
    "Job",
    "JobInfo",
    "JobSpec",
    "PriorityCount",
    "Queue",
    "QueueKeys",
    "QueueStats",
    "Settled",
    "StreamQueue",
    "StreamStats",
    "Worker",
    "WorkerMetrics",
]
