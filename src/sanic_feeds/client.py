"""An async Python client for ``/ws`` that never hides a gap.

It reconnects with backoff and jitter and resubscribes every channel with
the last offset and epoch it delivered, so application code sees each
channel's messages once, in order, without a gap, or an explicit
``Subscribed(was_recovering=True, recovered=False)`` that says a gap could not
be filled (a first subscription has ``was_recovering=False``)::

    async with FeedsClient("ws://127.0.0.1:8000") as client:
        await client.subscribe("news")
        async for event in client:
            if isinstance(event, Publication):
                print(event.offset, event.data)
            elif isinstance(event, Subscribed) and event.was_recovering and not event.recovered:
                ...  # messages were missed: reload state from your source of truth

A renewal the server refuses for now (its broker is reconnecting) is retried
with backoff from the same position; one it refuses for good raises
``SubscriptionRefused`` from the iteration, which can then go on with the
other channels.

With identity on, give it ``token=`` or ``get_token=`` (a function, sync or
async, that returns a fresh token). The token travels in the
``Authorization: Bearer`` header. When the server closes the connection
with 4001 (the token ran out) or refuses the upgrade with 401, the client
asks ``get_token()`` for a new one and reconnects at once, recovering what
it missed. ``refresh()`` hands the server a new token without reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .backoff import Backoff
from .errors import CloseCode, ErrorCode, FeedsError
from .events import Join, Leave, Publication, StreamPosition

__all__ = [
    "ClientEvent",
    "CommandFailed",
    "FeedsClient",
    "GetToken",
    "Subscribed",
    "SubscriptionRefused",
]

log = logging.getLogger("sanic_feeds.client")


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A (re)subscription took effect.

    ``was_recovering`` is True when the client asked to continue from a
    position: every renewal after a reconnect, and ``subscribe(since=...)``.
    Then ``recovered`` False means the server could not fill the gap: what
    was published meanwhile is lost to this client, and it continues from
    ``offset``: after a Redis restart without persistence that is offset 0 of the
    new epoch, whose messages follow from offset 1. A first subscription
    (``was_recovering`` False) is never ``recovered`` and has lost nothing.
    ``resumed`` is True on subscriptions the client made by itself after a
    reconnect.
    """

    channel: str
    offset: int
    epoch: str
    recovered: bool
    resumed: bool = False
    was_recovering: bool = False
    #: This connection's own id (as in its ``join`` events), when the server says it.
    client: str | None = None


#: Returns a fresh token, or awaits one.
GetToken = Callable[[], "str | Awaitable[str]"]


ClientEvent = Publication | Join | Leave | Subscribed


