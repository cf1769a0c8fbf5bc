"""Every operation, driven by its own contract header: invalid arguments or key counts reply
BADARG and change nothing. New operations are covered as soon as they exist."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

import pyredislua
from pyredislua.engine.header import ArgSpec, Header
from pyredislua.engine.protocol import Call
from tests.conftest import snapshot

LIBRARY = pyredislua.render_library()


def _valid(arg: ArgSpec) -> str:
    if arg.type == "int":
        assert arg.lo is not None
        return str(max(arg.lo, min(arg.hi or arg.lo, 1)))
    if arg.type == "str":
        return "x" * max(arg.lo or 0, 1)
    if arg.type == "enum":
        return arg.choices[0]
    return ""


def _bad_values(arg: ArgSpec) -> Iterator[tuple[str, str]]:
    if arg.type == "int":
        assert arg.lo is not None and arg.hi is not None
        yield "below range", str(arg.lo - 1)
        yield "above range", str(arg.hi + 1)
        yield "fraction", "1.5"
        yield "exponent", "1e3"
        yield "text", "abc"
        yield "empty", ""
        yield "padded", " 1"
        yield "negative zero", "-0"
    elif arg.type == "str":
        assert arg.lo is not None and arg.hi is not None
        if arg.lo >= 1:
            yield "empty", ""
        yield "too long", "y" * (arg.hi + 1)
    elif arg.type == "enum":
        yield "not a choice", "no-such-choice"


def _cases() -> Iterator[object]:
    for op in LIBRARY.operations.values():
        h = op.header
        fixed = [a for a in h.argv if a.type != "rest"]
        valid = [_valid(a) for a in fixed]
        for i, arg in enumerate(fixed):
            for what, value in _bad_values(arg):
                args = [*valid[:i], value, *valid[i + 1 :]]
                yield pytest.param(h, len(h.keys), args, id=f"{h.name}-{arg.name}-{what}")
        if not h.variadic_keys:
            n = len(h.keys)
            yield pytest.param(h, n + 1, valid, id=f"{h.name}-one-key-too-many")
            if h.min_keys > 0:
                yield pytest.param(h, h.min_keys - 1, valid, id=f"{h.name}-one-key-too-few")
        if h.min_args > 0:
            yield pytest.param(h, len(h.keys), valid[: h.min_args - 1],
                               id=f"{h.name}-too-few-arguments")
        if h.max_args is not None:
            yield pytest.param(h, len(h.keys), [*valid, *(["1"] * (h.max_args - len(valid) + 1))],
                               id=f"{h.name}-too-many-arguments")


def _seed(r: redis.Redis, keys: list[str]) -> None:
    """Put something under the keys an operation would touch, so 'unchanged' means something."""
    r.set("{t}:bystander", "untouched")
    for i, key in enumerate(keys):
        r.set(key + ":neighbour", i)


@pytest.mark.engine
@pytest.mark.parametrize(("header", "nkeys", "args"), list(_cases()))
def test_bad_input_is_rejected_and_changes_nothing(
    client: pyredislua.Client, r: redis.Redis, header: Header, nkeys: int, args: list[str]
) -> None:
    keys = [f"{{t}}:{header.ident}:{i}" for i in range(nkeys)]
    _seed(r, keys)
    before = snapshot(r)
    with pytest.raises(pyredislua.BadArgumentError) as caught:
        client.run(Call(header.name, tuple(keys), tuple(args)))
    assert caught.value.code == "BADARG"
    assert caught.value.operation == header.name
    assert snapshot(r) == before
