"""The ``sanic-feeds`` command line as a user runs it: serve, publish, subscribe."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from sanic_feeds import Publisher
from tests.support.feeds_server import FeedsServer, free_port
from tests.support.ws import close_code, open_feed, publish_http, recv_event, recv_messages

pytestmark = pytest.mark.integration


class BareServer(FeedsServer):
    """``sanic-feeds serve *args`` without the ``--host/--port/--broker`` that ``FeedsServer``
    adds, so that the environment and the config file can set them. Pass ``port=`` to say
    where it will listen."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "sanic_feeds", "serve", *self.args]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


async def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 30.0
) -> tuple[int, str, str]:
    """Run ``sanic-feeds *args`` to completion; returns (status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sanic_feeds", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(env),
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_line(text: str) -> str:
    """The only non-empty line of ``text``: a clear error, not a traceback."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text, text
    assert len(lines) == 1, text
    return lines[0]


def start(factory: Any, server: FeedsServer) -> FeedsServer:
    factory.servers.append(server)  # stopped (SIGTERM, bounded) and cleaned up with the others
    server.start()
    return server


async def frame_size_limit_holds(server: FeedsServer, allowed: int, refused: int) -> None:
    """A text frame of ``allowed`` bytes is published; one of ``refused`` bytes closes 1009."""
    ws = await open_feed(server.ws_url, "sizes")
    await ws.send("a" * allowed)
    [message] = await recv_messages(ws, 1)
    assert message["data"] == "a" * allowed
    await ws.send("b" * refused)
    assert await close_code(ws) == 1009


# -- serve: start-up failures


async def test_workers_above_one_on_the_memory_broker_refuse_to_start_saying_why(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory("memory://", args=["--workers", "2"], start=False)
    server.spawn()
    assert await asyncio.to_thread(server.wait, 10) == 1
    line = one_line(server.log())
    assert "memory://" in line and "redis://" in line
    assert "workers" in line and "process" in line


async def test_an_unreachable_broker_exits_1_with_one_line(feeds_server_factory: Any) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    server = feeds_server_factory(url, start=False)
    began = time.monotonic()
    server.spawn()
    assert await asyncio.to_thread(server.wait, 15) == 1
    assert time.monotonic() - began < 10
    line = one_line(server.log())
    assert "broker" in line and url in line


async def test_the_unreachable_broker_line_does_not_show_the_brokers_password() -> None:
    port = free_port()
    status, _, err = await run_cli("serve", "--broker", f"redis://user:hunter2@127.0.0.1:{port}/0")
    assert status == 1
    line = one_line(err)
    assert "hunter2" not in line
    assert f"127.0.0.1:{port}" in line


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://user:hunter2@127.0.0.1:{port},127.0.0.1:{other}",
        "redis+sentinel://user:hunter2@127.0.0.1:{port},127.0.0.1:{other}/mymaster",
    ],
    ids=["cluster", "sentinel"],
)
async def test_an_unreachable_cluster_or_sentinel_exits_1_with_one_line(url: str) -> None:
    url = url.format(port=free_port(), other=free_port())
    began = time.monotonic()
    status, _, err = await run_cli("serve", "--port", str(free_port()), "--broker", url)
    assert time.monotonic() - began < 15
    assert status == 1
    line = one_line(err)
    assert "cannot reach the broker" in line
    assert "hunter2" not in line
    # A line a person reads: not redis-py's repr of every client it tried (3 KB).
    assert len(line) < 300 and "<redis." not in line, line


