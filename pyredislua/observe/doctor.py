"""``pyredislua doctor``: check a server against what the primitives need.

Each primitive's guarantees rest on the server keeping what the library wrote until the library
removes it or its TTL ends. A server configured to drop keys under memory pressure, or to forget
them on restart, breaks those guarantees silently: a held lock vanishes and a second holder takes
it, a queued job is lost, a fence counter starts again at 1 so two holders carry the same fence.
The doctor reads each node's configuration and state (``INFO``, ``CONFIG GET``, ``FUNCTION LIST``)
and prints, per finding, what it found, why it matters and the fix.

The checks are pure functions of what was read (:func:`diagnose`); :func:`gather` does the reading,
one node at a time, so a node that refuses a command (``CONFIG`` renamed by a managed service) or
does not answer becomes a finding of its own rather than an error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import redis

from ..engine.compat import MIN_VERSION, version_tuple
from ..engine.render import Library
from ..kit import as_text

Level = Literal["ok", "warn", "unsafe"]
LEVELS: tuple[Level, ...] = ("ok", "warn", "unsafe")

# What the primitives need of the server (PEXPIRE ... GT and Redis Functions are 7.0's):
# MIN_VERSION, with everything else version-specific, lives in engine/compat.py.
# Replication: a replica this many seconds behind (INFO's lag: since its last ack) may miss
# the last seconds of locks and jobs when promoted.
REPLICA_LAG_WARN_S = 10
# Memory headroom: past these fractions of maxmemory, writes start to fail soon.
MEMORY_WARN = 0.80
MEMORY_UNSAFE = 0.95

CONFIG_KEYS = ("maxmemory", "maxmemory-policy", "appendonly", "appendfsync", "save",
               "busy-reply-threshold")


@dataclass
class NodeFacts:
    """What was read from one node; absent values are what could not be read."""

    address: str
    role: str  # "primary" or "replica"
    reachable: bool = True
    error: str | None = None  # why the node could not be read at all
    info: dict[str, Any] = field(default_factory=dict)
    config: dict[str, str] | None = None  # None: CONFIG GET refused
    config_error: str | None = None
    # library name -> {function -> description}; None: not read (a replica, or refused)
    libraries: dict[str, dict[str, str]] | None = None
    libraries_error: str | None = None


@dataclass
class Finding:
    level: Level
    node: str
    check: str
    found: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


# -- the checks (pure) -------------------------------------------------------------------------


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def diagnose(node: NodeFacts, shipped: Library) -> list[Finding]:
    """Every finding for one node, ``ok`` ones included (the report says what was checked)."""
    if not node.reachable:
        if node.role == "replica":  # known from its primary's INFO; maybe not routable from here
            return [Finding("warn", node.address, "reachable",
                            f"a replica its primary reports does not answer here: {node.error}",
                            "run the doctor where the replica is reachable, or check it")]
        return [Finding("unsafe", node.address, "reachable", f"no answer: {node.error}",
                        "bring the node back, or remove it from the deployment")]
    out: list[Finding] = []
    out += _check_version(node)
    out += _check_eviction(node)
    if node.role == "primary":
        out += _check_persistence(node)
        out += _check_library(node, shipped)
        out += _check_replicas(node)
    else:
        out += _check_replica_link(node)
    out += _check_memory(node)
    out += _check_busy_threshold(node)
    return out


def _check_version(node: NodeFacts) -> list[Finding]:
    version = str(node.info.get("redis_version", "?"))
    if version_tuple(version) < MIN_VERSION:
        needed = ".".join(map(str, MIN_VERSION[:2]))
        return [Finding("unsafe", node.address, "version", f"Redis {version}",
                        f"upgrade to Redis {needed} or later: the operations use PEXPIRE ... GT "
                        "and Redis Functions")]
    return [Finding("ok", node.address, "version", f"Redis {version}")]


def _config(node: NodeFacts, key: str) -> str | None:
    return None if node.config is None else node.config.get(key)


def _unknown(node: NodeFacts, check: str) -> Finding:
    return Finding("warn", node.address, check,
                   f"could not read the configuration ({node.config_error})",
                   "check it by hand, or grant CONFIG GET to the doctor's user")


def _check_eviction(node: NodeFacts) -> list[Finding]:
    policy = _config(node, "maxmemory-policy")
    if policy is None:
        return [_unknown(node, "eviction")]
    maxmemory = int(_config(node, "maxmemory") or 0)
    if policy == "noeviction":
        return [Finding("ok", node.address, "eviction", "maxmemory-policy noeviction: at the "
                        "limit writes fail with OOM and nothing is dropped")]
    why = (f"maxmemory-policy {policy}: under memory pressure Redis deletes keys the library "
           "still needs (every library key has a TTL, so volatile-* policies pick them too): a "
           "held lock vanishes and another caller takes it, a queued job is lost, a fence "
           "counter restarts")
    fix = ("CONFIG SET maxmemory-policy noeviction, and the same in redis.conf (keep the "
           "library's keys on a Redis of their own if a cache there needs eviction)")
    if maxmemory == 0:
        return [Finding("warn", node.address, "eviction",
                        why + " (not reached today: no maxmemory is set)", fix)]
    return [Finding("unsafe", node.address, "eviction", why, fix)]


def _check_persistence(node: NodeFacts) -> list[Finding]:
    appendonly = _config(node, "appendonly")
    if appendonly is None:
        return [_unknown(node, "persistence")]
    save = (_config(node, "save") or "").strip()
    if appendonly == "yes":
        fsync = _config(node, "appendfsync") or "?"
        if fsync == "no":
            return [Finding("warn", node.address, "persistence",
                            "appendonly yes, appendfsync no: the OS decides when writes reach "
                            "disk; a host crash can lose tens of seconds (fences may repeat)",
                            "CONFIG SET appendfsync everysec")]
        return [Finding("ok", node.address, "persistence",
                        f"appendonly yes, appendfsync {fsync}: a restart keeps locks, jobs and "
                        "fence counters (everysec: up to a second of writes)")]
    if save:
        return [Finding("warn", node.address, "persistence",
                        f"RDB snapshots only (save {save}): a restart loses the writes since the "
                        "last snapshot: fence counters go back and can repeat, jobs acked or "
                        "enqueued since come back or vanish",
                        "CONFIG SET appendonly yes (and appendfsync everysec)")]
    return [Finding("unsafe", node.address, "persistence",
                    "no persistence (appendonly no, no save points): a restart empties the "
                    "server: every lock is free at once, every queued job is gone and fence "
                    "counters start again at 1, so a paused old holder and a new one carry the "
                    "same fence",
                    "CONFIG SET appendonly yes (and appendfsync everysec); or, if a restart "
                    "losing everything is acceptable, restart no sooner than the longest lease "
                    "and use ephemeral fences knowingly")]


def _library_version(functions: dict[str, str], shipped: Library) -> tuple[str, str] | None:
    parts = functions.get(shipped.info_function, "").split()
    if len(parts) < 2:
        return None
    sha = parts[2].removeprefix("sha1=") if len(parts) > 2 else ""
    return parts[1], sha


def _check_library(node: NodeFacts, shipped: Library) -> list[Finding]:
    if node.libraries is None:
        return [Finding("warn", node.address, "library",
                        f"could not list functions ({node.libraries_error})",
                        "the client falls back to scripts (EVALSHA) when it may not load "
                        "functions; run `pyredislua load` as a user who may")]
    functions = node.libraries.get(shipped.name)
    held = None if functions is None else _library_version(functions, shipped)
    if held is None:
        return [Finding("warn", node.address, "library",
                        f"{shipped.name} is not loaded: the first call loads it (FUNCTION LOAD "
                        "rights needed); redis-cli FCALL users find nothing until then",
                        f"pyredislua load --url redis://{node.address}")]
    version, sha = held
    ours = _version(shipped.version)
    if _version(version) < ours:
        return [Finding("warn", node.address, "library",
                        f"{shipped.name} {version} is older than this client's "
                        f"{shipped.version}: the first call replaces it",
                        f"pyredislua load --url redis://{node.address}")]
    if _version(version) > ours:
        return [Finding("ok", node.address, "library",
                        f"{shipped.name} {version}, newer than this client's {shipped.version} "
                        "(kept: a newer library serves older clients)")]
    if sha and sha != shipped.sha:
        return [Finding("unsafe", node.address, "library",
                        f"{shipped.name} {version} of another build (sha1 {sha[:12]}, this "
                        f"client's {shipped.sha[:12]}): same version, different code",
                        f"pyredislua load --force --url redis://{node.address}, after finding who "
                        "loaded a modified build")]
    return [Finding("ok", node.address, "library", f"{shipped.name} {version} (this build)")]


def _replicas(info: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for key, value in info.items():
        if key.startswith("slave") and key[5:].isdigit() and isinstance(value, dict):
            found.append(value)
    return found


def _check_replicas(node: NodeFacts) -> list[Finding]:
    out = []
    master_offset = int(node.info.get("master_repl_offset", 0) or 0)
    for replica in _replicas(node.info):
        where = f"{replica.get('ip')}:{replica.get('port')}"
        state = replica.get("state")
        lag = int(replica.get("lag", 0) or 0)
        behind = master_offset - int(replica.get("offset", 0) or 0)
        if state != "online":
            out.append(Finding("warn", node.address, "replicas",
                               f"replica {where} is {state}: it has not synced",
                               "check the replica's log and its link to this primary"))
        elif lag > REPLICA_LAG_WARN_S:
            out.append(Finding("warn", node.address, "replicas",
                               f"replica {where} last acknowledged {lag}s ago ({behind} bytes "
                               "behind): promoted now, it would miss recent locks and jobs",
                               "check the network and the replica's load"))
        else:
            out.append(Finding("ok", node.address, "replicas",
                               f"replica {where} online, lag {lag}s, {behind} bytes behind "
                               "(asynchronous: a failover may still lose the last writes; "
                               "Client.with_durability waits for replicas)"))
    return out


def _check_replica_link(node: NodeFacts) -> list[Finding]:
    link = node.info.get("master_link_status")
    if link != "up":
        return [Finding("warn", node.address, "replication",
                        f"replica whose link to its primary is {link}",
                        "check the primary and the replica's log")]
    return [Finding("ok", node.address, "replication", "replica, link to its primary up")]


def _check_memory(node: NodeFacts) -> list[Finding]:
    used = int(node.info.get("used_memory", 0) or 0)
    maxmemory = int(node.info.get("maxmemory", 0) or 0)
    if maxmemory == 0:
        return [Finding("warn", node.address, "memory",
                        f"no maxmemory set ({used:,} bytes used): Redis grows until the OS "
                        "kills it, and everything is lost at once",
                        "CONFIG SET maxmemory <bytes> with maxmemory-policy noeviction, so "
                        "writes fail (and the primitives report OOM) instead")]
    share = used / maxmemory
    text = f"{used:,} of {maxmemory:,} bytes used ({share:.0%})"
    if share >= MEMORY_UNSAFE:
        return [Finding("unsafe", node.address, "memory", text + ": writes are about to fail",
                        "raise maxmemory, or drain queues and dead letters "
                        "(`pyredislua memory` shows what takes the space)")]
    if share >= MEMORY_WARN:
        return [Finding("warn", node.address, "memory", text,
                        "plan more memory (`pyredislua memory` shows what takes the space)")]
    return [Finding("ok", node.address, "memory", text)]


def _check_busy_threshold(node: NodeFacts) -> list[Finding]:
    threshold = _config(node, "busy-reply-threshold")
    if threshold is None:
        return []
    return [Finding("ok", node.address, "busy-reply-threshold",
                    f"{threshold} ms (every operation is bounded and runs in microseconds; a "
                    "script running longer makes Redis reply BUSY to everyone)")]


# -- reading the nodes -------------------------------------------------------------------------


def read_node(conn: Any, address: str, role: str, shipped: Library) -> NodeFacts:
    """One node's facts; what cannot be read is recorded, never raised."""
    facts = NodeFacts(address, role)
    try:
        facts.info = dict(conn.info("all"))
    except (redis.ConnectionError, redis.TimeoutError) as error:
        facts.reachable, facts.error = False, str(error)
        return facts
    except redis.ResponseError as error:
        facts.info, facts.error = {}, str(error)
    try:
        config: dict[str, str] = {}
        for key in CONFIG_KEYS:
            config.update({as_text(k): as_text(v) for k, v in conn.config_get(key).items()})
        facts.config = config
    except redis.ResponseError as error:
        facts.config_error = str(error)
    if role == "primary":
        try:
            reply = conn.execute_command("FUNCTION", "LIST", "LIBRARYNAME", shipped.name)
            facts.libraries = _libraries(reply)
        except redis.ResponseError as error:
            facts.libraries_error = str(error)
    return facts