class CommandFailed(FeedsError):
    """The server answered a command with an ``error`` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.error_code = ErrorCode(code) if code in ErrorCode._value2member_map_ else None


class SubscriptionRefused(CommandFailed):
    """The server refused to renew ``channel`` after a reconnect, for a reason that
    retrying does not cure (``bad_channel``, ``forbidden``, ``limit_exceeded``...).

    Raised by the iteration over the client's events: the client no longer holds
    ``channel`` and nothing more arrives on it. The other channels go on; iterate
    again to keep reading them, and subscribe again once the cause is fixed.
    """

    def __init__(self, channel: str, code: str, message: str) -> None:
        super().__init__(code, f"cannot resubscribe to {channel!r}: {message}")
        self.channel = channel


# Refusals that say "not now" rather than "never": a renewal refused so is tried
# again, with backoff, on the same connection.
_TRANSIENT = frozenset({ErrorCode.UNAVAILABLE.value, ErrorCode.RATE_LIMITED.value})


class FeedsClient:
    """Client of a sanic-feeds server's ``/ws`` endpoint.

    ``url`` is the server's base URL (``ws://host:port``, ``/ws`` is added
    when missing). At most ``max_buffered`` events wait for the application;
    past that the client stops reading, the server closes it as a slow
    client, and it reconnects and recovers, so nothing grows without bound.
    """

    def __init__(
        self,
        url: str,
        *,
        reconnect: bool = True,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 10.0,
        max_buffered: int = 1000,
        open_timeout_s: float = 10.0,
        command_timeout_s: float = 10.0,
        token: str | None = None,
        get_token: GetToken | None = None,
    ) -> None:
        base = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self.url = base if base.endswith("/ws") else base + "/ws"
        #: The token the next connection shows; ``get_token`` renews it.
        self._token = token
        self._get_token = get_token
        self._reconnect = reconnect
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        self._open_timeout_s = open_timeout_s
        self._command_timeout_s = command_timeout_s
        self._events: asyncio.Queue[ClientEvent | BaseException] = asyncio.Queue(max_buffered)
        #: Subscribed channels and the last position delivered on each; it only moves
        #: forward within an epoch, so nothing already delivered is delivered again.
        self._positions: dict[str, StreamPosition] = {}
        self._pending: dict[int, asyncio.Future[Any]] = {}
        #: The application's subscribe commands in flight: channel and ``since``, by id.
        self._subscribing: dict[int, tuple[str, StreamPosition | None]] = {}
        #: The client's own renewals in flight: channel and the backoff to use if
        #: refused, by id. Ids from an earlier connection are never answered.
        self._renewing: dict[int, tuple[str, Backoff]] = {}
        #: Channels held but not (yet) confirmed by the server on this connection.
        self._unconfirmed: set[str] = set()
        #: Refused renewals waiting out their backoff, by channel.
        self._retries: dict[str, asyncio.Task[None]] = {}
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        #: The close code that ended the last connection (1006: it ended without one),
        #: None before any ended: 1001 means the server went away, 1013 that it gave this
        #: client up (too slow, or its history lost), both followed by a reconnect.
        self.last_close_code: int | None = None

    async def __aenter__(self) -> FeedsClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the first connection; raises ``OSError`` or ``InvalidHandshake`` if it fails
        (``InvalidStatus`` with status 401 for a token the server refuses)."""
        if self._token is None and self._get_token is not None:
            await self._renew_token()
        self._ws = await self._open()
        self._connected.set()
        self._runner = asyncio.create_task(self._run(), name="feeds-client")

    async def _open(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        return await connect(
            self.url, open_timeout=self._open_timeout_s, max_size=None, additional_headers=headers
        )

    async def _renew_token(self) -> bool:
        """Ask ``get_token`` for a fresh token; False when there is none to ask."""
        if self._get_token is None:
            return False
        token = self._get_token()
        self._token = await token if inspect.isawaitable(token) else token
        return True

    async def _try_renew_token(self) -> bool:
        """:meth:`_renew_token` for the connection loop, which must not die of it."""
        try:
            return await self._renew_token()
        except Exception:
            log.exception("get_token failed; reconnecting with the token held")
            return False

    async def refresh(self, token: str | None = None) -> float | None:
        """Hand the server a new token for the same user (``token``, else one from
        ``get_token``) so that the connection outlives the old one's ``exp``; returns the
        new ``exp``. Later reconnects show it too."""
        if token is None:
            if not await self._renew_token():
                raise ValueError("refresh needs a token or get_token")
        else:
            self._token = token
        reply = await self._command("refresh", None, token=self._token)
        exp = reply.get("exp")
        return None if exp is None else float(exp)

    async def close(self) -> None:
        self._closed = True
        self._cancel_retries()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._ws is not None:
            await self._ws.close()

    # -- commands

    async def subscribe(self, channel: str, since: StreamPosition | None = None) -> Subscribed:
        """Subscribe, optionally continuing after ``since``; kept across reconnects."""
        if channel in self._positions:
            # Also while a renewal waits to be retried: the server would take this
            # one, and then refuse the renewal as a second subscription.
            raise CommandFailed(ErrorCode.BAD_REQUEST, f"already subscribed to {channel!r}")
        command_id = next(self._ids)
        # The position is taken from the reply in _dispatch, not here: what follows
        # the reply (recovered messages, live ones) is dispatched before this resumes.
        self._subscribing[command_id] = (channel, since)
        try:
            reply = await self._command(
                "subscribe", channel, command_id=command_id, **_since_fields(since)
            )
        finally:
            self._subscribing.pop(command_id, None)
        return Subscribed(
            channel,
            reply["offset"],
            reply["epoch"],
            reply["recovered"],
            was_recovering=since is not None,
            client=reply.get("client"),
        )

    async def unsubscribe(self, channel: str) -> None:
        self._positions.pop(channel, None)
        if (retry := self._retries.pop(channel, None)) is not None:
            retry.cancel()
        unconfirmed = channel in self._unconfirmed
        self._unconfirmed.discard(channel)
        in_flight = any(name == channel for name, _ in self._renewing.values())
        if unconfirmed and not in_flight:
            return  # the server does not hold it, and no renewal will ask for it
        try:
            await self._command("unsubscribe", channel)
        except CommandFailed as exc:
            # The server answers the renewal in flight first; if it refused that,
            # there is nothing to unsubscribe from.
            if not (unconfirmed and exc.error_code is ErrorCode.BAD_REQUEST):
                raise

    async def publish(self, channel: str, data: Any) -> int:
        """Publish; returns the offset the server assigned."""
        reply = await self._command("publish", channel, data=data)
        return int(reply["offset"])

    async def presence(self, channel: str) -> dict[str, Any]:
        reply = await self._command("presence", channel)
        clients: dict[str, Any] = reply["clients"]
        return clients

    async def history(
        self, channel: str, since: int | None = None, limit: int | None = None
    ) -> list[Publication]:
        fields: dict[str, Any] = {}
        if since is not None:
            fields["since"] = since
        if limit is not None:
            fields["limit"] = limit
        reply = await self._command("history", channel, **fields)
        return [_publication(event) for event in reply["messages"]]

    async def _command(
        self, op: str, channel: str | None, *, command_id: int | None = None, **fields: Any
    ) -> Any:
        await asyncio.wait_for(self._connected.wait(), self._command_timeout_s)
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        if command_id is None:
            command_id = next(self._ids)
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = reply
        command = {"op": op, "id": command_id, **fields}
        if channel is not None:
            command["channel"] = channel
        try:
            await ws.send(orjson.dumps(command).decode())
            return await asyncio.wait_for(reply, self._command_timeout_s)
        finally:
            self._pending.pop(command_id, None)

    # -- events

    def __aiter__(self) -> AsyncIterator[ClientEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ClientEvent]:
        while True:
            event = await self._events.get()
            if isinstance(event, BaseException):
                raise event
            yield event

    # -- the connection loop

    def _new_backoff(self) -> Backoff:
        return Backoff(self._backoff_min_s, self._backoff_max_s)

    async def _run(self) -> None:
        backoff = self._new_backoff()
        resumed = False
        while True:
            ws = self._ws
            if ws is not None:
                if resumed:
                    await self._resubscribe(ws)
                try:
                    async for frame in ws:
                        await self._dispatch(orjson.loads(frame))
                except ConnectionClosed:
                    pass
                # The iteration ends quietly on 1000 and 1001 alike: ask the connection.
                code = ws.close_code if ws.close_code is not None else 1006
                self.last_close_code = code
                if code == CloseCode.TRY_AGAIN_LATER:
                    backoff.reset()  # told to come back with since: no reason to wait
                if code == CloseCode.TOKEN_EXPIRED and await self._try_renew_token():
                    backoff.reset()  # a fresh token is all it takes
                log.info("connection closed (%s); reconnecting", code)
            self._connected.clear()
            self._ws = None
            # Every channel must be confirmed again by the next connection.
            self._unconfirmed = set(self._positions)
            self._renewing.clear()
            self._cancel_retries()
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(ConnectionError("connection lost"))
            if self._closed or not self._reconnect:
                await self._events.put(ConnectionError("connection closed"))
                return
            # Jitter spreads the reconnects of many clients after a restart.
            await asyncio.sleep(backoff.next_delay_s())
            try:
                self._ws = await self._open()
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                log.info("reconnect failed: %s", exc)
                if isinstance(exc, InvalidStatus) and exc.response.status_code == 401:
                    await self._try_renew_token()  # it ran out while we were away
                continue
            resumed = True

    async def _resubscribe(self, ws: ClientConnection) -> None:
        # Sent before the connection is announced, so that commands of the
        # application cannot overtake them.
        for channel in list(self._positions):
            if channel in self._unconfirmed:  # unsubscribe() may run during a send
                await self._renew(ws, channel, self._new_backoff())
        self._connected.set()

    async def _renew(self, ws: ClientConnection, channel: str, backoff: Backoff) -> None:
        """Ask for ``channel`` again from the last position delivered. With an id, so
        that a refusal can be told apart from one of another channel and retried."""
        command_id = next(self._ids)
        self._renewing[command_id] = (channel, backoff)
        command = {"op": "subscribe", "channel": channel, "id": command_id}
        command.update(_since_fields(self._positions[channel]))
        with contextlib.suppress(ConnectionClosed):  # the connection loop reconnects
            await ws.send(orjson.dumps(command).decode())

    async def _renewed(self, channel: str, backoff: Backoff, event: dict[str, Any]) -> None:
        if channel not in self._unconfirmed:
            return  # unsubscribed meanwhile: unsubscribe() deals with the server
        if event.get("type") == "subscribed":
            self._unconfirmed.discard(channel)
            if not event["recovered"]:
                self._advance(channel, StreamPosition(event["offset"], event["epoch"]))
            await self._events.put(
                Subscribed(
                    channel,
                    event["offset"],
                    event["epoch"],
                    event["recovered"],
                    resumed=True,
                    was_recovering=True,  # a renewal always asks from the last position
                    client=event.get("client"),
                )
            )
            return
        code, message = str(event.get("code")), str(event.get("message"))
        if code in _TRANSIENT:
            # The position is kept, so the retry still recovers what was missed.
            log.info("resubscribing to %r refused (%s); retrying", channel, code)
            self._retry_later(channel, backoff)
            return
        log.warning("resubscribing to %r refused: %s: %s", channel, code, message)
        self._unconfirmed.discard(channel)
        del self._positions[channel]
        await self._events.put(SubscriptionRefused(channel, code, message))

    def _retry_later(self, channel: str, backoff: Backoff) -> None:
        ws = self._ws

        async def retry() -> None:
            # Jitter: every client refused during one outage would come back at once.
            await asyncio.sleep(backoff.next_delay_s())
            if self._retries.get(channel) is asyncio.current_task():
                del self._retries[channel]
            if ws is not None and ws is self._ws and channel in self._unconfirmed:
                await self._renew(ws, channel, backoff)

        self._retries[channel] = asyncio.create_task(retry(), name=f"feeds-client-renew-{channel}")

    def _cancel_retries(self) -> None:
        for task in self._retries.values():
            task.cancel()
        self._retries.clear()

    def _advance(self, channel: str, position: StreamPosition) -> None:
        """Move ``channel`` to ``position`` unless it already stands further in that epoch."""
        held = self._positions.get(channel)
        if held is None or held.epoch != position.epoch or position.offset > held.offset:
            self._positions[channel] = position

    async def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message":
            pub = _publication(event)
            seen = self._positions.get(pub.channel)
            if seen is not None and seen.epoch == pub.epoch and pub.offset <= seen.offset:
                return  # already delivered (recovered again after a reconnect)
            if seen is not None:
                self._positions[pub.channel] = StreamPosition(pub.offset, pub.epoch)
            await self._events.put(pub)
        elif kind == "join":
            await self._events.put(Join(event["channel"], event["client"], event.get("info")))
        elif kind == "leave":
            await self._events.put(Leave(event["channel"], event["client"]))
        elif "id" in event and (renewal := self._renewing.pop(event["id"], None)) is not None:
            await self._renewed(*renewal, event)
        elif "id" in event and (reply := self._pending.get(event["id"])) is not None:
            if kind == "error":
                reply.set_exception(CommandFailed(event["code"], event["message"]))
            else:
                reply.set_result(event)
            if kind == "subscribed" and (asked := self._subscribing.get(event["id"])):
                channel, since = asked
                was_recovering = since is not None
                if not event["recovered"] or since is None:
                    since = StreamPosition(event["offset"], event["epoch"])
                self._advance(channel, since)
                await self._events.put(
                    Subscribed(
                        channel,
                        event["offset"],
                        event["epoch"],
                        event["recovered"],
                        was_recovering=was_recovering,
                        client=event.get("client"),
                    )
                )
        elif kind == "error":
            log.warning("server error: %s: %s", event.get("code"), event.get("message"))


def _since_fields(position: StreamPosition | None) -> dict[str, Any]:
    if position is None:
        return {}
    return {"since": position.offset, "epoch": position.epoch}


def _publication(event: dict[str, Any]) -> Publication:
    return Publication(
        channel=event["channel"],
        offset=event["offset"],
        epoch=event["epoch"],
        data=event["data"],
        client=event.get("client"),
        ts_ms=event.get("ts", 0),
    )
