"""The fault kit itself: each fault does what the fault suite relies on."""

from __future__ import annotations

import pytest
import redis

from tests.faultkit import FaultServer

pytestmark = pytest.mark.faults


def test_out_of_memory_refuses_writes_and_recovers(fault_server: FaultServer) -> None:
    conn = redis.Redis(port=fault_server.port)
    with fault_server.out_of_memory():
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            conn.set("k", "v" * 100_000)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            conn.set("small", "v")
        assert conn.delete("absent") == 0  # what frees memory still runs
    assert conn.set("k", "v")


def test_restart_without_persistence_loses_everything(fault_server: FaultServer) -> None:
    conn = redis.Redis(port=fault_server.port)
    conn.set("k", "v")
    fault_server.crash_restart()
    assert conn.get("k") is None  # the client reconnects on its own


def test_restart_with_aof_keeps_acknowledged_writes(aof_server: FaultServer) -> None:
    conn = redis.Redis(port=aof_server.port)
    conn.set("k", "v")
    aof_server.crash_restart()
    assert conn.get("k") == b"v"


def test_pause_stops_answers_and_kill_clients_drops_connections(
        fault_server: FaultServer) -> None:
    conn = redis.Redis(port=fault_server.port, socket_timeout=0.2, retry=None)
    assert conn.ping()
    with fault_server.paused(), pytest.raises(redis.TimeoutError):
        conn.ping()
    conn.connection_pool.disconnect()
    before = conn.client_id()
    assert fault_server.kill_clients() >= 1
    assert conn.client_id() != before  # the old connection is gone; redis-py reconnected
