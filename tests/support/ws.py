"""WebSocket client helpers for integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = [
    "close_all",
    "close_code",
    "open_feed",
    "publish_http",
    "ready_is",
    "recv_event",
    "recv_messages",
    "track",
    "wait_until",
]

_opened: list[ClientConnection] = []


def track(ws: ClientConnection) -> ClientConnection:
    """Have ``close_all`` (run after every integration test) close ``ws`` too."""
    _opened.append(ws)
    return ws


async def close_all() -> None:
    """Close every connection ``open_feed`` opened (aborted ones included)."""
    while _opened:
        ws = _opened.pop()
        try:
            await asyncio.wait_for(ws.close(), 5)
        except (TimeoutError, OSError):
            ws.transport.abort()


async def open_feed(ws_url: str, channel: str, query: str = "", **kwargs: Any) -> ClientConnection:
    """Connect to ``/feed/<channel>`` and, for JSON clients, read the ``subscribed`` event."""
    suffix = f"?{query}" if query else ""
    ws = await connect(f"{ws_url}/feed/{channel}{suffix}", open_timeout=10, **kwargs)
    _opened.append(ws)
    if "format=raw" not in query:
        event = await recv_event(ws)
        assert event["type"] == "subscribed", event
    return ws


async def recv_event(ws: ClientConnection, timeout_s: float = 10.0) -> Any:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))


async def recv_reply(ws: ClientConnection, timeout_s: float = 10.0) -> Any:
    """The next event that is not a ``join`` or ``leave``: the client's own join is
    announced after its ``subscribed``, and can arrive after the first messages."""
    deadline = time.monotonic() + timeout_s
    while True:
        event = await recv_event(ws, max(deadline - time.monotonic(), 0.001))
        if event["type"] not in ("join", "leave"):
            return event


async def recv_messages(ws: ClientConnection, count: int, timeout_s: float = 20.0) -> list[Any]:
    """The next ``count`` ``message`` events, skipping joins and leaves."""
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"got {len(messages)} of {count} messages: {messages[-3:]}")
        event = await recv_event(ws, remaining)
        if event["type"] == "message":
            messages.append(event)
    return messages


async def close_code(ws: ClientConnection, timeout_s: float = 15.0) -> int | None:
    """Read until the server closes; return the close code it sent."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def publish_http(
    base_url: str, channel: str, data: Any, extra: dict[str, Any] | None = None
) -> Any:
    """POST /api/publish from a thread (``extra``: more fields of the body); returns
    (status, body)."""
    import urllib.error
    import urllib.request

    def post() -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{base_url}/api/publish",
            data=orjson.dumps({"channel": channel, "data": data, **(extra or {})}),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, orjson.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, orjson.loads(error.read())

    return await asyncio.to_thread(post)


async def ready_is(server: Any, status: int) -> bool:
    """Whether ``GET /ready`` of a ``FeedsServer`` answers ``status`` (asked from a thread,
    so that the event loop runs on meanwhile)."""
    return bool(await asyncio.to_thread(server.ready_status) == status)


async def wait_until(condition: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.05)
