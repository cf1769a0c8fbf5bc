"""The shared kit's rules that are not exercised through a primitive."""

from __future__ import annotations

import asyncio

import pytest

from pyredislua.kit import within


async def test_within_keeps_a_cancellation_that_arrives_as_the_call_completes() -> None:
    """``asyncio.wait_for`` before 3.12 returns the result and drops the cancellation when both
    happen in one loop turn; a lock's renewal task then ran on and its release hung (CI, stop 16).
    ``within`` must let the cancellation through."""
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(within(done, 5))
    await asyncio.sleep(0)  # the task now awaits ``done``
    done.set_result(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_within_times_out() -> None:
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    with pytest.raises(asyncio.TimeoutError):
        await within(never, 0.01)
    assert await within(asyncio.sleep(0, "ok"), 1) == "ok"
