"""Reply shapes of CONFIG GET and INFO, and the decisions taken on a report."""

from __future__ import annotations

import warnings

import pytest

from flue_models.errors import (
    PersistenceWarning,
    ServerCheckError,
)
from flue_models.inspection import ServerReport, check_report, parse_info, version_tuple
from flue_models.replies import reply_pairs

GOOD = ServerReport("7.0.15", "redis", False, "noeviction", True, False)


def test_raw_info_text_with_crlf_line_ends_is_parsed() -> None:
    text = b"# Memory\r\nused_memory:1024\r\nmaxmemory_policy:allkeys-lru\r\n\r\n"
    assert parse_info(text) == {"used_memory": "1024", "maxmemory_policy": "allkeys-lru"}


def test_parsed_info_mapping_is_normalized_to_text() -> None:
    assert parse_info({"cluster_enabled": 0, b"x": b"y"}) == {"cluster_enabled": "0", "x": "y"}


def test_config_get_reply_shapes_resp2_list_and_resp3_map() -> None:
    assert reply_pairs([b"maxmemory-policy", b"noeviction"]) == {"maxmemory-policy": "noeviction"}
    assert reply_pairs({b"maxmemory-policy": b"noeviction"}) == {"maxmemory-policy": "noeviction"}
    assert reply_pairs([]) == {}


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("7.0.15", (7, 0, 15)),
        ("6.2", (6, 2)),
        ("6.2.0-rc1", (6, 2, 0)),
        ("255.255.255", (255, 255, 255)),
    ],
)
def test_versions_are_compared_as_numbers(text: str, parsed: tuple[int, ...]) -> None:
    assert version_tuple(text) == parsed


@pytest.mark.parametrize(
    ("family", "old"),
    [("redis", "6.2.14"), ("redis", "6.0.16"), ("redis", "garbage"), ("valkey", "7.1.0")],
)
def test_servers_below_the_floor_are_refused_naming_the_version(family: str, old: str) -> None:
    report = ServerReport(old, family, False, "noeviction", True, True)
    with pytest.raises(ServerCheckError, match=f"{family} {old}.*Redis 7.0.*Valkey 7.2"):
        check_report(report)


@pytest.mark.parametrize(("family", "version"), [("redis", "7.0.0"), ("valkey", "7.2.4")])
def test_servers_at_the_floor_are_accepted(family: str, version: str) -> None:
    check_report(ServerReport(version, family, False, "noeviction", True, True))


def test_cluster_is_refused() -> None:
    with pytest.raises(ServerCheckError):
        check_report(ServerReport("7.0.15", "redis", True, "noeviction", True, True))


def test_eviction_policy_is_refused_by_name() -> None:
    with pytest.raises(ServerCheckError, match="volatile-lru") as caught:
        check_report(ServerReport("7.0.15", "redis", False, "volatile-lru", True, True))
    assert "noeviction" in str(caught.value)


@pytest.mark.parametrize(
    ("report", "setting"),
    [
        (ServerReport(None, "redis", False, "noeviction", True, True), "version"),
        (ServerReport("7.0.15", "redis", None, "noeviction", True, True), "cluster"),
        (ServerReport("7.0.15", "redis", False, None, True, True), "maxmemory-policy"),
    ],
)
def test_unreadable_settings_are_refused(report: ServerReport, setting: str) -> None:
    with pytest.raises(ServerCheckError, match=setting) as caught:
        check_report(report)
    assert "inspect_server=False" in str(caught.value)


def test_no_persistence_warns_but_passes() -> None:
    with pytest.warns(PersistenceWarning, match="nothing on disk"):
        check_report(ServerReport("7.0.15", "redis", False, "noeviction", False, False))


def test_some_persistence_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_report(GOOD)


def test_report_lines_name_every_setting() -> None:
    assert GOOD.lines() == [
        "server: redis 7.0.15",
        "cluster: off",
        "maxmemory-policy: noeviction",
        "persistence: AOF",
        "memory: unknown",
        "replicas: unknown",
    ]
