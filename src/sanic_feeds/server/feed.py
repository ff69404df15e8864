"""``GET /feed/<channel>``: one channel per connection, the seed's endpoint.

docs/protocol.md, "Feed endpoint".
"""

from __future__ import annotations

from ..codec import WireFormat, data_from_client_text, encode_subscribed
from ..errors import BadRequest, BrokerUnavailable, CloseCode, ErrorCode, FeedsError
from ..events import StreamPosition
from .connection import Connection
from .node import Node

__all__ = ["parse_since", "parse_wire_format", "serve_feed"]


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
    node: Node, conn: Connection, channel: str, since: StreamPosition | None
) -> None:
    """Run one ``/feed`` connection until it closes: subscribe, then relay frames.

    Leaving the channel is the caller's job (``Node.disconnect``), so that it
    happens however this ends.
    """

    def greet(position: StreamPosition, recovered: bool) -> None:
        if conn.wire_format is WireFormat.JSON:
            conn.send(encode_subscribed(channel, position, recovered))

    try:
        await node.subscribe(conn, channel, greet, since)
    except BrokerUnavailable:
        conn.send_error(ErrorCode.UNAVAILABLE, "broker unavailable, try again later")
        conn.close(CloseCode.TRY_AGAIN_LATER, "broker unavailable")
        return
    # Each text frame the client sends is published on the channel.
    while not conn.closed:
        text = conn.text_of(await conn.receive())
        if text is None:
            return
        data, raw = data_from_client_text(text)
        try:
            await node.publish_from(conn, channel, data, raw=raw)
        except FeedsError as exc:
            conn.send_error(exc.code, exc.message)
