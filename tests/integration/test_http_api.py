"""The HTTP API against real servers on Redis: POST /api/publish, GET /api/channels/<channel>,
GET /health and GET /ready."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from tests.support.ws import open_feed, publish_http, recv_event, recv_messages, wait_until

pytestmark = pytest.mark.integration

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


async def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One request from a thread; returns (status, the JSON body)."""

    def call() -> tuple[int, Any]:
        request = urllib.request.Request(
            url,
            data=body,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with _no_proxy.open(request, timeout=10) as reply:
                return reply.status, orjson.loads(reply.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, orjson.loads(error.read())

    return await asyncio.to_thread(call)


async def post_publish(server: Any, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return await http("POST", f"{server.url}/api/publish", body, headers)


async def get(server: Any, path: str) -> tuple[int, Any]:
    return await http("GET", f"{server.url}{path}")


async def own_client_id(ws: Any, frame: str) -> str:
    """A client's id: the sender of the message its ``frame`` publishes."""
    token = uuid.uuid4().hex
    await ws.send(frame.replace("TOKEN", token))
    while True:
        event = await recv_event(ws)
        if event["type"] == "message" and event["data"] == token:
            return str(event["client"])


# -- POST /api/publish


async def test_publish_answers_offset_and_epoch_and_subscribers_get_the_same(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    ws = await open_feed(server.ws_url, "news")
    replies = []
    for data in ({"title": "hello"}, [1, 2], "text", 3.5, None, True):
        status, body = await publish_http(server.url, "news", data)
        assert status == 200, body
        assert set(body) == {"offset", "epoch"}
        replies.append(body)
    assert [r["offset"] for r in replies] == [1, 2, 3, 4, 5, 6]
    [epoch] = {r["epoch"] for r in replies}
    assert isinstance(epoch, str) and epoch
    messages = await recv_messages(ws, 6)
    assert [(m["offset"], m["epoch"], m["data"]) for m in messages] == [
        (n, epoch, data)
        for n, data in enumerate(({"title": "hello"}, [1, 2], "text", 3.5, None, True), 1)
    ]
    # Published by no client: the sender is null.
    assert {m["client"] for m in messages} == {None}
    assert {m["channel"] for m in messages} == {"news"}


async def test_publish_with_an_idempotency_key_twice_publishes_once(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    ws = await open_feed(server.ws_url, "orders")
    key = {"idempotency_key": "order-42"}
    first = await publish_http(server.url, "orders", "created", key)
    again = await publish_http(server.url, "orders", "created", key)
    assert first[0] == again[0] == 200
    assert again[1] == first[1]
    status, other = await publish_http(server.url, "orders", "next")
    assert (status, other["offset"]) == (200, first[1]["offset"] + 1)
    messages = await recv_messages(ws, 2)
    assert [m["data"] for m in messages] == ["created", "next"]


BAD_PUBLISH_BODIES = [
    (b"{not json", "bad_request"),
    (b"", "bad_request"),
    (b'[{"channel": "news", "data": 1}]', "bad_request"),
    (b'"news"', "bad_request"),
    (b"42", "bad_request"),
    (b"null", "bad_request"),
    (b'{"channel": "news"}', "bad_request"),
    (b'{"data": 1}', "bad_channel"),
    (b'{"channel": null, "data": 1}', "bad_channel"),
    (b'{"channel": 5, "data": 1}', "bad_channel"),
    (b'{"channel": "", "data": 1}', "bad_channel"),
    (b'{"channel": "has space", "data": 1}', "bad_channel"),
    (b'{"channel": "{tag}", "data": 1}', "bad_channel"),
    (b'{"channel": "' + b"x" * 201 + b'", "data": 1}', "bad_channel"),
    (b'{"channel": "news", "data": 1, "idempotency_key": "no spaces"}', "bad_request"),
    (b'{"channel": "news", "data": 1, "idempotency_key": 7}', "bad_request"),
]


async def test_a_bad_publish_request_is_400_with_an_error_code_and_publishes_nothing(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    ws = await open_feed(server.ws_url, "news")
    for body, code in BAD_PUBLISH_BODIES:
        status, reply = await post_publish(server, body)
        assert (status, reply["type"], reply["code"]) == (400, "error", code), (body, reply)
        assert isinstance(reply["message"], str) and reply["message"]
    # Nothing reached the channel: the next publish is its first message.
    status, good = await publish_http(server.url, "news", "good")
    assert (status, good["offset"]) == (200, 1)
    [message] = await recv_messages(ws, 1)
    assert message["data"] == "good"


async def test_publish_while_the_broker_is_down_is_503_unavailable(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    server = feeds_server_factory(private_redis.url)
    private_redis.stop()
    status, body = await publish_http(server.url, "news", "lost?")
    assert (status, body["code"]) == (503, "unavailable")


# -- --api-key


async def test_with_an_api_key_publish_needs_authorization_apikey(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url, args=["--api-key", "sesame"])
    ws = await open_feed(server.ws_url, "guarded")
    body = orjson.dumps({"channel": "guarded", "data": "hi"})
    for headers in (
        {},
        {"Authorization": "apikey wrong"},
        {"Authorization": "apikey sesame2"},
        {"Authorization": "apikey"},
        {"Authorization": "Bearer sesame"},
        {"Authorization": "sesame"},
    ):
        status, reply = await post_publish(server, body, headers)
        assert (status, reply["code"]) == (401, "unauthorized"), headers
    # The key is checked before anything else: a bad body without it is still 401.
    status, reply = await post_publish(server, b"{not json")
    assert (status, reply["code"]) == (401, "unauthorized")
    status, reply = await post_publish(server, body, {"Authorization": "apikey sesame"})
    assert (status, reply["offset"]) == (200, 1)
    status, reply = await post_publish(server, body, {"Authorization": "ApiKey sesame"})
    assert (status, reply["offset"]) == (200, 2)
    assert [m["offset"] for m in await recv_messages(ws, 2)] == [1, 2]


async def test_the_api_key_guards_every_api_route_and_websockets_are_not_affected(
    feeds_server_factory: Any, redis_url: str
) -> None:
    """The API key guards /api/*, reads included (docs/protocol.md, "HTTP API"); health,
    readiness and WebSocket clients are not affected."""
    server = feeds_server_factory(redis_url, args=["--api-key", "sesame"])
    ws = await open_feed(server.ws_url, "open")
    await ws.send('"from a client"')
    [message] = await recv_messages(ws, 1)
    assert message["data"] == "from a client"
    status, info = await get(server, "/api/channels/open")
    assert (status, info["code"]) == (401, "unauthorized")
    status, info = await http(
        "GET", f"{server.url}/api/channels/open", headers={"Authorization": "apikey sesame"}
    )
    assert (status, info["offset"]) == (200, 1)
    assert await get(server, "/health") == (200, {"status": "ok"})
    assert (await get(server, "/ready"))[0] == 200


# -- GET /api/channels/<channel>


async def test_channel_info_counts_subscribers_and_presence_across_two_instances(
    feeds_server_factory: Any, redis_url: str
) -> None:
    one, two = feeds_server_factory(redis_url), feeds_server_factory(redis_url)
    clients = [
        await open_feed(one.ws_url, "room"),
        await open_feed(one.ws_url, "room"),
        await open_feed(two.ws_url, "room"),
    ]
    ids = [await own_client_id(ws, '"TOKEN"') for ws in clients]
    # A /ws client counts as well.
    async with connect(f"{two.ws_url}/ws", open_timeout=10) as multi:
        await multi.send('{"op": "subscribe", "channel": "room", "id": 1}')
        assert (await recv_event(multi))["type"] == "subscribed"
        publish = '{"op": "publish", "channel": "room", "data": "TOKEN"}'
        ids.append(await own_client_id(multi, publish))
        for _ in range(2):
            await publish_http(one.url, "room", "x")
        status, last = await publish_http(two.url, "room", "y")
        assert status == 200

        async def both_count(n: int) -> bool:
            infos = [await get(server, "/api/channels/room") for server in (one, two)]
            return all(status == 200 and info["subscribers"] == n for status, info in infos)

        await wait_until(lambda: both_count(4), what="4 subscribers seen by both instances")
        for server in (one, two):
            status, info = await get(server, "/api/channels/room")
            assert info == {
                "channel": "room",
                "subscribers": 4,
                "presence": {client: {} for client in ids},
                "offset": last["offset"],
                "epoch": last["epoch"],
            }
    await clients[0].close()
    await wait_until(lambda: both_count(2), what="leavers gone from both instances")
    status, info = await get(two, "/api/channels/room")
    assert set(info["presence"]) == set(ids[1:3])


async def test_channel_info_of_an_unknown_channel_is_empty(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    status, info = await get(server, "/api/channels/nobody:here")
    # A read creates nothing: the channel has no epoch until a subscription or a
    # publish gives it one (anyone may read, as often as they like).
    expected = {
        "channel": "nobody:here",
        "subscribers": 0,
        "presence": {},
        "offset": 0,
        "epoch": None,
    }
    assert (status, info) == (200, expected)
    assert (await get(server, "/api/channels/nobody:here")) == (200, expected)


async def test_channel_info_takes_names_with_slashes_and_refuses_bad_names(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    status, published = await publish_http(server.url, "a/b/c", 1)
    assert status == 200
    status, info = await get(server, "/api/channels/a/b/c")
    assert (status, info["channel"], info["offset"]) == (200, "a/b/c", published["offset"])
    for bad in ("a%20b", "x" * 201, "%7Btag%7D"):
        status, reply = await get(server, f"/api/channels/{bad}")
        assert (status, reply["code"]) == (400, "bad_channel"), bad


# -- /health and /ready


async def test_health_and_ready_answer_200_on_a_healthy_instance(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    assert await get(server, "/health") == (200, {"status": "ok"})
    assert await get(server, "/ready") == (200, {"ready": True})
    memory = feeds_server_factory()
    assert await get(memory, "/health") == (200, {"status": "ok"})
    assert await get(memory, "/ready") == (200, {"ready": True})


async def test_ready_is_503_while_redis_is_down_and_200_again_once_it_is_back(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    server = feeds_server_factory(private_redis.url)
    private_redis.kill()

    async def ready_is(status: int) -> bool:
        return (await get(server, "/ready"))[0] == status

    await wait_until(lambda: ready_is(503), timeout_s=15, what="/ready turns 503")
    assert await get(server, "/ready") == (503, {"ready": False})
    # Liveness is not readiness: the process is alive and says so.
    assert await get(server, "/health") == (200, {"status": "ok"})
    private_redis.restart()
    await wait_until(lambda: ready_is(200), timeout_s=20, what="/ready turns 200 again")
    status, body = await publish_http(server.url, "news", "after")
    assert status == 200, body
