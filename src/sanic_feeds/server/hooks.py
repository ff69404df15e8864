"""The app's hooks: what it decides when a client connects, subscribes, publishes, leaves.

``Feeds`` registers them (``@feeds.on_connect``, ``@feeds.on_subscribe(pattern)``,
``@feeds.on_publish(pattern)``, ``@feeds.on_disconnect``); the :class:`~.node.Node` runs the
subscribe and publish hooks where those operations happen (``Node.subscribe``,
``Node.publish_from``: once per subscribe, once per publish on the publishing instance,
never per delivered message), the web edge runs the connect hook before the upgrade. No
Sanic here: the request a connect hook receives is passed through untouched.

What a hook may do, whatever it is:

- raise a :class:`~sanic_feeds.errors.FeedsError` (``Forbidden``, ``BadRequest``,
  ``RateLimited``...): the operation is refused with that error's code (and HTTP status
  before an upgrade);
- raise anything else, or return something it may not: the operation is refused with
  :class:`~sanic_feeds.errors.HookFailed` (``unavailable``, HTTP 503), and it is logged
  once on ``sanic_feeds.hooks`` (with the traceback when the hook raised); the connection
  stays open, and no other client notices;
- run past ``--hook-timeout``: it is cancelled and the operation refused the same way.

Which hook a channel gets (:class:`PatternTable`): patterns are the token's
(``permissions.py``: ``news``, ``chat:*``, ``user:$sub``, ``*``), ``$sub`` replaced by the
connection's user. The most specific match wins: an exact name beats every wildcard;
between wildcards, the longer prefix wins (``chat:vip:*`` beats ``chat:*`` beats ``*``);
between two patterns that come to the same text for this user (``user:$sub`` and
``user:ada`` for ada), the one registered first. At most one hook runs per operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, Generic, TypeVar

from ..auth import Identity
from ..codec import check_data
from ..errors import FeedsError, HookFailed
from ..names import validate_channel
from ..permissions import expand_pattern

__all__ = [
    "ClientView",
    "ConnectHook",
    "DisconnectHook",
    "Hooks",
    "PatternTable",
    "PublishHook",
    "SubscribeHook",
]

log = logging.getLogger("sanic_feeds.hooks")

T = TypeVar("T")


class ClientView:
    """What a hook is shown of a connection, read-only: ``id`` (the client id that presence
    and ``join`` show), ``identity`` (None: it showed none), ``user`` (the identity's, or
    None), ``info`` (what presence shows of it) and ``channels`` (those it is subscribed
    to when the hook runs, a frozenset)."""

    __slots__ = ("_channels", "_id", "_identity", "_info")

    def __init__(
        self,
        client_id: str,
        identity: Identity | None,
        channels: Collection[str],
        info: Any = None,
    ) -> None:
        self._id = client_id
        self._identity = identity
        self._channels = channels
        #: None: the identity's (a connection keeps the ``info`` it had at connect).
        self._info = info

    @property
    def id(self) -> str:
        return self._id

    @property
    def identity(self) -> Identity | None:
        return self._identity

    @property
    def user(self) -> str | None:
        return None if self._identity is None else self._identity.user

    @property
    def info(self) -> Any:
        if self._info is not None:
            return self._info
        identity = self._identity
        return identity.info if identity is not None and identity.info is not None else {}

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    def __repr__(self) -> str:
        return f"ClientView(id={self._id!r}, user={self.user!r})"


#: ``async fn(request, identity)``: raise to refuse the connection (HTTP status of the
#: ``FeedsError``), or return channels a ``/ws`` connection is subscribed to at once.
ConnectHook = Callable[[Any, Identity | None], Awaitable[Iterable[str] | None]]
#: ``async fn(client, channel)``: raise to refuse the subscription.
SubscribeHook = Callable[[ClientView, str], Awaitable[None]]
#: ``async fn(client, channel, data)``: the data to publish (changed or not); raise to refuse.
PublishHook = Callable[[ClientView, str, Any], Awaitable[Any]]
#: ``async fn(client, code)``: told that a connection ended, with its close code.
DisconnectHook = Callable[[ClientView, int], Awaitable[None]]


class PatternTable(Generic[T]):
    """Values registered under channel patterns; :meth:`match` finds the most specific
    (module docstring). Pure logic: the work is one pass over the patterns, which an app
    has few of."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        #: ``(pattern, static expansion or None when it holds $sub, value)``, in order.
        self._entries: list[tuple[str, tuple[str, bool] | None, T]] = []

    def add(self, pattern: str, value: T) -> None:
        """Register ``value`` under ``pattern``; raises ``ValueError`` for a pattern that
        is not a non-empty string, or is registered already."""
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"a channel pattern is a non-empty string, not {pattern!r}")
        if any(existing == pattern for existing, _, _ in self._entries):
            raise ValueError(f"a hook is registered for {pattern!r} already")
        static = None if "$sub" in pattern else expand_pattern(pattern, None)
        self._entries.append((pattern, static, value))

    def __bool__(self) -> bool:
        return bool(self._entries)

    def match(self, channel: str, user: str | None) -> T | None:
        """The value of the most specific pattern matching ``channel`` for ``user``."""
        best: T | None = None
        best_rank = (False, -1)
        for pattern, static, value in self._entries:
            expanded = static if static is not None else expand_pattern(pattern, user)
            if expanded is None:
                continue
            text, wildcard = expanded
            if wildcard:
                if not channel.startswith(text):
                    continue
            elif channel != text:
                continue
            rank = (not wildcard, len(text))
            if rank > best_rank:  # strictly: the first registered wins a tie
                best, best_rank = value, rank
        return best


