"""A queue on Redis Streams with a consumer group (the Lua area ``lua/stream/``), for users who
want the Streams model: :class:`StreamQueue`, on a sync or an asyncio client.

Read :class:`StreamQueue` (``streamqueue.py``) first: its module docstring states the guarantee
and its limits. The package, from the Lua contract up:

* ``ops.py``: the keys (``lua/keysets/streamqueue.keys``), one call spec per Lua operation and
  the plans (a consume that waits for entries through ``engine/waiting.py``);
* ``streamqueue.py``: :class:`StreamQueue`, one class on a sync or an asyncio client.
"""

from .ops import DeadEntry, Entry, StreamKeys, StreamStats
from .streamqueue import StreamQueue

__all__ = ["DeadEntry", "Entry", "StreamKeys", "StreamQueue", "StreamStats"]
