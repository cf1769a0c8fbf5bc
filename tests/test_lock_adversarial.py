"""Issue 8 §2, adversarially: real processes contend for one lock with 1-5 ms leases and a new
``Lock`` per acquire while a killer SIGKILLs a random one (holder or waiter) every 0.25 s. No two
holders' *believed* leases may overlap, fences must increase in hold order, the fenced counter
must never see a write under a writer inside its believed lease, and the lock must end free with
no grant left behind. The workload is ``tools/lock_adversarial.py`` (also runnable on its own,
and against another checkout with ``--source``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from pyredislua.server import RedisServer

pytestmark = [pytest.mark.lock, pytest.mark.perf]

_spec = importlib.util.spec_from_file_location(
    "lock_adversarial", Path(__file__).resolve().parents[1] / "tools" / "lock_adversarial.py")
assert _spec is not None and _spec.loader is not None
adversarial = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(adversarial)


def test_sigkilled_holders_and_waiters_never_overlap(own_server: RedisServer) -> None:
    result = adversarial.run(seconds=8, processes=6, kill_every=0.25, url=own_server.url)
    _assert_safe(result)


def _assert_safe(result: dict[str, Any]) -> None:
    print(result)  # holds, kills, overlaps: the counts of this run
    assert result["workers_failed"] == 0
    assert result["kills"] >= 20 and result["holds"] >= 300, result
    assert result["overlapping_windows"] == 0, result["overlap_examples"]
    assert result["fences_out_of_order"] == 0
    assert result["counter_conflicts_inside_windows"] == 0
    assert result["stale_fence_writes_inside_windows"] == 0
    assert result["duplicate_counter_values"] == 0
    assert result["ended_free_without_grant"]


def test_bounded_barging_under_sigkills_never_overlaps(own_server: RedisServer) -> None:
    """The same with ``Lock(turn=...)``: carries, and SIGKILLs between a carry and its taking."""
    result = adversarial.run(seconds=8, processes=6, kill_every=0.25, url=own_server.url,
                             turn=0.002)
    _assert_safe(result)
    assert result["carries"] >= 50, result
