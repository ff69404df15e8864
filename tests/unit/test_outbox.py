"""Outboxes and the flusher, on fake transports: no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.protocol import State

from sanic_feeds.server.outbox import Flusher, Outbox
from tests.support.fakes import FakeProtocol


class FakeSession:
    def __init__(self) -> None:
        self.state = State.OPEN


class Writes(FakeProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bytes] = []
        #: The loop's time of each write.
        self.times: list[float] = []
        transport = self.transport
        assert transport is not None
        original = transport.write

        def write(data: Any) -> None:
            self.calls.append(bytes(data))
            self.times.append(asyncio.get_running_loop().time())
            original(data)

        transport.write = write  # type: ignore[method-assign]


def outbox(protocol: Writes, session: FakeSession, max_frames: int = 10) -> Outbox:
    aborted: list[bool] = []
    return Outbox(
        protocol,
        Flusher(asyncio.get_running_loop()),
        max_frames,
        lambda reason: aborted.append(True),
        session=session,
    )


async def test_frames_queued_in_one_iteration_leave_in_one_write() -> None:
    protocol, session = Writes(), FakeSession()
    box = outbox(protocol, session)
    for frame in (b"a", b"b", b"c"):
        box.put(frame)
    assert protocol.calls == []  # never written from inside put()
    await asyncio.sleep(0)
    assert protocol.calls == [b"abc"]


async def test_an_explicit_flush_writes_what_is_queued_while_the_session_is_open() -> None:
    # Connection.close() flushes, then closes: the last event must not be lost.
    protocol, session = Writes(), FakeSession()
    box = outbox(protocol, session)
    box.put(b"error event")
    box.flush()
    box.close()
    assert protocol.calls == [b"error event"]


async def test_nothing_is_written_once_the_closing_handshake_started() -> None:
    protocol, session = Writes(), FakeSession()
    box = outbox(protocol, session)
    box.put(b"late")
    session.state = State.CLOSING
    await asyncio.sleep(0)
    assert protocol.calls == []
    assert box.closed
    box.put(b"later")
    assert box.queued == 0


async def test_overflow_of_a_socket_that_does_not_drain_aborts_once_and_drops_the_queue() -> None:
    protocol, session = Writes(), FakeSession()
    assert protocol.transport is not None
    protocol.transport.buffered = 100_000  # over the high-water mark: the peer is not reading
    aborted: list[bool] = []
    box = Outbox(
        protocol, Flusher(asyncio.get_running_loop()), 2, lambda reason: aborted.append(True),
        session=session,
    )  # fmt: skip
    for frame in (b"1", b"2", b"3", b"4"):
        box.put(frame)
    await asyncio.sleep(0)
    assert aborted == [True]
    assert protocol.calls == []


async def test_a_burst_longer_than_the_queue_goes_out_when_the_socket_takes_it() -> None:
    # A client that pipelines many commands gets many replies within one loop
    # iteration: they wait for the flusher, not for the client, and count not.
    protocol, session = Writes(), FakeSession()
    aborted: list[bool] = []
    box = Outbox(
        protocol, Flusher(asyncio.get_running_loop()), 2, lambda reason: aborted.append(True),
        session=session,
    )  # fmt: skip
    for frame in (b"1", b"2", b"3", b"4", b"5"):
        box.put(frame)
    await asyncio.sleep(0)
    assert aborted == []
    assert b"".join(protocol.calls) == b"12345"


def flusher_wrote_at(protocol: Writes) -> float:
    assert protocol.times, "nothing was written"
    return protocol.times[0]


async def test_with_a_tick_the_first_frame_leaves_at_once_and_the_next_ones_wait_for_it() -> None:
    """A frame after a quiet spell is not delayed; frames that keep coming within one
    tick leave each connection in one write, at most a tick later."""
    loop = asyncio.get_running_loop()
    flusher = Flusher(loop, tick_s=0.05)
    protocols = [Writes(), Writes()]
    boxes = [
        Outbox(protocol, flusher, 10, lambda reason: None, session=FakeSession())
        for protocol in protocols
    ]
    boxes[0].put(b"first")
    await asyncio.sleep(0)
    assert protocols[0].calls == [b"first"]
    began = loop.time()
    for frame in (b"a", b"b", b"c"):
        for box in boxes:
            box.put(frame)
        await asyncio.sleep(0.005)
    assert protocols[0].calls == [b"first"]  # held until the tick is over
    await asyncio.sleep(0.1)  # past the tick, with margin
    waited = flusher_wrote_at(protocols[1]) - began
    assert [p.calls for p in protocols] == [[b"first", b"abc"], [b"abc"]]
    assert 0.03 < waited < 0.2


async def test_without_a_tick_every_loop_iteration_writes() -> None:
    protocol = Writes()
    box = Outbox(protocol, Flusher(asyncio.get_running_loop()), 10, lambda reason: None)
    for frame in (b"a", b"b"):
        box.put(frame)
        await asyncio.sleep(0)
    assert protocol.calls == [b"a", b"b"]
