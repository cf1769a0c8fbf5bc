"""Cache patterns: cache-aside with single-flight and XFetch stampede protection,
write-through, warming, negative caching and tag invalidation (see ``cache.cache``)."""

from .cache import Cache, CacheStats, Codec, CompressedCodec, JsonCodec, RawCodec
from .ops import HIT, MISS, NEGATIVE, STALE, CacheKeys, Entry, TagInvalidation, xfetch_early

__all__ = [
    "HIT",
    "MISS",
    "NEGATIVE",
    "STALE",
    "Cache",
    "CacheKeys",
    "CacheStats",
    "Codec",
    "CompressedCodec",
    "Entry",
    "JsonCodec",
    "RawCodec",
    "TagInvalidation",
    "xfetch_early",
]
