"""Several instances on one Redis: every subscriber gets every message, in one order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.ws import open_feed, publish_http, recv_messages

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("instances", [2, 3])
async def test_every_subscriber_on_every_instance_gets_every_message_in_one_order(
    feeds_server_factory: Any, redis_url: str, instances: int
) -> None:
    servers = [feeds_server_factory(broker=redis_url) for _ in range(instances)]
    subscribers = [await open_feed(s.ws_url, "room") for s in servers for _ in range(2)]
    # One publishing client on every instance, all sending concurrently.
    publishers = [await open_feed(s.ws_url, "room") for s in servers]
    per_publisher = 60

    async def send_all(ws: Any, name: str) -> None:
        for n in range(per_publisher):
            await ws.send(f'{{"from": "{name}", "n": {n}}}')
            if n % 10 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(send_all(ws, f"p{i}") for i, ws in enumerate(publishers)))
    total = per_publisher * len(publishers)
    sequences = [
        [(m["offset"], m["data"]["from"], m["data"]["n"]) for m in await recv_messages(ws, total)]
        for ws in subscribers + publishers
    ]
    first = sequences[0]
    assert [offset for offset, _, _ in first] == list(range(1, total + 1))
    for name in (f"p{i}" for i in range(instances)):
        # Each publisher's own messages keep the order it sent them in.
        assert [n for _, sender, n in first if sender == name] == list(range(per_publisher))
    for sequence in sequences[1:]:
        assert sequence == first


async def test_http_publishes_alternating_between_instances_share_one_order(
    feeds_server_factory: Any, redis_url: str
) -> None:
    servers = [feeds_server_factory(broker=redis_url) for _ in range(2)]
    subscribers = [await open_feed(s.ws_url, "news") for s in servers]
    offsets = []
    for n in range(40):
        status, body = await publish_http(servers[n % 2].url, "news", n)
        assert status == 200
        offsets.append(body["offset"])
    assert offsets == list(range(1, 41))
    for ws in subscribers:
        messages = await recv_messages(ws, 40)
        assert [(m["offset"], m["data"]) for m in messages] == [(n + 1, n) for n in range(40)]


async def test_raw_and_json_clients_on_different_instances_share_a_channel(
    feeds_server_factory: Any, redis_url: str
) -> None:
    one, two = (feeds_server_factory(broker=redis_url) for _ in range(2))
    json_client = await open_feed(one.ws_url, "mixed")
    raw_client = await open_feed(two.ws_url, "mixed", query="format=raw")
    # Raw clients get no `subscribed` event; their own join, which the server announces
    # once the channel is subscribed, says the same.
    own_join = await asyncio.wait_for(raw_client.recv(), 10)
    assert isinstance(own_join, str) and own_join.startswith("Client "), own_join
    await json_client.send('{"spaced": true}')
    [first] = await recv_messages(json_client, 1)
    await raw_client.send("plain words")
    [second] = await recv_messages(json_client, 1)
    assert [first["data"], second["data"]] == [{"spaced": True}, "plain words"]
    raw_frames: list[str] = []
    while len(raw_frames) < 2:
        frame = await asyncio.wait_for(raw_client.recv(), 10)
        assert isinstance(frame, str)
        if not frame.startswith("Client "):
            raw_frames.append(frame)
    assert raw_frames == ['{"spaced": true}', "plain words"]
