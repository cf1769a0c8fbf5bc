"""A primary that joins by a bare ``CLUSTER MEET`` (no library: unlike ``redis-cli --cluster
add-node``, nothing copies functions over) and takes slots while calls run on them: the first
call that reaches it loads the library there and is retried, so the traffic sees no error.
Before per-node loading, every call to a moved slot failed (220 errors in a row in the issue's
trial)."""

from __future__ import annotations

import pytest
import redis

import pyredislua
from pyredislua.topology import LocalCluster
from tests.clusterkit import Traffic, info_versions, on_node, slot_of

pytestmark = pytest.mark.cluster
LIBRARY = pyredislua.render_library()


def _move_under_traffic(cluster: LocalCluster, new: int, mode: str, tags: list[str]
                        ) -> Traffic:
    clients: list[redis.RedisCluster] = []

    def make_client() -> pyredislua.Client:
        conn = redis.RedisCluster.from_url(cluster.url)
        clients.append(conn)
        return pyredislua.Client(conn, mode=mode)  # type: ignore[arg-type]

    traffic = Traffic(make_client, tags).start()
    try:
        traffic.wait_for_calls(len(tags))
        for tag in tags:
            # a cycle on the slot runs while it is half-way: a call finding its keys split
            # between the nodes gets ASK or TRYAGAIN until the slot has moved (and is retried
            # meanwhile); a single-key call is served by the new node after ASKING, and finds
            # no library there
            traffic.focus = tag
            cluster.move_slot(slot_of(tag), new,
                              between=lambda tag=tag: traffic.wait_for_cycle_on(tag))
            traffic.wait_for_tag(tag)  # and it ends well once the slot moved
        assert all(cluster.owner_of(slot_of(t)) == new for t in tags)
    finally:
        traffic.stop()
        for conn in clients:
            conn.close()
    return traffic


def test_slots_move_to_a_primary_joined_by_cluster_meet_under_traffic(
        cluster: LocalCluster) -> None:
    tags = {mode: [f"mv-{mode}-{i}" for i in range(12)] for mode in ("function", "script")}
    owners = {t: cluster.owner_of(slot_of(t)) for mode_tags in tags.values() for t in mode_tags}
    new = cluster.add_bare_node()
    try:
        functions = _move_under_traffic(cluster, new, "function", tags["function"])
        on_new = info_versions(cluster, LIBRARY.info_function).get(new)
        on_node(new, "FUNCTION", "FLUSH")  # the script-mode client starts from nothing too
        scripts = _move_under_traffic(cluster, new, "script", tags["script"])
    finally:
        for tag, owner in owners.items():
            cluster.move_slot(slot_of(tag), owner)
        cluster.remove_node(new)
    for traffic in (functions, scripts):
        assert traffic.errors == [], traffic.errors[:5]
        assert traffic.ok >= 2 * len(traffic.tags)
    assert on_new == LIBRARY.version  # loaded there by the first call that needed it
