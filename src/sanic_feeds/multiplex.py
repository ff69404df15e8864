"""``GET /ws``: many channels over one connection, driven by JSON commands."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .commands import Command, InvalidCommand, Op, decode_command
from .errors import BadRequest, CloseCode, FeedsError, LimitExceeded, RateLimited
from .protocol import StreamPosition, encode_reply, encode_subscribed, message_event
from .ratelimit import Verdict

if TYPE_CHECKING:
    from .connection import Connection
    from .extension import Feeds

__all__ = ["serve_multiplex"]


async def serve_multiplex(feeds: Feeds, conn: Connection) -> None:
    """Run one ``/ws`` connection: each command is answered in order; a bad
    command gets an ``error`` event and the connection stays open. Leaving
    the channels is the caller's job."""
    while not conn.closed:
        frame = await conn.receive()
        if frame is None:
            return
        if isinstance(frame, bytes):
            conn.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
            return
        try:
            command = decode_command(frame)
        except InvalidCommand as bad:
            conn.send_error(bad.error.code, bad.error.message, bad.command_id)
            continue
        try:
            await _run(feeds, conn, command)
        except FeedsError as exc:
            conn.send_error(exc.code, exc.message, command.id)


async def _run(feeds: Feeds, conn: Connection, command: Command) -> None:
    channel = command.channel
    if command.op is Op.PING:
        conn.send(encode_reply("pong", command.id))
    elif command.op is Op.SUBSCRIBE:
        if channel in conn.channels:
            raise BadRequest(f"already subscribed to {channel!r}")
        if len(conn.channels) >= feeds.settings.max_subscriptions:
            raise LimitExceeded(
                f"at most {feeds.settings.max_subscriptions} subscriptions per connection"
            )
        since = None if command.since is None else StreamPosition(command.since, command.epoch)

        def greet(position: StreamPosition, recovered: bool) -> None:
            conn.send(encode_subscribed(channel, position, recovered, command.id))

        await feeds.join(conn, channel, greet, since)
    elif command.op is Op.UNSUBSCRIBE:
        if channel not in conn.channels:
            raise BadRequest(f"not subscribed to {channel!r}")
        await feeds.leave(conn, channel)
        conn.send(encode_reply("unsubscribed", command.id, channel=channel))
    elif command.op is Op.PUBLISH:
        verdict = conn.limiter.check(time.monotonic())
        if verdict is Verdict.DISCONNECT:
            conn.close(CloseCode.POLICY_VIOLATION, "publish rate limit exceeded")
            return
        if verdict is Verdict.REJECT:
            raise RateLimited("publishing too fast, message dropped")
        position = await feeds.broker.publish(channel, command.data, client=conn.id)
        conn.send(encode_reply("ack", command.id, offset=position.offset))
    elif command.op is Op.PRESENCE:
        clients = await feeds.broker.presence(channel)
        conn.send(encode_reply("presence", command.id, channel=channel, clients=clients))
    elif command.op is Op.HISTORY:
        limit = command.limit or feeds.settings.history_size or 1
        publications, position = await feeds.broker.history(channel, command.since, limit)
        conn.send(
            encode_reply(
                "history",
                command.id,
                channel=channel,
                messages=[message_event(pub) for pub in publications],
                offset=position.offset,
                epoch=position.epoch,
            )
        )
