"""Everything that depends on the Redis server's version, in one place.

pyredislua needs Redis 7.0 or newer: Redis Functions (``FUNCTION LOAD``, ``FCALL``,
``FCALL_RO``), read-only script calls (``EVALSHA_RO``) and the ``#!lua flags=...`` shebang of
standalone scripts all arrived in 7.0. On an older server the first thing to fail would be a Lua
compile error ("unexpected symbol near '#'") or an unknown command; the loader checks the
version once instead (``INFO server``, in the same round trip as its first look at the server)
and raises :class:`~pyredislua.errors.RedisVersionError` with a clear message.

Tested: Redis 7.0 (the only version installable on the development machines). 7.2 and later
keep every command used here.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import RedisVersionError

MIN_VERSION = (7, 0, 0)
VERSION_PROBE = ("INFO", "server")

_VERSION_LINE = re.compile(r"^redis_version:(\S+)", re.M)


def server_version(info: Any) -> str | None:
    """The ``redis_version`` of an ``INFO server`` reply (parsed by redis-py into a dict, or
    raw text)."""
    if isinstance(info, dict):
        value = info.get("redis_version", info.get(b"redis_version"))
        return None if value is None else (
            value.decode() if isinstance(value, bytes) else str(value))
    if isinstance(info, bytes):
        info = info.decode(errors="replace")
    if isinstance(info, str):
        m = _VERSION_LINE.search(info)
        return m.group(1) if m else None
    return None


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        m = re.match(r"\d+", piece)
        parts.append(int(m.group(0)) if m else 0)
    return tuple(parts)


def check_version(info: Any, where: str | None = None) -> str | None:
    """Raise :class:`RedisVersionError` when the server is older than 7.0; return its version
    (None when the reply does not say, e.g. a proxy that hides it: then nothing is claimed)."""
    version = server_version(info)
    if version is not None and version_tuple(version) < MIN_VERSION:
        at = f" ({where})" if where else ""
        raise RedisVersionError(
            f"pyredislua needs Redis {'.'.join(map(str, MIN_VERSION[:2]))} or newer; "
            f"this server{at} is {version}")
    return version
