"""One connection to one Redis Cluster primary, for its sharded pub/sub.

The cluster broker (``cluster.py``) keeps one reader per primary. A reader sends
``SSUBSCRIBE`` and ``SUNSUBSCRIBE``, one name per command, and reads what the node
sends, telling it apart: each command gets exactly one reply, in the order sent (a
confirmation, or an error such as ``MOVED`` when the node does not own the name's
slot), while messages and unsolicited ``sunsubscribe`` (the node gave the slot away)
come at any time. It decides nothing: every event goes to its listener, on the
event loop, synchronously.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from typing import Protocol

from redis.asyncio import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from .closing import cancel_within, finish_within
from .slots import NodeAddress

__all__ = ["ShardListener", "ShardReader"]

log = logging.getLogger("sanic_feeds.broker")


class ShardListener(Protocol):
    """What a reader tells; every call runs on the event loop and must not block."""

    def on_message(self, reader: ShardReader, name: bytes, payload: bytes) -> None:
        """A message on ``name``."""

    def on_subscribed(self, reader: ShardReader, name: bytes) -> None:
        """The node confirmed ``SSUBSCRIBE name``: what is published there from now on
        reaches this reader."""

    def on_refused(self, reader: ShardReader, name: bytes, error: ResponseError) -> None:
        """The node answered ``SSUBSCRIBE name`` with an error (``MOVED``: another node
        owns the slot; ``CLUSTERDOWN``, ``TRYAGAIN``): ``name`` is not subscribed."""

    def on_dropped(self, reader: ShardReader, name: bytes) -> None:
        """The node ended the subscription to ``name`` by itself: it no longer owns the
        slot (a migration, or a failover made it a replica)."""

    def on_closed(self, reader: ShardReader, error: BaseException | None) -> None:
        """The connection ended by itself (``close()`` does not call this): every
        subscription of this reader is gone."""


class ShardReader:
    """The pub/sub connection to the primary at ``address``. ``open()``, then
    ``subscribe``/``unsubscribe``; ``close()`` ends it. Commands raise ``RedisError``
    or ``OSError`` when the connection is broken (the listener hears ``on_closed``)."""

    def __init__(
        self,
        address: NodeAddress,
        listener: ShardListener,
        *,
        username: str | None = None,
        password: str | None = None,
        client_name: str | None = None,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self.address = address
        self._listener = listener
        # RESP2, so that subscription replies and messages are plain arrays; no
        # read timeout (the heartbeat tells a deaf connection) and no retries (a
        # silent reconnect would hide what was lost meanwhile).
        self._connection = Connection(
            host=address.host,
            port=address.port,
            username=username,
            password=password,
            client_name=client_name,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )
        #: Commands sent and not answered yet, in order: (is SSUBSCRIBE, name).
        self._sent: collections.deque[tuple[bool, bytes]] = collections.deque()
        #: Held while a command is appended to ``_sent`` and written, so that the
        #: node receives commands in the order of ``_sent``.
        self._sending = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: When the connection was opened (monotonic seconds); 0 before.
        self.connected_at_s = 0.0
        #: The name this process hears its own heartbeat on through this node, set by
        #: the broker; None while it has none.
        self.heartbeat: bytes | None = None
        #: Whether the node confirmed the heartbeat's subscription.
        self.heartbeat_live = False
        #: When the heartbeat was last heard (monotonic seconds).
        self.heard_s = 0.0
        #: When anything (a message, a reply) was last read from the connection
        #: (monotonic seconds): under overload the heartbeat waits behind a backlog,
        #: and a connection that delivers that backlog is slow, not deaf.
        self.received_s = 0.0

    def __repr__(self) -> str:
        return f"<ShardReader {self.address}>"

    async def open(self) -> None:
        """Connect and start reading; raises ``RedisError`` or ``OSError``."""
        await self._connection.connect()  # type: ignore[no-untyped-call]
        self.connected_at_s = time.monotonic()
        self._task = asyncio.create_task(self._read_forever(), name=f"feeds-shard:{self.address}")

    async def subscribe(self, name: bytes) -> None:
        """Send ``SSUBSCRIBE name``; the answer comes through the listener."""
        await self._send(True, name)

    async def unsubscribe(self, name: bytes) -> None:
        """Send ``SUNSUBSCRIBE name``; its reply is not reported."""
        await self._send(False, name)

    async def _send(self, subscribing: bool, name: bytes) -> None:
        if self._closed:
            raise ConnectionError(f"the connection to {self.address} is closed")
        async with self._sending:
            self._sent.append((subscribing, name))
            await self._connection.send_command(
                "SSUBSCRIBE" if subscribing else "SUNSUBSCRIBE", name
            )

    async def close(self) -> None:
        """Stop reading and disconnect. Idempotent; the listener is not told."""
        self._closed = True
        task, self._task = self._task, None
        await cancel_within((task,), f"the shard reader of {self.address}")
        await finish_within(self._connection.disconnect(), f"the shard connection {self.address}")

    async def _read_forever(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                try:
                    reply = await self._connection.read_response(timeout=math.inf)
                except ResponseError as exc:
                    self.received_s = time.monotonic()
                    self._answered_by_error(exc)
                else:
                    self.received_s = time.monotonic()
                    self._dispatch(reply)
        except (RedisError, OSError) as exc:
            error = exc
        except Exception as exc:
            # A bug, not the network: say so, and let the broker start afresh.
            log.exception("shard reader of %s failed", self.address)
            error = exc
        finally:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(RedisError, OSError):
                    await self._connection.disconnect()
                self._listener.on_closed(self, error)

    def _answered_by_error(self, error: ResponseError) -> None:
        if not self._sent:
            log.warning("unexpected error from %s: %s", self.address, error)
            return
        subscribing, name = self._sent.popleft()
        if subscribing:
            self._listener.on_refused(self, name, error)
        # A refused SUNSUBSCRIBE (MOVED): the node has no such subscription anyway.

    def _dispatch(self, reply: object) -> None:
        if not (isinstance(reply, list) and len(reply) == 3 and isinstance(reply[1], bytes)):
            return
        kind, name, data = reply
        if kind == b"smessage":
            if isinstance(data, bytes):
                self._listener.on_message(self, name, data)
        elif kind == b"ssubscribe":
            if self._sent and self._sent[0] == (True, name):
                self._sent.popleft()
                self._listener.on_subscribed(self, name)
            else:
                log.warning("unexpected ssubscribe of %r from %s", name, self.address)
        elif kind == b"sunsubscribe":
            if self._sent and self._sent[0] == (False, name):
                self._sent.popleft()  # the reply to ours
            else:
                self._listener.on_dropped(self, name)
