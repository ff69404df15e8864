"""redis+cluster:// and redis+sentinel:// URLs (pure)."""

from __future__ import annotations

import pytest

from sanic_feeds.brokers.slots import NodeAddress
from sanic_feeds.brokers.urls import (
    ClusterURL,
    SentinelURL,
    parse_cluster_url,
    parse_sentinel_url,
)


def test_cluster_urls_list_nodes() -> None:
    assert parse_cluster_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001") == ClusterURL(
        (NodeAddress("10.0.0.1", 7000), NodeAddress("10.0.0.2", 7001))
    )
    assert parse_cluster_url("redis+cluster://redis-a/") == ClusterURL(
        (NodeAddress("redis-a", 6379),)
    )
    assert parse_cluster_url("redis+cluster://[::1]:7000,h:1/0").nodes == (
        NodeAddress("::1", 7000),
        NodeAddress("h", 1),
    )


def test_cluster_url_credentials() -> None:
    parsed = parse_cluster_url("redis+cluster://app:s%40cret@h:7000")
    assert (parsed.username, parsed.password) == ("app", "s@cret")
    parsed = parse_cluster_url("redis+cluster://:only-password@h:7000")
    assert (parsed.username, parsed.password) == (None, "only-password")


def test_sentinel_urls_name_the_master_and_database() -> None:
    assert parse_sentinel_url("redis+sentinel://s1:26379,s2:26380/mymaster/2") == SentinelURL(
        (NodeAddress("s1", 26379), NodeAddress("s2", 26380)), "mymaster", 2
    )
    parsed = parse_sentinel_url("redis+sentinel://:pw@s1/mymaster")
    assert parsed.sentinels == (NodeAddress("s1", 26379),)
    assert (parsed.master, parsed.db, parsed.password) == ("mymaster", 0, "pw")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h:7000/3", "no databases"),
        ("redis+cluster://h:port", "malformed port"),
        ("redis+cluster://h:70000", "malformed port"),
        ("redis+cluster://h:7000,:7001", "without a host"),
        ("redis+cluster://h:7000?timeout=1", "no options"),
        ("redis://h:7000", "expected a redis\\+cluster://"),
        ("redis+cluster://[::1:7000", "malformed address"),
    ],
)
def test_malformed_cluster_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cluster_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1:26379", "name the master"),
        ("redis+sentinel://s1:26379/", "name the master"),
        ("redis+sentinel://s1:26379/m/zero", "must be a number"),
    ],
)
def test_malformed_sentinel_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


def test_messages_do_not_show_the_password() -> None:
    with pytest.raises(ValueError) as caught:
        parse_cluster_url("redis+cluster://app:secret@h:7000/5")
    assert "secret" not in str(caught.value)
