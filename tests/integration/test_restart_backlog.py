"""A Redis restart on its AOF while publishers retry: the backlog they land when Redis is
back is larger than the history (serve's default, 100 messages), and connected clients
must still get every offset once, in order, with no 1013 (which would make them resubscribe
and be told ``recovered: false``).

What lands while an instance's pub/sub reader is not subscribed again is a gap healed from
history; past ``--history-size`` it cannot be healed. So the instance refuses publishes
(503) until its reader is back, and its reader comes back promptly.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from sanic_feeds.drill.http import HttpClient, HttpError
from tests.support.ws import open_feed, recv_event

pytestmark = pytest.mark.integration

CHANNEL = "backlog"
SUBSCRIBERS = 3
#: Publications retried through the outage, each restart: more than serve's default
#: --history-size (100), which is what the instance runs with here.
BACKLOG = 250
#: Publishers retrying at once, like clients behind a load balancer.
PUBLISHERS = 40
RESTARTS = 6
BEFORE = 20
DOWN_S = 1.0


class Publishers:
    """``POST /api/publish`` with an idempotency key per publication, each retried every
    50 ms while the answer is 503 or no answer (Redis down, the instance not listening)."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._numbers = itertools.count()
        self.refused = 0

    async def publish(self, count: int) -> None:
        pending = asyncio.Queue[int]()
        for _ in range(count):
            pending.put_nowait(next(self._numbers))

        async def worker() -> None:
            client = HttpClient(self._base_url, 5.0)
            headers = {"Content-Type": "application/json"}
            try:
                while not pending.empty():
                    n = pending.get_nowait()
                    body = orjson.dumps({"channel": CHANNEL, "data": n, "idempotency_key": f"n{n}"})
                    while True:
                        try:
                            reply = await client.request("POST", "/api/publish", body, headers)
                        except HttpError:
                            pass  # Redis went away mid-request: retried like a 503
                        else:
                            if reply.status == 200:
                                break
                            assert reply.status == 503, reply
                        self.refused += 1
                        await asyncio.sleep(0.05)
            finally:
                client.close()

        await asyncio.gather(*(worker() for _ in range(PUBLISHERS)))


async def _read(ws: ClientConnection, total: int) -> list[tuple[int, Any]]:
    received: list[tuple[int, Any]] = []
    try:
        while len(received) < total:
            event = await recv_event(ws, 60)
            if event["type"] == "message":
                received.append((event["offset"], event["data"]))
    except ConnectionClosed as exc:
        raise AssertionError(
            f"closed with {exc.rcvd.code if exc.rcvd else None} after {len(received)} of "
            f"{total} messages (last offset {received[-1][0] if received else None}): "
            "the gap was not healed"
        ) from None
    return received


async def test_a_backlog_larger_than_history_after_a_redis_restart_reaches_every_client(
    feeds_server_factory: Any, private_redis_aof: Any
) -> None:
    server = feeds_server_factory(broker=private_redis_aof.url)
    subscribers = [await open_feed(server.ws_url, CHANNEL) for _ in range(SUBSCRIBERS)]
    total = RESTARTS * (BEFORE + BACKLOG)
    readers = [asyncio.create_task(_read(ws, total)) for ws in subscribers]
    publishers = Publishers(server.url)
    try:
        for _ in range(RESTARTS):
            await publishers.publish(BEFORE)
            await asyncio.to_thread(private_redis_aof.kill)
            backlog = asyncio.create_task(publishers.publish(BACKLOG))
            await asyncio.sleep(DOWN_S)
            await asyncio.to_thread(private_redis_aof.start)
            await asyncio.wait_for(backlog, 60)
        received = await asyncio.wait_for(asyncio.gather(*readers), 60)
    finally:
        for reader in readers:
            reader.cancel()

    assert publishers.refused > 0  # the backlog did wait for Redis
    for messages in received:
        assert [offset for offset, _ in messages] == list(range(1, total + 1))
        assert sorted(data for _, data in messages) == list(range(total))
