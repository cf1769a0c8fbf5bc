"""SQLite sink: the embedded default. One ``executemany`` upsert per batch, in one transaction."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .base import SinkRow, SinkUnavailableError, latest_per_key

if TYPE_CHECKING:
    from ..ops import Record

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_identifier(name: str, what: str = "table") -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{what} name must match {_IDENT.pattern}, got {name!r}")
    return name


class SQLiteSink:
    """Writes records into ``table`` (key TEXT PRIMARY KEY, value BLOB, version INTEGER,
    deleted INTEGER, updated_at REAL) of a SQLite database file (or ``:memory:``).

    A row changes only when the incoming version is newer: re-delivery is a no-op and an older
    version never overwrites a newer one. Safe to share between threads.
    """

    def __init__(self, path: str = ":memory:", *, table: str = "prl_writebehind",
                 timeout: float = 30.0) -> None:
        self.path = path
        self.table = check_identifier(table)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False,
                                     isolation_level=None)
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, value BLOB, "
            "version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, "
            "updated_at REAL NOT NULL DEFAULT (julianday('now')))")
        self._upsert = (
            f"INSERT INTO {self.table} (key, value, version, deleted) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = excluded.version, "
            "deleted = excluded.deleted, updated_at = julianday('now') "
            f"WHERE excluded.version > {self.table}.version")

    def write(self, records: Sequence[Record]) -> None:
        rows = [(r.key, r.value, r.version, 1 if r.value is None else 0)
                for r in latest_per_key(records)]
        if not rows:
            return
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:  # locked for longer than timeout
                raise SinkUnavailableError(str(error)) from error
            try:
                self._conn.executemany(self._upsert, rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def rows(self) -> dict[str, SinkRow]:
        """Every row, tombstones included (for checks and the demo)."""
        with self._lock:
            cur = self._conn.execute(f"SELECT key, value, version, deleted FROM {self.table}")
            return {k: SinkRow(k, None if v is None else bytes(v), int(ver), bool(d))
                    for k, v, ver, d in cur.fetchall()}

    def count(self) -> int:
        with self._lock:
            (n,) = self._conn.execute(
                f"SELECT count(*) FROM {self.table} WHERE deleted = 0").fetchone()
            return int(n)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
