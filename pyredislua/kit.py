"""Small shared rules, each written once: key names and hash tags, time units, bytes and text.

Every primitive builds its keys, converts its durations and reads its replies with these, so the
rules cannot drift between areas.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

# Redis resolves BLPOP timeouts on its cron tick (100 ms at the default hz 10): a blocking wait
# aims this much short of a deadline and the last stretch is slept locally.
TIMER_GRAIN = 0.11


# -- keys -----------------------------------------------------------------------------------------


def tagged_name(name: str) -> str:
    """A primitive's name as the hash-tagged part of its keys: kept as it is when it already
    carries a non-empty ``{tag}`` (so several primitives can share a cluster slot on purpose),
    else wrapped whole: ``orders`` -> ``{orders}``."""
    if not name:
        raise ValueError("a name must not be empty")
    start = name.find("{")
    if start >= 0 and name.find("}", start + 2) > start + 1:
        return name
    return "{" + name + "}"


def hash_tag(tag: str) -> str:
    """An explicit hash tag: ``tenant-7`` -> ``{tenant-7}``; it must be non-empty and free of
    braces (Redis would hash only up to the first ``}``)."""
    if not tag:
        raise ValueError("a hash tag must not be empty")
    if "{" in tag or "}" in tag:
        raise ValueError(f"a hash tag must not contain braces, got {tag!r}")
    return "{" + tag + "}"


# -- time -----------------------------------------------------------------------------------------


def ms(seconds: float, name: str = "duration", *, allow_zero: bool = False) -> int:
    """Seconds to whole milliseconds, rounding up, so a positive duration never becomes 0.
    Refuses what is not a finite number of seconds (bools included), negatives, and 0 unless
    ``allow_zero``."""
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero)):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                         f"number of seconds, got {seconds!r}")
    return max(0 if seconds == 0 else 1, math.ceil(seconds * 1000 - 1e-9))


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """Await ``awaitable`` for at most ``seconds`` (``asyncio.TimeoutError`` after that; None:
    no limit).

    Not ``asyncio.wait_for``: before Python 3.12 it swallows a cancellation of the caller that
    arrives as the awaited call completes, so a task cancelled in that instant runs on (a lock's
    renewal task kept renewing, and the release awaiting it hung). ``asyncio.timeout`` (3.11+)
    keeps the cancellation."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


# -- bytes and text -------------------------------------------------------------------------------


def as_bytes(value: bytes | str) -> bytes:
    """A payload or value as bytes: bytes as they are, str as UTF-8; anything else is refused
    (a payload is never silently ``str()``-ed)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected bytes or str, got {type(value).__name__}")


def as_payload(value: Any) -> bytes:
    """:func:`as_bytes`, with None (a payload left out, a nil reply field) as ``b""``."""
    return b"" if value is None else as_bytes(value)


def as_text(value: Any) -> str:
    """A reply value as str, whatever the client's ``decode_responses``."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def as_fields(raw: Any) -> dict[str, Any]:
    """A field/value reply (a flat ``[field, value, ...]`` list, or a dict under RESP3) as a dict
    keyed by text."""
    if isinstance(raw, dict):
        return {as_text(k): v for k, v in raw.items()}
    it = iter(raw)
    return {as_text(k): v for k, v in zip(it, it)}


def as_opt_text(value: Any) -> str | None:
    """:func:`as_text`, keeping None (a nil reply) as None."""
    return None if value is None else as_text(value)
