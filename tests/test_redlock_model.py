"""The fence rule against a model of five nodes' counters (pure: no Redis). Holds one after the
other, each on a random majority; between them, attempts that failed or nodes heard from too
late advance random counters. The rule (highest fence among the majority, the others raised to
it) must hand out strictly increasing fences; the highest fence alone does not."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from pyredislua.redlock import fence_of, quorum

N = 5
majorities = st.sets(st.integers(0, N - 1), min_size=quorum(N), max_size=N)
noise = st.lists(st.integers(0, N - 1), max_size=6)  # counters advanced by failed attempts
history = st.lists(st.tuples(majorities, noise), min_size=1, max_size=30)


def _run(steps: list[tuple[set[int], list[int]]], raise_counters: bool) -> list[int]:
    counters = [0] * N
    fences = []
    for majority, advanced in steps:
        for node in advanced:
            counters[node] += 1
        got = {}
        for node in majority:
            counters[node] += 1
            got[node] = counters[node]
        fence, behind = fence_of(got, N)
        if raise_counters:
            for node in behind:
                counters[node] = max(counters[node], fence)
            at_least = [node for node in majority if counters[node] >= fence]
            assert len(at_least) >= quorum(N)
        fences.append(fence)
    return fences


@given(history)
def test_fences_increase_with_the_raise(steps: list[tuple[set[int], list[int]]]) -> None:
    fences = _run(steps, raise_counters=True)
    assert all(a < b for a, b in itertools.pairwise(fences)), fences


def test_the_highest_fence_alone_can_go_back() -> None:
    steps = [({0, 1, 2}, [0] * 9), ({2, 3, 4}, [])]
    assert _run(steps, raise_counters=False) == [10, 2]
    assert _run(steps, raise_counters=True) == [10, 11]
