"""The drill's clients, each feeding its ledger.

Each client starts on instance ``i mod N`` and moves to the next instance
whenever it reconnects, as behind a round-robin load balancer. ``/feed``
clients read through the bench's :class:`~sanic_feeds.bench.wire.FeedSocket`
(no task per frame); JSON ones reconnect with ``?since=&epoch=`` from the
last offset they got. ``/ws`` clients are :class:`~sanic_feeds.FeedsClient`
with its own reconnects and backoff, as an application runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from websockets.exceptions import InvalidHandshake

from ..backoff import Backoff
from ..bench.clients import feed_url
from ..bench.wire import FeedSocket, HandshakeRefused, open_socket
from ..client import CommandFailed, FeedsClient, Subscribed, SubscriptionRefused
from ..events import Publication, StreamPosition
from .ledger import OffsetLedger, RawLedger

__all__ = ["FeedSubscriber", "WsSubscriber"]

#: ``/feed`` clients' reconnect delays: jittered, from 0.1 s up to 2 s.
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.1, 2.0
#: Seconds an opening handshake may take.
_OPEN_TIMEOUT_S = 5.0


def _sent_at(data: Any) -> float | None:
    sent_at = data.get("t") if isinstance(data, dict) else None
    return float(sent_at) if isinstance(sent_at, int | float) else None


class FeedSubscriber:
    """A ``/feed/<channel>`` client, raw (``ledger`` a :class:`RawLedger`) or JSON
    (an :class:`OffsetLedger`), reconnecting until :meth:`stop`."""

    def __init__(
        self, urls: Sequence[str], start: int, channel: str, ledger: OffsetLedger | RawLedger
    ) -> None:
        self._urls = list(urls)
        self._turn = start
        self._channel = channel
        self.ledger = ledger
        #: Set once the first connection is open (raw) or subscribed (JSON).
        self.ready = asyncio.Event()
        #: Close codes of the connections that ended (1006: without a close frame),
        #: and ``refused`` for connections that did not open.
        self.closes: Counter[str] = Counter()
        self.errors = 0
        self._socket: FeedSocket | None = None
        self._paused = False
        self._stopping = asyncio.Event()

    @property
    def raw(self) -> bool:
        return isinstance(self.ledger, RawLedger)

    def _url(self) -> str:
        base = feed_url(self._urls[self._turn % len(self._urls)], self._channel)
        self._turn += 1
        if self.raw:
            return base + "?format=raw"
        position = self.ledger.position if isinstance(self.ledger, OffsetLedger) else None
        if position is None:
            return base
        return f"{base}?since={position.offset}&epoch={position.epoch}"

    async def run(self) -> None:
        backoff = Backoff(_BACKOFF_MIN_S, _BACKOFF_MAX_S)
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(_OPEN_TIMEOUT_S):
                    socket = await open_socket(self._url(), self._on_text)
            except (OSError, HandshakeRefused, TimeoutError, ValueError):
                self.closes["refused"] += 1
                await asyncio.sleep(backoff.next_delay_s())
                continue
            self._socket = socket
            if self._paused and socket.transport is not None:
                socket.transport.pause_reading()
            if self.raw:
                self.ready.set()
            backoff.reset()
            code = await socket.closed
            self._socket = None
            if self._stopping.is_set():
                return
            self.closes[str(code)] += 1
            await asyncio.sleep(backoff.next_delay_s())

    def _on_text(self, payload: bytes) -> None:
        now = time.monotonic()
        ledger = self.ledger
        if isinstance(ledger, RawLedger):
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return  # "Client <id> has joined": not a publication
            if isinstance(data, dict) and isinstance(data.get("s"), int):
                ledger.message(data["s"], _sent_at(data), now)
            return
        event = orjson.loads(payload)
        kind = event.get("type")
        if kind == "message":
            position = StreamPosition(event["offset"], event["epoch"])
            ledger.message(position, _sent_at(event.get("data")), now)
        elif kind == "subscribed":
            position = StreamPosition(event["offset"], event["epoch"])
            ledger.subscribed(position, event["recovered"], now)
            self.ready.set()
        elif kind == "error":
            self.errors += 1

    def pause(self) -> None:
        """Stop reading (a slow client): the server's frames pile up for it."""
        self._paused = True
        if self._socket is not None and self._socket.transport is not None:
            self._socket.transport.pause_reading()

    def resume(self) -> None:
        self._paused = False
        if self._socket is not None and self._socket.transport is not None:
            self._socket.transport.resume_reading()

    async def stop(self) -> None:
        self._stopping.set()
        socket = self._socket
        if socket is not None:
            self.resume()
            await socket.close(timeout_s=2.0)


class _RotatingClient(FeedsClient):
    """A ``FeedsClient`` that moves to the next URL at every connection attempt.

    ``FeedsClient`` reads ``url`` once per attempt (``connect`` and each
    reconnect), so a property that turns at each read is a load balancer
    in front of it, without changing how the client reconnects.
    """

    def __init__(self, urls: Sequence[str], start: int, **options: Any) -> None:
        self._ws_urls = [url.rstrip("/") + "/ws" for url in urls]
        self._turn = start
        #: Connection attempts so far.
        self.attempts = 0
        super().__init__(self._ws_urls[start % len(self._ws_urls)], **options)

    @property
    def turn(self) -> int:
        return self._turn

    @property
    def url(self) -> str:
        url = self._ws_urls[self._turn % len(self._ws_urls)]
        self._turn += 1
        self.attempts += 1
        return url

    @url.setter
    def url(self, value: str) -> None:
        pass  # FeedsClient.__init__ sets its one URL; the rotation decides


class WsSubscriber:
    """A ``/ws`` client through ``FeedsClient``, until :meth:`stop`."""

    def __init__(self, urls: Sequence[str], start: int, channel: str, ledger: OffsetLedger) -> None:
        self._urls = list(urls)
        self._client = _RotatingClient(urls, start)
        self._channel = channel
        self.ledger = ledger
        self.ready = asyncio.Event()
        #: By close code, the connections a renewal followed (FeedsClient's
        #: ``last_close_code``); ``refused``: first connections that failed.
        self.closes: Counter[str] = Counter()
        self.errors = 0

    async def run(self) -> None:
        backoff = Backoff(_BACKOFF_MIN_S, _BACKOFF_MAX_S)
        while True:  # the first connection: FeedsClient reconnects by itself after it
            try:
                await self._client.connect()
                await self._client.subscribe(self._channel)
                break
            except (OSError, InvalidHandshake, TimeoutError, CommandFailed):
                self.closes["refused"] += 1
                await self._client.close()
                self._client = _RotatingClient(self._urls, self._client.turn)
                await asyncio.sleep(backoff.next_delay_s())
        while True:
            try:
                async for event in self._client:
                    now = time.monotonic()
                    if isinstance(event, Publication):
                        position = StreamPosition(event.offset, event.epoch)
                        self.ledger.message(position, _sent_at(event.data), now)
                    elif isinstance(event, Subscribed):
                        position = StreamPosition(event.offset, event.epoch)
                        self.ledger.subscribed(position, event.recovered, now)
                        if event.resumed:
                            # What ended the connection this renewal follows.
                            self.closes[str(self._client.last_close_code)] += 1
                        self.ready.set()
            except SubscriptionRefused:
                self.errors += 1
                continue
            except ConnectionError:
                return

    @property
    def attempts(self) -> int:
        return self._client.attempts

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.close()
