"""Kept for compatibility: the Streams queue lives in :mod:`pyredislua.stream`."""

from ..stream import DeadEntry, Entry, StreamKeys, StreamQueue, StreamStats

__all__ = ["DeadEntry", "Entry", "StreamKeys", "StreamQueue", "StreamStats"]
