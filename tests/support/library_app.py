"""A user's own Sanic app that mounts sanic-feeds as a library, for integration tests.

Run as ``python -m tests.support.library_app --port P --broker URL`` with the repository root
on ``PYTHONPATH`` (``tests/integration/test_library.py`` does). Besides everything ``Feeds``
mounts (``/feed``, ``/ws``, ``/api``, ``/health``, ``/ready``), it has routes of its own:

- ``GET /hello``: ``{"hello": "from the app"}``, a route that knows nothing of feeds;
- ``POST /orders``: publishes the JSON body on channel ``orders`` with ``feeds.publish`` and
  answers ``{"offset": N, "epoch": "..."}``;
- ``POST /notify/<channel>``: the same on any channel.

``--url-prefix /live`` mounts the feed routes under ``/live`` (``Feeds(url_prefix=...)``); the
app then answers ``GET /ready`` itself from ``feeds.ready``, as a user's own readiness probe
would. ``--max-message-bytes N`` is passed to ``Feeds`` as a keyword option.
``--broken-channel NAME`` makes every publish on NAME raise ``RuntimeError`` inside the
server, as a bug would: for tests of how a connection's unexpected error is contained. The
app then hands ``Feeds`` a broker object of its own (``Feeds(app, broker=<Broker>)``).
``--cookie-auth`` turns identity on with the README's ``authenticate`` hook: the ``session``
cookie names a user of ``SESSIONS``, who may read ``news`` and their own ``user:<name>``
and publish on ``chat:*``; ``POST /login/<name>`` sets that cookie.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sanic import Request, Sanic, json
from sanic.response import HTTPResponse

from sanic_feeds import Broker, Feeds, Identity, create_broker

__all__ = ["SESSIONS", "build_app", "main"]

#: session id -> user name: the app's own session store.
SESSIONS: dict[str, str] = {}


async def authenticate(request: Request) -> Identity | None:
    """The README's cookie example."""
    user = SESSIONS.get(request.cookies.get("session", ""))
    if user is None:
        return None
    return Identity(
        user,
        info={"name": user.title()},
        subscribe=["news", "user:$sub"],
        publish=["chat:*"],
    )


def build_app(
    broker: Broker | str, url_prefix: str = "", cookie_auth: bool = False, **options: Any
) -> tuple[Sanic[Any, Any], Feeds]:
    app: Sanic[Any, Any] = Sanic("library_app")
    hook = authenticate if cookie_auth else None
    feeds = Feeds(app, broker=broker, url_prefix=url_prefix, authenticate=hook, **options)

    @app.post("/login/<name:str>")
    async def login(request: Request, name: str) -> HTTPResponse:
        session = f"s-{name}-{len(SESSIONS)}"
        SESSIONS[session] = name
        reply = json({"session": session})
        reply.add_cookie("session", session, secure=False)
        return reply

    if url_prefix:

        @app.get("/ready")
        async def ready(request: Request) -> HTTPResponse:
            return json({"ready": feeds.ready}, 200 if feeds.ready else 503)

    @app.get("/hello")
    async def hello(request: Request) -> HTTPResponse:
        return json({"hello": "from the app"})

    async def publish_body(channel: str, request: Request) -> HTTPResponse:
        position = await feeds.publish(channel, request.json)
        return json({"offset": position.offset, "epoch": position.epoch})

    @app.post("/orders")
    async def create_order(request: Request) -> HTTPResponse:
        return await publish_body("orders", request)

    @app.post("/notify/<channel:str>")
    async def notify(request: Request, channel: str) -> HTTPResponse:
        return await publish_body(channel, request)

    return app, feeds


def broken_channel_broker(url: str, broken: str) -> Broker:
    """The broker of ``url``, whose every publish on ``broken`` fails as a bug would."""
    broker = create_broker(url)
    publish = broker.publish

    async def publish_or_fail(channel: str, data: Any, **kwargs: Any) -> Any:
        if channel == broken:
            raise RuntimeError(f"a bug publishing on {channel!r}")
        return await publish(channel, data, **kwargs)

    broker.publish = publish_or_fail  # type: ignore[method-assign]
    return broker


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--broker", default="memory://")
    parser.add_argument("--url-prefix", default="")
    parser.add_argument("--max-message-bytes", type=int)
    parser.add_argument("--broken-channel")
    parser.add_argument("--cookie-auth", action="store_true")
    args = parser.parse_args(argv)
    options = {}
    if args.max_message_bytes is not None:
        options["max_message_bytes"] = args.max_message_bytes
    broker: Broker | str = args.broker
    if args.broken_channel:
        broker = broken_channel_broker(args.broker, args.broken_channel)
    app, _ = build_app(broker, args.url_prefix, args.cookie_auth, **options)
    app.run(host=args.host, port=args.port, single_process=True, access_log=False, motd=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
