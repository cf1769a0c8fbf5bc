"""``pyredislua memory``: what the primitives keep in Redis, and what it costs.

Reads only, client side, bounded: ``SCAN`` over the library's key prefix visits at most
``scan_limit`` keys, and ``MEMORY USAGE`` / ``OBJECT ENCODING`` / ``PTTL`` run on at most
``sample`` instances per area (a lock, a queue, a store, a limiter key, a cache entry), so it is
safe on a large production server. From the sample it reports bytes per unit (per lock, per job,
per write-behind record, per limiter key, per cache entry, per stream entry), the encodings Redis
chose and the thresholds that keep a structure compact, and every key without a TTL whose role
has no documented lifecycle (the README's "keys that stay" table: ``DOCUMENTED_STAYING``).
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis

from ..engine.render import load_keysets
from ..kit import as_text


@dataclass(frozen=True)
class Area:
    """How one area's keys are grouped and counted: ``name``, what one ``unit`` is, and how many
    units an instance holds: the summed lengths of its keys of the ``roles`` (``"length"``), the
    number of its keys of those roles (``"keys"``), or one (``"instance"``)."""

    name: str
    unit: str
    roles: tuple[str, ...]
    count: str


# key base (the segment after the prefix) -> its area. A limiter key and a cache entry are
# instances of their own; a cache namespace's tag sets are counted apart from its entries.
AREAS: dict[str, Area] = {
    "lock": Area("lock", "lock", (), "instance"),
    "rlock": Area("reentrant lock", "lock", (), "instance"),
    "rwlock": Area("read-write lock", "lock", (), "instance"),
    "sem": Area("semaphore", "semaphore", (), "instance"),
    # a job is in exactly one of its queue's four state sets (the jobs hash holds two fields
    # per job since 1.28, one before)
    "q": Area("queue", "job", ("ready", "delayed", "active", "dead"), "length"),
    "sq": Area("stream", "entry", ("stream",), "length"),
    "wb": Area("writebehind", "record", ("versions",), "length"),
    "rl": Area("ratelimit", "limiter key", (), "instance"),
    "cache": Area("cache", "entry", ("e",), "keys"),
    "cache-tags": Area("cache tags", "tag", ("t",), "keys"),
    # a limiter's or a cache's recorded metrics (prl:rl:{tag}:metrics:<name>,
    # prl:cache:{namespace}:metrics); a queue's, lock's or store's count with its instance
    "metrics": Area("recorded metrics", "metrics key", (), "instance"),
}


# Roles (key name after the hash tag; "" for the key named like the instance) that may lack a
# TTL: they live while they hold something (Redis deletes an emptied structure) or stay on
# purpose, as the README's "What holds, for every primitive" table says. Every other library key
# has a TTL; one without is reported.
DOCUMENTED_STAYING: dict[str, frozenset[str]] = {
    "lock": frozenset({"fence"}),
    "rlock": frozenset({"fence"}),
    "rwlock": frozenset({"fence"}),
    "sem": frozenset({"fence"}),
    # the wake-up list (marker) goes with the first dequeue that finds nothing to do
    "q": frozenset({"ready", "delayed", "active", "dead", "jobs", "payloads", "idem", "prio",
                    "stats", "marker"}),
    "sq": frozenset({"stream", "dead", "cursors", "consumers"}),
    "wb": frozenset({"values", "versions", "meta", "dirty", "retry", "claimed", "dead",
                     "stats"}),
    "rl": frozenset(),
    "cache": frozenset(),
    "cache-tags": frozenset({"t"}),  # a tag's set of entry keys, while entries carry the tag
    "metrics": frozenset(),
}

# Redis' compact encodings and the settings that bound them (CONFIG GET names).
COMPACT = {
    "hash": ("listpack", "hash-max-listpack-entries", "hash-max-listpack-value"),
    "zset": ("listpack", "zset-max-listpack-entries", "zset-max-listpack-value"),
    "set": ("listpack", "set-max-listpack-entries", "set-max-listpack-value"),
    "list": ("listpack", "list-max-listpack-size", ""),
}
_LENGTH = {"hash": "HLEN", "zset": "ZCARD", "set": "SCARD", "list": "LLEN", "stream": "XLEN",
           "string": "STRLEN"}


@dataclass
class KeyFacts:
    key: str
    role: str
    type: str
    bytes: int
    encoding: str
    length: int
    pttl: int


@dataclass
class AreaReport:
    area: str
    unit: str
    instances_seen: int = 0
    instances_sampled: int = 0
    units: int = 0
    bytes: int = 0
    by_role: dict[str, list[int]] = field(default_factory=dict)  # role -> [keys, bytes]
    encodings: dict[str, dict[str, int]] = field(default_factory=dict)  # role -> enc -> keys
    beyond_compact: list[str] = field(default_factory=list)

    @property
    def bytes_per_unit(self) -> float | None:
        return self.bytes / self.units if self.units else None

    def as_dict(self) -> dict[str, Any]:
        return {"area": self.area, "unit": self.unit, "instances_seen": self.instances_seen,
                "instances_sampled": self.instances_sampled, "units": self.units,
                "bytes": self.bytes, "bytes_per_unit": self.bytes_per_unit,
                "by_role": self.by_role, "encodings": self.encodings,
                "beyond_compact": self.beyond_compact}


@dataclass
class MemoryReport:
    node: str
    keys_seen: int
    scan_complete: bool
    areas: list[AreaReport]
    no_ttl: list[str]  # library keys without a TTL whose role has no documented lifecycle
    other_keys: int  # keys under the prefix of no known area (compare-and-set values, ...)
    compact_limits: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "keys_seen": self.keys_seen,
                "scan_complete": self.scan_complete, "areas": [a.as_dict() for a in self.areas],
                "no_ttl": self.no_ttl, "other_keys": self.other_keys,
                "compact_limits": self.compact_limits}


@functools.lru_cache(maxsize=1)
def _suffixes() -> dict[str, frozenset[str]]:
    """Key-set base -> the names its keys end with (``lua/keysets/*.keys``: written once)."""
    out: dict[str, frozenset[str]] = {}
    for spec in load_keysets().values():
        out[spec.base] = frozenset(k.name for k in spec.keys + spec.extras if k.name != spec.name)
    return out


def split_key(key: str, prefix: str = "prl") -> tuple[str, str, str] | None:
    """``<prefix>:<base>:<name>[:role]`` -> (base, instance, role); None for other keys.

    For a primitive with a key set the role is the key's suffix from its set (``fence``,
    ``jobs``; ``req`` for a request record) and the instance everything before it, whatever
    the name looks like (``{tenant}:a`` included); for the rest (limiter keys, cache entries)
    the instance ends at the first hash tag and the role is the segment after it."""
    head = prefix + ":"
    if not key.startswith(head):
        return None
    base, _, after = key[len(head):].partition(":")
    if not after:
        return None
    suffixes = _suffixes().get(base)
    if suffixes is not None:
        if "{" not in after or "}" not in after:
            return None  # every name is hash-tagged (kit.tagged_name): not the library's
        record = key.rfind(":req:")
        if record > len(head) + len(base) and "request" in suffixes:
            return base, key[:record], "req"
        parts = key.rsplit(":", 2)
        named = len(head) + len(base)
        if len(parts) >= 2 and parts[-1] in suffixes and "}" in key[named:-len(parts[-1])]:
            return base, key[: -len(parts[-1]) - 1], parts[-1]
        if len(parts) == 3 and parts[1] in suffixes and "}" in parts[0][named:]:
            return base, parts[0], parts[1]  # a per-member key: a semaphore waiter's inbox
        return base, key, ""
    if not after.startswith("{"):
        return None
    close = after.find("}")
    if close < 0:
        return None
    instance = key[: len(head) + len(base) + 1 + close + 1]
    tail = after[close + 1:]
    role = tail[1:].split(":", 1)[0] if tail.startswith(":") else ""
    return base, instance, role


def _key_facts(conn: Any, key: str, role: str) -> KeyFacts | None:
    pipe = conn.pipeline(transaction=False)
    pipe.type(key)
    pipe.memory_usage(key, samples=0)
    pipe.object("encoding", key)
    pipe.pttl(key)
    kind, used, encoding, pttl = pipe.execute(raise_on_error=False)
    kind = as_text(kind)
    if kind == "none" or isinstance(used, BaseException):
        return None  # expired between SCAN and now
    length = conn.execute_command(_LENGTH[kind], key) if kind in _LENGTH else 0
    return KeyFacts(key, role, kind, int(used or 0), as_text(encoding or ""), int(length),
                    int(pttl))


def _compact_limits(conn: Any) -> dict[str, str]:
    limits: dict[str, str] = {}
    for _, entries, value in COMPACT.values():
        for name in (entries, value):
            if name:
                with contextlib.suppress(redis.ResponseError):  # CONFIG refused: unknown
                    limits.update({as_text(k): as_text(v)
                                   for k, v in conn.config_get(name).items()})
    return limits


def _beyond_compact(f: KeyFacts, limits: dict[str, str]) -> str | None:
    """Why a key is not in its compact encoding, or None when it is (or has none)."""
    compact = COMPACT.get(f.type)
    if not compact or f.encoding in (compact[0], "intset", "quicklist"):
        return None
    _, entries_setting, value_setting = compact
    entries = limits.get(entries_setting)
    if entries is None:  # Redis < 7.2 keeps only integer sets compact (intset)
        return f"{f.key}: {f.type} of {f.length} is {f.encoding} (this Redis has no compact " \
               f"encoding for it but intset)"
    if f.length > int(entries):
        why = f"more than {entries_setting} {entries}"
    else:
        why = f"an element longer than {value_setting} {limits.get(value_setting, '?')} bytes"
    return f"{f.key}: {f.type} of {f.length} is {f.encoding} ({why})"


def measure(conn: Any, *, prefix: str = "prl", sample: int = 50, scan_limit: int = 100_000,
            node: str = "") -> MemoryReport:
    """The report for one node (a ``redis.Redis`` connected to it)."""
    instances: dict[str, dict[str, list[tuple[str, str]]]] = defaultdict(dict)
    seen, other = 0, 0
    complete = False
    cursor = 0
    while True:
        step = max(10, min(1000, scan_limit - seen))
        cursor, keys = conn.scan(cursor=cursor, match=f"{prefix}:*", count=step)
        for raw in keys:
            seen += 1
            key = as_text(raw)
            parts = split_key(key, prefix)
            if parts is None or parts[0] not in AREAS:
                other += 1
                continue
            base, instance, role = parts
            if base in ("rl", "cache") and role == "metrics":
                base = "metrics"
            elif base == "cache" and role != "e":
                base = "cache-tags"
            unit = key if base in ("rl", "cache", "metrics") else instance
            instances[base].setdefault(unit, []).append((key, role))
        if cursor == 0:
            complete = True
            break
        if seen >= scan_limit:
            break
    limits = _compact_limits(conn)
    areas, no_ttl = [], []
    for base, area in AREAS.items():
        found = instances.get(base, {})
        report = AreaReport(area.name, area.unit, instances_seen=len(found))
        for unit_key in sorted(found)[:sample]:
            facts = [f for f in (_key_facts(conn, k, r) for k, r in found[unit_key]) if f]
            if not facts:
                continue
            report.instances_sampled += 1
            if area.count == "instance":
                report.units += 1
            elif area.count == "keys":
                report.units += sum(1 for f in facts if f.role in area.roles)
            else:
                report.units += sum(f.length for f in facts if f.role in area.roles)
            for f in facts:
                report.bytes += f.bytes
                role = f.role or base
                tally = report.by_role.setdefault(role, [0, 0])
                tally[0] += 1
                tally[1] += f.bytes
                encodings = report.encodings.setdefault(role, {})
                encodings[f.encoding] = encodings.get(f.encoding, 0) + 1
                line = _beyond_compact(f, limits)
                if line:
                    report.beyond_compact.append(line)
                if f.pttl == -1 and f.role not in DOCUMENTED_STAYING[base]:
                    no_ttl.append(f.key)
        areas.append(report)
    return MemoryReport(node, seen, complete, areas, sorted(no_ttl), other, limits)


def measure_all(conn: Any, **options: Any) -> list[MemoryReport]:
    """One report per primary (each primary of a cluster; the server otherwise)."""
    if hasattr(conn, "get_primaries"):
        return [measure(conn.get_redis_connection(n), node=n.name, **options)
                for n in conn.get_primaries()]
    kwargs = conn.connection_pool.connection_kwargs
    return [measure(conn, node=f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}",
                    **options)]
