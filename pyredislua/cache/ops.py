"""Call specs of the cache Lua operations (``lua/cache/*.lua``) and the XFetch decision: pure."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..engine.protocol import Call
from ..kit import tagged_name
from ..observe.series import MinuteSeries, parse_series

MISS, HIT, NEGATIVE, STALE = 0, 1, 2, 3
MAX_VALUE = 8 * 1024 * 1024
MAX_TAGS = 32
MAX_INVALIDATE = 1000


class CacheKeys:
    """Key names of one cache namespace; every key shares the namespace's hash tag, so any
    call (an entry with its tag sets, a tag with the entries it deletes) stays in one slot."""

    def __init__(self, namespace: str, prefix: str = "prl", *, metrics: bool = False) -> None:
        if not namespace or "{" in namespace or "}" in namespace:
            raise ValueError(f"a cache namespace must be non-empty, without braces: {namespace!r}")
        self.namespace = namespace
        self.base = f"{prefix}:cache:{tagged_name(namespace)}"
        self.generations = f"{self.base}:tags"
        # metrics (docs/design/metrics-in-redis.md): lookups and recomputes record here
        self.recording = metrics
        self.metrics_key = f"{self.base}:metrics"

    def entry(self, key: str) -> str:
        if not isinstance(key, str) or not key:
            raise ValueError(f"a cache key must be a non-empty str, got {key!r}")
        return f"{self.base}:e:{key}"

    def tag_set(self, tag: str) -> str:
        if not isinstance(tag, str) or not 1 <= len(tag.encode()) <= 256:
            raise ValueError(f"a tag must be a str of 1..256 bytes, got {tag!r}")
        return f"{self.base}:t:{tag}"


@dataclass(frozen=True)
class Entry:
    status: int  # MISS, HIT, NEGATIVE or STALE
    value: bytes | None
    delta_ms: int  # recompute cost recorded with the value
    ttl_ms: int  # remaining logical TTL (<= 0 when stale)
    generations: tuple[int, ...] = ()  # current generation of each tag asked for

    @property
    def found(self) -> bool:
        return self.status in (HIT, NEGATIVE)


def _b(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _parse_entry(reply: Any) -> Entry:
    status, value, delta, ttl, gens = reply
    return Entry(int(status), None if value is None else _b(value), int(delta), int(ttl),
                 tuple(int(g) for g in gens))


def _tags(tags: Sequence[str]) -> list[str]:
    unique = list(dict.fromkeys(tags))
    if len(unique) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags per entry, got {len(unique)}")
    return unique


def get_call(keys: CacheKeys, key: str, tags: Sequence[str] = (), *, record: bool = True
             ) -> Call[Entry]:
    """The entry, plus the current generations of ``tags`` (read before a recompute). Keys
    built with ``metrics=True`` (and ``record``) make it ``cache.get_recorded``, which counts
    the lookup as a hit, miss or stale entry in the namespace's metrics."""
    tags = _tags(tags)
    for t in tags:
        keys.tag_set(t)  # validates the tag
    if keys.recording and record:
        return Call("cache.get_recorded", (keys.entry(key), keys.generations, keys.metrics_key),
                    tuple(tags), _parse_entry)
    return Call("cache.get", (keys.entry(key), keys.generations), tuple(tags), _parse_entry)


def metrics_call(keys: CacheKeys) -> Call[MinuteSeries]:
    """The namespace's recorded metrics (``cache.metrics``, no writes; see
    :mod:`pyredislua.observe.series`)."""
    return Call("cache.metrics", (keys.metrics_key,), (), parse_series("cache", keys.namespace))


def set_call(keys: CacheKeys, key: str, value: bytes | None, ttl_ms: int, *, delta_ms: int = 0,
             grace_ms: int = 0, tags: Sequence[str] = (),
             expected: Sequence[int] | None = None, record: bool = False) -> Call[bool]:
    """``value`` None caches "not found". ``expected``: the tags' generations read before the
    value was computed; the entry is not stored (False) if one was invalidated since.
    ``record`` (with keys built with ``metrics=True``): count a stored value as a recompute."""
    tags = _tags(tags)
    if expected is not None and len(expected) != len(tags):
        raise ValueError("expected needs one generation per tag")
    if value is not None and len(value) > MAX_VALUE:
        raise ValueError(f"a cached value is at most {MAX_VALUE} bytes, got {len(value)}")
    call_keys = (keys.entry(key), keys.generations, *(keys.tag_set(t) for t in tags))
    if record and keys.recording:
        call_keys = (*call_keys, keys.metrics_key)
    pairs: list[str | int] = []
    for i, t in enumerate(tags):
        pairs += [t, -1 if expected is None else expected[i]]
    args = (b"" if value is None else value, ttl_ms, min(delta_ms, 86_400_000), grace_ms,
            1 if value is None else 0, *pairs)
    return Call("cache.set", call_keys, args, lambda r: int(r) == 1)


def delete_call(keys: CacheKeys, key: str) -> Call[bool]:
    return Call("cache.delete", (keys.entry(key),), (), lambda r: int(r) == 1)


@dataclass(frozen=True)
class TagInvalidation:
    generation: int
    deleted: int
    left: int


def invalidate_tag_call(keys: CacheKeys, tag: str, entries: Sequence[str], *, bump: bool
                        ) -> Call[TagInvalidation]:
    if len(entries) > MAX_INVALIDATE:
        raise ValueError(f"at most {MAX_INVALIDATE} entries per call")
    return Call("cache.invalidate_tag", (keys.generations, keys.tag_set(tag), *entries),
                (tag, 1 if bump else 0),
                lambda r: TagInvalidation(int(r[0]), int(r[1]), int(r[2])))


def xfetch_early(delta_ms: int, ttl_ms: int, beta: float, rng: random.Random) -> bool:
    """XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): recompute before expiry when
    ``now - delta * beta * ln(rand()) >= expiry``, i.e. ``-delta * beta * ln(rand()) >= ttl``.

    The probability is ``exp(-ttl / (delta * beta))``: it grows as expiry nears and with the
    recompute cost, so one reader recomputes shortly before a costly value expires.
    """
    if ttl_ms <= 0:
        return True
    if delta_ms <= 0 or beta <= 0:
        return False
    u = rng.random()
    while u == 0.0:
        u = rng.random()
    return -delta_ms * beta * math.log(u) >= ttl_ms
