"""Throwaway ``redis-server`` processes on free loopback ports (the demo, the tests, benchmarks).

The binary comes from ``$PYREDISLUA_REDIS_SERVER`` or ``redis-server`` on PATH. Nothing is saved
to disk, and the eviction policy is ``noeviction``: a locking/queueing store must never silently
drop keys.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis


class RedisServerError(RuntimeError):
    pass


def redis_server_binary() -> str:
    configured = os.environ.get("PYREDISLUA_REDIS_SERVER")
    found = configured or shutil.which("redis-server")
    if not found:
        raise RedisServerError(
            "redis-server not found: install Redis 7+ or set PYREDISLUA_REDIS_SERVER")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A redis-server child process. ``with RedisServer() as server: redis.Redis.from_url(...)``"""

    def __init__(self, *, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.binary = redis_server_binary()
        self.port = port or free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="pyredislua-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return Path(self._dir.name) / "redis.log"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self._dir.name,
            "--logfile", str(self.log_path), "--maxmemory-policy", "noeviction",
            "--daemonize", "no", *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                if self.process.poll() is not None:
                    log = self.log_path.read_text() if self.log_path.exists() else ""
                    raise RedisServerError(f"redis-server exited at start:\n{log[-2000:]}")
                try:
                    if probe.ping():
                        return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise RedisServerError(
                            f"redis-server did not answer on port {self.port}") from None
                    time.sleep(0.01)
        finally:
            probe.close()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as in a crash; :meth:`start` brings it back on
        the same port and directory."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> None:
        """Stop and start on the same port: everything in memory is gone, as after a crash."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
