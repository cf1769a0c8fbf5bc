"""A fault-injecting TCP proxy on loopback, for tests that need a node that answers slowly,
drops connections or stops answering while the server behind it is fine.

    with TcpProxy(server.port) as proxy:
        r = redis.Redis(port=proxy.port)
        proxy.delay = 0.2          # every chunk forwarded 200 ms late (both directions)
        proxy.blackhole = True     # bytes are read and never forwarded: the node hangs
        proxy.drop_all()           # every open connection closed now
        proxy.refuse = True        # new connections are closed at once

Threads only (one acceptor, two pumps per connection); everything stops on ``close()``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from types import TracebackType


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay = 0.0
        self.blackhole = False
        self.refuse = False
        self.connections = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.05)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except (OSError, ValueError):  # closed
                return
            if self.refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
                self.connections += 1
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([source], [], [], 0.05)
                if not ready:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                if self.blackhole:
                    continue
                if self.delay:
                    time.sleep(self.delay)
                sink.sendall(data)
        except (OSError, ValueError):  # the other pump or drop_all closed a socket under us
            pass
        finally:
            self._close_pair(source, sink)

    def _close_pair(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def drop_all(self) -> None:
        """Close every open connection (both sides) now."""
        with self._lock:
            open_now = list(self._open)
        self._close_pair(*open_now)

    def heal(self) -> None:
        """Back to a transparent proxy. Connections that lost bytes to the black hole are
        closed (their protocol stream is cut mid-command); the others stay open."""
        if self.blackhole:
            self.drop_all()
        self.delay, self.blackhole, self.refuse = 0.0, False, False

    def close(self) -> None:
        self._closed.set()
        self.drop_all()
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=2)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