def _check_async(fn: Any, kind: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"{kind} takes an async function, not {fn!r}")


class Hooks:
    """The hooks of one app and how they are run (module docstring).

    ``timeout_s`` is ``--hook-timeout``. The attributes ``connecting``, ``subscribing``
    and ``publishing`` say whether any such hook is registered, so that an app without
    hooks pays one attribute test per operation.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._connect: ConnectHook | None = None
        self._disconnect: DisconnectHook | None = None
        self._subscribe: PatternTable[SubscribeHook] = PatternTable()
        self._publish: PatternTable[PublishHook] = PatternTable()
        self.connecting = False
        self.subscribing = False
        self.publishing = False

    # -- registration (raises TypeError for a function that is not async, ValueError for
    #    a second connect/disconnect hook or a pattern registered twice)

    def add_connect(self, fn: ConnectHook) -> None:
        _check_async(fn, "on_connect")
        if self._connect is not None:
            raise ValueError("an on_connect hook is registered already")
        self._connect = fn
        self.connecting = True

    def add_disconnect(self, fn: DisconnectHook) -> None:
        _check_async(fn, "on_disconnect")
        if self._disconnect is not None:
            raise ValueError("an on_disconnect hook is registered already")
        self._disconnect = fn

    def add_subscribe(self, pattern: str, fn: SubscribeHook) -> None:
        _check_async(fn, "on_subscribe")
        self._subscribe.add(pattern, fn)
        self.subscribing = True

    def add_publish(self, pattern: str, fn: PublishHook) -> None:
        _check_async(fn, "on_publish")
        self._publish.add(pattern, fn)
        self.publishing = True

    # -- running

    async def _run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` within the timeout; a ``FeedsError`` passes, anything else
        (a wrong signature included) is logged and becomes ``HookFailed``."""
        timeout = asyncio.timeout(self.timeout_s)
        try:
            async with timeout:
                return await call()
        except FeedsError:
            raise
        except TimeoutError:
            if not timeout.expired():
                log.exception("%s raised", what)
                raise HookFailed(f"{what} raised TimeoutError") from None
            log.error("%s took longer than --hook-timeout (%gs)", what, self.timeout_s)
            raise HookFailed(f"{what} timed out") from None
        except Exception as exc:
            log.exception("%s raised", what)
            raise HookFailed(f"{what} raised {type(exc).__name__}") from None

    async def connect(self, request: Any, identity: Identity | None) -> tuple[str, ...]:
        """Run the connect hook; the valid channel names it returned (none without it)."""
        hook = self._connect
        if hook is None:
            return ()
        returned = await self._run("on_connect hook", lambda: hook(request, identity))
        if returned is None:
            return ()
        try:
            if isinstance(returned, str | bytes):
                raise TypeError("a string is not a list of channels")
            return tuple(validate_channel(channel) for channel in returned)
        except (TypeError, FeedsError) as exc:
            log.error("on_connect hook returned %r: %s", returned, exc)
            raise HookFailed("on_connect hook returned no list of channels") from None

    async def subscribe(self, client: ClientView, channel: str) -> None:
        """Run the hook of ``channel`` (if any); raises to refuse the subscription."""
        hook = self._subscribe.match(channel, client.user)
        if hook is not None:
            await self._run(f"on_subscribe hook for {channel!r}", lambda: hook(client, channel))

    async def publish(self, client: ClientView, channel: str, data: Any) -> Any:
        """Run the hook of ``channel`` (if any); the data to publish. A hook that returns
        None for data that was not null is taken for one that forgot its ``return``
        (publishing null instead of a checked message would be worse): ``HookFailed``."""
        hook = self._publish.match(channel, client.user)
        if hook is None:
            return data
        what = f"on_publish hook for {channel!r}"
        returned = await self._run(what, lambda: hook(client, channel, data))
        if returned is None and data is not None:
            log.error("%s returned None: it must return the data to publish", what)
            raise HookFailed(f"{what} returned None")
        try:
            check_data(returned)
        except FeedsError as exc:
            log.error("%s returned data that cannot be published: %s", what, exc.message)
            raise HookFailed(f"{what} returned data that cannot be published") from None
        return returned

    async def disconnect(self, client: ClientView, code: int) -> None:
        """Run the disconnect hook; never raises (there is no one left to tell)."""
        hook = self._disconnect
        if hook is None:
            return
        # HookFailed is logged already; a refusal means nothing here.
        with contextlib.suppress(FeedsError):
            await self._run("on_disconnect hook", lambda: hook(client, code))
