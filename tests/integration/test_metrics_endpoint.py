"""GET /metrics on real servers: the metrics appear, move, and sum over ``--workers 2``,
behind the api key."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from tests.support.ws import close_code, open_feed, recv_event, wait_until

pytestmark = pytest.mark.integration

KEY = "metrics-key"
AUTH = {"Authorization": f"apikey {KEY}"}
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))

#: SPEC's list, as named here.
EXPECTED = {
    "feeds_connections": "gauge",
    "feeds_subscriptions": "gauge",
    "feeds_channels": "gauge",
    "feeds_messages_published": "counter",
    "feeds_messages_delivered": "counter",
    "feeds_slow_client_closes": "counter",
    "feeds_closes_sent": "counter",
    "feeds_recoveries": "counter",
    "feeds_gaps_healed": "counter",
    "feeds_messages_healed": "counter",
    "feeds_broker_reconnects": "counter",
    "feeds_errors": "counter",
    "feeds_broker_publish_duration_seconds": "histogram",
    "feeds_delivery_lag_seconds": "histogram",
}


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _no_proxy.open(request, timeout=10) as reply:
            return reply.status, reply.headers.get("content-type", ""), reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get("content-type", ""), error.read()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    return await asyncio.to_thread(_get, url, headers)


class Scrape:
    """One parsed scrape: ``scrape["feeds_errors_total", {"code": "bad_request"}]``."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[sample.name, frozenset(sample.labels.items())] = sample.value

    def __getitem__(self, key: str | tuple[str, dict[str, str]]) -> float:
        name, labels = (key, {}) if isinstance(key, str) else key
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(server: Any, headers: dict[str, str] | None = None) -> Scrape:
    status, content_type, body = await get(f"{server.url}/metrics", headers)
    assert status == 200, body
    assert content_type.startswith("text/plain; version=0.0.4")
    return Scrape(body.decode())


async def info(server: Any) -> Any:
    status, _, body = await get(f"{server.url}/api/info", AUTH)
    assert status == 200, body
    return orjson.loads(body)


async def open_raw(server: Any, channel: str) -> ClientConnection:
    return await open_feed(server.ws_url, channel, "format=raw")


async def test_metrics_sum_over_two_workers_behind_the_api_key(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(
        redis_url, ["--workers", "2", "--api-key", KEY, "--quiet-namespaces", "*"]
    )

    # Behind the key.
    assert (await get(f"{server.url}/metrics"))[0] == 401
    assert (await get(f"{server.url}/metrics", {"Authorization": "apikey wrong"}))[0] == 401
    first = await scrape(server, AUTH)
    assert {name: first.types.get(name) for name in EXPECTED} == EXPECTED
    assert first["feeds_errors_total", {"code": "unauthorized"}] >= 1

    # Connections until both workers hold some (the kernel picks the worker), as
    # their heartbeats tell (once a second).
    clients: list[ClientConnection] = []
    while True:
        clients += [await open_raw(server, "news") for _ in range(4)]
        instances = await wait_until(
            functools.partial(_registered, server, len(clients)), what="the workers' heartbeats"
        )
        if all(i["connections"] for i in instances):
            break
        assert len(clients) < 100, f"every connection went to one worker: {instances}"
    total = len(clients)

    # Every scrape, whichever worker answers it, sums both.
    for _ in range(6):
        summed = await scrape(server, AUTH)
        assert summed["feeds_connections"] == total
        assert summed["feeds_subscriptions"] == total
        assert summed["feeds_channels"] == 2  # "news", once per worker

    # Messages: published once, delivered by each worker to its own subscribers.
    before = await scrape(server, AUTH)
    for n in range(3):
        status, _, body = await asyncio.to_thread(
            _post, f"{server.url}/api/publish", {"channel": "news", "data": n}
        )
        assert status == 200, body
    for ws in clients:
        assert [await asyncio.wait_for(ws.recv(), 10) for _ in range(3)] == ["0", "1", "2"]

    async def moved() -> bool:
        now = await scrape(server, AUTH)
        return (
            now["feeds_messages_published_total", {"format": "api"}]
            - before["feeds_messages_published_total", {"format": "api"}]
            == 3
            and now["feeds_messages_delivered_total", {"format": "raw"}]
            - before["feeds_messages_delivered_total", {"format": "raw"}]
            == 3 * total
            # One lag sample per message per worker: counted per batch, not per client.
            and now["feeds_delivery_lag_seconds_count"] - before["feeds_delivery_lag_seconds_count"]
            == 6
            and now["feeds_broker_publish_duration_seconds_count"]
            - before["feeds_broker_publish_duration_seconds_count"]
            == 3
        )

    await wait_until(moved, what="the counters to move by the sum of both workers")

    # A worker that dies (no chance to clean up) stops counting among the gauges.
    instances = (await info(server))["instances"]
    victim = instances[0]
    os.kill(victim["pid"], signal.SIGKILL)
    survivors = total - victim["connections"]

    async def only_survivors_count() -> bool:
        return (await scrape(server, AUTH))["feeds_connections"] == survivors

    await wait_until(only_survivors_count, timeout_s=15, what="the dead worker's gauges to go")
    for ws in clients:
        await ws.close()
    await wait_until(
        lambda: _gauge_is(server, "feeds_connections", 0), what="connections back to 0"
    )


def _post(url: str, body: Any) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json", **AUTH}
    )
    try:
        with _no_proxy.open(request, timeout=10) as reply:
            return reply.status, "", reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, "", error.read()


