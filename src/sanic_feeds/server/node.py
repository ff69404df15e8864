"""``Node``: the feed server's domain service, whatever carries its connections.

A Node keeps references to what every connection shares (settings, broker,
hub, the registry of open connections, the token deadlines) and decides what
a connection may do: join and leave channels its identity allows, publish
within its rate limit, read presence and history, refresh its token.
Permissions are checked when a connection subscribes or publishes, never per
delivered message; so are the app's hooks (``hooks.py``), which it runs where the
operation happens. It knows no Sanic: the session handlers (``feed.py``,
``multiplex.py``) drive it, and the web edge (``extension.py``) only routes,
upgrades and admits connections to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..auth import MIN_SECRET_BYTES, Identity, TokenConfig, verify_token
from ..brokers import Broker, BrokerOptions, InstanceStatus, create_broker
from ..codec import WireFormat
from ..errors import (
    BadRequest,
    BrokerUnavailable,
    CloseCode,
    FeedsError,
    Forbidden,
    LimitExceeded,
    RateLimited,
    RateLimitedTooOften,
    Unauthorized,
)
from ..events import Join, Leave, Publication, StreamPosition
from ..names import namespace_of, validate_channel, validate_idempotency_key
from ..permissions import Access, ChannelPatterns
from ..ratelimit import RateLimiter, Verdict
from ..settings import Settings
from . import metrics
from .connection import Connection, Greet, WebSocket
from .expiry import Expiry
from .hooks import ClientView, Hooks
from .hub import Hub
from .outbox import Flusher
from .publishing import PublishWindow

__all__ = ["Node"]

log = logging.getLogger("sanic_feeds.node")

#: Tokens remembered as verified, most recent last.
_VERIFIED_TOKENS = 10_000


def _installed_version() -> str:
    try:
        return importlib.metadata.version("sanic-feeds")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"  # run from a source tree that was never installed


_VERSION = _installed_version()


class Node:
    """One instance of the feed server::

        node = Node(Settings(broker="redis://127.0.0.1:6379/0"))
        await node.start()
        conn = node.connect(ws, WireFormat.JSON)   # ws: a .connection.WebSocket
        await node.subscribe(conn, "news", greet)
        ...
        await node.disconnect(conn)
        await node.stop()

    ``broker`` is a URL (``settings.broker`` when None) or a
    :class:`~sanic_feeds.brokers.base.Broker`; either way the Node starts and
    closes it. ``identities_from_elsewhere``: something besides tokens (an app's
    ``authenticate`` hook) tells who connections are, so identity is on even
    without ``--token-secret``. Raises ``SettingsError`` for token settings that
    cannot be used (an unreadable key).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        broker: Broker | str | None = None,
        instance_id: str | None = None,
        identities_from_elsewhere: bool = False,
    ) -> None:
        settings = settings or Settings()
        if isinstance(broker, str):
            settings = settings.replace(broker=broker)
        self.settings = settings
        #: How tokens are checked; None when they are off.
        self.tokens: TokenConfig | None = settings.token_config()
        if self.tokens is not None and self.tokens.weak_secret:
            log.warning(
                "--token-secret is shorter than %d bytes (RFC 7518, 3.2): whoever holds "
                "one token can guess it offline and mint their own",
                MIN_SECRET_BYTES,
            )
        #: Whether a connection needs an identity (a token, or the app's hook).
        self.identity_on = self.tokens is not None or identities_from_elsewhere
        #: What connections without an identity may read while identity is on.
        self._public = ChannelPatterns(settings.anonymous_subscribe)
        self._everything = Access.everything()
        #: Tokens verified lately and what they proved: when an instance restarts, every
        #: client comes back at once with the token it had, and is not verified again.
        self._verified: OrderedDict[str, Identity] = OrderedDict()
        #: Names this instance in presence entries and heartbeats.
        self.instance_id = instance_id or secrets.token_hex(6)
        self.broker: Broker = (
            broker
            if broker is not None and not isinstance(broker, str)
            else create_broker(
                settings.broker,
                BrokerOptions(
                    history_size=settings.history_size,
                    history_ttl_s=settings.history_ttl_s,
                    epoch_start_kept=settings.recovery_max,
                    instance_id=self.instance_id,
                ),
            )
        )
        self._hub: Hub | None = None
        #: Open connections of this process.
        self.connections: set[Connection] = set()
        #: Channel departures still running for connections already gone.
        self._cleanups: set[asyncio.Task[None]] = set()
        #: Set by :meth:`drain`: no new connection is admitted.
        self.draining = False
        #: Where this instance serves (``http://HOST:PORT``), for the other instances.
        self.address = ""
        #: Subscriptions of the open connections.
        self.subscriptions = 0
        self._started_s = time.monotonic()
        #: Counts the hot paths (publish, fan-out); off with ``--metrics 0``.
        self._counting = settings.metrics
        #: Closes connections whose token ran out (4001); set up by :meth:`start`.
        self._expiry: Expiry[Connection] | None = None
        #: The app's hooks (``Feeds.on_subscribe``...): run by :meth:`subscribe`,
        #: :meth:`publish_from` and :meth:`disconnect`, never per delivered message.
        self.hooks = Hooks(settings.hook_timeout_s)

    # -- lifecycle

    async def start(self, address: str = "") -> None:
        """Connect to the broker; raises ``BrokerUnavailable`` when it cannot be reached.

        ``address`` is where this instance serves, as the other instances list it.
        """
        settings = self.settings
        self.address = address
        self._started_s = time.monotonic()
        self._hub = Hub(
            self.broker,
            Flusher(asyncio.get_running_loop(), settings.flush_tick_ms / 1000),
            heal_max=settings.recovery_max,
            announce_max=settings.join_leave_max,
            fan_out_counter=metrics.FanOutCounter() if self._counting else None,
        )
        self.broker.set_status(self.status)
        self._expiry = Expiry(asyncio.get_running_loop(), _expire)
        await self.broker.start(self._hub)

    def drain(self) -> list[asyncio.Task[Any]]:
        """Admit no more connections and close every open one with 1001 (going away).

        Returns the connections' handler tasks, for the caller to wait on.
        """
        self.draining = True
        tasks = [conn.task for conn in self.connections if conn.task is not None]
        for conn in list(self.connections):
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        return tasks

    async def stop(self, *, timeout_s: float | None = None) -> None:
        """Let departures finish (within ``timeout_s``, ``--drain-timeout`` by default),
        then close hub and broker."""
        if self._cleanups:
            wait_s = self.settings.drain_timeout_s if timeout_s is None else timeout_s
            await asyncio.wait(self._cleanups, timeout=max(wait_s, 0.001))
        if self._expiry is not None:
            self._expiry.close()
        if self._hub is not None:
            await self._hub.close()
        await self.broker.close()

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("the node has not started yet")
        return self._hub

    @property
    def ready(self) -> bool:
        """Started, not draining, and hearing the broker."""
        return self._hub is not None and not self.draining and self.broker.ready

    def status(self) -> InstanceStatus:
        """This instance's figures, as its heartbeat tells the others."""
        return InstanceStatus(
            id=self.instance_id,
            address=self.address,
            pid=os.getpid(),
            version=_VERSION,
            uptime=round(time.monotonic() - self._started_s, 3),
            connections=len(self.connections),
            subscriptions=self.subscriptions,
            channels=0 if self._hub is None else self._hub.channel_count,
        )

    async def instances(self) -> list[InstanceStatus]:
        """Every live instance sharing the broker (this one included), as of its last
        heartbeat. Raises ``BrokerUnavailable``."""
        return await self.broker.instances()

    # -- identity

    def verify_token(self, token: str) -> Identity:
        """The identity ``token`` proves; raises ``Unauthorized`` (tokens off included)."""
        if self.tokens is None:
            raise Unauthorized("this server takes no tokens")
        verified = self._verified
        identity = verified.get(token)
        if identity is not None:
            # Verified before: only its expiry can have changed since.
            if identity.expires_at is not None and identity.expires_at <= time.time():
                del verified[token]
                raise Unauthorized("token expired")
            verified.move_to_end(token)
            return identity
        identity = verify_token(token, self.tokens)
        verified[token] = identity
        if len(verified) > _VERIFIED_TOKENS:
            verified.popitem(last=False)
        return identity

    def access_for(self, identity: Identity | None) -> Access:
        """What a connection of ``identity`` (None: it showed none) may do.

        Raises ``Unauthorized`` for a connection without an identity while identity is on
        and ``--anonymous-subscribe`` opens nothing to it, and for an expired identity
        (an app's hook may return one).
        """
        if not self.identity_on:
            return self._everything
        if identity is None:
            if self._public.allows_nothing:
                raise Unauthorized("a token is needed (?token= or Authorization: Bearer)")
            return Access(self._public, ChannelPatterns(()), None)
        if identity.expires_at is not None and identity.expires_at <= time.time():
            raise Unauthorized("identity expired")
        return Access(
            ChannelPatterns(identity.subscribe, identity.user) | self._public,
            ChannelPatterns(identity.publish, identity.user),
            identity.user,
        )

    @staticmethod
    def check_subscribe(access: Access, channel: str) -> None:
        """Raise unless ``access`` lets a connection subscribe to ``channel`` (and read its
        presence and history): ``Unauthorized`` for one without an identity, else
        ``Forbidden``."""
        if not access.may_subscribe(channel):
            raise _refusal(access, f"not allowed to subscribe to {channel!r}")

    async def check_subscription(self, access: Access, client: ClientView, channel: str) -> None:
        """:meth:`check_subscribe`, then the app's subscribe hook for ``channel``: for a
        connection not open yet (``/feed`` admission), which then subscribes with
        ``checked=True``. Raises as :meth:`subscribe` does for both, ``HookFailed`` included.
        """
        self.check_subscribe(access, channel)
        if self.hooks.subscribing:
            await self.hooks.subscribe(client, channel)

    def refresh(self, conn: Connection, token: str) -> float | None:
        """Replace ``conn``'s identity with what a new token for the same user proves, and
        move its deadline; returns the new ``exp`` (None: none). Subscriptions held stay;
        ``info`` stays what it was at connect. Raises ``BadRequest`` (tokens off, or a
        connection without an identity), ``Unauthorized`` or ``Forbidden`` (another user)."""
        current = conn.identity
        if self.tokens is None or current is None:
            raise BadRequest("refresh needs tokens and a connection opened with one")
        identity = self.verify_token(token)
        if identity.user != current.user:
            raise Forbidden("the new token is for another user")
        conn.identity = identity
        conn.access = self.access_for(identity)
        if self._expiry is not None:
            self._expiry.set(conn, identity.expires_at)
        return identity.expires_at

    # -- connections

    def check_serving(self) -> None:
        """Raise ``LimitExceeded`` (503) once draining: clients should go to another instance."""
        if self.draining:
            raise LimitExceeded("server shutting down")

    def admit(self, upgrading: int = 0) -> None:
        """Raise ``LimitExceeded`` when a new connection cannot be taken now.

        ``upgrading``: connections admitted by the caller that are not open yet.
        """
        self.check_serving()
        if len(self.connections) + upgrading >= self.settings.max_connections:
            raise LimitExceeded("too many connections on this instance")

    def connect(
        self,
        ws: WebSocket,
        wire_format: WireFormat,
        *,
        identity: Identity | None = None,
        access: Access | None = None,
        client_id: str | None = None,
    ) -> Connection:
        """Register a connection over ``ws``; :meth:`disconnect` must follow, however it ends.

        ``access`` is what :meth:`access_for` gave ``identity`` (computed when None). A
        connection whose identity expires is closed with 4001 then, unless refreshed.
        """
        settings = self.settings
        conn = Connection(
            ws,
            self.hub.flusher,
            wire_format=wire_format,
            max_queue=settings.max_queue,
            limiter=self._rate_limiter(),
            access=access if access is not None else self.access_for(identity),
            identity=identity,
            client_id=client_id,
        )
        self.connections.add(conn)
        metrics.CONNECTIONS.inc()
        if identity is not None and identity.expires_at is not None and self._expiry is not None:
            self._expiry.set(conn, identity.expires_at)
        return conn

    async def disconnect(self, conn: Connection) -> None:
        """Forget ``conn`` and leave its channels.

        Leaving runs in a task of its own, shielded: the caller (a handler that
        the server cancels when it stops, at any await) cannot interrupt it.
        """
        if conn in self.connections:
            self.connections.remove(conn)
            metrics.CONNECTIONS.dec()
            code = conn.ws.close_code_sent
            if code is not None:
                metrics.CLOSES_SENT.labels(str(code)).inc()
        if self._expiry is not None:
            self._expiry.discard(conn)
        conn.outbox.close()
        cleanup = asyncio.create_task(self._leave_all(conn), name=f"feeds-leave:{conn.id}")
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)
        await asyncio.shield(cleanup)

    async def _leave_all(self, conn: Connection) -> None:
        client = ClientView(conn.id, conn.identity, frozenset(conn.channels), conn.info)
        for channel in list(conn.channels):
            await self._leave(conn, channel)
        await self.hooks.disconnect(client, _close_code_of(conn))

    # -- what a connection does

    async def subscribe(
        self,
        conn: Connection,
        channel: str,
        greet: Greet,
        since: StreamPosition | None = None,
        *,
        checked: bool = False,
    ) -> tuple[StreamPosition, bool]:
        """Subscribe ``conn`` to ``channel``, recovering from ``since``, and announce it.

        ``greet(position, recovered)`` is called right before anything of the
        channel can reach the connection (to queue ``subscribed`` first).
        Raises ``Unauthorized``/``Forbidden`` (the connection's identity does not allow
        the channel), ``BadRequest`` (already subscribed), ``LimitExceeded``
        (``--max-subscriptions``), ``RateLimited`` (``subscribe`` commands have a
        ``--rate-limit`` of their own, apart from publishes: flapping would flood
        everyone with join and leave; one that goes on regardless is closed with 1008)
        or ``BrokerUnavailable``.
        The app's subscribe hook runs last, after every check of the server: what it
        raises is raised (``HookFailed`` for an unexpected error or a timeout).
        ``checked``: the permissions and the hook were asked already
        (:meth:`check_subscription`), or the app chose the channel (``on_connect``).
        """
        if not checked:
            self.check_subscribe(conn.access, channel)
        if channel in conn.channels:
            raise BadRequest(f"already subscribed to {channel!r}")
        limit = self.settings.max_subscriptions
        if len(conn.channels) >= limit:
            raise LimitExceeded(f"at most {limit} subscriptions per connection")
        if not checked:
            if conn.subscribe_limiter is None:
                conn.subscribe_limiter = self._rate_limiter()
            self._count_rate(
                conn, conn.subscribe_limiter, "subscribing too fast, try again later"
            )
        if self.hooks.subscribing and not checked:
            await self.hooks.subscribe(_view(conn), channel)
            if conn.closed or channel in conn.channels:  # changed while the hook ran
                raise BadRequest(f"cannot subscribe to {channel!r} now")
        position, recovered = await self.hub.subscribe(
            channel, conn.outbox, conn.wire_format, greet, since
        )
        conn.channels.add(channel)
        self.subscriptions += 1
        metrics.SUBSCRIPTIONS.inc()
        if since is not None:
            metrics.RECOVERIES.labels("recovered" if recovered else "not_recovered").inc()
        try:
            await self.broker.add_presence(channel, conn.id, conn.info)
            if self.settings.joins_announced(namespace_of(channel)):
                await self.broker.publish_event(Join(channel, conn.id, conn.info))
        except BrokerUnavailable:
            log.warning(
                "could not announce %s on %r: broker unavailable",
                conn.id,
                channel,
                extra={"client": conn.id, "channel": channel},
            )
        return position, recovered

    async def unsubscribe(self, conn: Connection, channel: str) -> None:
        """Undo :meth:`subscribe`; raises ``BadRequest`` when ``conn`` is not subscribed."""
        if channel not in conn.channels:
            raise BadRequest(f"not subscribed to {channel!r}")
        await self._leave(conn, channel)

    async def _leave(self, conn: Connection, channel: str) -> None:
        """Leave ``channel``; never raises for a broker that went away."""
        if channel in conn.channels:
            conn.channels.remove(channel)
            self.subscriptions -= 1
            metrics.SUBSCRIPTIONS.dec()
        await self.hub.unsubscribe(channel, conn.outbox)
        with contextlib.suppress(BrokerUnavailable):
            await self.broker.remove_presence(channel, conn.id)
            if self.settings.joins_announced(namespace_of(channel)):
                await self.broker.publish_event(Leave(channel, conn.id))

    def publish_window(self, conn: Connection) -> PublishWindow:
        """How many publishes of ``conn`` may overlap (``--publish-window``)."""
        return PublishWindow(conn, self.settings.publish_window)

    async def publish_from(
        self,
        conn: Connection,
        channel: str,
        data: Any,
        *,
        raw: str | None = None,
        idempotency_key: str | None = None,
        on_handed: Callable[[], None] | None = None,
    ) -> StreamPosition:
        """Publish what a client sent, where its identity allows, within its rate limit
        (``--rate-limit``). ``on_handed`` is called once the broker has the message, in
        the order of the calls (``PublishWindow``), before its reply.

        Raises ``Unauthorized``/``Forbidden`` for a channel it may not publish on,
        ``BadRequest`` for data nested too deep or a malformed idempotency key,
        ``RateLimited`` for a publish over the limit (``RateLimitedTooOften`` when the
        client goes on regardless: closed with 1008). Raises ``BrokerUnavailable``. The app's
        publish hook for ``channel`` runs after those checks, here on the publishing
        instance only: it may change the data, or refuse (what it raises is raised,
        ``HookFailed`` for an unexpected error or a timeout).
        """
        if not conn.access.may_publish(channel):
            raise _refusal(conn.access, f"not allowed to publish on {channel!r}")
        if idempotency_key is not None:
            validate_idempotency_key(idempotency_key)
        self._count_rate(conn, conn.limiter, "publishing too fast, message dropped")
        if self.hooks.publishing:
            checked = await self.hooks.publish(_view(conn), channel, data)
            if checked is not data:
                data, raw = checked, None  # the client's text is no longer what is sent
        # The broker takes the message before its first suspension (Broker.publish):
        # once this call is scheduled, the next publish of the connection may go on.
        publishing = self.broker.publish(
            channel, data, client=conn.id, raw=raw, idempotency_key=idempotency_key
        )
        if on_handed is not None:
            asyncio.get_running_loop().call_soon(on_handed)
        if not self._counting:
            position = await publishing
            self.hub.observe(channel, position)
            return position
        started = time.perf_counter()
        position = await publishing
        metrics.BROKER_PUBLISH_SECONDS.observe(time.perf_counter() - started)
        metrics.MESSAGES_PUBLISHED.labels(conn.wire_format.value).inc()
        self.hub.observe(channel, position)
        return position

    def _rate_limiter(self) -> RateLimiter:
        return RateLimiter(self.settings.rate_limit, self.settings.rate_burst)

    def _count_rate(self, conn: Connection, limiter: RateLimiter, refusal: str) -> None:
        """Count one publish or subscribe of ``conn`` against ``limiter``. Raises
        ``RateLimited`` (``refusal``) over the limit, and ``RateLimitedTooOften`` once
        the connection went on regardless: its reply is the 1008, which must not
        overtake the replies of the publishes still in flight. Until it goes out, the
        bucket may refill: everything the connection sends meanwhile is refused too."""
        if conn.earned_close:
            raise RateLimitedTooOften(refusal)
        verdict = limiter.check(time.monotonic())
        if verdict is Verdict.DISCONNECT:
            conn.earned_close = True
            raise RateLimitedTooOften(refusal)
        if verdict is Verdict.REJECT:
            raise RateLimited(refusal)

    # -- what the backend does (HTTP API, Feeds.publish): no connection, no limits

    async def publish(
        self, channel: str, data: Any, *, idempotency_key: str | None = None
    ) -> StreamPosition:
        """Publish ``data`` (any JSON value) on ``channel``.

        Returns the offset and epoch the broker assigned. A publish repeated
        with the same ``idempotency_key`` within 5 minutes publishes nothing
        and returns the first one's position. Raises ``BadChannel``,
        ``BadRequest`` (a malformed key) or ``BrokerUnavailable``.
        """
        validate_channel(channel)
        if idempotency_key is not None:
            validate_idempotency_key(idempotency_key)
        if not self._counting:
            position = await self.broker.publish(channel, data, idempotency_key=idempotency_key)
            self.hub.observe(channel, position)
            return position
        started = time.perf_counter()
        position = await self.broker.publish(channel, data, idempotency_key=idempotency_key)
        metrics.BROKER_PUBLISH_SECONDS.observe(time.perf_counter() - started)
        metrics.MESSAGES_PUBLISHED.labels(metrics.API_FORMAT).inc()
        self.hub.observe(channel, position)
        return position

    async def presence(self, channel: str, *, conn: Connection | None = None) -> dict[str, Any]:
        """``{client id: info}`` of every client on ``channel``, on every instance.

        Asked by ``conn``: raises ``Unauthorized``/``Forbidden`` unless it may subscribe.
        """
        validate_channel(channel)
        if conn is not None:
            self.check_subscribe(conn.access, channel)
        return await self.broker.presence(channel)

    async def peek_position(self, channel: str) -> StreamPosition | None:
        """The channel's position, or None when it has none; creates nothing (for reads
        anyone can make, like ``GET /api/channels``)."""
        return await self.broker.peek_position(validate_channel(channel))

    async def history(
        self,
        channel: str,
        since: int | None = None,
        limit: int | None = None,
        *,
        conn: Connection | None = None,
    ) -> tuple[list[Publication], StreamPosition]:
        """The oldest ``limit`` publications after ``since``, or the newest ``limit``
        without it (``limit`` defaults to ``--history-size``), and the channel's position.

        Asked by ``conn``: raises ``Unauthorized``/``Forbidden`` unless it may subscribe.
        """
        validate_channel(channel)
        if conn is not None:
            self.check_subscribe(conn.access, channel)
        limit = limit or self.settings.history_size or 1
        publications, position = await self.broker.history(channel, since, limit)
        self.hub.observe(channel, position)
        return publications, position


def _refusal(access: Access, message: str) -> FeedsError:
    """A connection without an identity is told to show one; one with an identity, no."""
    return Unauthorized(message) if access.user is None else Forbidden(message)


def _view(conn: Connection) -> ClientView:
    """What a hook is shown of ``conn``: its channels as they are when it looks."""
    return ClientView(conn.id, conn.identity, conn.channels, conn.info)


def _close_code_of(conn: Connection) -> int:
    """The code ``conn`` was closed with: the server's, else the client's, else 1006
    (the connection was lost without a close frame)."""
    if conn.close_code is not None:
        return conn.close_code
    received = getattr(conn.ws.ws_proto, "close_rcvd", None)
    code = getattr(received, "code", None)
    return code if isinstance(code, int) else 1006


def _expire(conn: Connection) -> None:
    conn.close(CloseCode.TOKEN_EXPIRED, "token expired")
