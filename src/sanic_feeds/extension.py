"""``Feeds``: the Sanic extension that mounts the feed server into an app.

The only module, with ``api.py``, that knows Sanic: it registers the routes
and the lifecycle listeners and keeps its state on ``app.ctx.feeds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse
from websockets.http11 import Response as WSResponse

from .api import error_response, register_api
from .brokers import BrokerOptions, create_broker
from .channels import namespace_of, validate_channel, validate_idempotency_key
from .connection import Connection
from .errors import BrokerUnavailable, CloseCode, FeedsError, Forbidden, LimitExceeded
from .feed import parse_since, parse_wire_format, serve_feed
from .hub import Hub
from .multiplex import serve_multiplex
from .outbox import Flusher
from .protocol import Join, Leave, StreamPosition
from .ratelimit import RateLimiter
from .settings import Settings
from .websocket import IOProtocol, Keepalive, ServerWebSocket, accept

__all__ = ["Feeds"]

log = logging.getLogger("sanic_feeds")


class Feeds:
    """Mount live feeds into a Sanic app::

        app = Sanic("myapp")
        feeds = Feeds(app, broker="redis://127.0.0.1:6379/0")

    ``settings`` holds every option of ``sanic-feeds serve``; keyword
    ``options`` override single fields of it (``max_queue=500``).
    """

    def __init__(
        self,
        app: Sanic[Any, Any] | None = None,
        *,
        broker: str | None = None,
        settings: Settings | None = None,
        url_prefix: str = "",
        **options: Any,
    ) -> None:
        settings = settings or Settings()
        if broker is not None:
            options["broker"] = broker
        self.settings = settings.replace(**options) if options else settings
        self.url_prefix = url_prefix
        #: Names this instance in presence entries and heartbeats.
        self.instance_id = secrets.token_hex(6)
        self.broker = create_broker(
            self.settings.broker,
            BrokerOptions(
                history_size=self.settings.history_size,
                history_ttl_s=self.settings.history_ttl_s,
                instance_id=self.instance_id,
            ),
        )
        self._hub: Hub | None = None
        #: Pings every connection of the process; None when --ping-interval is 0.
        self._keepalive: Keepalive | None = None
        self._app: Sanic[Any, Any] | None = None
        #: Open WebSocket connections of this process.
        self.connections: set[Connection] = set()
        #: Upgrades admitted whose handler has not started yet: they count against
        #: --max-connections (a request that never gets there drops out when collected).
        self._upgrading: weakref.WeakSet[Request] = weakref.WeakSet()
        #: Channel departures still running for connections already gone.
        self._cleanups: set[asyncio.Task[None]] = set()
        self._draining = False
        if app is not None:
            self.init_app(app)

    # -- wiring

    def init_app(self, app: Sanic[Any, Any]) -> None:
        settings = self.settings
        self._app = app
        app.ctx.feeds = self
        app.config.GRACEFUL_SHUTDOWN_TIMEOUT = settings.drain_timeout_s
        # The feed endpoints upgrade the connection themselves (websocket.py),
        # on the protocol Sanic uses for WebSocket apps, which forwards the
        # upgraded connection's bytes to whatever it holds as its websocket.
        app.enable_websocket()
        bp = Blueprint("feeds", url_prefix=self.url_prefix or None)

        # Plain functions that return the session's coroutine: one frame less
        # held by every open connection.
        def feed(request: Request, channel: str) -> Coroutine[Any, Any, HTTPResponse | None]:
            since = request.ctx.since
            return self._session(request, lambda conn: serve_feed(self, conn, channel, since))

        def multiplex(request: Request) -> Coroutine[Any, Any, HTTPResponse | None]:
            return self._session(request, lambda conn: serve_multiplex(self, conn))

        for handler, uri in ((feed, "/feed/<channel:path>"), (multiplex, "/ws")):
            # Sanic accepts no response from a handler marked so.
            setattr(handler, "is_websocket", True)  # noqa: B010
            bp.add_route(handler, uri, name=handler.__name__, ctx_feeds_upgrade=True)

        async def admit_upgrade(request: Request) -> HTTPResponse | None:
            # Sanic drops bound methods registered as blueprint middleware.
            return await self._admit_upgrade(request)

        bp.on_request(admit_upgrade)
        register_api(self, bp)
        app.blueprint(bp)
        app.register_listener(self._start, "before_server_start")
        app.register_listener(self._drain, "before_server_stop")
        app.register_listener(self._stop, "after_server_stop")

    async def _start(self, app: Sanic[Any, Any]) -> None:
        loop = asyncio.get_running_loop()
        if self.settings.ping_interval_s > 0:
            self._keepalive = Keepalive(
                loop, self.settings.ping_interval_s, self.settings.ping_timeout_s
            )
        self._hub = Hub(
            self.broker,
            Flusher(loop),
            heal_max=self.settings.recovery_max,
            announce_max=self.settings.join_leave_max,
        )
        await self.broker.start(self._hub)
        log.info(
            "feeds instance %s serving %s, broker %s",
            self.instance_id,
            app.serve_location,
            _redact(self.settings.broker),
        )

    async def _drain(self, app: Sanic[Any, Any]) -> None:
        # Refuse new upgrades, tell every client to go away (1001), and give
        # the handlers a bounded time to leave their channels cleanly.
        self._draining = True
        tasks = [conn.task for conn in self.connections if conn.task is not None]
        for conn in list(self.connections):
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.drain_timeout_s)

    async def _stop(self, app: Sanic[Any, Any]) -> None:
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=self.settings.drain_timeout_s)
        if self._keepalive is not None:
            self._keepalive.close()
        if self._hub is not None:
            await self._hub.close()
        await self.broker.close()

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("the feeds server has not started yet")
        return self._hub

    @property
    def ready(self) -> bool:
        """Serving, not draining, and hearing the broker."""
        # Sanic answers requests before it installs its SIGTERM handler;
        # is_running turns true only after that.
        serving = self._app is not None and self._app.state.is_running
        return serving and self._hub is not None and not self._draining and self.broker.ready

    # -- the public API

    async def publish(
        self, channel: str, data: Any, *, idempotency_key: str | None = None
    ) -> StreamPosition:
        """Publish ``data`` (any JSON value) on ``channel``, from any handler.

        Returns the offset and epoch the broker assigned. A publish repeated
        with the same ``idempotency_key`` within 5 minutes publishes nothing
        and returns the first one's position. Raises ``BadChannel``,
        ``BadRequest`` (a malformed key) or ``BrokerUnavailable``.
        """
        validate_channel(channel)
        if idempotency_key is not None:
            validate_idempotency_key(idempotency_key)
        return await self.broker.publish(channel, data, idempotency_key=idempotency_key)

    # -- connections

    async def _admit_upgrade(self, request: Request) -> HTTPResponse | None:
        """Refuse an upgrade with a plain HTTP error before it happens."""
        route = request.route
        if route is None or not getattr(route.ctx, "feeds_upgrade", False):
            return None
        try:
            if "channel" in request.match_info:
                validate_channel(request.match_info["channel"])
            request.ctx.wire_format = parse_wire_format(request.args.get("format"))
            request.ctx.since = parse_since(request.args.get("since"), request.args.get("epoch"))
            origins = self.settings.allowed_origins
            if origins and request.headers.get("origin") not in origins:
                raise Forbidden("origin not allowed")
            if self._draining:
                raise LimitExceeded("server shutting down")
            if len(self.connections) + len(self._upgrading) >= self.settings.max_connections:
                raise LimitExceeded("too many connections on this instance")
        except FeedsError as exc:
            return error_response(exc)
        self._upgrading.add(request)
        return None

    async def _session(
        self, request: Request, serve: Callable[[Connection], Awaitable[None]]
    ) -> HTTPResponse | None:
        """Upgrade the request's connection and ``serve`` it until it ends."""
        ws = self._upgrade(request)
        if isinstance(ws, HTTPResponse):
            return ws
        conn = self._open(request, ws)
        try:
            await serve(conn)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if ws.io_proto is not None or task is None:
                raise  # the server is stopping
            # Sanic cancels the connection's task once its socket is gone:
            # that is how this connection ended, not an error to report.
            task.uncancel()
        except Exception:
            # Sanic would answer with an HTTP error page, into the WebSocket.
            log.exception("connection %s failed", conn.id)
            conn.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            await self._closed(conn)
        return None

    def _upgrade(self, request: Request) -> ServerWebSocket | HTTPResponse:
        """Switch the request's connection to WebSocket, or say why not over HTTP."""
        self._upgrading.discard(request)
        io_proto = request.transport.get_protocol()
        if not hasattr(io_proto, "websocket"):
            # ASGI, or an app run with a protocol of its own.
            return HTTPResponse("feeds need Sanic's own server and protocol", status=500)
        settings = self.settings
        ws = accept(
            cast(IOProtocol, io_proto),
            request.path,
            request.headers.items(),
            max_message_bytes=settings.max_message_bytes,
            keepalive=self._keepalive,
        )
        if isinstance(ws, WSResponse):
            return HTTPResponse(
                ws.body, status=ws.status_code, headers=dict(ws.headers.raw_items())
            )
        return ws

    def _open(self, request: Request, ws: ServerWebSocket) -> Connection:
        settings = self.settings
        conn = Connection(
            ws,
            self.hub.flusher,
            wire_format=request.ctx.wire_format,
            max_queue=settings.max_queue,
            limiter=RateLimiter(settings.rate_limit, settings.rate_burst),
        )
        self.connections.add(conn)
        return conn

    async def _closed(self, conn: Connection) -> None:
        """Forget ``conn`` and leave its channels, however its handler ended."""
        self.connections.discard(conn)
        conn.outbox.close()
        # Sanic cancels the handler when it stops, at any await; leaving runs
        # in a task of its own so that it always completes.
        cleanup = asyncio.create_task(self._leave_all(conn), name=f"feeds-leave:{conn.id}")
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)
        await asyncio.shield(cleanup)

    async def _leave_all(self, conn: Connection) -> None:
        for channel in list(conn.channels):
            await self.leave(conn, channel)

    async def join(
        self,
        conn: Connection,
        channel: str,
        greet: Callable[[StreamPosition, bool], None],
        since: StreamPosition | None = None,
    ) -> tuple[StreamPosition, bool]:
        """Subscribe ``conn`` to ``channel`` (recovering from ``since``) and announce it."""
        position, recovered = await self.hub.subscribe(
            channel, conn.outbox, conn.wire_format, greet, since
        )
        conn.channels.add(channel)
        try:
            await self.broker.add_presence(channel, conn.id, conn.info)
            if self.settings.joins_announced(namespace_of(channel)):
                await self.broker.publish_event(Join(channel, conn.id, conn.info))
        except BrokerUnavailable:
            log.warning("could not announce %s on %r: broker unavailable", conn.id, channel)
        return position, recovered

    async def leave(self, conn: Connection, channel: str) -> None:
        """Undo :meth:`join`; never raises for a broker that went away."""
        conn.channels.discard(channel)
        await self.hub.unsubscribe(channel, conn.outbox)
        with contextlib.suppress(BrokerUnavailable):
            await self.broker.remove_presence(channel, conn.id)
            if self.settings.joins_announced(namespace_of(channel)):
                await self.broker.publish_event(Leave(channel, conn.id))


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
