"""The yardstick: the simplest correct broadcast server for ``/feed/<channel>``.

One process, no broker, no framework: the ``websockets`` library's asyncio
server (on uvloop when installed). A client of ``/feed/<channel>`` gets
``{"type": "subscribed", ...}``, then every message published on the
channel; each text frame a client sends is published on its channel as
``{"type": "message", "channel", "offset", "epoch": "", "data", "client":
null, "ts"}``, encoded once and written to every socket of the channel with
``websockets.broadcast``, which does not wait for any of them.

``sanic-feeds bench`` states its results as ratios to this server measured
in the same run (``bench compare`` / ``--with-reference``), because absolute
figures on a shared 2-core machine mean little.

Its code imports nothing from sanic-feeds, only ``websockets`` and
``orjson`` (and uvloop when installed), so it runs as well from a copy of
this file (``--reference-server FILE``) as from the package, which is how
the bench starts it:

    python -m sanic_feeds.bench.reference_server --port 8100
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

__all__ = ["Channel", "channel_of", "feed", "main", "parse_frame", "route", "run"]

FEED_PREFIX = "/feed/"


class Channel:
    """The sockets subscribed to one channel, and its last offset."""

    __slots__ = ("offset", "sockets")

    def __init__(self) -> None:
        self.sockets: set[ServerConnection] = set()
        self.offset = 0


channels: dict[str, Channel] = {}


def channel_of(path: str) -> str | None:
    """The channel of a ``/feed/<channel>`` request path, None for any other path."""
    path = urlsplit(path).path
    if not path.startswith(FEED_PREFIX) or len(path) == len(FEED_PREFIX):
        return None
    return unquote(path[len(FEED_PREFIX) :])


def route(connection: ServerConnection, request: Request) -> Response | None:
    if channel_of(request.path) is None:
        return connection.respond(HTTPStatus.NOT_FOUND, "only /feed/<channel> here\n")
    return None


def parse_frame(frame: str | bytes) -> object:
    """A frame's data: its JSON value, or its text when it is not JSON (docs/protocol.md)."""
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        return frame if isinstance(frame, str) else frame.decode(errors="replace")


async def feed(ws: ServerConnection) -> None:
    assert ws.request is not None  # set before any handler runs
    name = channel_of(ws.request.path)
    assert name is not None  # route() refused every other path
    channel = channels.setdefault(name, Channel())
    channel.sockets.add(ws)
    try:
        subscribed = {"type": "subscribed", "channel": name, "offset": channel.offset, "epoch": ""}
        await ws.send(orjson.dumps(subscribed), text=True)
        async for frame in ws:
            channel.offset += 1
            event = {
                "type": "message",
                "channel": name,
                "offset": channel.offset,
                "epoch": "",
                "data": parse_frame(frame),
                "client": None,
                "ts": time.time_ns() // 1_000_000,
            }
            # Encode once, write the same bytes to every socket, wait for none.
            broadcast(channel.sockets, orjson.dumps(event), text=True)
    except ConnectionClosed:
        pass  # the client went away: nothing to do but forget it
    finally:
        channel.sockets.discard(ws)
        if not channel.sockets:
            channels.pop(name, None)


def _stop_once(stop: asyncio.Future[None]) -> None:
    if not stop.done():
        stop.set_result(None)


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stop_once, stop)
    async with serve(feed, host, port, process_request=route, compression=None, max_size=2**24):
        print(f"reference server listening on ws://{host}:{port}", flush=True)
        await stop


def run() -> None:
    """The command line: serve on ``--host`` and ``--port`` until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m sanic_feeds.bench.reference_server",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.host, args.port))
    else:
        uvloop.run(main(args.host, args.port))


if __name__ == "__main__":
    run()
