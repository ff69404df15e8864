#!/usr/bin/env python
"""``sanic-feeds serve`` as the bench spawns it, plus the app's hooks on the bench's channels:
to show that a hook costs once per publish and nothing per delivered message.

An ``on_publish("bench:*")`` hook checks each message's type and returns it unchanged (the
case of a validating hook; one that changes the data also re-encodes it, once per publish),
and an ``on_subscribe("bench:*")`` hook lets every subscriber in. ``--no-hooks`` runs the
same app without them, for a baseline from the same script.

    python bench/hooked_server.py --port 8101 --broker redis://127.0.0.1:6379/0
    python bench/hooked_server.py --port 8102 --broker redis://127.0.0.1:6379/0
    sanic-feeds bench fanout --url ws://127.0.0.1:8101 --url ws://127.0.0.1:8102 \\
        --server-pid PID1 --server-pid PID2 --with-reference --repeat 3 \\
        --subscribers 1000 --rate max --duration 8
"""

from __future__ import annotations

import argparse
from typing import Any

from sanic_feeds import ClientView, Feeds, Forbidden
from sanic_feeds.server.app import configure_logging, create_app
from sanic_feeds.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--broker", default="memory://")
    parser.add_argument("--no-hooks", action="store_true")
    args = parser.parse_args()
    # What the bench gives the instances it spawns (bench/spawn.py, start_feeds).
    settings = Settings(
        host=args.host,
        port=args.port,
        broker=args.broker,
        rate_limit=0,
        quiet_namespaces=("bench",),
        log_level="warning",
    )
    configure_logging(settings)
    app = create_app(settings)
    feeds: Feeds = app.ctx.feeds
    if not args.no_hooks:

        @feeds.on_subscribe("bench:*")
        async def subscribe(client: ClientView, channel: str) -> None:
            if client.channels:
                raise Forbidden("one channel per /feed connection")

        @feeds.on_publish("bench:*")
        async def publish(client: ClientView, channel: str, data: Any) -> Any:
            if not isinstance(data, dict | str):
                raise Forbidden("bench messages are objects")
            return data

    app.run(host=args.host, port=args.port, single_process=True, access_log=False, motd=False)


if __name__ == "__main__":
    main()
