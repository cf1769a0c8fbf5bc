"""A primitive's Python key class, built from the same key set file as its Lua operations.

``lua/keysets/<set>.keys`` lists a primitive's keys once (name, Redis type, role). Operations
that take them say ``keys: keyset <set>`` in their header, so the renderer binds them in that
order; the Python side declares a subclass::

    class LockKeys(KeySet, keyset="lock"):
        lock: str
        fence: str
        signal: str
        waiters: str

The annotations give the type checker the attribute names; the class refuses to exist (at
import) unless they are exactly the set's keys in the set's order, then optionally some of the
set's fixed extras (keys only some operations add after the set's, such as the stream queue's
``cursors``), in the file's order; every value is computed from the set:
``<prefix>:<base>:<tagged name>`` for the key named like the set, that plus ``:<key name>`` for
the others. ``all`` is the tuple of the set's keys in order: an operation's KEYS. An extra that
differs per call (a request record) is not annotated: a :class:`RecordedKeySet` builds it.

Metrics (docs/design/metrics-in-redis.md): a set with a ``metrics`` extra records into
``<base>:metrics`` when built with ``metrics=True``; the calls of the operations that record then
pass it last (:meth:`KeySet.with_metrics`, :meth:`RecordedKeySet.with_request`).
"""

from __future__ import annotations

import functools
import inspect
import secrets
from typing import Any, ClassVar, Literal

from ..kit import tagged_name
from .header import KeySetSpec
from .render import load_keysets

# A call's request record: None for a new random id, False for none, a str for that id.
RequestId = str | Literal[False] | None


def new_request_id() -> str:
    """A call's request id: 64 random bits (not ``random``'s state, which forked processes
    share)."""
    return secrets.token_hex(8)


@functools.lru_cache(maxsize=1)
def _keysets() -> dict[str, KeySetSpec]:
    return load_keysets()


class KeySet:
    """Base of a primitive's key class; see the module docstring."""

    spec: ClassVar[KeySetSpec]
    _names: ClassVar[tuple[str, ...]]  # the set's keys, then the extras the class names
    name: str
    base: str
    all: tuple[str, ...]
    recording: bool  # calls of the operations that record metrics pass the metrics key
    metrics_key: str  # <base>:metrics

    def __init_subclass__(cls, *, keyset: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if keyset is None:  # a base for key classes, not one itself
            return
        spec = _keysets()[keyset]
        declared = list(inspect.get_annotations(cls))
        expected = [k.name for k in spec.keys]
        extras = [k.name for k in spec.extras]
        named = declared[len(expected):]
        if declared[:len(expected)] != expected or named != [n for n in extras if n in named]:
            raise TypeError(f"{cls.__name__} declares keys {declared}, but "
                            f"lua/keysets/{keyset}.keys has {expected} (same names, same order; "
                            f"then any of the extras {extras}, in that order)")
        cls.spec = spec
        cls._names = tuple(declared)

    def __init__(self, name: str, prefix: str = "prl", *, metrics: bool = False) -> None:
        spec = self.spec
        if metrics and "metrics" not in [k.name for k in spec.extras]:
            raise TypeError(f"lua/keysets/{spec.name}.keys has no 'metrics' extra: "
                            "its operations record no metrics")
        self.name = name
        self.base = f"{prefix}:{spec.base}:{tagged_name(name)}"
        for key in self._names:
            setattr(self, key, self.base if key == spec.name else f"{self.base}:{key}")
        self.all = tuple(getattr(self, key.name) for key in spec.keys)
        self.recording = metrics
        self.metrics_key = f"{self.base}:metrics"

    def with_metrics(self, keys: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """``keys`` (default: the set's keys) with the metrics key last when this key set
        records (for operations that take ``+ metrics`` and no request record)."""
        keys = self.all if keys is None else keys
        return (*keys, self.metrics_key) if self.recording else keys

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class RecordedKeySet(KeySet):
    """A key set whose writing operations take a per-call request record after the set's keys:
    the set's ``request`` extra, ``<base>:req:<id>`` (a class on a set without that extra
    refuses to exist)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        extras = [k.name for k in cls.spec.extras]
        if "request" not in extras:
            raise TypeError(f"{cls.__name__}: lua/keysets/{cls.spec.name}.keys has no 'request' "
                            f"extra (extras: {extras})")

    def request(self, request_id: str) -> str:
        """The request record of one call, ``<base>:req:<id>``: the ``request`` extra of sets
        whose operations record their replies (expires by itself)."""
        return f"{self.base}:req:{request_id}"

    def with_request(self, request_id: RequestId = None, keys: tuple[str, ...] | None = None,
                     *, metrics: bool = True) -> tuple[str, ...]:
        """``keys`` (default: the set's keys) with a request record last, unless
        ``request_id`` is False (None: a new random id). When this key set records and the
        operation takes the metrics key (``metrics``), that key follows the request record,
        which is then always there (a new random one when ``request_id`` is False)."""
        keys = self.all if keys is None else keys
        if self.recording and metrics:
            return (*keys, self.request(request_id or new_request_id()), self.metrics_key)
        if request_id is False:
            return keys
        return (*keys, self.request(request_id or new_request_id()))
