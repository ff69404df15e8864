"""Redis restarted without persistence: a client of the lost epoch gets the new one whole.

Two instances on a private Redis without persistence follow one channel. Redis restarts
(every key gone: a new epoch), more is published than history keeps, and a client of
the old epoch, closed with 1013 by its instance, comes back on the other one, or on a
third that never followed the channel (history keeps a new epoch's start): it is told
``recovered: false`` (the old epoch's tail is gone) at offset 0 of the new epoch, then
gets every message of the new epoch in order before the live ones. A client that shows
an epoch the channel never had still starts from now.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.ws import close_code, open_feed, publish_http, recv_event, recv_messages, track

pytestmark = pytest.mark.integration

CHANNEL = "epochs"
#: Smaller than what the new epoch gets before the client comes back.
HISTORY = ["--history-size", "10"]


async def _publish(base_url: str, data: Any, key: str) -> Any:
    """Publish, riding over the 503s of a Redis coming back; the position it got."""
    deadline = time.monotonic() + 20
    while True:
        status, body = await publish_http(base_url, CHANNEL, data, extra={"idempotency_key": key})
        if status == 200:
            return body
        assert status == 503 and time.monotonic() < deadline, (status, body)
        await asyncio.sleep(0.05)


async def _subscribe(ws_url: str, query: str) -> tuple[ClientConnection, Any]:
    ws = track(await connect(f"{ws_url}/feed/{CHANNEL}?{query}", open_timeout=10))
    return ws, await recv_event(ws)


@pytest.mark.parametrize(
    "back_on",
    ["an instance that follows the channel", "an instance that never followed it"],
)
async def test_a_client_of_the_lost_epoch_gets_the_new_one_whole_on_another_instance(
    feeds_server_factory: Any, private_redis: Any, back_on: str
) -> None:
    first = feeds_server_factory(broker=private_redis.url, args=HISTORY)
    second = feeds_server_factory(broker=private_redis.url, args=HISTORY)
    # Only Redis can answer there: what the instances saw of the new epoch is not shared.
    unaware = feeds_server_factory(broker=private_redis.url, args=HISTORY)
    leaving = await open_feed(first.ws_url, CHANNEL)
    staying = await open_feed(second.ws_url, CHANNEL)  # the second instance follows it too
    for n in range(1, 6):
        await _publish(second.url, f"old {n}", f"old-{n}")
    old = await recv_messages(leaving, 5)
    await recv_messages(staying, 5)
    old_epoch = old[-1]["epoch"]

    await asyncio.to_thread(private_redis.restart)  # no persistence: a new epoch
    for n in range(1, 16):  # more than the 10 that history keeps
        await _publish(second.url, f"new {n}", f"new-{n}")
    # Both instances noticed the new epoch and closed their clients, to tell them.
    assert await close_code(leaving) == 1013
    assert await close_code(staying) == 1013

    back = second if back_on == "an instance that follows the channel" else unaware
    returning, greeting = await _subscribe(
        back.ws_url, f"since={old[-1]['offset']}&epoch={old_epoch}"
    )
    assert greeting["type"] == "subscribed", greeting
    new_epoch = greeting["epoch"]
    assert new_epoch != old_epoch
    assert (greeting["recovered"], greeting["offset"]) == (False, 0)
    await _publish(second.url, "new 16", "new-16")
    messages = await recv_messages(returning, 16)
    assert [(m["offset"], m["epoch"]) for m in messages] == [(n, new_epoch) for n in range(1, 17)]
    assert [m["data"] for m in messages] == [f"new {n}" for n in range(1, 17)]


async def test_a_client_of_an_epoch_the_channel_never_had_starts_from_now(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    server = feeds_server_factory(broker=private_redis.url, args=HISTORY)
    watcher = await open_feed(server.ws_url, CHANNEL)
    for n in range(1, 6):
        await _publish(server.url, n, f"n-{n}")
    await recv_messages(watcher, 5)
    bogus, greeting = await _subscribe(server.ws_url, "since=3&epoch=bogus")
    assert greeting["type"] == "subscribed", greeting
    assert (greeting["recovered"], greeting["offset"]) == (False, 5)
    await _publish(server.url, 6, "n-6")
    [message] = await recv_messages(bogus, 1)
    assert (message["offset"], message["data"]) == (6, 6)
