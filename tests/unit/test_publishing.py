"""A connection's publishes overlap, and their replies keep its order (publishing.py):
in-process, on a memory broker whose publishes wait until the test lets them finish."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed

from sanic_feeds.brokers.memory import MemoryBroker
from sanic_feeds.events import StreamPosition
from sanic_feeds.server.node import Node
from sanic_feeds.settings import Settings
from tests.support.fakes import InProcessSession


class GatedBroker(MemoryBroker):
    """Takes each publish at once (its offset is assigned in call order), and answers it
    only when the test opens its gate: a broker round trip, made visible."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[Any] = []
        self.gates: list[asyncio.Event] = []

    async def publish(self, channel: str, data: Any, **kwargs: Any) -> StreamPosition:
        position = await super().publish(channel, data, **kwargs)
        self.taken.append(data)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        return position


async def started(window: int = 16) -> tuple[Node, GatedBroker, InProcessSession]:
    broker = GatedBroker()
    node = Node(Settings(rate_limit=0, publish_window=window), broker=broker)
    await node.start()
    return node, broker, InProcessSession(node)


async def send(session: InProcessSession, **command: Any) -> None:
    await session.send(orjson.dumps(command).decode())


async def until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out")


async def test_publishes_of_one_connection_overlap_and_are_acked_in_order() -> None:
    node, broker, session = await started()
    try:
        for n in (1, 2, 3):
            await send(session, op="publish", channel="room", data=n, id=n)
        # All three reached the broker while none was answered: the next frame was
        # read without waiting for the broker's answer to the one before.
        await until(lambda: broker.taken == [1, 2, 3])
        for gate in reversed(broker.gates):  # the broker answers the last one first
            gate.set()
            await asyncio.sleep(0.01)
        replies = [orjson.loads(await session.recv()) for _ in range(3)]
        assert [(r["type"], r["id"], r["offset"]) for r in replies] == [
            ("ack", 1, 1),
            ("ack", 2, 2),
            ("ack", 3, 3),
        ]
    finally:
        await session.close()
        await node.stop()


async def test_any_other_command_waits_for_the_publishes_before_it() -> None:
    node, broker, session = await started()
    try:
        await send(session, op="publish", channel="room", data="first", id="p")
        await send(session, op="ping", id="after")
        await until(lambda: len(broker.gates) == 1)
        await asyncio.sleep(0.02)
        broker.gates[0].set()
        replies = [orjson.loads(await session.recv()) for _ in range(2)]
        assert [(r["type"], r["id"]) for r in replies] == [("ack", "p"), ("pong", "after")]
    finally:
        await session.close()
        await node.stop()


async def test_a_window_of_one_publishes_one_at_a_time() -> None:
    node, broker, session = await started(window=1)
    try:
        for n in (1, 2):
            await send(session, op="publish", channel="room", data=n, id=n)
        await until(lambda: broker.taken == [1])
        await asyncio.sleep(0.02)
        assert broker.taken == [1]
        broker.gates[0].set()
        await until(lambda: broker.taken == [1, 2])
        broker.gates[1].set()
        replies = [orjson.loads(await session.recv()) for _ in range(2)]
        assert [r["id"] for r in replies] == [1, 2]
    finally:
        await session.close()
        await node.stop()


class BuggyBroker(GatedBroker):
    """The second publish fails with an error no broker should raise (a bug)."""

    async def publish(self, channel: str, data: Any, **kwargs: Any) -> StreamPosition:
        if data == "bug":
            raise RuntimeError("a bug in the broker")
        return await super().publish(channel, data, **kwargs)


async def test_a_publish_failing_unexpectedly_closes_the_connection_after_earlier_acks() -> None:
    broker = BuggyBroker()
    node = Node(Settings(rate_limit=0), broker=broker)
    await node.start()
    session = InProcessSession(node)
    try:
        await send(session, op="publish", channel="room", data="fine", id=1)
        await send(session, op="publish", channel="room", data="bug", id=2)
        await until(lambda: len(broker.gates) == 1)
        await asyncio.sleep(0.02)  # the bug is known; the first publish still waits
        broker.gates[0].set()
        reply = orjson.loads(await session.recv())
        assert (reply["type"], reply["id"]) == ("ack", 1)
        await until(lambda: session.ws.close_code is not None)
        assert session.ws.close_code == 1011
    finally:
        await session.close()
        await node.stop()


async def test_with_a_publish_hook_the_hooks_run_in_order_and_the_broker_calls_overlap() -> None:
    """The app's hook for a connection's publishes runs one at a time, in the client's
    order, even when an earlier one takes longer; the broker's round trips still overlap."""
    broker = GatedBroker()
    node = Node(Settings(rate_limit=0), broker=broker)
    hooked: list[Any] = []

    async def stamp(client: Any, channel: str, data: Any) -> Any:
        await asyncio.sleep(0.05 if data == 1 else 0)  # the first hook is the slowest
        hooked.append(data)
        return data

    node.hooks.add_publish("room", stamp)
    await node.start()
    session = InProcessSession(node)
    try:
        for n in (1, 2, 3):
            await send(session, op="publish", channel="room", data=n, id=n)
        await until(lambda: broker.taken == [1, 2, 3])
        assert hooked == [1, 2, 3]
        for gate in broker.gates:
            gate.set()
        replies = [orjson.loads(await session.recv()) for _ in range(3)]
        assert [(r["id"], r["offset"]) for r in replies] == [(1, 1), (2, 2), (3, 3)]
    finally:
        await session.close()
        await node.stop()


async def test_nothing_sent_after_earning_the_1008_takes_effect() -> None:
    """The 1008 waits for its turn, behind a publish still at the broker; meanwhile the
    bucket refills. A publish read in that time was published (its ack then lost with
    the close), and a subscribe after it ran on the closed connection."""
    broker = GatedBroker()
    node = Node(Settings(rate_limit=20, rate_burst=1, publish_window=64), broker=broker)
    await node.start()
    session = InProcessSession(node)
    try:
        # Publish 0 takes the one token and waits at the broker; 51 refusals in a row
        # (well within the 50 ms a token takes) earn the 1008.
        for n in range(52):
            await send(session, op="publish", channel="room", data=n, id=n)
        await until(lambda: broker.taken == [0])
        await asyncio.sleep(0.2)  # tokens again
        await send(session, op="publish", channel="room", data="late", id="late")
        await send(session, op="subscribe", channel="other", id="sub")
        await asyncio.sleep(0.05)
        broker.gates[0].set()
        replies = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                replies.append(orjson.loads(await session.recv()))
        assert session.ws.close_code == 1008
        assert broker.taken == [0]
        assert [(r["type"], r["id"]) for r in replies][:2] == [("ack", 0), ("error", 1)]
        assert "other" not in session.conn.channels
        assert await node.broker.presence("other") == {}
    finally:
        await session.close()
        await node.stop()
