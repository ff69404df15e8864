"""``Feeds``: the Sanic extension that mounts the feed server into an app.

The web edge: it registers the routes and the lifecycle listeners, upgrades
and admits connections, and keeps its state on ``app.ctx.feeds``. What a
connection may do is the :class:`~.node.Node`'s to decide.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs

from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse
from websockets.http11 import Response as WSResponse

from ..auth import Identity
from ..brokers import Broker, redact_url
from ..errors import CloseCode, FeedsError, Forbidden
from ..events import StreamPosition
from ..logs import set_instance
from ..origins import OriginPolicy
from ..settings import Settings
from . import metrics
from .api import error_response, register_api
from .assets import load_assets
from .connection import Connection, new_client_id
from .feed import channel_of_path, parse_since, parse_wire_format, serve_feed
from .hooks import ClientView, ConnectHook, DisconnectHook, PublishHook, SubscribeHook
from .multiplex import serve_multiplex
from .node import Node
from .static import register_static
from .websocket import IOProtocol, Keepalive, ServerWebSocket, accept, handshake_headers

__all__ = ["Authenticate", "Feeds", "Gate", "release_http_state", "token_of"]

log = logging.getLogger("sanic_feeds")
#: One line per WebSocket upgrade, when the connection ends or the upgrade is refused.
access_log = logging.getLogger("sanic_feeds.access")

_Connect = TypeVar("_Connect", bound=ConnectHook)
_Disconnect = TypeVar("_Disconnect", bound=DisconnectHook)
_Subscribe = TypeVar("_Subscribe", bound=SubscribeHook)
_Publish = TypeVar("_Publish", bound=PublishHook)

#: ``Feeds(app, authenticate=fn)``: who a request's connection is, from the app's own
#: session or cookie; None when it cannot tell (HTTP 401, unless public channels let it in).
Authenticate = Callable[[Request], Awaitable[Identity | None]]


def token_of(request: Request) -> str | None:
    """The token a request shows: ``Authorization: Bearer <token>``, else ``?token=``."""
    scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return query_arg(request, "token") or None


def query_arg(request: Request, name: str) -> str | None:
    """``request.args.get(name)``, without filling ``request.args``: Sanic keeps what that
    parses (about 300 bytes) for as long as the request lives, which for a WebSocket is
    as long as the connection."""
    values = parse_qs(request.query_string, encoding="utf-8", errors="replace").get(name)
    return values[0] if values else None


class _MalformedRequestLine(logging.Filter):
    """Sanic logs a request line it cannot parse as four chained tracebacks that quote
    the raw bytes, terminal escapes included (its error page re-parses the same URL and
    fails again). Make that one escaped line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and str(exc).startswith("Bad URL: "):
            url = str(exc)[len("Bad URL: ") :]
            record.msg, record.args = (
                "refused a request with a malformed URL: %s",
                (ascii(url[:200]),),
            )
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install_log_filter() -> None:
    """Put :class:`_MalformedRequestLine` on Sanic's error logger, once."""
    logger = logging.getLogger("sanic.error")
    if not any(isinstance(f, _MalformedRequestLine) for f in logger.filters):
        logger.addFilter(_MalformedRequestLine())


