"""Reliable queues: a priority queue with leases, retries and dead letters (:class:`Queue`, on a
sync or an asyncio client; :class:`Worker`, :class:`AsyncWorker`), and a Redis Streams variant
(:class:`StreamQueue`)."""

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
from .streams import DeadEntry, Entry, StreamQueue, StreamStats
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
