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


def test_the_reply_reader_internals_exist() -> None:
    """``client.read_replies`` takes a batch's replies from hiredis's reader itself."""
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
    from redis._parsers.response_callbacks import _get_response_callback
    from redis.asyncio import Connection

    parser = _AsyncHiredisParser(socket_read_size=65536)
    connection = Connection()
    used = {
        parser: (
            "_reader",
            "_connected",
            "_hiredis_PushNotificationType",
            "read_from_socket",
            "handle_push_response",
        ),
        connection: ("_parser", "_resp2_fallback", "health_check_interval", "next_health_check"),
    }
    missing = [
        f"{type(o).__name__}.{n}" for o, names in used.items() for n in names if not hasattr(o, n)
    ]
    assert missing == [], f"redis-py changed what read_replies calls: {missing}"
    assert NOT_ENOUGH_DATA is not None
    assert callable(_get_response_callback)


def test_the_pool_and_write_internals_exist() -> None:
    """``FluePool`` hands out and takes back a connection itself, and ``TimedSend``
    writes on the connection's stream itself."""
    from redis.asyncio import BlockingConnectionPool, Connection

    pool = BlockingConnectionPool()
    used = {
        pool: ("_available_connections", "_in_use_connections", "_lock", "_condition"),
        Connection(): ("_writer", "_re_auth_token", "should_reconnect", "_send_packed_command"),
    }
    missing = [
        f"{type(o).__name__}.{n}" for o, names in used.items() for n in names if not hasattr(o, n)
    ]
    assert missing == [], f"redis-py changed what FluePool or TimedSend use: {missing}"
    assert hasattr(pool._condition, "_waiters")
