"""Edge scenarios of Redlock's own operation (the rest are the lock's, in ``lock.py``)."""

from __future__ import annotations

import pyredislua
from pyredislua.lock import LockKeys, acquire_call, release_call
from pyredislua.redlock import raise_call
from tests.edges import Scenario, run_all

K = LockKeys("redlock-edge")
KEYS = (K.lock, K.fence)


def _held(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "other", 60_000), release_call(K, "other"),
                     acquire_call(K, "me", 60_000)])  # the counter is at 2


def _held_by_other(client: pyredislua.Client) -> None:
    run_all(client, [acquire_call(K, "other", 60_000)])


def _call_args(to: int) -> tuple[str, int]:
    call = raise_call(K, "me", to)
    assert call.keys == KEYS
    return call.args  # type: ignore[return-value]


SCENARIOS = [
    Scenario("redlock.raise", "held, counter raised", KEYS, _call_args(7), _held),
    Scenario("redlock.raise", "held, counter already as high", KEYS, _call_args(2), _held,
             writes=False),
    Scenario("redlock.raise", "not the owner", KEYS, _call_args(7), _held_by_other,
             writes=False),
]
