"""``GET /ws``: many channels over one connection, driven by JSON commands.

docs/protocol.md, "Commands on /ws".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import orjson

from ..codec import WireFormat, encode_reply, encode_subscribed, error_event, message_event
from ..commands import Command, InvalidCommand, Op, decode_command
from ..errors import FeedsError
from ..events import Publication, StreamPosition
from .connection import Connection
from .node import Node
from .publishing import PublishWindow

__all__ = ["run_command", "serve_multiplex"]

log = logging.getLogger("sanic_feeds.multiplex")


async def serve_multiplex(node: Node, conn: Connection, joins: Sequence[str] = ()) -> None:
    """Run one ``/ws`` connection: each command is answered in order; a bad
    command gets an ``error`` event and the connection stays open. Leaving
    the channels is the caller's job (``Node.disconnect``).

    ``joins``: channels the app's ``on_connect`` hook chose, subscribed first, each
    announced with ``subscribed`` (without ``id``), or an ``error`` (with ``channel``)."""
    for channel in joins:
        await _join(node, conn, channel)
    # Consecutive publishes overlap (publishing.py); any other command waits for them,
    # so that every reply still comes in the order of the commands.
    window = node.publish_window(conn)
    try:
        while not conn.closed:
            text = conn.text_of(await conn.receive())
            if text is None:
                return
            try:
                command = decode_command(text)
            except InvalidCommand as bad:
                await window.settle()
                conn.send_failure(bad.error, bad.command_id)
                continue
            if command.op is Op.PUBLISH:
                await _publish(node, conn, command, window)
                continue
            await window.settle()
            if conn.earned_close:  # by a publish before it: closed 1008 by now
                return
            try:
                await run_command(node, conn, command)
            except FeedsError as exc:
                conn.send_failure(exc, command.id)
    finally:
        await window.settle()


async def _publish(node: Node, conn: Connection, command: Command, window: PublishWindow) -> None:
    def ack(position: StreamPosition | None) -> None:
        if position is not None:
            conn.send(encode_reply("ack", command.id, offset=position.offset, epoch=position.epoch))

    def publish(**handing: Any) -> Awaitable[StreamPosition | None]:
        return node.publish_from(
            conn,
            command.channel,
            command.data,
            idempotency_key=command.idempotency_key,
            **handing,
        )

    await window.submit(publish, ack, command.id)


async def _join(node: Node, conn: Connection, channel: str) -> None:
    """Subscribe ``conn`` to a channel the app chose: no permission or subscribe hook."""

    def greet(position: StreamPosition, recovered: bool) -> None:
        conn.send(encode_subscribed(channel, position, recovered, client=conn.id))

    try:
        await node.subscribe(conn, channel, greet, checked=True)
    except FeedsError as exc:
        log.warning("could not subscribe %s to %r chosen by on_connect: %s", conn.id, channel, exc)
        if conn.wire_format is WireFormat.JSON:
            event = error_event(exc.code, exc.public_message)
            conn.send(orjson.dumps({**event, "channel": channel}))


async def run_command(node: Node, conn: Connection, command: Command) -> None:
    """Run one command other than ``publish`` (``_publish``) and queue its reply; raises
    ``FeedsError`` for the ``error`` reply."""
    channel = command.channel
    if command.op is Op.PING:
        conn.send(encode_reply("pong", command.id))
    elif command.op is Op.SUBSCRIBE:
        since = None if command.since is None else StreamPosition(command.since, command.epoch)

        def greet(position: StreamPosition, recovered: bool) -> None:
            conn.send(encode_subscribed(channel, position, recovered, command.id, client=conn.id))

        await node.subscribe(conn, channel, greet, since)
    elif command.op is Op.UNSUBSCRIBE:
        await node.unsubscribe(conn, channel)
        conn.send(encode_reply("unsubscribed", command.id, channel=channel))
    elif command.op is Op.PRESENCE:
        clients = await node.presence(channel, conn=conn)
        conn.send(encode_reply("presence", command.id, channel=channel, clients=clients))
    elif command.op is Op.HISTORY:
        publications, position = await node.history(
            channel, command.since, command.limit, conn=conn
        )
        fields = {"channel": channel, "offset": position.offset, "epoch": position.epoch}
        conn.send(_history_reply(command.id, publications, fields))
    elif command.op is Op.REFRESH:
        expires_at = node.refresh(conn, command.token)
        conn.send(encode_reply("refreshed", command.id, exp=expires_at))


def _history_reply(command_id: Any, publications: list[Publication], fields: Any) -> bytes:
    """The ``history`` reply. A publication that cannot be written (stored by a foreign
    publisher past ``check_data``) is left out rather than failing the whole reply."""
    try:
        return encode_reply(
            "history", command_id, messages=[message_event(p) for p in publications], **fields
        )
    except orjson.JSONEncodeError:
        writable = []
        for pub in publications:
            try:
                orjson.dumps(message_event(pub))
            except orjson.JSONEncodeError:
                log.error("history of %r: offset %d cannot be written", pub.channel, pub.offset)
                continue
            writable.append(message_event(pub))
        return encode_reply("history", command_id, messages=writable, **fields)
