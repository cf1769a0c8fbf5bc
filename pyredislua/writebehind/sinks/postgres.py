"""PostgreSQL sink (psycopg 3): per batch, one transaction holding one
``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE t.version < EXCLUDED.version`` statement; the
rows come from ``unnest`` of array parameters for small batches, from ``COPY`` into a temporary
staging table for large ones (faster from ~50 rows on).

``pip install "psycopg[binary]"``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import SinkRow, SinkUnavailableError, latest_per_key
from .sqlite import check_identifier

if TYPE_CHECKING:
    from ..ops import Record


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError('PostgresSink needs psycopg 3: pip install "psycopg[binary]"') from error
    return psycopg


class PostgresSink:
    """Writes records into ``schema.table`` (key TEXT PRIMARY KEY, value BYTEA, version BIGINT,
    deleted BOOLEAN, updated_at TIMESTAMPTZ), version-conditionally.

    ``conninfo``: a libpq connection string or URL. A lost connection raises
    :class:`SinkUnavailableError` (the batch is retried without counting an attempt) and is
    re-opened on the next batch. Safe to share between threads: each thread writes on its own
    connection, so several flusher workers write in parallel.
    """

    def __init__(self, conninfo: str, *, table: str = "prl_writebehind",
                 schema: str | None = None, create: bool = True) -> None:
        psycopg = _psycopg()
        self._psycopg = psycopg
        self.conninfo = conninfo
        self.table = check_identifier(table)
        self.schema = None if schema is None else check_identifier(schema, "schema")
        sql = psycopg.sql
        self._ident = (sql.Identifier(self.schema, self.table) if self.schema
                       else sql.Identifier(self.table))
        self._local = threading.local()
        self._all: list[Any] = []
        self._guard = threading.Lock()
        self._upsert = sql.SQL(
            "INSERT INTO {t} AS t (key, value, version, deleted) "
            "SELECT * FROM unnest(%s::text[], %s::bytea[], %s::bigint[], %s::boolean[]) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
            "version = EXCLUDED.version, deleted = EXCLUDED.deleted, updated_at = now() "
            "WHERE t.version < EXCLUDED.version").format(t=self._ident)
        self._upsert_staged = sql.SQL(
            "INSERT INTO {t} AS t (key, value, version, deleted) "
            "SELECT key, value, version, deleted FROM prl_stage "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
            "version = EXCLUDED.version, deleted = EXCLUDED.deleted, updated_at = now() "
            "WHERE t.version < EXCLUDED.version").format(t=self._ident)
        self._upsert_one = sql.SQL(
            "INSERT INTO {t} AS t (key, value, version, deleted) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
            "version = EXCLUDED.version, deleted = EXCLUDED.deleted, updated_at = now() "
            "WHERE t.version < EXCLUDED.version").format(t=self._ident)
        if create:
            conn = self._connection()
            with conn.transaction():
                if self.schema:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(self.schema)))
                conn.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, value BYTEA, "
                    "version BIGINT NOT NULL, deleted BOOLEAN NOT NULL DEFAULT false, "
                    "updated_at TIMESTAMPTZ NOT NULL DEFAULT now())").format(t=self._ident))

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            try:
                conn = self._psycopg.connect(self.conninfo, autocommit=True)
            except self._psycopg.OperationalError as error:
                raise SinkUnavailableError(str(error)) from error
            self._local.conn = conn
            with self._guard:
                self._all.append(conn)
        return conn

    copy_threshold = 50

    def write(self, records: Sequence[Record]) -> None:
        batch = latest_per_key(records)
        if not batch:
            return
        conn = self._connection()
        try:
            with conn.transaction():
                if len(batch) >= self.copy_threshold:
                    self._write_staged(conn, batch)
                else:
                    conn.execute(self._upsert, (
                        [r.key for r in batch], [r.value for r in batch],
                        [r.version for r in batch], [r.value is None for r in batch]))
        except self._psycopg.OperationalError as error:
            if conn.closed or conn.broken:
                self._local.conn = None
                raise SinkUnavailableError(str(error)) from error
            raise

    def _write_staged(self, conn: Any, batch: Sequence[Record]) -> None:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS prl_stage (key text, value bytea, "
                     "version bigint, deleted boolean) ON COMMIT DELETE ROWS")
        with conn.cursor() as cur:
            with cur.copy("COPY prl_stage (key, value, version, deleted) FROM STDIN") as copy:
                for r in batch:
                    copy.write_row((r.key, r.value, r.version, r.value is None))
            cur.execute(self._upsert_staged)

    def write_one(self, record: Record) -> None:
        """One single-row statement in its own transaction: the write-through baseline."""
        self._connection().execute(
            self._upsert_one,
            (record.key, record.value, record.version, record.value is None))

    def rows(self) -> dict[str, SinkRow]:
        """Every row, tombstones included (for checks and the demo); reconnects once."""
        sql = self._psycopg.sql
        query = sql.SQL("SELECT key, value, version, deleted FROM {t}").format(t=self._ident)
        for attempt in (0, 1):
            conn = self._connection()
            try:
                cur = conn.execute(query)
            except self._psycopg.OperationalError:
                if attempt or not (conn.closed or conn.broken):
                    raise
                self._local.conn = None
                continue
            return {k: SinkRow(k, None if v is None else bytes(v), int(ver), bool(d))
                    for k, v, ver, d in cur.fetchall()}
        raise AssertionError("unreachable")

    def drop(self) -> None:
        """Drop the table (and the schema, when this sink named one): for tests and benchmarks."""
        sql = self._psycopg.sql
        conn = self._connection()
        if self.schema:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(self.schema)))
        else:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {t}").format(t=self._ident))

    def close(self) -> None:
        with self._guard:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
