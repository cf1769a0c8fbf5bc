"""Reliable queues: a priority queue with leases, retries and dead letters (:class:`Queue`,
:class:`AsyncQueue`, :class:`Worker`, :class:`AsyncWorker`), and a Redis Streams variant
(:class:`StreamQueue`, :class:`AsyncStreamQueue`)."""

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
from .queue import AsyncQueue, Queue
from .streams import AsyncStreamQueue, DeadEntry, Entry, StreamQueue, StreamStats
from .worker import AsyncWorker, DeadLetter, Worker, WorkerMetrics

__all__ = [
    "AsyncQueue",
    "AsyncStreamQueue",
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
