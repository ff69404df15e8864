"""What an attack found, one test each, against real servers (issue "Who may do what",
"What an attack found"): every one of these failed before it was fixed.

Each also checks that the instance is still up and serves others afterwards.
"""

from __future__ import annotations

import asyncio
import http.client as httpclient
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import psutil
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode

from sanic_feeds import Publisher
from sanic_feeds.errors import BadRequest
from tests.support.feeds_server import FeedsServer, free_port
from tests.support.ws import open_feed, publish_http, recv_event, recv_messages, track, wait_until

pytestmark = pytest.mark.integration

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


async def open_ws(server: FeedsServer, path: str = "/ws", **kwargs: Any) -> ClientConnection:
    ws = await connect(f"{server.ws_url}{path}", open_timeout=10, **kwargs)
    track(ws)
    return ws


async def command(ws: ClientConnection, **fields: Any) -> Any:
    command_id = fields.setdefault("id", "c")
    await ws.send(orjson.dumps(fields).decode())
    while True:
        event = await recv_event(ws)
        if event.get("id") == command_id:
            return event


async def http(
    server: FeedsServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request over http.client (which sends headers as given, non-ASCII included)."""

    def call() -> tuple[int, Any]:
        conn = httpclient.HTTPConnection(server.host, server.port, timeout=10)
        try:
            conn.putrequest(method, path)
            for name, value in (headers or {}).items():
                conn.putheader(name, value.encode("utf-8"))
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            reply = conn.getresponse()
            data = reply.read()
            try:
                return reply.status, orjson.loads(data)
            except orjson.JSONDecodeError:
                return reply.status, data
        finally:
            conn.close()

    return await asyncio.to_thread(call)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


JSON = {"Content-Type": "application/json"}


async def assert_alive(server: FeedsServer) -> None:
    """The instance answers, and a fresh client publishes and receives."""
    assert (await http(server, "GET", "/health"))[0] == 200
    ws = await open_ws(server)
    assert (await command(ws, op="subscribe", channel="alive"))["type"] == "subscribed"
    assert (await publish_http(server.url, "alive", "ok"))[0] == 200
    assert (await recv_messages(ws, 1))[0]["data"] == "ok"


# -- JSON nested deeper than orjson writes


@pytest.mark.parametrize("broker", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_data_nested_255_to_1023_deep_is_refused_everywhere_and_the_channel_goes_on(
    feeds_server_factory: Any, request: pytest.FixtureRequest, broker: str
) -> None:
    url = "memory://" if broker == "memory" else request.getfixturevalue("redis_url")
    server = feeds_server_factory(url)
    subscriber = await open_ws(server)
    await command(subscriber, op="subscribe", channel="deep", id="s")
    ws = await open_ws(server)
    feed = await open_feed(server.ws_url, "deep")
    for depth in (251, 255, 600, 1023):
        text = f'{{"op": "publish", "channel": "deep", "id": "d{depth}", "data": {deep(depth)}}}'
        await ws.send(text)
        reply = await recv_event(ws)
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "bad_request", f"d{depth}")
        await feed.send(deep(depth))
        while (event := await recv_event(feed))["type"] == "join":
            pass
        assert (event["type"], event["code"]) == ("error", "bad_request"), event
        body = f'{{"channel": "deep", "data": {deep(depth)}}}'.encode()
        status, reply = await http(server, "POST", "/api/publish", body, JSON)
        assert (status, reply["code"]) == (400, "bad_request"), reply
    # Nothing deep was published: the channel's next message is offset 1, and history
    # and recovery read the channel without closing anyone.
    status, _ = await publish_http(server.url, "deep", "after")
    assert status == 200
    [message] = await recv_messages(subscriber, 1)
    assert (message["offset"], message["data"]) == (1, "after")
    history = await command(subscriber, op="history", channel="deep", since=0, id="h")
    assert [m["data"] for m in history["messages"]] == ["after"]
    again = await open_feed(server.ws_url, "deep", "since=0&epoch=" + history["epoch"])
    assert [m["data"] for m in await recv_messages(again, 1)] == ["after"]
    await assert_alive(server)


async def test_publisher_and_feeds_publish_refuse_data_nested_too_deep(redis_url: str) -> None:
    data: Any = 1
    for _ in range(300):
        data = [data]
    async with Publisher(redis_url) as publisher:
        with pytest.raises(BadRequest):
            await publisher.publish("deep", data)
    async with Publisher(redis_url, retry_buffer=10) as publisher:
        with pytest.raises(BadRequest):
            await publisher.publish("deep", data)
        with pytest.raises(BadRequest):
            publisher.publish_nowait("deep", data)
        assert (await publisher.publish("deep", "fine")).offset == 1


# -- a ping flood that never reads


async def test_a_client_flooding_pings_without_reading_is_closed_and_memory_stays_bounded(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory(args=["--max-queue", "100"])
    process = psutil.Process(server.pid)
    before = process.memory_info().rss
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect((server.host, server.port))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    ping = Frame(Opcode.PING, b"x" * 125).serialize(mask=True, extensions=[])

    def flood() -> int:
        """Ping, never read, until the server closes (at most a minute)."""
        sent = 0
        deadline = time.monotonic() + 60
        try:
            while (left_s := deadline - time.monotonic()) > 0:
                # A server busy elsewhere (a loaded machine, its first request) may not
                # read for a while: that is waited out, not taken for a close.
                sock.settimeout(left_s)
                sock.sendall(ping * 100)
                sent += 100
        except TimeoutError:
            return -sent  # it stopped reading us for the rest of the minute, still open
        except OSError:
            return sent  # reset or closed by the server
        return -sent

    sent = await asyncio.to_thread(flood)
    grown = process.memory_info().rss - before
    sock.close()
    assert sent > 0, f"still open after {-sent} pings"
    assert grown < 30 * 2**20, f"grew {grown / 2**20:.0f} MB after {sent} pings"
    await wait_until(lambda: "does not read its pongs" in server.log(), 10, "the close")
    await assert_alive(server)


# -- the API: key, body, content type, origin


async def test_a_non_ascii_authorization_header_is_401_not_500(feeds_server_factory: Any) -> None:
    server = feeds_server_factory(args=["--api-key", "sesame"])
    for value in ("apikey sésame", "apikey 鍵", "Bearer ☃"):
        status, body = await http(
            server, "POST", "/api/publish", b'{"channel": "c", "data": 1}',
            {**JSON, "Authorization": value},
        )  # fmt: skip
        assert (status, body["code"]) == (401, "unauthorized"), value
    assert "Traceback" not in server.log()


async def test_the_api_key_guards_reads_too(feeds_server_factory: Any) -> None:
    server = feeds_server_factory(args=["--api-key", "sesame"])
    status, body = await http(server, "GET", "/api/channels/news")
    assert (status, body["code"]) == (401, "unauthorized")
    status, body = await http(
        server, "GET", "/api/channels/news", None, {"Authorization": "apikey sesame"}
    )
    assert status == 200 and body["channel"] == "news"
    assert (await http(server, "GET", "/health"))[0] == 200  # liveness needs no key


async def test_publish_bodies_over_the_message_limit_are_413(feeds_server_factory: Any) -> None:
    server = feeds_server_factory(args=["--max-message-bytes", "1024"])
    big = orjson.dumps({"channel": "c", "data": "x" * 2000})
    status, body = await http(server, "POST", "/api/publish", big, JSON)
    assert (status, body["code"]) == (413, "too_large")
    # 10 MB: answered 413 without being read; the server may close the connection while
    # the client still sends, so the client may see a reset instead of the answer.
    huge = orjson.dumps({"channel": "c", "data": "x" * 10_000_000})
    try:
        status, body = await http(server, "POST", "/api/publish", huge, JSON)
    except (ConnectionResetError, BrokenPipeError):
        pass
    else:
        assert status == 413
    fits = orjson.dumps({"channel": "c", "data": "x" * 900})
    assert (await http(server, "POST", "/api/publish", fits, JSON))[0] == 200
    await assert_alive(server)


async def test_publish_bodies_must_be_json(feeds_server_factory: Any) -> None:
    """What a page can send cross-site without a preflight is refused; a script's POST
    with no Content-Type at all is taken (a page's would carry an Origin)."""
    server = feeds_server_factory()
    body = b'{"channel": "c", "data": 1}'
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "",
    ):
        status, reply = await http(
            server, "POST", "/api/publish", body, {"Content-Type": content_type}
        )
        assert (status, reply["code"]) == (415, "bad_request"), content_type
    for taken in ("application/json; charset=utf-8", "application/vnd.example+json", None):
        headers = {"Content-Type": taken} if taken is not None else {}
        assert (await http(server, "POST", "/api/publish", body, headers))[0] == 200, taken


async def test_the_api_refuses_pages_of_other_origins(feeds_server_factory: Any) -> None:
    server = feeds_server_factory()
    body = b'{"channel": "c", "data": 1}'
    own = f"http://{server.host}:{server.port}"
    for origin in ("https://evil.test", "null", f"http://{server.host}:{server.port + 1}"):
        status, reply = await http(server, "POST", "/api/publish", body, {**JSON, "Origin": origin})
        assert (status, reply["code"]) == (403, "forbidden"), origin
    assert (await http(server, "POST", "/api/publish", body, {**JSON, "Origin": own}))[0] == 200
    assert (await http(server, "POST", "/api/publish", body, JSON))[0] == 200  # not a browser
    listed = feeds_server_factory(args=["--allowed-origins", "https://app.example"])
    headers = {**JSON, "Origin": "https://app.example"}
    assert (await http(listed, "POST", "/api/publish", body, headers))[0] == 200
    headers["Origin"] = "https://app.example.evil.test"
    assert (await http(listed, "POST", "/api/publish", body, headers))[0] == 403


async def test_reading_a_channel_over_http_writes_nothing_to_redis(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys_before = {k for k in await client.keys("feeds:{*") if b"instance" not in k}
        for n in range(50):
            status, body = await http(server, "GET", f"/api/channels/never-used-{n}")
            assert status == 200
            assert (body["offset"], body["epoch"], body["presence"]) == (0, None, {})
        keys_after = {k for k in await client.keys("feeds:{*") if b"instance" not in k}
        assert keys_after == keys_before
        # A channel in use reads as it is.
        assert (await publish_http(server.url, "used", 1))[0] == 200
        status, body = await http(server, "GET", "/api/channels/used")
        assert body["offset"] == 1 and body["epoch"]
    finally:
        await client.aclose()


# -- origins on WebSocket upgrades


async def test_allowed_origins_on_upgrades_missing_null_and_look_alikes(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory(
        args=["--allowed-origins", "https://app.example,http://localhost:3000"]
    )
    for origin in ("https://app.example", "https://APP.example:443", "http://localhost:3000"):
        ws = await open_ws(server, "/ws", origin=origin)
        assert (await command(ws, op="ping"))["type"] == "pong"
    ws = await open_ws(server, "/ws")  # no Origin: not a browser
    assert (await command(ws, op="ping"))["type"] == "pong"
    for origin in (
        "null",
        "https://app.example.evil.test",
        "https://evilapp.example",
        "http://app.example",
        "https://app.example:8443",
        "http://localhost:30001",
        "http://localhost",
    ):
        for path in ("/ws", "/feed/news"):
            with pytest.raises(InvalidStatus) as caught:
                await open_ws(server, path, origin=origin)
            assert caught.value.response.status_code == 403, origin


# -- flapping


async def test_flapping_subscribe_and_unsubscribe_is_rate_limited_and_spares_the_others(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory(args=["--rate-limit", "10", "--rate-burst", "20"])
    bystander = await open_ws(server)
    await command(bystander, op="subscribe", channel="room", id="b")
    flapper = await open_ws(server)

    async def flap() -> list[Any]:
        refusals = []
        for n in range(2000):
            await flapper.send(
                orjson.dumps({"op": "subscribe", "channel": "room", "id": n}).decode()
            )
            await flapper.send(
                orjson.dumps({"op": "unsubscribe", "channel": "room", "id": n}).decode()
            )
        try:
            while True:
                event = orjson.loads(await asyncio.wait_for(flapper.recv(), 10))
                if event.get("code") == "rate_limited":
                    refusals.append(event)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1008
        return refusals

    refusals = await flap()
    assert refusals
    await asyncio.sleep(0.5)
    announcements = []
    with pytest.raises(TimeoutError):
        while True:
            announcements.append(orjson.loads(await asyncio.wait_for(bystander.recv(), 0.5)))
    # Its own join, then at most the burst's worth of the flapper's joins and leaves.
    assert len(announcements) <= 2 * 21 + 2, len(announcements)
    await assert_alive(server)


# -- history, idempotency on /ws, percent-encoded names


@pytest.mark.redis
async def test_history_since_2_64_minus_1_is_a_bad_request_without_lua_text(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    ws = await open_ws(server)
    for since in (2**64 - 1, 2**63, 2**53):
        reply = await command(ws, op="history", channel="h", since=since, id="h")
        assert (reply["type"], reply["code"]) == ("error", "bad_request"), reply
        assert "ERR" not in reply["message"] and "Lua" not in reply["message"]
    assert (await command(ws, op="history", channel="h", since=2**53 - 1))["messages"] == []


async def test_a_broker_failure_never_tells_clients_redis_own_words(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    server = feeds_server_factory(private_redis.url)
    ws = await open_ws(server)
    private_redis.kill()
    reply = await command(ws, op="publish", channel="c", data=1)
    assert reply == {
        "type": "error",
        "code": "unavailable",
        "message": "broker unavailable, try again later",
        "id": "c",
    }


async def test_an_idempotency_key_on_ws_publish_publishes_once(feeds_server_factory: Any) -> None:
    server = feeds_server_factory()
    ws = await open_ws(server)
    await command(ws, op="subscribe", channel="once", id="s")
    first = await command(ws, op="publish", channel="once", data="x", idempotency_key="k-1", id=1)
    again = await command(ws, op="publish", channel="once", data="x", idempotency_key="k-1", id=2)
    assert first["offset"] == again["offset"] == 1
    other = await command(ws, op="publish", channel="once", data="y", idempotency_key="k-2", id=3)
    assert other["offset"] == 2
    history = await command(ws, op="history", channel="once", since=0, id="h")
    assert [m["data"] for m in history["messages"]] == ["x", "y"]
    bad = await command(ws, op="publish", channel="once", data="z", idempotency_key="a b", id=4)
    assert bad["code"] == "bad_request"


async def test_a_percent_encoded_channel_in_the_feed_path_is_decoded(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory()
    ws = await open_ws(server, "/feed/chat%3Aroom")  # encodeURIComponent("chat:room")
    subscribed = await recv_event(ws)
    assert subscribed["channel"] == "chat:room"
    status, _ = await publish_http(server.url, "chat:room", "hi")
    assert status == 200
    assert (await recv_messages(ws, 1))[0]["channel"] == "chat:room"
    status, body = await http(server, "GET", "/api/channels/chat%3Aroom")
    assert (status, body["channel"]) == (200, "chat:room")
    for bad in ("chat%20room", "chat%253Aroom", "%ff%fe", "a%7Bb%7D"):
        with pytest.raises(InvalidStatus) as caught:
            await open_ws(server, f"/feed/{bad}")
        assert caught.value.response.status_code == 400, bad


# -- the command line and the HTTP server's own limits


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDS_")}
    return subprocess.run(
        [sys.executable, "-m", "sanic_feeds", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_serve_on_a_port_in_use_or_an_unknown_host_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve("--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"sanic-feeds: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    done = serve("--host", "no-such-host.invalid", "--port", str(free_port()))
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("sanic-feeds: error: cannot listen on no-such-host.invalid:")
    done = serve("--port", "99999")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["sanic-feeds: error: --port must be at most 65535"]


async def test_a_request_line_with_control_bytes_is_logged_as_one_escaped_line(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory()
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"GET /\x1b[31mred\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        sock.recv(1024)  # Sanic closes the connection without an answer
    await asyncio.sleep(0.5)
    log = server.log()
    assert "Traceback" not in log
    assert "\x1b" not in log and "\x01" not in log
    [line] = [line for line in log.splitlines() if "malformed URL" in line]
    assert "\\x1b[31mred\\x01" in line
    await assert_alive(server)


async def test_oversized_and_slow_upgrade_requests_are_bounded_by_sanics_limits(
    feeds_server_factory: Any,
) -> None:
    """REQUEST_MAX_HEADER_SIZE (8 KiB) refuses huge headers; REQUEST_TIMEOUT (60 s, here
    1 s through SANIC_REQUEST_TIMEOUT) cuts a request that never finishes (slowloris)."""
    server = feeds_server_factory(env={"SANIC_REQUEST_TIMEOUT": "1"})
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Big: "
            + b"a" * 20_000
            + b"\r\n\r\n"
        )
        sock.settimeout(5)
        assert sock.recv(100).startswith(b"HTTP/1.1 413")
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        sock.settimeout(10)
        reply = b""
        while chunk := sock.recv(1024):
            reply += chunk
        assert time.monotonic() - started < 5
        assert reply.startswith(b"HTTP/1.1 408")
    await assert_alive(server)
    assert "Traceback" not in server.log()
