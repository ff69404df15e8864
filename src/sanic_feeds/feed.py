"""``GET /feed/<channel>``: one channel per connection, the seed's endpoint."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .errors import BadRequest, BrokerUnavailable, CloseCode, ErrorCode
from .protocol import StreamPosition, WireFormat, data_from_client_text, encode_subscribed
from .ratelimit import Verdict

if TYPE_CHECKING:
    from .connection import Connection
    from .extension import Feeds

__all__ = ["parse_since", "parse_wire_format", "serve_feed"]

log = logging.getLogger("sanic_feeds.feed")


def parse_wire_format(value: str | None) -> WireFormat:
    if value in (None, "", "json"):
        return WireFormat.JSON
    if value == "raw":
        return WireFormat.RAW
    raise BadRequest(f"unknown format {value!r}: use json or raw")


def parse_since(since: str | None, epoch: str | None) -> StreamPosition | None:
    """``?since=<offset>&epoch=<epoch>``: where a recovering client left off."""
    if since is None or since == "":
        return None
    try:
        offset = int(since)
    except ValueError:
        raise BadRequest(f"since must be an offset (an integer), not {since!r}") from None
    if offset < 0:
        raise BadRequest("since must not be negative")
    return StreamPosition(offset, epoch or "")


async def serve_feed(
    feeds: Feeds, conn: Connection, channel: str, since: StreamPosition | None
) -> None:
    """Run one ``/feed`` connection until it closes: subscribe, then relay frames.

    Leaving the channel is the caller's job, so that it happens however this ends.
    """

    def greet(position: StreamPosition, recovered: bool) -> None:
        if conn.wire_format is WireFormat.JSON:
            conn.send(encode_subscribed(channel, position, recovered))

    try:
        await feeds.join(conn, channel, greet, since)
    except BrokerUnavailable:
        conn.send_error(ErrorCode.UNAVAILABLE, "broker unavailable, try again later")
        conn.close(CloseCode.TRY_AGAIN_LATER, "broker unavailable")
        return
    await _relay_frames(feeds, conn, channel)


async def _relay_frames(feeds: Feeds, conn: Connection, channel: str) -> None:
    """Publish every text frame the client sends, within its rate limit."""
    while not conn.closed:
        frame = await conn.receive()
        if frame is None:
            return
        if isinstance(frame, bytes):
            conn.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
            return
        verdict = conn.limiter.check(time.monotonic())
        if verdict is Verdict.REJECT:
            conn.send_error(ErrorCode.RATE_LIMITED, "publishing too fast, message dropped")
            continue
        if verdict is Verdict.DISCONNECT:
            conn.close(CloseCode.POLICY_VIOLATION, "publish rate limit exceeded")
            return
        data, raw = data_from_client_text(frame)
        try:
            await feeds.broker.publish(channel, data, client=conn.id, raw=raw)
        except BrokerUnavailable:
            conn.send_error(ErrorCode.UNAVAILABLE, "broker unavailable, message not published")
