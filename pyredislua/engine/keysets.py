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
import) unless they are exactly the set's keys in the set's order, and every value is computed
from the set: ``<prefix>:<base>:<tagged name>`` for the key named like the set, that plus
``:<key name>`` for the others. ``all`` is the tuple of keys in order: an operation's KEYS.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar

from ..kit import tagged_name
from .header import KeySetSpec
from .render import load_keysets


@functools.lru_cache(maxsize=1)
def _keysets() -> dict[str, KeySetSpec]:
    return load_keysets()


class KeySet:
    """Base of a primitive's key class; see the module docstring."""

    spec: ClassVar[KeySetSpec]
    name: str
    base: str
    all: tuple[str, ...]

    def __init_subclass__(cls, *, keyset: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = _keysets()[keyset]
        declared = list(inspect.get_annotations(cls))
        expected = [k.name for k in spec.keys]
        if declared != expected:
            raise TypeError(f"{cls.__name__} declares keys {declared}, but "
                            f"lua/keysets/{keyset}.keys has {expected} (same names, same order)")
        cls.spec = spec

    def __init__(self, name: str, prefix: str = "prl") -> None:
        spec = self.spec
        self.name = name
        self.base = f"{prefix}:{spec.base}:{tagged_name(name)}"
        keys = []
        for key in spec.keys:
            value = self.base if key.name == spec.name else f"{self.base}:{key.name}"
            setattr(self, key.name, value)
            keys.append(value)
        self.all = tuple(keys)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