@pytest.mark.parametrize(
    ("args", "env", "config"),
    [
        (["--max-queue", "0"], {}, None),
        (["--port", "eighty"], {}, None),
        ([], {"FEEDS_RATE_LIMIT": "fast"}, None),
        ([], {}, "max-queue = 10\nno-such-setting = 1\n"),
        ([], {}, "max-queue = [unclosed\n"),
        (["--config", "/nonexistent/feeds.toml"], {}, None),
        (["--broker", "amqp://127.0.0.1/"], {}, None),
    ],
    ids=[
        "zero-queue", "port-not-a-number", "env-not-a-number", "unknown-config-key",
        "config-not-toml", "missing-config-file", "unsupported-broker",
    ],
)  # fmt: skip
async def test_a_bad_setting_fails_in_one_line_without_starting(
    tmp_path: Path, args: list[str], env: dict[str, str], config: str | None
) -> None:
    if config is not None:
        path = tmp_path / "feeds.toml"
        path.write_text(config)
        args = [*args, "--config", str(path)]
    status, out, err = await run_cli("serve", "--port", str(free_port()), *args, env=env)
    assert status in (1, 2), (status, err)
    assert one_line(err).startswith("sanic-feeds: error:")
    assert out == ""


# -- serve: where settings come from (their precedence, unit by unit: tests/unit/test_settings.py)


async def test_feeds_config_names_a_config_file_whose_feeds_table_sets_port_and_broker(
    feeds_server_factory: Any, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "feeds.toml"
    config.write_text(f'[feeds]\nport = {port}\nbroker = "{redis_url}"\nmax_queue = 50\n')
    server = start(feeds_server_factory, BareServer(port=port, env={"FEEDS_CONFIG": str(config)}))
    ws = await open_feed(server.ws_url, "configured")
    async with Publisher(redis_url) as pub:
        await pub.publish("configured", "through redis")
    [message] = await recv_messages(ws, 1)
    assert message["data"] == "through redis"


async def test_command_line_beats_environment_beats_config_file(
    feeds_server_factory: Any, redis_url: str, tmp_path: Path
) -> None:
    file_port, env_port = free_port(), free_port()
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'port = {file_port}\nbroker = "memory://"\nmax-message-bytes = 100\nmax-queue = 50\n'
    )
    server = BareServer(
        port=env_port,
        args=["--config", str(config), "--max-message-bytes", "300"],
        env={
            "FEEDS_PORT": str(env_port),
            "FEEDS_BROKER": redis_url,
            "FEEDS_MAX_MESSAGE_BYTES": "1000",
        },
    )
    start(feeds_server_factory, server)  # ready on the environment's port, not the file's
    ws = await open_feed(server.ws_url, "precedence")
    async with Publisher(redis_url) as pub:  # the environment's broker, not the file's
        await pub.publish("precedence", "via redis")
    [message] = await recv_messages(ws, 1)
    assert message["data"] == "via redis"
    # The command line's 300 bytes, not the environment's 1000 nor the file's 100.
    await frame_size_limit_holds(server, allowed=250, refused=400)


# -- serve: SIGTERM


async def _ws_client(ws_url: str, channel: str) -> Any:
    ws = await connect(f"{ws_url}/ws", open_timeout=10)
    await ws.send(orjson.dumps({"op": "subscribe", "channel": channel, "id": 1}).decode())
    event = await recv_event(ws)
    assert event["type"] == "subscribed", event
    return ws


