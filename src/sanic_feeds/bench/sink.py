"""The ceiling sink: a broadcaster cheaper than any real server, for ``--ceiling``.

It speaks just enough of ``/feed/<channel>`` for the bench (``subscribed``,
then ``message`` events) and does the least work per message possible: no
JSON parsing or encoding at all. Each frame a client sends is spliced,
bytes as they came, into a ``message`` event by concatenation, framed once
as a WebSocket text frame (server frames are not masked, so the bytes are
the same for every client) and written straight to the transport of every
open socket of the channel. What the bench
measures against it is therefore close to the load generator's own ceiling
on this machine: the rate beyond which a target's figures say more about
the bench than about the target.

    python -m sanic_feeds.bench.sink --port 8200
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from urllib.parse import unquote, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from .clients import run_event_loop

__all__ = ["main", "serve_sink", "text_frame"]

_FEED_PREFIX = "/feed/"


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, final WebSocket text frame (RFC 6455 5.2)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


async def _feed(ws: ServerConnection, channels: dict[str, set[ServerConnection]]) -> None:
    request = ws.request
    path = urlsplit(request.path).path if request is not None else ""
    if not path.startswith(_FEED_PREFIX):
        await ws.close(1008, "only /feed/<channel> here")
        return
    name = unquote(path[len(_FEED_PREFIX) :])
    sockets = channels.setdefault(name, set())
    sockets.add(ws)
    quoted = orjson.dumps(name)
    head = b'{"type":"message","channel":' + quoted + b',"offset":'
    offset = 0
    try:
        await ws.send(
            b'{"type":"subscribed","channel":' + quoted + b',"offset":0,"epoch":""}', text=True
        )
        while True:
            frame = await ws.recv(decode=False)
            offset += 1
            event = b"".join((head, b"%d" % offset, b',"data":', frame, b"}"))
            wire = text_frame(event)
            for socket in sockets:
                if socket.state is State.OPEN:
                    socket.transport.write(wire)
    except ConnectionClosed:
        pass  # the client left; forget it below
    finally:
        sockets.discard(ws)
        if not sockets:
            channels.pop(name, None)


async def serve_sink(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    channels: dict[str, set[ServerConnection]] = {}
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stop_once, stop)

    async def handler(ws: ServerConnection) -> None:
        await _feed(ws, channels)

    async with serve(handler, host, port, compression=None, max_size=2**24):
        await stop


def _stop_once(stop: asyncio.Future[None]) -> None:
    if not stop.done():
        stop.set_result(None)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sanic_feeds.bench.sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_event_loop(serve_sink(args.host, args.port))


if __name__ == "__main__":
    main()