class Feeds:
    """Mount live feeds into a Sanic app::

        app = Sanic("myapp")
        feeds = Feeds(app, broker="redis://127.0.0.1:6379/0")

    ``broker`` is a URL or a :class:`~sanic_feeds.brokers.base.Broker` (which
    the extension starts and closes with the app). ``settings`` holds every
    option of ``sanic-feeds serve``; keyword ``options`` override single
    fields of it (``max_queue=500``).

    ``authenticate``: ``async fn(request)`` returning the connection's
    :class:`~sanic_feeds.auth.Identity` from the app's own session or cookie, or None.
    It is asked when a request shows no token (or tokens are off); with it, a
    connection needs an identity as with ``--token-secret``. It may raise a
    ``FeedsError`` (``Forbidden``) to refuse with that error's status.
    """

    def __init__(
        self,
        app: Sanic[Any, Any] | None = None,
        *,
        broker: Broker | str | None = None,
        settings: Settings | None = None,
        url_prefix: str = "",
        authenticate: Authenticate | None = None,
        **options: Any,
    ) -> None:
        settings = settings or Settings()
        if isinstance(broker, str):
            options["broker"] = broker
        settings = settings.replace(**options) if options else settings
        #: The domain service: connections, channels, publishing.
        self.node = Node(
            settings,
            broker=None if isinstance(broker, str) else broker,
            identities_from_elsewhere=authenticate is not None,
        )
        self._authenticate = authenticate
        self._origins = OriginPolicy(settings.allowed_origins)
        self.url_prefix = url_prefix
        #: Pings every connection of the process; None when --ping-interval is 0.
        self._keepalive: Keepalive | None = None
        self._app: Sanic[Any, Any] | None = None
        #: Upgrades admitted whose handler has not started yet: they count against
        #: --max-connections (a request that never gets there drops out when collected).
        self._upgrading: weakref.WeakSet[Request] = weakref.WeakSet()
        #: When the shutdown must be over (loop time), once draining started.
        self._stop_by: float | None = None
        if app is not None:
            self.init_app(app)

    @property
    def settings(self) -> Settings:
        return self.node.settings

    @property
    def broker(self) -> Broker:
        return self.node.broker

    @property
    def instance_id(self) -> str:
        return self.node.instance_id

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
        node = self.node

        # Plain functions that return the session's coroutine: one frame less
        # held by every open connection. What the session serves is a function and its
        # arguments, not a closure: no function object and cells held as long.
        def feed(request: Request, channel: str) -> Coroutine[Any, Any, HTTPResponse | None]:
            ctx = request.ctx
            return self._session(request, _serve_checked_feed, ctx.channel, ctx.since)

        def multiplex(request: Request) -> Coroutine[Any, Any, HTTPResponse | None]:
            return self._session(request, serve_multiplex, request.ctx.joins)

        for handler, uri in ((feed, "/feed/<channel:path>"), (multiplex, "/ws")):
            # Sanic accepts no response from a handler marked so.
            setattr(handler, "is_websocket", True)  # noqa: B010
            bp.add_route(handler, uri, name=handler.__name__, ctx_feeds_upgrade=True)

        async def admit_upgrade(request: Request) -> HTTPResponse | None:
            # Sanic drops bound methods registered as blueprint middleware.
            return await self._admit_upgrade(request)

        bp.on_request(admit_upgrade)
        register_api(bp, node, lambda: self.ready, self._origins)
        register_static(bp, load_assets(self.url_prefix, settings.demo_page))
        app.blueprint(bp)
        install_log_filter()
        app.register_listener(self._start, "before_server_start")
        app.register_listener(self._drain, "before_server_stop")
        app.register_listener(self._stop, "after_server_stop")

    async def _start(self, app: Sanic[Any, Any]) -> None:
        settings = self.settings
        if settings.ping_interval_s > 0:
            self._keepalive = Keepalive(
                asyncio.get_running_loop(), settings.ping_interval_s, settings.ping_timeout_s
            )
        set_instance(self.instance_id)
        await self.node.start(address=app.serve_location)
        log.info(
            "feeds instance %s serving %s, broker %s",
            self.instance_id,
            app.serve_location,
            redact_url(settings.broker),
        )
        if self._authenticate is not None and not self._origins.restricted:
            # A page of any site could open a WebSocket that the browser sends the
            # user's cookies with (cross-site WebSocket hijacking).
            log.warning("authenticate= without allowed_origins: any web page may connect")

    async def _drain(self, app: Sanic[Any, Any]) -> None:
        # One deadline, --drain-timeout from SIGTERM, bounds every step of the
        # shutdown: this one, Sanic's wait for HTTP connections, and _stop.
        loop = asyncio.get_running_loop()
        self._stop_by = loop.time() + self.settings.drain_timeout_s
        # Busy keep-alive HTTP clients get "Connection: close" with their next
        # answer (the API answers 503 meanwhile) instead of holding Sanic's
        # graceful wait to its end.
        app.config.KEEP_ALIVE = False
        # Refuse new upgrades, tell every client to go away (1001), and give
        # the handlers the time left to leave their channels cleanly.
        tasks = self.node.drain()
        if tasks:
            await asyncio.wait(tasks, timeout=self._time_left_s())
        # Sanic waits this long for HTTP connections, after this listener.
        app.config.GRACEFUL_SHUTDOWN_TIMEOUT = self._time_left_s()

    async def _stop(self, app: Sanic[Any, Any]) -> None:
        if self._keepalive is not None:
            self._keepalive.close()
        await self.node.stop(timeout_s=self._time_left_s())
        metrics.process_stopped()

    def _time_left_s(self) -> float:
        """Seconds left before the drain deadline (the whole drain timeout before it starts)."""
        if self._stop_by is None:
            return self.settings.drain_timeout_s
        return max(0.0, self._stop_by - asyncio.get_running_loop().time())

    @property
    def ready(self) -> bool:
        """Serving, not draining, and hearing the broker."""
        # Sanic answers requests before it installs its SIGTERM handler;
        # is_running turns true only after that.
        serving = self._app is not None and self._app.state.is_running
        return serving and self.node.ready

    # -- the public API

    async def publish(
        self, channel: str, data: Any, *, idempotency_key: str | None = None
    ) -> StreamPosition:
        """Publish ``data`` (any JSON value) on ``channel``, from any handler, as the backend:
        no hook runs. See :meth:`Node.publish <sanic_feeds.server.node.Node.publish>`."""
        return await self.node.publish(channel, data, idempotency_key=idempotency_key)

    # -- the app's hooks (server/hooks.py says how they are matched and run)

    def on_connect(self, fn: _Connect) -> _Connect:
        """Decorate ``async fn(request, identity)``, run before every upgrade (``/ws`` and
        ``/feed``), after the token or ``authenticate`` and the origin check. Raise a
        ``FeedsError`` (``Forbidden``) to refuse with its HTTP status; return channel
        names (or None) that a ``/ws`` connection is subscribed to at once, without
        permission checks or subscribe hooks (the app chose them), each announced with
        ``subscribed``. A ``/feed`` connection ignores them."""
        self.node.hooks.add_connect(fn)
        return fn

    def on_subscribe(self, pattern: str) -> Callable[[_Subscribe], _Subscribe]:
        """Decorate ``async fn(client, channel)``, run when a connection subscribes to a
        channel ``pattern`` matches (and the identity allows), before it is subscribed.
        ``client`` is a read-only :class:`~.hooks.ClientView`. Raise ``Forbidden`` (or any
        ``FeedsError``) to refuse: an ``error`` on ``/ws``, HTTP 403 before a ``/feed``
        upgrade."""

        def register(fn: _Subscribe) -> _Subscribe:
            self.node.hooks.add_subscribe(pattern, fn)
            return fn

        return register

    def on_publish(self, pattern: str) -> Callable[[_Publish], _Publish]:
        """Decorate ``async fn(client, channel, data)``, run once per client publish on a
        channel ``pattern`` matches, on the instance the client is connected to; it
        returns the data to publish, changed or not (None only for null data). Raise a
        ``FeedsError`` (``BadRequest``, ``Forbidden``, ``RateLimited``) to refuse with its
        code. ``Feeds.publish`` and ``POST /api/publish`` run no hook."""

        def register(fn: _Publish) -> _Publish:
            self.node.hooks.add_publish(pattern, fn)
            return fn

        return register

    def on_disconnect(self, fn: _Disconnect) -> _Disconnect:
        """Decorate ``async fn(client, code)``, run once a connection ended and left its
        channels (``client.channels`` are those it had), with the close code (the
        server's, else the client's, 1006 when none was exchanged). What it raises is
        logged."""
        self.node.hooks.add_disconnect(fn)
        return fn

    # -- connections

    async def _admit_upgrade(self, request: Request) -> HTTPResponse | None:
        """Refuse an upgrade with a plain HTTP error before it happens."""
        route = request.route
        if route is None or not getattr(route.ctx, "feeds_upgrade", False):
            return None
        request.ctx.feeds_started_s = time.monotonic()
        node = self.node
        try:
            channel = None
            if "channel" in request.match_info:
                channel = request.ctx.channel = channel_of_path(request.match_info["channel"])
            request.ctx.wire_format = parse_wire_format(query_arg(request, "format"))
            request.ctx.since = parse_since(
                query_arg(request, "since"), query_arg(request, "epoch")
            )
            if not self._origins.allows(request.headers.get("origin")):
                raise Forbidden("origin not allowed")
            node.admit(upgrading=len(self._upgrading))
            # Counted from now: the hooks below may take seconds, and requests admitted
            # meanwhile must see this one.
            self._upgrading.add(request)
            identity = await self._identify(request)
            request.ctx.identity = identity
            request.ctx.access = access = node.access_for(identity)
            request.ctx.client_id = client_id = new_client_id()
            request.ctx.joins = await node.hooks.connect(request, identity)
            if channel is not None:
                client = ClientView(client_id, identity, ())
                await node.check_subscription(access, client, channel)
        except FeedsError as exc:
            self._upgrading.discard(request)
            refusal = error_response(exc)
            _log_access(request, refusal.status, code=None, client=None)
            return refusal
        except BaseException:
            self._upgrading.discard(request)
            raise
        return None

    async def _identify(self, request: Request) -> Identity | None:
        """Who the request says it is: its token's identity, else the app's hook's answer
        (None: neither). Raises ``Unauthorized`` for a bad token."""
        node = self.node
        token = token_of(request) if node.tokens is not None else None
        if token is not None:
            return node.verify_token(token)
        if self._authenticate is None:
            return None
        identity = await self._authenticate(request)
        if identity is not None and not isinstance(identity, Identity):
            raise TypeError(f"authenticate must return an Identity or None, not {identity!r}")
        return identity

    async def _session(
        self, request: Request, serve: Callable[..., Awaitable[None]], *args: Any
    ) -> HTTPResponse | None:
        """Upgrade the request's connection and serve it until it ends, with
        ``serve(node, connection, *args)``."""
        ws = self._upgrade(request)
        if isinstance(ws, HTTPResponse):
            _log_access(request, ws.status, code=None, client=None)
            return ws
        ctx = request.ctx
        conn = self.node.connect(
            ws, ctx.wire_format, identity=ctx.identity, access=ctx.access, client_id=ctx.client_id
        )
        try:
            await serve(self.node, conn, *args)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if ws.io_proto is not None or task is None:
                raise  # the server is stopping
            # Sanic cancels the connection's task once its socket is gone:
            # that is how this connection ended, not an error to report.
            task.uncancel()
        except Exception:
            # Sanic would answer with an HTTP error page, into the WebSocket.
            log.exception("connection %s failed", conn.id, extra={"client": conn.id})
            conn.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            try:
                await self.node.disconnect(conn)
            finally:
                # Sanic may cancel this task while it leaves the channels (which go
                # on, shielded): the connection still gets its line.
                _log_access(request, 101, code=ws.close_code_sent, client=conn.id)
        return None

    def _upgrade(self, request: Request) -> ServerWebSocket | HTTPResponse:
        """Switch the request's connection to WebSocket, or say why not over HTTP."""
        self._upgrading.discard(request)
        io_proto = request.transport.get_protocol()
        if not hasattr(io_proto, "websocket"):
            # ASGI, or an app run with a protocol of its own.
            return HTTPResponse("feeds need Sanic's own server and protocol", status=500)
        ws = accept(
            cast(IOProtocol, io_proto),
            request.path,
            handshake_headers(request.headers),
            max_message_bytes=self.settings.max_message_bytes,
            max_queue=self.settings.max_queue,
            keepalive=self._keepalive,
        )
        if isinstance(ws, WSResponse):
            return HTTPResponse(
                ws.body, status=ws.status_code, headers=dict(ws.headers.raw_items())
            )
        release_http_state(io_proto)
        return ws


