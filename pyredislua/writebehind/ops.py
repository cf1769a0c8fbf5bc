"""Call specs of the write-behind Lua operations (``lua/writebehind/*.lua``): pure, no I/O."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..engine.keysets import KeySet
from ..engine.protocol import Call
from ..kit import as_bytes, as_text
from ..observe.series import MinuteSeries, parse_series

MAX_BATCH = 1000  # records per Lua call; bigger batches are split and pipelined
MAX_ERROR = 4096  # bytes of error text kept with a failed record
MAX_KEY = 1024


class StoreKeys(KeySet, keyset="writebehind"):
    """The nine keys of one write-behind store, all under one hash tag (one cluster slot):
    ``prl:wb:{<name>}:<key>``, declared once in ``lua/keysets/writebehind.keys``."""

    values: str
    versions: str
    meta: str
    dirty: str
    retry: str
    claimed: str
    dead: str
    stats: str
    signal: str


class Record(NamedTuple):
    """One claimed record: write ``value`` (None: delete) at ``version`` to the sink."""

    key: str
    version: int  # strictly increasing per key
    value: bytes | None

    @property
    def deleted(self) -> bool:
        return self.value is None

    @property
    def signed_version(self) -> int:
        """The version as the store keeps it: negative for a delete."""
        return -self.version if self.value is None else self.version


@dataclass(frozen=True)
class Claim:
    token: int  # the claim id: ack, fail and release name the claim with it (0: nothing claimed)
    now_ms: int
    wait_ms: int  # 0 when records came back; else ms until something is due (-1: nothing)
    left: int  # due records left unclaimed
    reaped: int
    records: list[Record]
    oldest_dirty_since_ms: int = 0  # server time the batch's oldest record turned dirty


@dataclass(frozen=True)
class DeadRecord:
    key: str
    version: int
    deleted: bool
    attempts: int
    error: str
    died_at_ms: int


@dataclass(frozen=True)
class StoreStats:
    now_ms: int
    dirty: int
    retry: int
    claimed: int
    dead: int
    oldest_dirty_since_ms: int  # -1: nothing pending
    counters: dict[str, int]

    @property
    def pending(self) -> int:
        return self.dirty + self.retry + self.claimed

    @property
    def lag_ms(self) -> int:
        """Age of the oldest record not yet in the sink (0: none)."""
        if self.oldest_dirty_since_ms < 0:
            return 0
        return max(0, self.now_ms - self.oldest_dirty_since_ms)


def _key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a record key must be str, got {type(key).__name__}")
    n = len(key.encode())
    if not 1 <= n <= MAX_KEY:
        raise ValueError(f"a record key must be 1..{MAX_KEY} bytes, got {n}")
    return key


def _ints(reply: Any) -> list[int]:
    return [int(x) for x in reply]


def write_call(keys: StoreKeys, items: Sequence[tuple[str, str, bytes]], notify_at: int = 0
               ) -> Call[list[int]]:
    """``items``: (``set``|``del``, key, value) triples, at most MAX_BATCH."""
    args: list[str | int | bytes] = [notify_at]
    for op, key, value in items:
        args += [op, key, value]
    return Call("writebehind.write", keys.with_metrics(), tuple(args), _ints)


def _parse_claim(reply: Any) -> Claim:
    now, wait, left, reaped, claim_id, oldest, keys, values, versions = reply
    records = [Record(as_text(key), version if version > 0 else -version,
                      None if version < 0 or value is None else as_bytes(value))
               for key, value, version in zip(keys, values, versions)]
    return Claim(int(claim_id), int(now), int(wait), int(left), int(reaped), records,
                 int(oldest))


def new_request_id() -> int:
    """A claim's request id: random (not ``random``'s state, which forked processes share)."""
    return secrets.randbits(52) + 1


def claim_call(keys: StoreKeys, count: int, lease_ms: int, *, min_count: int = 0,
               max_age_ms: int = 0, max_attempts: int = 5, request_id: int | None = None
               ) -> Call[Claim]:
    """``request_id`` (default: a new random one) makes the call safe to send again: a repeat
    of a call that claimed records returns the same records instead of claiming more (redis-py
    re-sends a command after a timeout). Re-send a claim whose reply was lost with the same id."""
    rid = new_request_id() if request_id is None else request_id
    return Call("writebehind.claim", keys.with_metrics(),
                (count, lease_ms, min_count, max_age_ms, max_attempts, rid), _parse_claim)


def ack_call(keys: StoreKeys, claim_id: int, records: Sequence[Record]) -> Call[list[int]]:
    args: list[str | int | bytes] = [claim_id]
    for r in records:
        args += [r.key, r.signed_version]
    return Call("writebehind.ack", keys.with_metrics(), tuple(args), _ints)


def fail_call(keys: StoreKeys, claim_id: int, records: Sequence[tuple[Record, str]], *,
              max_attempts: int, backoff_ms: int, max_backoff_ms: int) -> Call[list[int]]:
    args: list[str | int | bytes] = [claim_id, max_attempts, backoff_ms, max_backoff_ms]
    for r, error in records:
        args += [r.key, r.signed_version, error.encode()[:MAX_ERROR]]
    return Call("writebehind.fail", keys.with_metrics(), tuple(args), _ints)


def release_call(keys: StoreKeys, claim_id: int, record_keys: Sequence[str], delay_ms: int = 0
                 ) -> Call[int]:
    return Call("writebehind.release", keys.all, (claim_id, delay_ms, *record_keys), int)


def metrics_call(keys: StoreKeys) -> Call[MinuteSeries]:
    """The store's recorded metrics (``writebehind.metrics``, no writes; keys built with
    ``metrics=True`` make write, claim, ack, fail and reap record: see
    :mod:`pyredislua.observe.series`)."""
    return Call("writebehind.metrics", (keys.metrics_key,), (), parse_series("store", keys.name))


def reap_call(keys: StoreKeys, limit: int = 100, max_attempts: int = 5) -> Call[int]:
    return Call("writebehind.reap", keys.with_metrics(), (limit, max_attempts), int)


def requeue_call(keys: StoreKeys, record_keys: Sequence[str] = (), limit: int = 100
                 ) -> Call[int]:
    return Call("writebehind.requeue", keys.all, (limit, *record_keys), int)


def dead_call(keys: StoreKeys, offset: int = 0, count: int = 100) -> Call[list[DeadRecord]]:
    def parse(reply: Any) -> list[DeadRecord]:
        return [DeadRecord(as_text(r[0]), abs(int(r[1])), int(r[1]) < 0, int(r[2]), as_text(r[3]),
                           int(r[4])) for r in reply]
    return Call("writebehind.dead", keys.all, (offset, count), parse)


def stats_call(keys: StoreKeys) -> Call[StoreStats]:
    def parse(reply: Any) -> StoreStats:
        flat = reply[6]
        counters = {as_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return StoreStats(int(reply[0]), int(reply[1]), int(reply[2]), int(reply[3]),
                          int(reply[4]), int(reply[5]), counters)
    return Call("writebehind.stats", keys.all, (), parse)


def get_call(keys: StoreKeys, record_keys: Sequence[str]
             ) -> Call[list[tuple[bytes | None, int]]]:
    def parse(reply: Any) -> list[tuple[bytes | None, int]]:
        return [(None if r[0] is None else as_bytes(r[0]), abs(int(r[1]))) for r in reply]
    return Call("writebehind.get", (keys.values, keys.versions), tuple(record_keys), parse)
