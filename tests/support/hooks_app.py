"""An app whose hooks refuse, fail or hang on request, for tests of the web edge's half of
the hooks (``tests/integration/test_hooks_app.py``): what happens before the upgrade.

Run as ``python -m tests.support.hooks_app --port P [--hook-timeout S]
[--max-connections N]`` with the repository root on ``PYTHONPATH``. Identity is off. The
connect hook reads ``?connect=``:
``refuse`` raises ``Forbidden``, ``fail`` raises ``RuntimeError``, ``hang`` sleeps past any
timeout, ``slow`` takes half a second to let it in, ``join`` returns
``["user:alone", "news"]``, ``bad`` returns an invalid channel name; anything else lets
the connection in. The subscribe hook of ``feed:*`` refuses ``feed:closed``, fails on
``feed:broken``, hangs on ``feed:slow``. The publish hook of
``feed:*`` refuses the string ``"refuse"`` (``bad_request``) and adds ``"seen": true`` to
every object.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from sanic import Request, Sanic

from sanic_feeds import BadRequest, ClientView, Feeds, Forbidden, Identity

__all__ = ["build_app", "main"]


def build_app(**options: Any) -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic("hooks_app")
    feeds = Feeds(app, **options)

    @feeds.on_connect
    async def connect(request: Request, identity: Identity | None) -> list[str] | None:
        mode = request.args.get("connect")
        if mode == "refuse":
            raise Forbidden("not today")
        if mode == "fail":
            raise RuntimeError("a bug in on_connect")
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "slow":
            await asyncio.sleep(0.5)
        if mode == "join":
            return ["user:alone", "news"]
        if mode == "bad":
            return ["not a channel name"]
        return None

    @feeds.on_subscribe("feed:*")
    async def subscribe(client: ClientView, channel: str) -> None:
        if channel == "feed:closed":
            raise Forbidden("closed")
        if channel == "feed:broken":
            raise RuntimeError("a bug in on_subscribe")
        if channel == "feed:slow":
            await asyncio.sleep(3600)

    @feeds.on_publish("feed:*")
    async def publish(client: ClientView, channel: str, data: Any) -> Any:
        if data == "refuse":
            raise BadRequest("refused")
        return {**data, "seen": True} if isinstance(data, dict) else data

    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--broker", default="memory://")
    parser.add_argument("--hook-timeout", type=float, default=5.0)
    parser.add_argument("--max-connections", type=int, default=10000)
    args = parser.parse_args(argv)
    app = build_app(
        broker=args.broker,
        hook_timeout_s=args.hook_timeout,
        max_connections=args.max_connections,
    )
    app.run(host=args.host, port=args.port, single_process=True, access_log=False, motd=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