async def test_sigterm_closes_every_websocket_with_1001_then_exits_0(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory(args=["--drain-timeout", "5"])
    clients = [
        await open_feed(server.ws_url, "news"),
        await open_feed(server.ws_url, "news", query="format=raw"),
        await _ws_client(server.ws_url, "news"),
    ]
    assert server.pid is not None
    began = time.monotonic()
    os.kill(server.pid, signal.SIGTERM)
    codes = await asyncio.gather(*(close_code(ws) for ws in clients))
    try:
        assert codes == [1001, 1001, 1001]
    finally:
        status = await asyncio.to_thread(server.wait, 10)
    assert status == 0
    elapsed = time.monotonic() - began
    assert elapsed < 5 + 3, f"exited {elapsed:.1f}s after SIGTERM with --drain-timeout 5"
    for ws in clients:
        await ws.close()


async def test_sigterm_exits_within_the_drain_timeout_when_a_client_never_answers_the_close(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory(args=["--drain-timeout", "2"])
    # A client that upgrades, then neither reads nor answers anything.
    sock = await asyncio.to_thread(_upgrade_and_go_silent, server.port, "/feed/news")
    try:
        assert server.pid is not None
        began = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        status = await asyncio.to_thread(server.wait, 15)
        elapsed = time.monotonic() - began
    finally:
        sock.close()
    assert status == 0
    assert elapsed < 2 + 5, f"exited {elapsed:.1f}s after SIGTERM with --drain-timeout 2"


async def test_sigterm_exits_within_the_drain_timeout_while_redis_hangs(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    """Every step of the shutdown (the handlers, Sanic's wait for HTTP connections, the
    departures from channels, closing the broker) shares one deadline: a Redis that stopped
    answering holds none of them past it."""
    server = feeds_server_factory(private_redis.url, args=["--drain-timeout", "2"])
    client = await _ws_client(server.ws_url, "hung")
    assert private_redis.pid is not None and server.pid is not None
    os.kill(private_redis.pid, signal.SIGSTOP)
    try:
        # A publish that waits for Redis: the handler sits in it when the drain starts.
        await client.send(orjson.dumps({"op": "publish", "channel": "hung", "data": 1}).decode())
        await asyncio.sleep(0.2)
        began = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        status = await asyncio.to_thread(server.wait, 30)
        elapsed = time.monotonic() - began
    finally:
        os.kill(private_redis.pid, signal.SIGCONT)
        client.transport.abort()
    assert status == 0
    assert elapsed < 2 + 1.5, f"exited {elapsed:.1f}s after SIGTERM with --drain-timeout 2"


async def test_while_draining_the_http_api_answers_503_and_closes_keep_alive_connections(
    feeds_server_factory: Any,
) -> None:
    """A publisher whose keep-alive connection is busy when SIGTERM comes (Sanic closes only
    idle ones) is told to go elsewhere, 503 with ``Connection: close``, instead of being
    served until Sanic's graceful wait ends; and the process exits in time."""
    server = feeds_server_factory(args=["--drain-timeout", "3"])
    # A client that neither reads nor answers the close keeps the drain going for a while.
    silent = await asyncio.to_thread(_upgrade_and_go_silent, server.port, "/feed/news")
    publisher = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", server.port), 10)
    body = orjson.dumps({"channel": "news", "data": "x"})
    head = (
        f"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        await asyncio.to_thread(publisher.sendall, head + body)
        assert await asyncio.to_thread(_read_http_answer, publisher) == (200, "keep-alive")
        # The next publish is on its way (half its body sent) when SIGTERM arrives.
        await asyncio.to_thread(publisher.sendall, head + body[:5])
        await asyncio.sleep(0.2)
        assert server.pid is not None
        began = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(publisher.sendall, body[5:])
        assert await asyncio.to_thread(_read_http_answer, publisher) == (503, "close")
        status = await asyncio.to_thread(server.wait, 15)
        elapsed = time.monotonic() - began
    finally:
        silent.close()
        publisher.close()
    assert status == 0
    assert elapsed < 3 + 1.5, f"exited {elapsed:.1f}s after SIGTERM with --drain-timeout 3"


def _read_http_answer(sock: socket.socket) -> tuple[int, str]:
    """The status and ``Connection`` header of the next HTTP answer on ``sock``."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"the connection closed without an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += sock.recv(4096)
    return int(lines[0].split()[1]), headers.get("connection", "")


def _upgrade_and_go_silent(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        assert chunk, reply
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 101"), reply
    return sock


async def test_sigterm_drain_leaves_presence_and_announces_the_leave_elsewhere(
    feeds_server_factory: Any, redis_url: str
) -> None:
    going, staying = (feeds_server_factory(redis_url) for _ in range(2))
    leaver = await open_feed(going.ws_url, "room")
    leaver_id = (await recv_event(leaver))["client"]
    watcher = await open_feed(staying.ws_url, "room")
    assert going.pid is not None
    os.kill(going.pid, signal.SIGTERM)
    assert await close_code(leaver) == 1001
    assert await asyncio.to_thread(going.wait, 10) == 0
    events = [await recv_event(watcher) for _ in range(2)]  # its own join, then the leave
    assert {"type": "leave", "channel": "room", "client": leaver_id} in events
    status, body = await _get_json(f"{staying.url}/api/channels/room")
    assert status == 200
    assert leaver_id not in body["presence"]
    assert body["subscribers"] == 1


async def _get_json(url: str) -> tuple[int, Any]:
    import urllib.request

    def get() -> tuple[int, Any]:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, orjson.loads(reply.read())

    return await asyncio.to_thread(get)


async def test_two_workers_on_redis_serve_one_channel_and_drain_on_sigterm(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url, args=["--workers", "2"])
    assert server.log().count("feeds instance") == 2, server.log()
    subscribers = [await open_feed(server.ws_url, "shared") for _ in range(4)]
    for n in range(6):
        status, _ = await publish_http(server.url, "shared", n)
        assert status == 200
    for ws in subscribers:
        messages = await recv_messages(ws, 6)
        assert [(m["offset"], m["data"]) for m in messages] == [(n + 1, n) for n in range(6)]
    assert server.pid is not None
    os.kill(server.pid, signal.SIGTERM)  # the main process drains every worker
    assert await asyncio.gather(*(close_code(ws) for ws in subscribers)) == [1001] * 4
    assert await asyncio.to_thread(server.wait, 15) == 0


# -- publish and subscribe


async def test_publish_through_the_http_api_reaches_a_subscriber(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory()
    ws = await open_feed(server.ws_url, "news")
    status, out, err = await run_cli("publish", "news", '{"title": "hello"}', "--url", server.url)
    assert (status, err) == (0, "")
    assert orjson.loads(out)["offset"] == 1
    status, out, _ = await run_cli("publish", "news", "not json", "--url", server.url)
    assert status == 0
    messages = await recv_messages(ws, 2)
    assert [m["data"] for m in messages] == [{"title": "hello"}, "not json"]
    assert [m["client"] for m in messages] == [None, None]


async def test_publish_naming_no_server_or_broker_goes_where_serve_listens(
    feeds_server_factory: Any,
) -> None:
    """``sanic-feeds serve``, then ``sanic-feeds publish news hi`` with the same settings
    (here ``FEEDS_PORT``; with none, http://127.0.0.1:8000): that server's HTTP API."""
    server = feeds_server_factory()
    ws = await open_feed(server.ws_url, "news")
    env = {"FEEDS_PORT": str(server.port), "FEEDS_BROKER": "memory://"}
    status, out, err = await run_cli("publish", "news", "hi", env=env)
    assert (status, err) == (0, "")
    assert orjson.loads(out)["offset"] == 1
    assert [m["data"] for m in await recv_messages(ws, 1)] == ["hi"]


async def test_publish_through_the_broker_reaches_a_subscriber(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    ws = await open_feed(server.ws_url, "news")
    status, out, err = await run_cli("publish", "news", "[1, 2]", "--broker", redis_url)
    assert (status, err) == (0, "")
    reply = orjson.loads(out)
    status, _, err = await run_cli("publish", "news", "3", env={"FEEDS_BROKER": redis_url})
    assert (status, err) == (0, "")
    messages = await recv_messages(ws, 2)
    assert [(m["offset"], m["data"]) for m in messages] == [(1, [1, 2]), (2, 3)]
    assert messages[0]["epoch"] == reply["epoch"]


async def _long_history(redis_url: str, channel: str, count: int) -> None:
    """``count`` messages on ``channel``, kept as servers run with ``--history-size 500
    --history-ttl 3600`` keep them."""
    async with Publisher(redis_url, history_size=500, history_ttl_s=3600) as pub:
        for n in range(count):
            await pub.publish(channel, n)


async def _history_length_and_ttl(redis_url: str, channel: str) -> tuple[int, int]:
    """(entries in the channel's history stream, the stream's TTL in seconds)."""
    import redis.asyncio as aioredis

    from sanic_feeds.brokers.redis import channel_keys

    keys = channel_keys(channel)
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await client.xlen(keys.history), await client.ttl(keys.history)
    finally:
        await client.aclose()


async def test_publish_through_the_broker_keeps_the_servers_history_from_the_environment(
    redis_url: str,
) -> None:
    await _long_history(redis_url, "long", 300)
    env = {"FEEDS_HISTORY_SIZE": "500", "FEEDS_HISTORY_TTL": "3600"}
    status, out, err = await run_cli("publish", "long", "301", "--broker", redis_url, env=env)
    assert (status, err) == (0, "")
    assert orjson.loads(out)["offset"] == 301
    length, ttl = await _history_length_and_ttl(redis_url, "long")
    assert length == 301, "the publish trimmed the history to its own --history-size"
    assert ttl > 3000, "the publish shortened the history's TTL"


async def test_publish_through_the_broker_reads_history_from_the_config_file_and_options(
    redis_url: str, tmp_path: Path
) -> None:
    await _long_history(redis_url, "long", 300)
    config = tmp_path / "feeds.toml"
    config.write_text(f'[feeds]\nbroker = "{redis_url}"\nhistory-size = 50\nhistory-ttl = 3600\n')
    # The command line beats the file's history-size; the broker and the TTL are the file's.
    status, _, err = await run_cli(
        "publish", "long", "301", "--history-size", "500", env={"FEEDS_CONFIG": str(config)}
    )
    assert (status, err) == (0, "")
    length, ttl = await _history_length_and_ttl(redis_url, "long")
    assert (length, ttl > 3000) == (301, True)
    status, _, err = await run_cli("publish", "long", "302", "--config", str(config))
    assert (status, err) == (0, "")
    length, ttl = await _history_length_and_ttl(redis_url, "long")
    assert (length, ttl > 3000) == (50, True)


async def test_publish_through_the_broker_keeps_a_new_epochs_start_up_to_recovery_max(
    redis_url: str,
) -> None:
    channel = f"young-{os.getpid()}-{time.monotonic_ns()}"
    async with Publisher(redis_url, history_size=1) as pub:
        for n in range(3):
            await pub.publish(channel, n)
    # A new epoch's start stays in the stream past the history size (reads see 1).
    assert (await _history_length_and_ttl(redis_url, channel))[0] == 3
    status, _, err = await run_cli(
        "publish", channel, "4", "--broker", redis_url, "--history-size", "1",
        env={"FEEDS_RECOVERY_MAX": "3"},
    )  # fmt: skip
    assert (status, err) == (0, "")
    # Past --recovery-max: trimmed (the Publisher's default, 300, would have kept 4).
    assert (await _history_length_and_ttl(redis_url, channel))[0] == 1


async def test_publish_needs_the_servers_api_key_when_it_has_one(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory(args=["--api-key", "sesame"])
    ws = await open_feed(server.ws_url, "guarded")
    status, _, err = await run_cli("publish", "guarded", "1", "--url", server.url)
    assert status == 1
    assert "401" in one_line(err)
    status, _, err = await run_cli(
        "publish", "guarded", "2", "--url", server.url, "--api-key", "sesame"
    )
    assert (status, err) == (0, "")
    status, _, err = await run_cli(
        "publish", "guarded", "3", "--url", server.url, env={"FEEDS_API_KEY": "sesame"}
    )
    assert (status, err) == (0, "")
    assert [m["data"] for m in await recv_messages(ws, 2)] == [2, 3]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _start_subscriber(
    url: str, channel: str, count: int
) -> tuple[asyncio.subprocess.Process, Any]:
    """``sanic-feeds subscribe``, once it has printed its ``subscribed`` line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sanic_feeds", "subscribe", channel,
        "--url", url, "--count", str(count),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
        # As a foreground job: a test run started in the background by a shell without
        # job control inherits SIGINT ignored, and so would the subscriber.
        preexec_fn=_default_sigint,
    )  # fmt: skip
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 15)
    return proc, orjson.loads(first)


async def _finish(proc: asyncio.subprocess.Process, timeout_s: float = 15) -> tuple[int, str, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("scheme", ["ws", "http"])
async def test_subscribe_prints_json_lines_and_exits_after_count_messages(
    feeds_server_factory: Any, scheme: str
) -> None:
    server = feeds_server_factory()
    proc, subscribed = await _start_subscriber(f"{scheme}://127.0.0.1:{server.port}", "news", 2)
    assert subscribed["type"] == "subscribed"
    assert subscribed["channel"] == "news"
    assert isinstance(subscribed["client"], str)  # as the server sent it
    for data in ({"title": "one"}, "two", "three"):
        status, _ = await publish_http(server.url, "news", data)
        assert status == 200
    status, out, err = await _finish(proc)
    assert (status, err) == (0, "")
    events = [orjson.loads(line) for line in out.splitlines()]
    messages = [e for e in events if e["type"] == "message"]
    assert [(m["offset"], m["data"]) for m in messages] == [(1, {"title": "one"}), (2, "two")]
    assert events[-1] == messages[-1], "exits right after the COUNTth message"
    assert {e["type"] for e in events} <= {"join", "message"}


async def test_subscribe_survives_a_server_restart_and_recovers_what_it_missed(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(redis_url)
    proc, _ = await _start_subscriber(server.ws_url, "news", 3)
    await publish_http(server.url, "news", "before")
    assert await asyncio.to_thread(server.stop) == 0
    async with Publisher(redis_url) as pub:
        await pub.publish("news", "while down")
    await asyncio.to_thread(server.start)
    await publish_http(server.url, "news", "after")
    status, out, err = await _finish(proc, 30)
    assert status == 0, err
    assert "Traceback" not in err
    events = [orjson.loads(line) for line in out.splitlines()]
    messages = [e for e in events if e["type"] == "message"]
    resubscribed = [e for e in events if e["type"] == "subscribed"]
    assert [e["recovered"] for e in resubscribed] == [True], resubscribed
    assert [(m["offset"], m["data"]) for m in messages] == [
        (1, "before"),
        (2, "while down"),
        (3, "after"),
    ]


@pytest.mark.parametrize(
    ("args", "expected_status", "mentions"),
    [
        (["publish", "news", "1", "--url", "http://127.0.0.1:{port}"], 1, "cannot reach"),
        (["publish", "news", "1", "--broker", "redis://127.0.0.1:{port}/0"], 1, "broker"),
        (["publish", "bad channel!", "1", "--url", "http://127.0.0.1:{port}"], 2, "channel"),
        (["publish", "news", "1", "--broker", "memory://"], 2, "memory://"),
        (["publish", "news", "1", "--broker", "redis+sentinel://127.0.0.1:{port}/mymaster"],
         1, "no Sentinel names the master"),
        (["publish", "news", "1", "--url", "http://127.0.0.1:{port}", "--history-size", "500"],
         2, "--history-size"),
        (["publish", "news", "1", "--broker", "redis://127.0.0.1:{port}/0", "--history-ttl", "0"],
         2, "--history-ttl"),
        (["subscribe", "news", "--url", "ws://127.0.0.1:{port}"], 1, "cannot subscribe"),
        (["subscribe", "bad channel!", "--url", "ws://127.0.0.1:{port}"], 2, "channel"),
    ],
    ids=[
        "publish-server-unreachable", "publish-broker-unreachable", "publish-bad-channel",
        "publish-memory-broker", "publish-sentinel-unreachable", "publish-history-with-url",
        "publish-bad-history-ttl", "subscribe-server-unreachable",
        "subscribe-bad-channel",
    ],
)  # fmt: skip
async def test_publish_and_subscribe_errors_are_one_line_and_a_non_zero_status(
    args: Sequence[str], expected_status: int, mentions: str
) -> None:
    port = free_port()  # nothing listens there
    status, out, err = await run_cli(*(arg.format(port=port) for arg in args))
    assert status == expected_status, err
    line = one_line(err)
    assert line.startswith("sanic-feeds: error:")
    assert mentions in line
    assert out == ""


async def test_publish_to_a_server_that_went_down_fails_in_one_line(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory()
    assert await asyncio.to_thread(server.stop) == 0
    status, _, err = await run_cli("publish", "news", "1", "--url", server.url)
    assert status == 1
    assert server.url in one_line(err)


async def test_publish_and_subscribe_while_the_servers_broker_is_down_fail_in_one_line(
    feeds_server_factory: Any, private_redis: Any
) -> None:
    server = feeds_server_factory(private_redis.url)
    private_redis.stop()
    status, _, err = await run_cli("publish", "news", "1", "--url", server.url)
    assert status == 1
    assert "503" in one_line(err)
    status, _, err = await run_cli("subscribe", "news", "--url", server.ws_url, timeout_s=30)
    assert status == 1
    assert "unavailable" in one_line(err)


async def test_ctrl_c_ends_subscribe_quietly(feeds_server_factory: Any) -> None:
    server = feeds_server_factory()
    proc, _ = await _start_subscriber(server.ws_url, "news", 0)
    proc.send_signal(signal.SIGINT)
    status, _, err = await _finish(proc)
    assert (status, err) == (0, "")


README_OPTIONS = (
    "host",
    "port",
    "broker",
    "workers",
    "max-message-bytes",
    "max-queue",
    "max-connections",
    "max-subscriptions",
    "rate-limit",
    "rate-burst",
    "history-size",
    "history-ttl",
    "recovery-max",
    "ping-interval",
    "ping-timeout",
    "drain-timeout",
    "api-key",
    "allowed-origins",
    "quiet-namespaces",
    "join-leave-max",
    "log-level",
    "demo-page",
)


async def test_serve_help_lists_every_option_with_its_environment_variable() -> None:
    status, out, _ = await run_cli("serve", "--help")
    assert status == 0
    words = out.replace("(", " ").replace(",", " ").split()
    missing = [
        option
        for option in README_OPTIONS
        if f"--{option}" not in words or f"FEEDS_{option.replace('-', '_').upper()}" not in words
    ]
    assert missing == []
    assert "--config" in words and "FEEDS_CONFIG)" in words


def test_serve_logs_each_line_once_says_where_it_serves_and_honours_log_level(
    feeds_server_factory: Any,
) -> None:
    talkative = feeds_server_factory(args=["--log-level", "info"])
    assert talkative.stop() == 0
    log = talkative.log()
    assert log.count("Starting worker") == 1, log
    assert f"serving {talkative.url}, broker memory://" in log, log
    quiet = feeds_server_factory(args=["--log-level", "warning"])
    assert quiet.stop() == 0
    assert "INFO" not in quiet.log(), quiet.log()


async def test_subscribe_into_a_pipe_whose_reader_went_away_exits_quietly(
    feeds_server_factory: Any,
) -> None:
    """``sanic-feeds subscribe news | head -1``: no traceback once ``head`` has gone."""
    server = feeds_server_factory()
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sanic_feeds", "subscribe", "news", "--url", server.ws_url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=write_end,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )  # fmt: skip
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as reader:
            first = await asyncio.to_thread(reader.readline)
        assert orjson.loads(first)["type"] == "subscribed"
        for _ in range(100):
            await publish_http(server.url, "news", "x" * 1000)
            if proc.returncode is not None:
                break
        assert proc.stderr is not None
        err = (await asyncio.wait_for(proc.stderr.read(), 15)).decode()
        status = await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert status == 1
    assert err == "", err
