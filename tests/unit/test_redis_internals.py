"""The parts of redis-py's cluster client that the library's own routing calls
(``flue_models.client.FlueRedisCluster``): the slot map, its refresh and a node's
connections. They are not redis-py's public API; pyproject pins the versions they were
built on, and this test names the one that moved if a new version changes them."""

from __future__ import annotations

from redis.asyncio.cluster import ClusterNode, NodesManager, RedisCluster

USED = {
    RedisCluster: ("_request_refresh", "_initialize_due", "_determine_slot", "initialize"),
    NodesManager: (
        "get_node_from_slot",
        "move_slot",
        "move_node_to_end_of_cached_nodes",
        "remap_host_port",
        "set_nodes",
    ),
    ClusterNode: (
        "acquire_connection",
        "release",
        "disconnect_if_needed",
        "parse_response",
        "_mark_free_connections_for_reconnect_on_error",
    ),
}


def test_the_cluster_internals_the_routing_calls_exist() -> None:
    missing = [f"{k.__name__}.{n}" for k, names in USED.items() for n in names if not hasattr(k, n)]
    assert missing == [], f"redis-py changed what FlueRedisCluster calls: {missing}"
