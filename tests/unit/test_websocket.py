"""The callback-driven server WebSocket, against a fake transport: frames in,
messages and control frames out, keepalive, closing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from sanic_feeds.server.websocket import Keepalive, ServerWebSocket, accept, text_frame

HANDSHAKE = [
    ("Host", "127.0.0.1"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.reading = True
        self.eof_written = False
        #: What the peer has not read yet, as the transport counts it.
        self.buffered = 0

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (16_384, 65_536)


class FakeIOProtocol:
    def __init__(self) -> None:
        self.transport: FakeTransport | None = FakeTransport()
        self.websocket: Any = None
        self.recv_buffer = bytearray()

    async def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Peer:
    """The client side: builds masked frames and reads what the server wrote."""

    def __init__(self, io_proto: FakeIOProtocol) -> None:
        self.io_proto = io_proto
        self.proto = ClientProtocol(parse_uri("ws://127.0.0.1/ws"), state=State.OPEN)
        self._read = 0

    def send(self, build: Any) -> bytes:
        build(self.proto)
        return b"".join(self.proto.data_to_send())

    def received(self) -> list[Frame]:
        assert self.io_proto.transport is not None
        written = self.io_proto.transport.written
        data, self._read = b"".join(written[self._read :]), len(written)
        self.proto.receive_data(data)
        return [e for e in self.proto.events_received() if isinstance(e, Frame)]


def open_socket(
    keepalive: Keepalive | None = None, max_message_bytes: int = 1024, max_queue: int = 1000
) -> tuple[ServerWebSocket, FakeIOProtocol, Peer]:
    io_proto = FakeIOProtocol()
    ws = accept(
        io_proto,
        "/ws",
        HANDSHAKE,
        max_message_bytes=max_message_bytes,
        keepalive=keepalive,
        max_queue=max_queue,
    )
    assert isinstance(ws, ServerWebSocket)
    assert io_proto.websocket is ws
    assert io_proto.transport is not None
    assert io_proto.transport.written[0].startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    del io_proto.transport.written[:]
    return ws, io_proto, Peer(io_proto)


async def test_frames_sent_behind_the_request_are_read_and_reading_resumes() -> None:
    """A client that does not wait for the 101 (RFC 6455 says it must): Sanic holds what
    came behind the request in its buffer, and paused reading once that passed its
    REQUEST_BUFFER_SIZE. Those were lost, and the connection was never read again (a ping
    flood then went unbounded by the pong limit until the keepalive closed it)."""
    io_proto = FakeIOProtocol()
    peer = Peer(io_proto)
    io_proto.recv_buffer += peer.send(lambda p: p.send_ping(b"early"))
    transport = io_proto.transport
    assert transport is not None
    transport.pause_reading()
    ws = accept(io_proto, "/ws", HANDSHAKE, max_message_bytes=1024, keepalive=None)
    assert isinstance(ws, ServerWebSocket)
    assert transport.written[0].startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    del transport.written[0]
    [pong] = peer.received()
    assert pong.opcode is Opcode.PONG and pong.data == b"early"
    assert transport.reading and not io_proto.recv_buffer


async def test_a_request_that_is_no_upgrade_is_refused_and_nothing_is_written() -> None:
    io_proto = FakeIOProtocol()
    refusal = accept(io_proto, "/ws", [("Host", "x")], max_message_bytes=10, keepalive=None)
    assert not isinstance(refusal, ServerWebSocket)
    assert refusal.status_code == 426
    assert io_proto.transport is not None and io_proto.transport.written == []
    assert io_proto.websocket is None


async def test_text_and_binary_messages_arrive_in_order() -> None:
    ws, _, peer = open_socket()
    ws.data_received(
        peer.send(lambda p: p.send_text("héllo".encode()))
        + peer.send(lambda p: p.send_binary(b"\x00\x01"))
    )
    assert await ws.recv() == "héllo"
    assert await ws.recv() == b"\x00\x01"


async def test_recv_waits_for_a_message() -> None:
    ws, _, peer = open_socket()
    waiting = asyncio.create_task(ws.recv())
    await asyncio.sleep(0)
    assert not waiting.done()
    ws.data_received(peer.send(lambda p: p.send_text(b"late")))
    assert await waiting == "late"


async def test_a_fragmented_message_is_assembled() -> None:
    ws, _, peer = open_socket()
    ws.data_received(peer.send(lambda p: p.send_text(b"one ", fin=False)))
    ws.data_received(peer.send(lambda p: p.send_continuation(b"two ", fin=False)))
    ws.data_received(peer.send(lambda p: p.send_continuation(b"three", fin=True)))
    assert await ws.recv() == "one two three"


async def test_invalid_utf8_closes_1007() -> None:
    ws, io_proto, peer = open_socket()
    ws.data_received(peer.send(lambda p: p.send_text(b"\xff\xfe")))
    assert await ws.recv() is None
    [close] = peer.received()
    assert Close.parse(close.data).code == 1007
    assert ws.close_code_sent == 1007
    transport = io_proto.transport
    assert transport is not None and not transport.closing  # the peer answers first
    ws.data_received(peer.send(lambda p: None))  # its answer to the close frame
    assert transport.closing


async def test_start_closing_waits_for_the_peers_answer_before_closing_tcp() -> None:
    # Closing TCP under a peer that is still sending resets the connection, and
    # the peer can lose the close frame with its code.
    ws, io_proto, peer = open_socket()
    waiting = asyncio.create_task(ws.recv())
    await asyncio.sleep(0)
    assert ws.close_code_sent is None
    ws.start_closing(1008, "too fast")
    assert ws.close_code_sent == 1008
    assert await waiting is None
    transport = io_proto.transport
    assert transport is not None and not transport.closing
    # The peer goes on sending before it has seen the close: read and dropped.
    ws.data_received(peer.send(lambda p: p.send_text(b"still publishing")))
    assert not transport.closing
    [close] = peer.received()
    assert Close.parse(close.data) == Close(1008, "too fast")
    ws.data_received(peer.send(lambda p: None))  # its answer to the close frame
    assert transport.eof_written and transport.closing
    assert await ws.recv() is None


async def test_a_frame_over_the_limit_closes_1009() -> None:
    ws, _, peer = open_socket(max_message_bytes=10)
    ws.data_received(peer.send(lambda p: p.send_text(b"x" * 11)))
    assert await ws.recv() is None
    [close] = peer.received()
    assert Close.parse(close.data).code == 1009
    assert ws.close_code_sent == 1009  # the protocol's own close counts as ours


async def test_a_ping_is_answered_with_a_pong() -> None:
    ws, _, peer = open_socket()
    ws.data_received(peer.send(lambda p: p.send_ping(b"are you there")))
    [pong] = peer.received()
    assert pong.opcode is Opcode.PONG and pong.data == b"are you there"


async def test_a_close_frame_is_answered_the_tcp_connection_closed_and_recv_ends() -> None:
    ws, io_proto, peer = open_socket()
    waiting = asyncio.create_task(ws.recv())
    await asyncio.sleep(0)
    ws.data_received(peer.send(lambda p: p.send_close(1000, "bye")))
    assert await waiting is None
    [close] = peer.received()
    assert Close.parse(close.data).code == 1000
    assert io_proto.transport is not None and io_proto.transport.closing
    # An answer to the peer's close is not a close the server started.
    assert ws.close_code_sent is None


async def test_fail_connection_sends_the_code_closes_at_once_and_wakes_recv() -> None:
    ws, io_proto, peer = open_socket()
    waiting = asyncio.create_task(ws.recv())
    await asyncio.sleep(0)
    ws.fail_connection(1013, "too slow")
    ws.fail_connection(1013, "twice is harmless")
    assert await waiting is None
    [close] = peer.received()
    assert Close.parse(close.data) == Close(1013, "too slow")
    assert io_proto.transport is not None and io_proto.transport.closing


async def test_a_peer_that_does_not_finish_closing_is_aborted_after_the_timeout() -> None:
    ws, io_proto, _ = open_socket()
    ws.close_timeout_s = 0.01
    ws.fail_connection(1001)
    transport = io_proto.transport
    assert transport is not None and not transport.aborted
    await asyncio.sleep(0.05)
    assert transport.aborted


async def test_connection_lost_ends_recv_and_close() -> None:
    ws, _, _ = open_socket()
    waiting = asyncio.create_task(ws.recv())
    await asyncio.sleep(0)
    ws.connection_lost(ConnectionResetError())
    assert await waiting is None
    assert ws.io_proto is None
    await asyncio.wait_for(ws.close(), 1)


async def test_close_waits_for_the_tcp_connection_to_end() -> None:
    ws, _, _ = open_socket()
    closing = asyncio.create_task(ws.close(1001))
    await asyncio.sleep(0.01)
    assert not closing.done()
    ws.connection_lost(None)
    await asyncio.wait_for(closing, 1)


async def test_reading_pauses_while_the_handler_is_behind_and_resumes() -> None:
    ws, io_proto, peer = open_socket()
    transport = io_proto.transport
    assert transport is not None
    for n in range(16):
        ws.data_received(peer.send(lambda p, n=n: p.send_text(str(n).encode())))
    assert not transport.reading
    received = [await ws.recv() for _ in range(9)]
    assert received == [str(n) for n in range(9)]
    assert transport.reading


async def test_keepalive_pings_and_a_pong_keeps_the_connection() -> None:
    keepalive = Keepalive(asyncio.get_running_loop(), interval_s=0.02, timeout_s=0.05)
    ws, _, peer = open_socket(keepalive)
    for _ in range(3):
        await asyncio.sleep(0.04)
        pings = [f for f in peer.received() if f.opcode is Opcode.PING]
        assert pings, "no ping within the interval and a tick"
        ws.data_received(peer.send(lambda p, data=pings[-1].data: p.send_pong(data)))
    assert ws.ws_proto.state is State.OPEN
    keepalive.close()


async def test_keepalive_fails_a_connection_whose_pong_does_not_come_1011() -> None:
    keepalive = Keepalive(asyncio.get_running_loop(), interval_s=0.02, timeout_s=0.04)
    ws, _, peer = open_socket(keepalive)
    bystander, _, bystander_peer = open_socket(keepalive)
    deadline = asyncio.get_running_loop().time() + 1
    while ws.ws_proto.state is State.OPEN:
        assert asyncio.get_running_loop().time() < deadline, "never closed"
        await asyncio.sleep(0.01)
        for frame in bystander_peer.received():
            if frame.opcode is Opcode.PING:
                bystander.data_received(
                    bystander_peer.send(lambda p, data=frame.data: p.send_pong(data))
                )
    close = [f for f in peer.received() if f.opcode is Opcode.CLOSE][-1]
    assert Close.parse(close.data).code == 1011
    assert bystander.ws_proto.state is State.OPEN
    keepalive.close()


def test_keepalive_refuses_a_period_that_is_not_positive() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError):
            Keepalive(loop, interval_s=0, timeout_s=1)
    finally:
        loop.close()


async def test_messages_sent_just_before_the_close_frame_are_read_before_tcp_closes() -> None:
    # One read holds a message and the peer's close: the message is still
    # the handler's, and the TCP connection stays open until it was read.
    ws, io_proto, peer = open_socket()
    transport = io_proto.transport
    assert transport is not None
    ws.data_received(
        peer.send(lambda p: p.send_text(b"last words")) + peer.send(lambda p: p.send_close(1000))
    )
    [close] = peer.received()
    assert Close.parse(close.data).code == 1000  # answered at once
    assert not transport.closing
    assert await ws.recv() == "last words"
    assert not transport.closing
    assert await ws.recv() is None
    assert transport.closing


async def test_a_handler_that_never_reads_again_has_the_tcp_connection_closed_anyway() -> None:
    ws, io_proto, peer = open_socket()
    ws.close_timeout_s = 0.01
    ws.data_received(peer.send(lambda p: p.send_text(b"x")) + peer.send(lambda p: p.send_close()))
    await asyncio.sleep(0.05)
    assert io_proto.transport is not None and io_proto.transport.closing


async def test_messages_before_a_half_close_are_read_then_recv_ends() -> None:
    ws, io_proto, peer = open_socket()
    ws.data_received(peer.send(lambda p: p.send_text(b"before eof")))
    assert ws.eof_received() is True  # keep the transport until they are read
    assert await ws.recv() == "before eof"
    assert await ws.recv() is None
    assert io_proto.transport is not None and io_proto.transport.closing


async def test_failing_the_connection_drops_what_was_not_read_and_what_follows() -> None:
    ws, _, peer = open_socket()
    ws.data_received(peer.send(lambda p: p.send_text(b"read")))
    ws.data_received(
        peer.send(lambda p: p.send_text(b"\xff"))  # invalid UTF-8: fails with 1007
        + peer.send(lambda p: p.send_text(b"after the failure"))
    )
    assert await ws.recv() is None
    ws.data_received(peer.send(lambda p: p.send_text(b"later still")))
    assert await ws.recv() is None


async def test_a_long_pipelined_burst_lets_the_loop_run_while_it_is_read() -> None:
    ws, _, peer = open_socket()
    burst = b"".join(peer.send(lambda p, n=n: p.send_text(str(n).encode())) for n in range(100))
    ws.data_received(burst)
    others_ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(others_ran.set)
    received: list[str | bytes] = []
    while len(received) < 100:
        message = await ws.recv()
        assert message is not None
        received.append(message)
        if len(received) == 50:
            assert others_ran.is_set(), "recv() held the loop for 50 messages"
    assert received == [str(n) for n in range(100)]


async def test_keepalive_gives_up_a_silent_connection_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keepalive = Keepalive(asyncio.get_running_loop(), interval_s=0.02, timeout_s=0.02)
    ws, _, peer = open_socket(keepalive)
    with caplog.at_level(logging.INFO, logger="sanic_feeds.websocket"):
        await asyncio.sleep(0.2)  # many ticks; the transport never reports the close
    given_up = [r for r in caplog.records if "did not answer a ping" in r.getMessage()]
    assert len(given_up) == 1
    [close] = [f for f in peer.received() if f.opcode is Opcode.CLOSE]
    assert Close.parse(close.data).code == 1011
    assert ws.ws_proto.state is not State.OPEN
    keepalive.close()


async def test_keepalive_waits_for_a_pong_stuck_behind_a_paused_read() -> None:
    keepalive = Keepalive(asyncio.get_running_loop(), interval_s=0.02, timeout_s=0.03)
    ws, _, peer = open_socket(keepalive)
    for n in range(16):  # the handler is behind: reading pauses
        ws.data_received(peer.send(lambda p, n=n: p.send_text(str(n).encode())))
    assert ws.reading_paused
    await asyncio.sleep(0.15)
    assert ws.ws_proto.state is State.OPEN
    keepalive.close()


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 100_000])
def test_text_frame_header_for_every_length_class(size: int) -> None:
    payload = b"x" * size
    frame = text_frame(payload)
    assert frame[0] == 0x81  # FIN + text
    assert frame[1] & 0x80 == 0  # server frames are not masked
    assert frame.endswith(payload)
    header = len(frame) - size
    assert header == (2 if size < 126 else 4 if size < 65536 else 10)


async def test_a_peer_that_pings_without_reading_the_pongs_is_closed_1013() -> None:
    """Pongs bypass the outbox: unbounded, a ping flood that never reads grew the server by
    hundreds of MB. Past max_queue pongs behind a full transport buffer, it is closed."""
    ws, io_proto, peer = open_socket(max_queue=5)
    transport = io_proto.transport
    assert transport is not None
    # While the peer reads, pings are answered and nothing counts.
    for _ in range(20):
        ws.data_received(peer.send(lambda p: p.send_ping(b"x")))
    assert not transport.closing
    transport.buffered = 10**6  # now it stops reading
    for _ in range(5):
        ws.data_received(peer.send(lambda p: p.send_ping(b"x")))
    assert not transport.closing
    ws.data_received(peer.send(lambda p: p.send_ping(b"x")))
    assert transport.closing
    assert ws.ws_proto.close_sent is not None and ws.ws_proto.close_sent.code == 1013
    # Nothing more is written into a transport that is closing.
    written = len(transport.written)
    ws.data_received(peer.send(lambda p: p.send_ping(b"x")))
    assert len(transport.written) == written


async def test_a_peer_that_catches_up_starts_counting_afresh() -> None:
    ws, io_proto, peer = open_socket(max_queue=3)
    transport = io_proto.transport
    assert transport is not None
    for _ in range(10):
        transport.buffered = 10**6
        for _ in range(3):
            ws.data_received(peer.send(lambda p: p.send_ping(b"x")))
        transport.buffered = 0
        ws.data_received(peer.send(lambda p: p.send_ping(b"x")))
    assert not transport.closing