class Gate:
    """What an upgraded connection's protocol keeps of an ``asyncio.Event``: open or
    closed, and the futures of whoever waits, made only while someone does.

    Sanic gives every connection two events (``_can_write``, which its ``send()`` waits
    on and flow control sets and clears; ``_data_received``, which its HTTP parser waits
    on), and each ``asyncio.Event`` carries a 760-byte deque from birth.
    """

    __slots__ = ("_open", "_waiters")

    def __init__(self, is_open: bool) -> None:
        self._open = is_open
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        if self._open:
            return
        self._open = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        if self._open:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            return await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


def release_http_state(io_proto: object) -> None:
    """Drop what Sanic's HTTP protocol keeps for HTTP once its connection is a WebSocket.

    Its timeout check (a timer every 30 s by default) only ever returns for an upgraded
    connection, so it is cancelled; its two ``asyncio.Event`` objects become
    :class:`Gate` objects in the same state (Sanic reaches them through the protocol's
    attributes only). About 1.9 KB per connection (docs/benchmarks.md).
    """
    timer = getattr(io_proto, "_callback_check_timeouts", None)
    if timer is not None:
        timer.cancel()
        setattr(io_proto, "_callback_check_timeouts", None)  # noqa: B010
    for name in ("_can_write", "_data_received"):
        event = getattr(io_proto, name, None)
        if isinstance(event, asyncio.Event):
            setattr(io_proto, name, Gate(event.is_set()))


def _serve_checked_feed(
    node: Node, conn: Connection, channel: str, since: StreamPosition | None
) -> Coroutine[Any, Any, None]:
    """``serve_feed`` for a connection whose admission checked the channel."""
    return serve_feed(node, conn, channel, since, checked=True)


def _log_access(request: Request, status: int, *, code: int | None, client: str | None) -> None:
    """The access-log line of an upgrade: refused (its HTTP status), or ended (101, how long
    the connection lasted, and the close code the server sent, if it closed first)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    started_s = getattr(request.ctx, "feeds_started_s", None)
    duration_ms = None if started_s is None else round((time.monotonic() - started_s) * 1000, 1)
    # The path without its query: a query may carry a token.
    path = request.path
    access_log.info(
        "%s %s %d %sms%s",
        request.method,
        path,
        status,
        duration_ms,
        "" if code is None else f" close {code}",
        extra={
            "method": request.method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "remote": request.remote_addr or request.ip,
            "client": client,
            "code": code,
        },
    )
