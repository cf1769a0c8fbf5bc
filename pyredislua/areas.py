"""Each primitive is an area package (``pyredislua/lock/``, ``queue/``, ...); besides its API it
may hold a ``commands`` module (its ``pyredislua <area> ...`` subcommands), a ``bench`` module
(``pyredislua bench <area>``) and a ``demo`` module (its section of ``pyredislua demo``). The
command line and the demo find them here, so adding an area touches neither."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Any


def area_modules(kind: str) -> list[Any]:
    """The ``<kind>`` module (``commands``, ``bench``, ``demo``) of every area package that has
    one, in area order."""
    import pyredislua

    found = []
    for info in sorted(pkgutil.iter_modules(pyredislua.__path__), key=lambda m: m.name):
        name = f"pyredislua.{info.name}.{kind}"
        if info.ispkg and importlib.util.find_spec(name) is not None:
            found.append(importlib.import_module(name))
    return found
