"""Scenarios for the edge suite (``tests/test_edges.py``), one module per area.

A :class:`Scenario` puts an operation's keys into a state where the operation takes one of its
paths (usually a writing one) and names the exact call. The edge suite then tampers with each
declared key in turn and checks that an error reply changed nothing. Each area module exports
``SCENARIOS: list[Scenario]``; every operation of the library needs at least one, and every
writing path worth protecting should have its own (free and busy lock, grant hand-off, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyredislua
from pyredislua.engine.protocol import Call


@dataclass(frozen=True)
class Scenario:
    op: str  # the operation, e.g. "lock.acquire"
    path: str  # which path the setup leads to, e.g. "busy, registers as a waiter"
    keys: tuple[str, ...]  # KEYS of the call, all under one hash tag
    args: tuple[Any, ...]  # ARGV of the call
    setup: Callable[[pyredislua.Client], None] = lambda client: None
    # False when this path legitimately writes nothing (the suite checks the others do write)
    writes: bool = True
    # how many of the keys are a variadic operation's optional trailing keys (a metrics key)
    trailing: int = 0

    @property
    def id(self) -> str:
        return f"{self.op}[{self.path}]"

    def call(self) -> Call[Any]:
        return Call(self.op, self.keys, self.args)


def run_all(client: pyredislua.Client, calls: Sequence[Call[Any]]) -> None:
    """Setup helper: run call specs in order (each must succeed)."""
    for call in calls:
        client.run(call)