def _pairs(entry: Any) -> dict[str, Any]:
    if isinstance(entry, dict):
        return {as_text(k): v for k, v in entry.items()}
    it = iter(entry)
    return {as_text(k): v for k, v in zip(it, it)}


def _libraries(reply: Any) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for entry in reply or []:
        lib = _pairs(entry)
        functions = {}
        for fn in lib.get("functions") or []:
            f = _pairs(fn)
            functions[as_text(f.get("name"))] = as_text(f.get("description") or "")
        out[as_text(lib.get("library_name", "?"))] = functions
    return out


def gather(conn: Any, shipped: Library) -> list[NodeFacts]:
    """Facts of every node: each primary (every primary of a cluster, or the one server), then
    the replicas each primary reports in ``INFO replication``, read directly with the primary's
    credentials (one that cannot be reached from here is a finding, not an error)."""
    if hasattr(conn, "get_primaries"):  # redis.RedisCluster
        heads = [(conn.get_redis_connection(n), n.name) for n in conn.get_primaries()]
    else:
        kwargs = conn.connection_pool.connection_kwargs
        heads = [(conn, f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}")]
    facts = []
    for head, address in heads:
        role = "replica" if _role(head) == "slave" else "primary"
        node = read_node(head, address, role, shipped)
        facts.append(node)
        for replica in _replicas(node.info):
            host, port = str(replica.get("ip")), int(replica.get("port", 0))
            kwargs = dict(head.connection_pool.connection_kwargs)
            kwargs.update(host=host, port=port, socket_timeout=2, socket_connect_timeout=2)
            allowed = {"host", "port", "username", "password", "db", "socket_timeout",
                       "socket_connect_timeout", "ssl", "ssl_certfile", "ssl_keyfile",
                       "ssl_ca_certs", "ssl_cert_reqs"}
            try:
                replica_conn = redis.Redis(**{k: v for k, v in kwargs.items() if k in allowed})
            except TypeError:  # a connection class with other options: read it as host/port
                replica_conn = redis.Redis(host=host, port=port, socket_timeout=2)
            try:
                facts.append(read_node(replica_conn, f"{host}:{port}", "replica", shipped))
            finally:
                replica_conn.close()
    return facts


def _role(conn: Any) -> str:
    try:
        return str(conn.info("replication").get("role", "master"))
    except redis.RedisError:
        return "master"


def examine(conn: Any, shipped: Library) -> list[Finding]:
    """Every finding for every node reachable through ``conn``."""
    findings: list[Finding] = []
    for node in gather(conn, shipped):
        findings += diagnose(node, shipped)
    return findings


def worst(findings: list[Finding]) -> Level:
    return max((f.level for f in findings), key=LEVELS.index, default="ok")
