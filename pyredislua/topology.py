"""Throwaway Redis Cluster and Sentinel set-ups of real ``redis-server`` processes on free
loopback ports (the tests, the durability benchmark).

* :class:`LocalCluster` — ``redis-server --cluster-enabled yes`` nodes joined by
  ``redis-cli --cluster create`` (N primaries, each with R replicas); fail a primary over
  (``CLUSTER FAILOVER``) or kill it, add a node by a bare ``CLUSTER MEET``, move slots.
* :class:`LocalSentinel` — a primary with replicas watched by ``redis-server --sentinel``
  processes; fail over by ``SENTINEL FAILOVER`` or by killing the primary.

Every wait is on a condition with a deadline, never a bare sleep. Nothing is persisted but the
cluster's own ``nodes.conf`` (so a killed node restarted on its port rejoins as a replica).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis

from .server import RedisServer, RedisServerError, free_port

T = TypeVar("T")
HOST = "127.0.0.1"


def wait_until(condition: Callable[[], T | None], timeout: float, what: str,
               interval: float = 0.01) -> T:
    """Poll ``condition`` until it returns something truthy (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (redis.RedisError, OSError) as error:
            last_error = error
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise RedisServerError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def redis_cli_binary() -> str:
    found = shutil.which("redis-cli")
    if not found:
        raise RedisServerError("redis-cli not found: install Redis 7+ (it ships redis-cli)")
    return found


def _admin(port: int, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=True)


_ADMINS: dict[int, redis.Redis] = {}


def _ask(port: int, *args: Any) -> Any:
    """One admin command (connections kept per port: a test asks hundreds)."""
    conn = _ADMINS.get(port)
    if conn is None:
        conn = _ADMINS[port] = _admin(port)
    try:
        return conn.execute_command(*args)  # type: ignore[no-untyped-call]
    except (redis.ConnectionError, redis.TimeoutError):
        conn.connection_pool.disconnect()  # a restarted server on the port: connect again
        raise


# -- cluster -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """One line of ``CLUSTER NODES``."""

    id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]
    connected: bool

    @property
    def primary(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


def parse_cluster_nodes(text: str) -> dict[str, NodeInfo]:
    nodes: dict[str, NodeInfo] = {}
    for line in text.strip().splitlines():
        parts = line.split()
        address = parts[1].split("@", 1)[0].split(",", 1)[0]
        slots: list[tuple[int, int]] = []
        for spec in parts[8:]:
            if spec.startswith("["):
                continue  # importing/migrating marks: the slot's owner is listed elsewhere
            lo, _, hi = spec.partition("-")
            slots.append((int(lo), int(hi or lo)))
        nodes[parts[0]] = NodeInfo(
            id=parts[0], port=int(address.rsplit(":", 1)[1]),
            flags=frozenset(parts[2].split(",")),
            master_id=None if parts[3] == "-" else parts[3], slots=tuple(slots),
            connected=parts[7] == "connected")
    return nodes


class ClusterNodeServer(RedisServer):
    """A ``redis-server --cluster-enabled yes`` node; its cluster bus on a second free port."""

    def __init__(self, *, node_timeout_ms: int = 1000, extra_args: tuple[str, ...] = ()) -> None:
        self.bus_port = free_port()
        super().__init__(extra_args=(
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", str(node_timeout_ms),
            # a replica with a stale link may still be promoted: failover tests kill primaries
            "--cluster-replica-validity-factor", "0",
            "--repl-diskless-sync-delay", "0",
            *extra_args))


class LocalCluster:
    """A Redis Cluster of real processes: ``primaries`` shards with ``replicas`` replicas each.

    ``with LocalCluster(3, 1) as cluster: redis.RedisCluster.from_url(cluster.url)``
    """

    def __init__(self, primaries: int = 3, replicas: int = 1, *, node_timeout_ms: int = 1000,
                 extra_args: tuple[str, ...] = ()) -> None:
        if primaries < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one primary")
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = extra_args
        self.servers: dict[int, ClusterNodeServer] = {}
        self.shape = (primaries, replicas)

    # -- life cycle ---------------------------------------------------------------------------

    def _new_server(self) -> ClusterNodeServer:
        server = ClusterNodeServer(node_timeout_ms=self.node_timeout_ms,
                                   extra_args=self.extra_args)
        server.start()
        self.servers[server.port] = server
        return server

    def start(self, timeout: float = 30.0) -> LocalCluster:
        primaries, replicas = self.shape
        try:
            for _ in range(primaries * (1 + replicas)):
                self._new_server()
            addresses = [f"{HOST}:{port}" for port in self.servers]
            if primaries < 3:
                self._create_small()
                self.wait_healthy(timeout)
                return self
            created = subprocess.run(
                [redis_cli_binary(), "--cluster", "create", *addresses,
                 "--cluster-replicas", str(replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=timeout)
            if created.returncode != 0:
                raise RedisServerError(f"redis-cli --cluster create failed:\n{created.stdout}"
                                       f"{created.stderr}")
            self.wait_healthy(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _create_small(self) -> None:
        """``redis-cli --cluster create`` wants three primaries; smaller clusters are put
        together by hand: slots split between the primaries, the rest meet and replicate."""
        primaries = self.shape[0]
        ports = list(self.servers)
        heads, rest = ports[:primaries], ports[primaries:]
        step = 16384 // primaries
        for i, port in enumerate(heads):
            hi = 16383 if i == primaries - 1 else (i + 1) * step - 1
            _ask(port, "CLUSTER", "ADDSLOTSRANGE", i * step, hi)
        for port in ports[1:]:
            _ask(port, "CLUSTER", "MEET", HOST, heads[0], self.servers[heads[0]].bus_port)
        ids = {p: _ask(p, "CLUSTER", "MYID") for p in heads}
        for i, port in enumerate(rest):
            head_id = ids[heads[i % primaries]]

            def met(port: int = port, head_id: str = head_id) -> bool:
                return any(n.id == head_id for n in self.nodes(port).values())

            wait_until(met, 10.0, "the meet")
            _ask(port, "CLUSTER", "REPLICATE", head_id)

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers = {}

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- state --------------------------------------------------------------------------------

    @property
    def alive_ports(self) -> list[int]:
        return [port for port, server in self.servers.items() if server.alive]

    @property
    def url(self) -> str:
        """A URL of a live node: ``redis.RedisCluster.from_url(cluster.url)``."""
        return f"redis://{HOST}:{self.alive_ports[0]}/0"

    def nodes(self, port: int | None = None) -> dict[str, NodeInfo]:
        """``CLUSTER NODES`` as seen by ``port`` (default: a live node)."""
        return parse_cluster_nodes(_ask(port or self.alive_ports[0], "CLUSTER", "NODES"))

    def primaries(self) -> list[int]:
        """Ports of the primaries that own slots, in slot order."""
        owners = [n for n in self.nodes().values() if n.primary and n.slots]
        return [n.port for n in sorted(owners, key=lambda n: n.slots[0])]

    def replicas_of(self, port: int) -> list[int]:
        nodes = self.nodes()
        ids = {n.port: n.id for n in nodes.values()}
        return [n.port for n in nodes.values() if n.master_id == ids[port]]

    def owner_of(self, slot: int) -> int:
        for node in self.nodes().values():
            if node.primary and any(lo <= slot <= hi for lo, hi in node.slots):
                return node.port
        raise RedisServerError(f"no primary owns slot {slot}")

    def _healthy(self) -> bool:
        primaries, replicas = self.shape
        views = []
        for port in self.alive_ports:
            info = _ask(port, "CLUSTER", "INFO")
            if "cluster_state:ok" not in info:
                return False
            view = self.nodes(port)
            if any(n.failing or not n.connected for n in view.values()):
                return False
            views.append({(n.port, n.primary, n.slots) for n in view.values()})
            if "slave" in _ask(port, "ROLE")[0]:
                role = _ask(port, "ROLE")
                if role[3] != "connected":
                    return False
        if any(v != views[0] for v in views):
            return False
        owners = [n for n in self.nodes().values() if n.primary and n.slots]
        return len(owners) >= primaries and all(
            len(self.replicas_of(n.port)) >= replicas for n in owners)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok``, all see the same healthy topology,
        every shard has its replicas and every replica's link is up."""
        wait_until(self._healthy, timeout, "a healthy cluster", interval=0.05)

    # -- maintenance between tests ------------------------------------------------------------

    def flush(self) -> None:
        """Empty every primary of data, functions and scripts (replicas follow)."""
        for port in self.primaries():
            with _admin(port) as conn:
                conn.execute_command("FLUSHALL")
                conn.execute_command("FUNCTION", "FLUSH")
                conn.execute_command("SCRIPT", "FLUSH")

    def restore(self, timeout: float = 30.0) -> None:
        """Back to full strength after a test killed or added nodes: restart dead nodes (they
        rejoin as replicas) and wait until the cluster is healthy."""
        for server in self.servers.values():
            if not server.alive:
                server.start()
        self.wait_healthy(timeout)

    # -- faults -------------------------------------------------------------------------------

    def failover(self, primary: int, *, kill: bool = False, timeout: float = 30.0) -> int:
        """Promote a replica of ``primary``: ``CLUSTER FAILOVER`` on the replica (the primary
        hands over after the replica caught up), or with ``kill`` SIGKILL the primary and let
        the cluster elect a replica after ``cluster-node-timeout``. Returns the new primary's
        port once every live node agrees; a killed primary stays down (see :meth:`restore`)."""
        replicas = self.replicas_of(primary)
        if not replicas:
            raise RedisServerError(f"{primary} has no replica to fail over to")
        if kill:
            self.servers[primary].kill()
        else:
            _ask(replicas[0], "CLUSTER", "FAILOVER")

        def promoted() -> int | None:
            live = self.alive_ports
            for port in replicas:
                if port in live and _ask(port, "ROLE")[0] == "master":
                    views = [self.nodes(p) for p in live]
                    if all(any(n.port == port and n.primary and n.slots for n in v.values())
                           and all("cluster_state:ok" in _ask(p, "CLUSTER", "INFO")
                                   for p in live) for v in views):
                        return port
            return None

        return wait_until(promoted, timeout, f"a replica of {primary} to take over",
                          interval=0.02)

    def add_bare_node(self, timeout: float = 30.0) -> int:
        """Start an empty node and join it with a bare ``CLUSTER MEET`` (no slots, no functions:
        unlike ``redis-cli --cluster add-node``, nothing copies the libraries over)."""
        server = self._new_server()
        _ask(server.port, "CLUSTER", "MEET", HOST, str(self.alive_ports[0]),
             str(self.servers[self.alive_ports[0]].bus_port))

        def known_everywhere() -> bool:
            # the new node must also see every slot covered (cluster_state:ok; a node that
            # just started waits 2 s before it says so), or MIGRATE to it fails with CLUSTERDOWN
            return "cluster_state:ok" in _ask(server.port, "CLUSTER", "INFO") and all(
                any(n.port == server.port and n.connected and not n.failing
                    for n in self.nodes(p).values()) for p in self.alive_ports)

        wait_until(known_everywhere, timeout, "every node to know the new node", interval=0.02)
        return server.port

    def move_slot(self, slot: int, to_port: int, *, between: Callable[[], None] | None = None
                  ) -> None:
        """Migrate one slot the way ``redis-cli --cluster reshard`` does: IMPORTING on the
        target, MIGRATING on the source, MIGRATE the keys in batches, then assign the slot on
        both and on every other primary. ``between`` runs while the slot is half-way (keys
        split between source and target, clients redirected with ASK)."""
        view = self.nodes()
        source = next(n.port for n in view.values()
                      if n.primary and any(lo <= slot <= hi for lo, hi in n.slots))
        if source == to_port:
            return
        ids = {n.port: n.id for n in view.values()}
        primaries = [n.port for n in view.values() if n.primary and n.slots]
        _ask(to_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        _ask(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to_port])
        first = True
        while True:
            keys = _ask(source, "CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            _ask(source, "MIGRATE", HOST, to_port, "", 0, 5000, "REPLACE", "KEYS", *keys)
            if first and between is not None:
                between()
            first = False
        if first and between is not None:
            between()
        for port in dict.fromkeys((to_port, source, *primaries)):
            try:
                _ask(port, "CLUSTER", "SETSLOT", slot, "NODE", ids[to_port])
            except redis.ResponseError as error:
                # a primary that gave away its last slot turns itself into a replica of the
                # taker (cluster-allow-replica-migration): it knows already
                if "only with masters" not in str(error):
                    raise
        # The target's claim must win everywhere, replicas included: gossip settles slot
        # conflicts by config epoch, and a slot moved away and straight back could otherwise stay
        # claimed by the earlier taker in some nodes' views (seen: 4 of 6 nodes, for good).
        _ask(to_port, "CLUSTER", "BUMPEPOCH")
        wait_until(lambda: all(self._owner_seen_by(port, slot) == to_port
                               for port in self.alive_ports),
                   30.0, f"every node to see slot {slot} on {to_port}")

    def _owner_seen_by(self, port: int, slot: int) -> int | None:
        for n in self.nodes(port).values():
            if n.primary and any(lo <= slot <= hi for lo, hi in n.slots):
                return n.port
        return None

    def move_slots(self, slots: Iterable[int], to_port: int) -> None:
        for slot in slots:
            self.move_slot(slot, to_port)

    def remove_node(self, port: int, timeout: float = 30.0) -> None:
        """Take a node that owns no slots out of the cluster: CLUSTER FORGET everywhere, stop."""
        node_id = next(n.id for n in self.nodes(port).values() if "myself" in n.flags)
        server = self.servers.pop(port)
        server.close()
        for other in self.alive_ports:
            try:
                _ask(other, "CLUSTER", "FORGET", node_id)
            except redis.ResponseError as error:
                if "Unknown node" not in str(error):
                    raise
        wait_until(lambda: all(all(n.id != node_id for n in self.nodes(p).values())
                               for p in self.alive_ports), timeout, "the node to be forgotten")


# -- sentinel ----------------------------------------------------------------------------------


def _as_dict(reply: Any) -> dict[str, Any]:
    """A Sentinel reply as a dict, whether redis-py parsed it or not."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2]))


# a replica syncs at once instead of waiting 5 s for others to share a diskless transfer
_REPLICATION_ARGS = ("--repl-diskless-sync-delay", "0")


class SentinelServer:
    """One ``redis-server --sentinel`` process watching a primary."""

    def __init__(self, service: str, primary_port: int, quorum: int, down_after_ms: int,
                 failover_timeout_ms: int) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="pyredislua-sentinel-")
        self.config = Path(self._dir.name) / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind {HOST}\ndir {self._dir.name}\n"
            f"logfile {self._dir.name}/sentinel.log\n"
            f"sentinel monitor {service} {HOST} {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service} 1\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> SentinelServer:
        from .server import redis_server_binary

        self.process = subprocess.Popen([redis_server_binary(), str(self.config), "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _ask(self.port, "PING"), timeout, f"sentinel on {self.port}")
        return self

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._dir.cleanup()


class LocalSentinel:
    """A primary with ``replicas`` replicas, watched by ``sentinels`` Sentinel processes.

    ``redis.sentinel.Sentinel(local.sentinel_addresses).master_for(local.service)``
    """

    def __init__(self, replicas: int = 1, sentinels: int = 3, *, service: str = "prl",
                 down_after_ms: int = 400, failover_timeout_ms: int = 4000) -> None:
        self.service = service
        self.shape = (replicas, sentinels)
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers: dict[int, RedisServer] = {}
        self.sentinels: list[SentinelServer] = []

    def start(self, timeout: float = 30.0) -> LocalSentinel:
        replicas, sentinels = self.shape
        try:
            primary = RedisServer(extra_args=_REPLICATION_ARGS).start()
            self.servers[primary.port] = primary
            for _ in range(replicas):
                replica = RedisServer(extra_args=(*_REPLICATION_ARGS, "--replicaof", HOST,
                                                  str(primary.port)))
                self.servers[replica.start().port] = replica
            for _ in range(sentinels):
                sentinel = SentinelServer(self.service, primary.port, sentinels // 2 + 1,
                                          self.down_after_ms, self.failover_timeout_ms)
                self.sentinels.append(sentinel.start())
            self.wait_healthy(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers.values():
            server.close()
        self.sentinels, self.servers = [], {}

    def __enter__(self) -> LocalSentinel:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(HOST, s.port) for s in self.sentinels]

    def primary(self) -> int:
        """The primary's port as the sentinels report it (they must agree)."""
        answers = {int(_ask(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1])
                   for s in self.sentinels}
        if len(answers) != 1:
            raise RedisServerError(f"sentinels disagree on the primary: {sorted(answers)}")
        return answers.pop()

    def _healthy(self) -> bool:
        """Every sentinel agrees on the primary, is not failing over, sees the other sentinels,
        and could promote every live replica (a replica it has not heard from since it came
        back is not a candidate: SENTINEL FAILOVER would answer NOGOODSLAVE)."""
        replicas, sentinels = self.shape
        try:
            primary = self.primary()
        except RedisServerError:
            return False
        if _ask(primary, "ROLE")[0] != "master":
            return False
        live = [port for port, server in self.servers.items()
                if port != primary and server.alive]
        for port in live:
            role = _ask(port, "ROLE")
            if role[0] != "slave" or int(role[2]) != primary or role[3] != "connected":
                return False
        for s in self.sentinels:
            state = _as_dict(_ask(s.port, "SENTINEL", "MASTER", self.service))
            if state["flags"] != "master" or int(state["num-other-sentinels"]) < sentinels - 1:
                return False
            seen = {int(r["port"]): r for r in map(
                _as_dict, _ask(s.port, "SENTINEL", "REPLICAS", self.service))}
            for port in live:
                # what the sentinel needs to pick it: connected, up, an INFO reply from it
                # within 30 s (a replica that came back is asked at once; others every 10 s)
                r = seen.get(port)
                if r is None or r["flags"] != "slave" or int(r["info-refresh"]) > 30_000:
                    return False
        return len(live) >= replicas

    def wait_healthy(self, timeout: float = 30.0) -> None:
        wait_until(self._healthy, timeout, "sentinels to agree on a healthy primary",
                   interval=0.05)

    def failover(self, *, kill: bool = False, timeout: float = 30.0) -> int:
        """Promote a replica: ``SENTINEL FAILOVER`` (no agreement needed), or SIGKILL the
        primary and let the sentinels agree it is down and elect a replica. Returns the new
        primary's port once every sentinel reports it; a killed primary stays down."""
        old = self.primary()
        if kill:
            self.servers[old].kill()
        else:
            _ask(self.sentinels[0].port, "SENTINEL", "FAILOVER", self.service)

        def switched() -> int | None:
            try:
                new = self.primary()
            except RedisServerError:
                return None
            return new if new != old and _ask(new, "ROLE")[0] == "master" else None

        new = wait_until(switched, timeout, "the sentinels to promote a replica", interval=0.02)
        if not kill and _ask(old, "ROLE")[0] == "master":
            # the sentinels demote the old primary only after it reported the wrong role for
            # 8 s; do what they will do
            _ask(old, "REPLICAOF", HOST, str(new))
        return new

    def restore(self, timeout: float = 30.0) -> None:
        """Restart a killed old primary as a replica of the current one; wait until healthy."""
        primary = self.primary()
        for server in self.servers.values():
            if not server.alive:
                server.extra_args = (*_REPLICATION_ARGS, "--replicaof", HOST, str(primary))
                server.start()
        self.wait_healthy(timeout)