async def _registered(server: Any, connections: int) -> list[Any] | None:
    """Both workers, once their heartbeats tell ``connections`` in all."""
    instances: list[Any] = (await info(server))["instances"]
    if len(instances) == 2 and sum(i["connections"] for i in instances) == connections:
        return instances
    return None


async def _gauge_is(server: Any, name: str, value: float) -> bool:
    return (await scrape(server, AUTH))[name] == value


async def recv_type(ws: ClientConnection, kind: str) -> Any:
    """The next event of type ``kind``, skipping others (joins, leaves)."""
    while (event := await recv_event(ws))["type"] != kind:
        pass
    return event


async def test_metrics_of_one_worker_move_with_what_clients_do(feeds_server_factory: Any) -> None:
    server = feeds_server_factory()  # memory://, no api key: no key needed
    before = await scrape(server)
    assert before["feeds_connections"] == 0

    # A recovery, a malformed command, a binary frame (closed 1003) and a message.
    publisher = await open_feed(server.ws_url, "news")
    await publisher.send('{"n": 1}')
    first = await recv_type(publisher, "message")
    recovering = await connect(f"{server.ws_url}/ws", open_timeout=10)
    await recovering.send(
        orjson.dumps(
            {"op": "subscribe", "channel": "news", "since": 0, "epoch": first["epoch"], "id": 1}
        ).decode()
    )
    assert (await recv_event(recovering))["recovered"] is True
    assert (await recv_event(recovering))["offset"] == first["offset"]  # the one it missed
    await recovering.send("not json")
    assert (await recv_type(recovering, "error"))["code"] == "bad_request"
    await recovering.send(b"\x00binary")
    assert await close_code(recovering) == 1003

    async def moved() -> bool:
        now = await scrape(server)

        def grew(name: str, **labels: str) -> float:
            return now[name, labels] - before[name, labels]

        return (
            now["feeds_connections"] == 1
            and now["feeds_subscriptions"] == 1
            and now["feeds_channels"] == 1
            and grew("feeds_messages_published_total", format="json") == 1
            and grew("feeds_messages_delivered_total", format="json") == 2  # both clients
            and grew("feeds_recoveries_total", outcome="recovered") == 1
            and grew("feeds_errors_total", code="bad_request") == 1
            and grew("feeds_closes_sent_total", code="1003") == 1
        )

    await wait_until(moved, what="the metrics to move")


async def test_metrics_off_serves_no_metrics(feeds_server_factory: Any) -> None:
    server = feeds_server_factory(args=["--metrics", "0"])
    status, _, body = await get(f"{server.url}/metrics")
    assert status == 404
    assert b"--metrics 0" in body


async def test_one_worker_ignores_an_inherited_multiprocess_directory(
    feeds_server_factory: Any, tmp_path: Any
) -> None:
    """A PROMETHEUS_MULTIPROC_DIR left in the environment, with an earlier run's values in
    it, is not summed into one worker's metrics."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from sanic_feeds.server.metrics import SLOW_CLIENT_CLOSES

    stale = MmapedDict(str(tmp_path / "counter_1.db"))
    name = "feeds_slow_client_closes"
    stale.write_value(
        mmap_key(name, f"{name}_total", [], [], SLOW_CLIENT_CLOSES._documentation), 41.0, 0.0
    )
    stale.close()
    server = feeds_server_factory(env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert (await scrape(server))["feeds_slow_client_closes_total"] == 0
