"""`pyredislua bench server`: every operation of the library has a case, every case runs on its
path (no error reply), peers and reference points are measured, and another checkout's Lua can
be measured beside this one. Tiny sizes: a check that the tool works, not a timed test."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

import pyredislua
from pyredislua.bench import server
from pyredislua.cli import build_parser
from pyredislua.server import RedisServer

pytestmark = pytest.mark.cli
ROOT = Path(__file__).resolve().parents[1]


def _args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", "server", "--calls", "3", "--rounds", "1",
                                      "--no-bullmq", *extra])


def test_every_operation_has_a_case() -> None:
    assert server.uncovered(pyredislua.render_library(), server.cases()) == []


@pytest.mark.parametrize("mode", ["function", "script"])
def test_every_case_runs_on_its_path(own_server: RedisServer, mode: str) -> None:
    results = server.measure(own_server.url, _args("--mode", mode))
    rows = {(row["operation"], row["path"]): row for row in results["rows"]}
    failed = {k: row["errors"] for k, row in rows.items() if "errors" in row}
    assert not failed
    ours = [row for row in rows.values() if row["kind"] == "pyredislua"]
    assert len(ours) == len(server.cases())
    for row in ours:
        assert row["this"]["sent"] == (2 if "+" in row["operation"] else 1), row
        assert row["this"]["us"] > 0
    assert rows[("ratelimit.gcra", "admitted, state exists")]["this"]["commands"] == 3
    kinds = {row["kind"] for row in rows.values()}
    assert kinds == {"pyredislua", "peer", "reference"}
    assert rows[("redis-py Lock acquire + release", "uncontended cycle")]["this"]["sent"] == 2
    assert "lock.acquire + lock.release [uncontended cycle: acquire a free lock, release it]" \
        in results["targets"]
    assert "| ratelimit.gcra " in server.render(results)


def test_against_another_checkout(own_server: RedisServer, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "lua", tmp_path / "lua")
    results = server.measure(own_server.url, _args("--against", str(tmp_path), "--only",
                                                   "ratelimit.gcra", "--no-peers"))
    [hit, fresh, denied, peek, recorded] = [row for row in results["rows"]
                                            if row["kind"] == "pyredislua"]
    assert "metrics" in recorded["path"]  # the same call with the metrics key (5 commands)
    for row in (hit, fresh, denied, peek, recorded):
        assert row["this"]["commands"] == row["against"]["commands"]
    assert "ratio" in server.render(results)


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="node/npm not on PATH")
def test_bullmq_per_job(own_server: RedisServer, tmp_path: Path) -> None:
    args = build_parser().parse_args(["bench", "server", "--calls", "3", "--rounds", "1",
                                      "--only", "BullMQ"])
    results = server.measure(own_server.url, args)
    if results["notes"]:
        pytest.skip(results["notes"][0])  # npm could not install BullMQ here
    [row] = [row for row in results["rows"] if row["operation"].startswith("BullMQ")]
    assert row["this"]["sent"] >= 2  # its add and its finish-and-fetch scripts, per job
    assert row["this"]["commands"] > 10
