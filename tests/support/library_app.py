"""A user's own Sanic app that mounts sanic-feeds as a library, for integration tests.

Run as ``python -m tests.support.library_app --port P --broker URL`` with the repository root
on ``PYTHONPATH`` (``tests/integration/test_library.py`` does). Besides everything ``Feeds``
mounts (``/feed``, ``/ws``, ``/api``, ``/health``, ``/ready``), it has routes of its own:

- ``GET /hello``: ``{"hello": "from the app"}``, a route that knows nothing of feeds;
- ``POST /orders``: publishes the JSON body on channel ``orders`` with ``feeds.publish`` and
  answers ``{"offset": N, "epoch": "..."}``;
- ``POST /notify/<channel>``: the same on any channel.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sanic import Request, Sanic, json
from sanic.response import HTTPResponse

from sanic_feeds import Feeds

__all__ = ["build_app", "main"]


def build_app(broker: str) -> tuple[Sanic[Any, Any], Feeds]:
    app: Sanic[Any, Any] = Sanic("library_app")
    feeds = Feeds(app, broker=broker)

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--broker", default="memory://")
    args = parser.parse_args(argv)
    app, _ = build_app(args.broker)
    app.run(host=args.host, port=args.port, single_process=True, access_log=False, motd=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
