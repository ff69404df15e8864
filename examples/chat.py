"""A chat where the app decides, with sanic-feeds' hooks::

    python examples/chat.py --port 8000 --db chat.db

- ``POST /login`` with ``{"name": "Ada"}`` sets a ``session`` cookie (the app's own
  sessions; ``authenticate`` turns the cookie into an ``Identity``).
- ``GET /ws`` with that cookie: the connection is subscribed at once to ``user:<id>``, its
  own channel (``on_connect``); it may join the rooms of ``ROOMS`` (``on_subscribe``) and
  send ``{"op": "publish", "channel": "chat:lobby", "data": {"text": "hi"}}``.
- Every message is checked (an object with a ``text`` of 1 to 500 characters, else
  ``bad_request``), stamped with the sender's name and stored in SQLite before it is
  published (``on_publish``); ``GET /rooms/<room>/messages`` serves the last 50.

The standard library's ``sqlite3`` blocks: every call runs in a thread
(``asyncio.to_thread``), with a connection of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any

from sanic import Request, Sanic, json
from sanic.response import HTTPResponse

from sanic_feeds import BadRequest, ClientView, Feeds, Forbidden, Identity

__all__ = ["ROOMS", "build_app", "main"]

#: The rooms there are; subscribing to another ``chat:`` channel is refused.
ROOMS = frozenset({"lobby", "random"})
MAX_TEXT = 500
LAST = 50


class Store:
    """The messages of every room, in SQLite. Each method blocks: call it in a thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, room TEXT,"
                " user TEXT, name TEXT, text TEXT, at REAL)"
            )

    def _db(self) -> sqlite3.Connection:
        # One connection per call: a connection may not move between threads.
        return sqlite3.connect(self.path, timeout=5)

    def add(self, room: str, message: dict[str, Any]) -> int:
        with self._db() as db:
            row = (room, message["user"], message["name"], message["text"], message["at"])
            cursor = db.execute(
                "INSERT INTO messages (room, user, name, text, at) VALUES (?, ?, ?, ?, ?)", row
            )
            return int(cursor.lastrowid or 0)

    def last(self, room: str, count: int = LAST) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, user, name, text, at FROM messages WHERE room = ?"
                " ORDER BY id DESC LIMIT ?",
                (room, count),
            ).fetchall()
        keys = ("id", "user", "name", "text", "at")
        return [dict(zip(keys, row, strict=True)) for row in reversed(rows)]


def build_app(db_path: str, **options: Any) -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic("chat")
    store = Store(db_path)
    #: session cookie -> (user id, display name): the app's own sessions.
    sessions: dict[str, tuple[str, str]] = {}

    async def authenticate(request: Request) -> Identity | None:
        session = sessions.get(request.cookies.get("session") or "")
        if session is None:
            return None
        user, name = session
        return Identity(
            user, info={"name": name}, subscribe=["chat:*", "user:$sub"], publish=["chat:*"]
        )

    feeds = Feeds(app, authenticate=authenticate, **options)

    @feeds.on_connect
    async def connect(request: Request, identity: Identity | None) -> list[str]:
        # Each user hears about themselves on their own channel, without asking.
        return [] if identity is None else [f"user:{identity.user}"]

    @feeds.on_subscribe("chat:*")
    async def join(client: ClientView, channel: str) -> None:
        if channel.removeprefix("chat:") not in ROOMS:
            raise Forbidden(f"no room {channel!r}")

    @feeds.on_publish("chat:*")
    async def post(client: ClientView, channel: str, data: Any) -> Any:
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise BadRequest('a message is {"text": "..."}')
        if len(text) > MAX_TEXT:
            raise BadRequest(f"at most {MAX_TEXT} characters")
        message = {
            "text": text.strip(),
            "user": client.user,
            "name": client.info.get("name", client.user),
            "at": time.time(),
        }
        message["id"] = await asyncio.to_thread(store.add, channel.removeprefix("chat:"), message)
        return message

    @app.post("/login")
    async def login(request: Request) -> HTTPResponse:
        name = (request.json or {}).get("name") if isinstance(request.json, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 40:
            return json({"error": "a name of 1 to 40 characters"}, 400)
        session, user = secrets.token_urlsafe(16), secrets.token_hex(4)
        sessions[session] = (user, name)
        reply = json({"user": user, "name": name})
        reply.add_cookie("session", session, secure=False, samesite="Strict")
        return reply

    @app.get("/rooms/<room:str>/messages")
    async def messages(request: Request, room: str) -> HTTPResponse:
        if room not in ROOMS:
            return json({"error": "no such room"}, 404)
        return json(await asyncio.to_thread(store.last, room))

    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--db", default="chat.db")
    parser.add_argument("--broker", default="memory://")
    args = parser.parse_args(argv)
    # authenticate= trusts cookies: only pages of this site may open the WebSocket.
    origin = f"http://{args.host}:{args.port}"
    app = build_app(args.db, broker=args.broker, allowed_origins=(origin,))
    app.run(host=args.host, port=args.port, single_process=True, access_log=False, motd=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
