"""Optional compression of what the primitives store for you: cache values and queue payloads.

A :class:`Compressor` turns bytes into a one-byte header and a body: ``0x00`` the bytes as they
were (small ones, and ones that would not shrink), ``0x01`` zlib, ``0x02`` zstd. Reading looks
at the header only, so values compressed with either algorithm (or none) read back whatever the
reader's own choice; a value that does not start with a known header is refused, never guessed.

zstd comes from ``compression.zstd`` (Python 3.14+) or the ``zstandard`` package (the ``zstd``
extra) when one is present; zlib is always there. Compression is off by default: other clients
(redis-cli, Node.js) reading these values must strip the header and decompress themselves.
"""

from __future__ import annotations

import functools
import threading
import zlib
from typing import Any, Literal

RAW, ZLIB, ZSTD = b"\x00", b"\x01", b"\x02"

Algorithm = Literal["auto", "zstd", "zlib"]


@functools.lru_cache(maxsize=1)
def _zstd() -> Any:
    """A module with ``compress(data, level)``/``decompress(data)`` for zstd, or None."""
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+

        return zstd
    except ImportError:
        pass
    try:
        import zstandard
    except ImportError:
        return None

    local = threading.local()  # zstandard's (de)compressor objects: one per thread, reused

    class _Zstandard:
        @staticmethod
        def compress(data: bytes, level: int = 3) -> bytes:
            by_level = local.__dict__.setdefault("compressors", {})
            compressor = by_level.get(level)
            if compressor is None:
                compressor = by_level[level] = zstandard.ZstdCompressor(level=level)
            return bytes(compressor.compress(data))

        @staticmethod
        def decompress(data: bytes) -> bytes:
            decompressor = local.__dict__.get("decompressor")
            if decompressor is None:
                decompressor = local.decompressor = zstandard.ZstdDecompressor()
            return bytes(decompressor.decompress(data))

    return _Zstandard


class Compressor:
    """Compress payloads of at least ``min_size`` bytes with zstd (when installed, for
    ``"auto"``) or zlib, at ``level`` (the algorithm's default when None); keep a result only
    when it is smaller. Thread-safe and stateless."""

    def __init__(self, algorithm: Algorithm = "auto", *, min_size: int = 128,
                 level: int | None = None) -> None:
        if algorithm not in ("auto", "zstd", "zlib"):
            raise ValueError(f"algorithm must be auto, zstd or zlib, got {algorithm!r}")
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {min_size!r}")
        zstd = _zstd()
        if algorithm == "zstd" and zstd is None:
            raise ValueError("zstd needs Python 3.14+ or the zstandard package "
                             "(pip install 'pyredislua[zstd]')")
        self.algorithm: Literal["zstd", "zlib"] = (
            "zstd" if algorithm == "zstd" or (algorithm == "auto" and zstd is not None)
            else "zlib")
        self.min_size = min_size
        self.level = level
        self._zstd = zstd

    def compress(self, data: bytes) -> bytes:
        if len(data) >= self.min_size:
            if self.algorithm == "zstd":
                body: bytes = self._zstd.compress(data,
                                                  self.level if self.level is not None else 3)
                header = ZSTD
            else:
                body = zlib.compress(data, self.level if self.level is not None else 6)
                header = ZLIB
            if len(body) < len(data):
                return header + body
        return RAW + data

    def decompress(self, data: bytes) -> bytes:
        header, body = data[:1], data[1:]
        if header == RAW:
            return body
        if header == ZLIB:
            return zlib.decompress(body)
        if header == ZSTD:
            if self._zstd is None:
                raise ValueError("a zstd-compressed value, and no zstd here (Python 3.14+ or "
                                 "the zstandard package)")
            return bytes(self._zstd.decompress(body))
        raise ValueError("not a value written by a Compressor (unknown header "
                         f"{header!r}); was compression turned on with values already stored?")

    def __repr__(self) -> str:
        return f"Compressor({self.algorithm!r}, min_size={self.min_size}, level={self.level})"
