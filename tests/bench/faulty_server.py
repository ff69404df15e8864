#!/usr/bin/env python
"""A deliberately wrong broadcast server, to prove the bench counts faults exactly.

The reference server's ``/feed/<channel>`` protocol, plus faults keyed on
each channel's message offset n (1, 2, 3, ...):

- ``--drop-every K``: message n with n % K == 0 is sent to nobody;
- ``--duplicate-every K``: it is sent twice to every subscriber;
- ``--misroute-every K``: it is also sent to every socket of every other
  channel (unchanged, so its payload still names its own channel).

    python tests/bench/faulty_server.py --port 8101 --drop-every 10
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from urllib.parse import unquote, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

FEED_PREFIX = "/feed/"


class Faults:
    def __init__(self, drop_every: int, duplicate_every: int, misroute_every: int) -> None:
        self.drop_every = drop_every
        self.duplicate_every = duplicate_every
        self.misroute_every = misroute_every

    @staticmethod
    def hits(every: int, offset: int) -> bool:
        return every > 0 and offset % every == 0


class Server:
    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.sockets: dict[str, set[ServerConnection]] = {}
        self.offsets: dict[str, int] = {}

    async def feed(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        name = unquote(urlsplit(ws.request.path).path[len(FEED_PREFIX) :])
        sockets = self.sockets.setdefault(name, set())
        sockets.add(ws)
        try:
            subscribed = {
                "type": "subscribed",
                "channel": name,
                "offset": self.offsets.get(name, 0),
                "epoch": "",
            }
            await ws.send(orjson.dumps(subscribed), text=True)
            async for frame in ws:
                self.publish(name, orjson.loads(frame))
        except ConnectionClosed:
            pass
        finally:
            sockets.discard(ws)

    def publish(self, name: str, data: object) -> None:
        offset = self.offsets[name] = self.offsets.get(name, 0) + 1
        event = orjson.dumps(
            {
                "type": "message",
                "channel": name,
                "offset": offset,
                "epoch": "",
                "data": data,
                "client": None,
                "ts": time.time_ns() // 1_000_000,
            }
        )
        faults = self.faults
        if faults.hits(faults.drop_every, offset):
            return
        broadcast(self.sockets[name], event, text=True)
        if faults.hits(faults.duplicate_every, offset):
            broadcast(self.sockets[name], event, text=True)
        if faults.hits(faults.misroute_every, offset):
            for other, sockets in self.sockets.items():
                if other != name:
                    broadcast(sockets, event, text=True)


async def main(args: argparse.Namespace) -> None:
    server = Server(Faults(args.drop_every, args.duplicate_every, args.misroute_every))
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(server.feed, "127.0.0.1", args.port, compression=None):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--drop-every", type=int, default=0, metavar="K")
    parser.add_argument("--duplicate-every", type=int, default=0, metavar="K")
    parser.add_argument("--misroute-every", type=int, default=0, metavar="K")
    asyncio.run(main(parser.parse_args()))
