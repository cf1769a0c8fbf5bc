"""Sinks for write-behind: where flushed records end up (see ``.base`` for the protocol)."""

from .base import Sink, SinkRow, SinkUnavailableError, latest_per_key
from .sqlite import SQLiteSink

__all__ = ["SQLiteSink", "Sink", "SinkRow", "SinkUnavailableError", "latest_per_key"]
