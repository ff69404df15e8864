"""The server's own WebSocket layer (``websocket.py``) over real sockets: what a
client sends just before closing, pipelined commands, an error inside the server."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.integration.test_library import start_library_app
from tests.support.ws import open_feed, recv_messages

pytestmark = pytest.mark.integration


class RawClient:
    """A WebSocket client on a bare TCP stream, driven by ``websockets``' sans-I/O
    protocol: it writes exactly the bytes the test builds, in one write."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.proto = ClientProtocol(parse_uri(url))

    async def open(self) -> RawClient:
        uri = parse_uri(self.url)
        self.reader, self.writer = await asyncio.open_connection(uri.host, uri.port)
        self.proto.send_request(self.proto.connect())
        self.writer.write(b"".join(self.proto.data_to_send()))
        #: Frames that came in the same read as the handshake's answer.
        self.early: list[Frame] = []
        while self.proto.state is not State.OPEN:
            self.proto.receive_data(await asyncio.wait_for(self.reader.read(65536), 10))
            for event in self.proto.events_received():
                if isinstance(event, Frame):
                    self.early.append(event)
                else:
                    assert isinstance(event, Response) and event.status_code == 101, event
        return self

    def frames(self, *build: Any) -> bytes:
        for step in build:
            step(self.proto)
        return b"".join(self.proto.data_to_send())

    async def read_frames(self, until: Any, timeout_s: float = 10.0) -> list[Frame]:
        """Frames received until ``until(frames)`` holds or the server closes."""
        frames, self.early = self.early, []
        async with asyncio.timeout(timeout_s):
            while not until(frames):
                data = await self.reader.read(65536)
                if not data:
                    break
                self.proto.receive_data(data)
                frames += [e for e in self.proto.events_received() if isinstance(e, Frame)]
        return frames

    def close(self) -> None:
        self.writer.close()


def has_close(frames: list[Frame]) -> bool:
    return any(f.opcode is Opcode.CLOSE for f in frames)


@pytest.mark.parametrize("endpoint", ["feed", "ws"])
async def test_a_message_sent_in_the_same_write_as_the_close_frame_is_published(
    feeds_server_factory: Any, endpoint: str
) -> None:
    server = feeds_server_factory("memory://")
    watcher = await open_feed(server.ws_url, "last-words")
    for n in range(20):
        client = await RawClient(
            f"{server.ws_url}/feed/last-words" if endpoint == "feed" else f"{server.ws_url}/ws"
        ).open()
        if endpoint == "feed":
            payload = orjson.dumps(n)
        else:
            payload = orjson.dumps({"op": "publish", "channel": "last-words", "data": n})
        client.writer.write(
            client.frames(lambda p, b=payload: p.send_text(b), lambda p: p.send_close(1000))
        )
        frames = await client.read_frames(has_close)
        assert Close.parse(frames[-1].data).code == 1000
        client.close()
    messages = await recv_messages(watcher, 20)
    assert [m["data"] for m in messages] == list(range(20))


async def test_a_client_that_publishes_and_closes_at_once_loses_nothing(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory("memory://")
    watcher = await open_feed(server.ws_url, "hit-and-run")
    for n in range(30):
        async with connect(f"{server.ws_url}/feed/hit-and-run") as ws:
            await ws.send(orjson.dumps(n).decode())
    messages = await recv_messages(watcher, 30)
    assert sorted(m["data"] for m in messages) == list(range(30))


async def test_pipelined_commands_longer_than_the_queue_are_all_answered_in_order(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory("memory://", args=["--max-queue", "100"])
    client = await RawClient(f"{server.ws_url}/ws").open()
    count = 1500
    client.writer.write(
        client.frames(
            *(
                lambda p, n=n: p.send_text(orjson.dumps({"op": "ping", "id": n}))
                for n in range(count)
            )
        )
    )
    frames = await client.read_frames(lambda fs: len(fs) >= count or has_close(fs))
    replies = [orjson.loads(f.data) for f in frames if f.opcode is Opcode.TEXT]
    assert [r["id"] for r in replies] == list(range(count))
    assert all(r["type"] == "pong" for r in replies)
    client.close()


async def test_an_error_inside_the_server_closes_that_connection_1011_and_nothing_else(
    feeds_server_factory: Any,
) -> None:
    app = start_library_app(feeds_server_factory, "memory://", "--broken-channel", "boom")
    bystander = await open_feed(app.ws_url, "fine")
    client = await RawClient(f"{app.ws_url}/feed/boom").open()
    client.writer.write(client.frames(lambda p: p.send_text(b"trigger")))
    frames = await client.read_frames(has_close)
    # Only WebSocket frames came back (an HTTP error page would not parse as one).
    close = frames[-1]
    assert close.opcode is Opcode.CLOSE and Close.parse(close.data).code == 1011
    client.close()
    assert "a bug publishing on 'boom'" in app.log()
    # The instance goes on serving everyone else.
    async with connect(f"{app.ws_url}/feed/fine") as other:
        await other.send("still here")
        assert [m["data"] for m in await recv_messages(bystander, 1)] == ["still here"]


async def test_a_client_closed_while_it_keeps_sending_still_gets_the_close_code(
    feeds_server_factory: Any,
) -> None:
    # Closing TCP while the client's frames still arrive makes the kernel reset
    # the connection, and the client, reading only later, loses the close frame.
    server = feeds_server_factory("memory://", args=["--rate-limit", "1", "--rate-burst", "1"])
    for _ in range(3):
        client = await RawClient(f"{server.ws_url}/feed/flood").open()
        with contextlib.suppress(OSError):
            for n in range(300):  # for about 0.3 s, reading nothing
                client.writer.write(client.frames(lambda p, n=n: p.send_text(b"%d" % n)))
                await client.writer.drain()
                await asyncio.sleep(0.001)
        frames = await client.read_frames(has_close)
        assert has_close(frames), "the connection ended without a close frame"
        assert Close.parse(frames[-1].data).code == 1008
        client.close()
