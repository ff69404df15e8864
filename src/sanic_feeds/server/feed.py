"""``GET /feed/<channel>``: one channel per connection, the seed's endpoint.

docs/protocol.md, "Feed endpoint".
"""

from __future__ import annotations

from functools import partial
from urllib.parse import unquote

from ..codec import WireFormat, data_from_client_text, encode_subscribed
from ..errors import BadChannel, BadRequest, BrokerUnavailable, CloseCode, FeedsError
from ..events import StreamPosition
from ..names import MAX_OFFSET, validate_channel
from .connection import Connection
from .node import Node

__all__ = ["channel_of_path", "parse_since", "parse_wire_format", "serve_feed"]


def channel_of_path(text: str) -> str:
    """The channel a path names, percent-decoded (``encodeURIComponent("chat:room")`` is
    ``chat%3Aroom``); raises ``BadChannel``."""
    try:
        return validate_channel(unquote(text, errors="strict"))
    except UnicodeDecodeError:
        raise BadChannel("invalid channel name: not UTF-8 once percent-decoded") from None


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
    if not 0 <= offset <= MAX_OFFSET:
        raise BadRequest(f"since must be from 0 to {MAX_OFFSET}")
    return StreamPosition(offset, epoch or "")


async def serve_feed(
    node: Node,
    conn: Connection,
    channel: str,
    since: StreamPosition | None,
    *,
    checked: bool = False,
) -> None:
    """Run one ``/feed`` connection until it closes: subscribe, then relay frames.

    Leaving the channel is the caller's job (``Node.disconnect``), so that it
    happens however this ends. ``checked``: admission asked the permissions and the
    app's subscribe hook already (``Node.check_subscription``).
    """
    if not await _subscribe(node, conn, channel, since, checked):
        return
    # Each text frame the client sends is published on the channel; /feed tells
    # only of failures.
    window = node.publish_window(conn)
    try:
        while not conn.closed:
            text = conn.text_of(await conn.receive())
            if text is None:
                return
            try:
                data, raw = data_from_client_text(text)
            except FeedsError as exc:
                await window.settle()  # after the failures of the frames before it
                conn.send_failure(exc)
                continue
            # A partial, not a lambda: a closure would make node, conn, channel, data
            # and raw cells of this frame, held while the connection sits idle.
            await window.submit(partial(node.publish_from, conn, channel, data, raw=raw), _no_reply)
    finally:
        await window.settle()


async def _subscribe(
    node: Node, conn: Connection, channel: str, since: StreamPosition | None, checked: bool
) -> bool:
    """Subscribe ``conn`` to ``channel``, greeting it with ``subscribed``; False when that
    failed (the client was told and the connection closed). A coroutine of its own, so
    that ``greet`` and the cells it closes over are gone once the connection sits idle."""

    def greet(position: StreamPosition, recovered: bool) -> None:
        if conn.wire_format is WireFormat.JSON:
            conn.send(encode_subscribed(channel, position, recovered, client=conn.id))

    try:
        await node.subscribe(conn, channel, greet, since, checked=checked)
    except BrokerUnavailable as exc:
        conn.send_failure(exc)
        conn.close(CloseCode.TRY_AGAIN_LATER, "broker unavailable")
        return False
    except FeedsError as exc:
        # Admission checked the channel already; this is what changed since (or, not
        # checked there, what the hook refused).
        conn.send_failure(exc)
        conn.close(CloseCode.POLICY_VIOLATION, exc.public_message[:100])
        return False
    return True


def _no_reply(position: StreamPosition | None) -> None:
    return None
