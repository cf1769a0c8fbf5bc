"""Issue 8 §2: the documented contract is enough for any client. A Node.js client (ioredis),
written from README.md and docs/reference.md only (``tests/node/lock_check.mjs``), runs in
several processes: the shared counter must be exact, no two holders' believed leases may
overlap, and no grant may be left stray (one fence per hold, the lock free and nobody registered
at the end) although every holder releases a popped grant with the grant token and nothing else.

Runs when ``node`` is on PATH; installs ioredis into tests/node with ``npm install`` on first
use."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

import pyredislua
from pyredislua.lock import LockKeys, inspect_call
from pyredislua.server import RedisServer

NODE, NPM = shutil.which("node"), shutil.which("npm")
HERE = Path(__file__).parent / "node"
PROCESSES, HOLDS = 5, 60

pytestmark = [pytest.mark.lock,
              pytest.mark.skipif(NODE is None or NPM is None, reason="node/npm not on PATH")]


def _ioredis() -> None:
    if not (HERE / "node_modules" / "ioredis").is_dir():
        assert NPM is not None
        subprocess.run([NPM, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=HERE, check=True, timeout=300)


@pytest.mark.parametrize("turn_ms", [0, 20], ids=["a-hand-off-per-hold", "in-turns"])
def test_node_clients_following_the_readme_share_the_lock(own_server: RedisServer,
                                                           turn_ms: int) -> None:
    _ioredis()
    r = redis.Redis.from_url(own_server.url)
    client = pyredislua.Client(r, mode="function")
    client.load()  # as `pyredislua render | redis-cli -x FUNCTION LOAD REPLACE` would
    assert NODE is not None
    procs = [subprocess.Popen([NODE, "lock_check.mjs", own_server.url, "node", str(HOLDS),
                               "10000", "2250", str(turn_ms)], cwd=HERE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(PROCESSES)]
    records = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        records += [json.loads(line) for line in out.splitlines()]
    assert len(records) == PROCESSES * HOLDS
    keys = LockKeys("node")
    assert int(r.get(keys.lock + ":counter-of-the-check") or 0) == len(records), \
        "a lost update: two holders overlapped"
    windows = sorted((int(rec["start"]), int(rec["end"]), rec["fence"]) for rec in records)
    for (_, end_a, fence_a), (start_b, _, fence_b) in itertools.pairwise(windows):
        assert end_a <= start_b, "two holders' believed leases overlap"
        assert fence_a < fence_b, "fences increase in hold order"
    assert any(rec["grant"] for rec in records), "some holds came through a grant"
    if turn_ms:
        assert any(rec["carried"] for rec in records), "some holds came through a carry"
    state = client.run(inspect_call(keys))
    assert not state.held and state.waiters == 0 and r.llen(keys.signal) == 0
    assert state.fence == len(records), "a fence went to a grant nobody used (a stray grant)"
    r.close()
