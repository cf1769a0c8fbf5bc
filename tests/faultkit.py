"""Fault injection for the fault suite (``-m faults``): real faults on real processes.

* :class:`FaultServer` — a ``redis-server`` of the test's own that can be restarted with or
  without persistence, paused with SIGSTOP, have its clients killed, and be driven to
  ``maxmemory`` with ``noeviction`` and back.
* :func:`postgres_outage` — PostgreSQL made unavailable for a while (backends terminated, a table
  locked) without touching the server itself.
* :class:`FaultReport` (the ``fault_report`` fixture) — each fault test records what happened (did
  the component recover, how fast, what surfaced, what was lost or duplicated); the session
  writes the table to ``$PYREDISLUA_FAULT_TABLE`` when set::

      PYREDISLUA_FAULT_TABLE=faults.md tools/dev test -m faults

Every wait here is on a condition with a deadline (:func:`wait_for`), never a bare sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

import pyredislua
from pyredislua.server import RedisServer

T = TypeVar("T")


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.005) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def through_restarts(port: int, act: Callable[[pyredislua.Client], T], *,
                     what: str = "the producer", seconds: float = 15.0) -> T:
    """``act`` on a client of a fresh connection to ``port``, retried on connection errors for
    up to ``seconds`` (the server may be restarting)."""
    conn = redis.Redis(port=port)
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                return act(pyredislua.Client(conn))
            except (redis.ConnectionError, redis.TimeoutError):
                assert time.monotonic() < deadline, f"{what} never got through"
                time.sleep(0.05)
    finally:
        conn.close()


class FaultServer(RedisServer):
    """A redis-server whose faults the test controls. ``aof=True`` persists every write
    (``appendfsync always``) so a restart keeps what was acknowledged."""

    def __init__(self, *, aof: bool = False, extra_args: tuple[str, ...] = ()) -> None:
        persistence = ("--appendonly", "yes", "--appendfsync", "always") if aof else ()
        super().__init__(extra_args=(*persistence, *extra_args))
        self.aof = aof

    def admin(self) -> redis.Redis:
        """A fresh connection for the test's own commands (never one the component uses)."""
        return redis.Redis(port=self.port, socket_timeout=5)

    # -- restart ------------------------------------------------------------------------------

    def crash_restart(self) -> None:
        """SIGKILL and start again on the same port: without AOF everything is gone; with it,
        every acknowledged write comes back."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None
        self.start()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The server is gone (SIGKILL) inside the block and back (same port) after it."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None
        try:
            yield
        finally:
            self.start()

    # -- pause --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP inside the block: connections stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def pause_for(self, seconds: float) -> threading.Thread:
        """SIGSTOP now and SIGCONT after ``seconds``, from a background thread (joined by the
        caller); the test goes on while the server is frozen."""
        assert self.process is not None
        process = self.process
        process.send_signal(signal.SIGSTOP)
        resume = threading.Timer(seconds, lambda: process.send_signal(signal.SIGCONT))
        resume.start()
        return resume

    # -- connections --------------------------------------------------------------------------

    def kill_clients(self) -> int:
        """CLIENT KILL every normal client but the admin connection; returns how many."""
        with self.admin() as admin:
            killed: int = admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME",
                                                "yes")
            return killed

    # -- memory -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def out_of_memory(self, headroom: int = 0) -> Iterator[redis.Redis]:
        """``maxmemory`` set just above what is used now and filled to the limit with a ballast
        key (``noeviction``): inside the block, writes that need memory are refused with OOM.
        On leaving, the ballast is deleted and the limit lifted. Yields the admin connection."""
        admin = self.admin()
        try:
            admin.config_set("maxmemory-policy", "noeviction")
            used = int(admin.info("memory")["used_memory"])
            admin.config_set("maxmemory", used + headroom + 64 * 1024)
            chunk = "x" * 4096
            for _ in range(100_000):
                try:
                    admin.rpush("faultkit:ballast", *([chunk] * 16))
                except redis.exceptions.OutOfMemoryError:
                    break
            else:
                raise AssertionError("could not fill memory to maxmemory")
            # the refused push may leave a few KB below the limit: close the gap so that every
            # write needing memory is refused, however small
            used = int(admin.info("memory")["used_memory"])
            admin.config_set("maxmemory", max(1, used - 1024))
            yield admin
        finally:
            admin.delete("faultkit:ballast")
            admin.config_set("maxmemory", 0)
            admin.close()


# -- PostgreSQL ----------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_outage(dsn: str, table: str | None = None) -> Iterator[None]:
    """PostgreSQL unusable for the component inside the block: every other backend of this
    database is terminated on entry, and ``table`` (when given) is held under an ACCESS
    EXCLUSIVE lock until the block ends, so writes to it wait."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        if table is None:
            yield
            return
        with admin.transaction():
            admin.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield


# -- the report ------------------------------------------------------------------------------------


@dataclass
class FaultOutcome:
    component: str  # e.g. "queue Worker (threads)"
    fault: str  # e.g. "restart without persistence"
    recovered: bool
    recovery_s: float | None = None  # from the fault's end to the first success after it
    surfaced: str = "none"  # errors the caller saw, e.g. "none" or "LockLostError (on exit)"
    lost: int = 0  # items acknowledged then gone, beyond what the fault itself destroyed
    duplicated: int = 0  # items done twice (allowed only where at-least-once says so)
    note: str = ""


@dataclass
class FaultReport:
    rows: list[FaultOutcome] = field(default_factory=list)

    def record(self, outcome: FaultOutcome) -> FaultOutcome:
        self.rows.append(outcome)
        return outcome

    def markdown(self) -> str:
        head = ("| component | fault | recovered | recovery | errors surfaced | lost | "
                "duplicated | note |\n|---|---|---|---:|---|---:|---:|---|\n")
        lines = []
        for r in sorted(self.rows, key=lambda r: (r.component, r.fault)):
            recovery = "" if r.recovery_s is None else f"{r.recovery_s:.2f} s"
            lines.append(f"| {r.component} | {r.fault} | {'yes' if r.recovered else 'NO'} | "
                         f"{recovery} | {r.surfaced} | {r.lost} | {r.duplicated} | {r.note} |")
        return head + "\n".join(lines) + "\n"


REPORT = FaultReport()


def write_report() -> None:
    path = os.environ.get("PYREDISLUA_FAULT_TABLE")
    if path and REPORT.rows:
        with open(path, "w") as out:
            out.write(REPORT.markdown())
