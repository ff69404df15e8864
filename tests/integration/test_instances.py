"""GET /api/info and the instances page (GET /admin), with two real instances on Redis.

The page itself runs in a browser; here it is checked over HTTP: served, with what it
reads (``api/info``, the api key header, every 2 s), and what it reads is right.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest

from sanic_feeds.brokers.base import InstanceStatus
from tests.support.ws import open_feed, wait_until

pytestmark = pytest.mark.integration

KEY = "info-key"
AUTH = {"Authorization": f"apikey {KEY}"}
FIELDS = set(InstanceStatus.__dataclass_fields__)
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _no_proxy.open(request, timeout=10) as reply:
            return reply.status, dict(reply.headers.items()), reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers.items()), error.read()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(_get, url, headers)


async def info(server: Any) -> Any:
    status, _, body = await get(f"{server.url}/api/info", AUTH)
    assert status == 200, body
    return orjson.loads(body)


def by_address(listing: Any) -> dict[str, Any]:
    return {instance["address"]: instance for instance in listing["instances"]}


async def test_api_info_lists_every_live_instance_with_its_figures(
    feeds_server_factory: Any, redis_url: str
) -> None:
    args = ["--api-key", KEY]
    one, two = feeds_server_factory(redis_url, args), feeds_server_factory(redis_url, args)

    # Behind the api key, like every /api route when one is set.
    status, _, body = await get(f"{one.url}/api/info")
    assert (status, orjson.loads(body)["code"]) == (401, "unauthorized")

    # Both instances list both, each as it serves.
    listing = await wait_until(lambda: _listing_with(one, 2), what="both instances in /api/info")
    assert set(by_address(listing)) == {one.url, two.url}
    for instance in listing["instances"]:
        assert set(instance) == FIELDS
        assert instance["version"] == "0.1.0"
        assert instance["pid"] in (one.pid, two.pid)
        assert 0 < instance["uptime"] < 60
    assert listing["instance"] == by_address(listing)[one.url]["id"]  # who answered
    assert by_address(await info(two)).keys() == by_address(listing).keys()

    # Connections, subscriptions and channels, as of each one's last heartbeat.
    await open_feed(one.ws_url, "a")
    await open_feed(one.ws_url, "b")
    await open_feed(two.ws_url, "a")

    async def figures_told() -> bool:
        now = by_address(await info(two))
        return _figures(now[one.url]) == (2, 2, 2) and _figures(now[two.url]) == (1, 1, 1)

    await wait_until(figures_told, what="the connection figures in the heartbeats")
    started = by_address(await info(one))[two.url]["uptime"]
    await asyncio.sleep(1.2)
    assert by_address(await info(one))[two.url]["uptime"] > started

    # Stopped: gone from the list at once; crashed: within the heartbeat expiry (5 s).
    two.stop()
    assert set(by_address(await info(one))) == {one.url}
    two.start()
    await wait_until(lambda: _listing_with(one, 2), what="the restarted instance")
    two.kill()
    killed_at = time.monotonic()
    await wait_until(lambda: _listing_with(one, 1), timeout_s=15, what="the crash to show")
    assert time.monotonic() - killed_at < 8


async def _listing_with(server: Any, count: int) -> Any:
    listing = await info(server)
    return listing if len(listing["instances"]) == count else None


def _figures(instance: Any) -> tuple[int, int, int]:
    return instance["connections"], instance["subscriptions"], instance["channels"]


async def test_api_info_on_the_memory_broker_lists_this_instance_without_a_key(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory()
    status, _, body = await get(f"{server.url}/api/info")
    assert status == 200
    [instance] = orjson.loads(body)["instances"]
    assert (instance["address"], instance["pid"]) == (server.url, server.pid)


async def test_the_instances_page_is_served_and_reads_api_info_every_2_s(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory(args=["--api-key", KEY])
    # The page holds no data, so it needs no key; what it reads does.
    status, headers, page = await get(f"{server.url}/admin")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    text = page.decode()
    assert "<title>sanic-feeds: instances</title>" in text
    # Self-contained: no script, style or font from elsewhere.
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    # What it reads: api/info next to it, with the key, every 2 s.
    assert '+ "api/info"' in text
    assert "Authorization: `apikey ${key}`" in text
    assert "const REFRESH_MS = 2000;" in text and "setInterval(refresh, REFRESH_MS)" in text
    for field in FIELDS - {"id", "address"}:
        assert f"instance.{field}" in text, field
    # And what it reads is there, at the path it computes from its own.
    listing = await info(server)
    assert [i["address"] for i in listing["instances"]] == [server.url]
