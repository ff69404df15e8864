"""``examples/chat.py`` end to end: a real process on a free port, real clients."""

from __future__ import annotations

import asyncio
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.feeds_server import FeedsServer
from tests.support.ws import recv_event, recv_messages

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class ChatApp(FeedsServer):
    """``python examples/chat.py``, its SQLite file in the server's own temporary directory."""

    def command(self) -> list[str]:
        return [
            sys.executable, str(ROOT / "examples" / "chat.py"),
            "--host", self.host, "--port", str(self.port),
            "--db", str(self.log_path.parent / "chat.db"),
        ]  # fmt: skip


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatApp]:
    with ChatApp() as server:
        yield server


async def http(method: str, url: str, body: Any = None) -> tuple[int, Any, str]:
    """``(status, JSON body, session cookie or "")``."""

    def call() -> tuple[int, Any, str]:
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                cookie = reply.headers.get("Set-Cookie") or ""
                return reply.status, orjson.loads(reply.read()), cookie.split(";")[0]
        except urllib.error.HTTPError as error:
            return error.code, orjson.loads(error.read()), ""

    return await asyncio.to_thread(call)


class User:
    def __init__(self, ws: ClientConnection, user: str) -> None:
        self.ws, self.user = ws, user

    async def command(self, **fields: Any) -> dict[str, Any]:
        await self.ws.send(orjson.dumps(fields).decode())
        while True:
            event = await recv_event(self.ws)
            if event.get("id") == fields["id"]:
                return dict(event)


async def log_in(chat: ChatApp, name: str) -> User:
    status, body, cookie = await http("POST", f"{chat.url}/login", {"name": name})
    assert status == 200 and cookie.startswith("session="), (status, body)
    ws = await connect(f"{chat.ws_url}/ws", additional_headers={"Cookie": cookie})
    # on_connect subscribed it to its own channel at once.
    welcome = await recv_event(ws)
    assert welcome["type"] == "subscribed" and welcome["channel"] == f"user:{body['user']}"
    return User(ws, body["user"])


async def test_messages_are_checked_stamped_stored_and_served(chat: ChatApp) -> None:
    ada, bob = await log_in(chat, "Ada"), await log_in(chat, "Bob")
    try:
        for user in (ada, bob):
            reply = await user.command(op="subscribe", channel="chat:lobby", id="s")
            assert reply["type"] == "subscribed", reply
        ack = await bob.command(
            op="publish", channel="chat:lobby", data={"text": "  hello  "}, id="p"
        )
        assert ack["type"] == "ack", ack
        [message] = await recv_messages(ada.ws, 1)
        assert message["data"]["text"] == "hello"
        assert message["data"]["name"] == "Bob" and message["data"]["user"] == bob.user

        for bad in ({"text": "x" * 501}, {"text": 3}, "just text", {"text": "   "}):
            reply = await bob.command(op="publish", channel="chat:lobby", data=bad, id="bad")
            assert reply["code"] == "bad_request", (bad, reply)
        reply = await bob.command(op="subscribe", channel="chat:secret", id="no")
        assert reply["code"] == "forbidden", reply

        status, stored, _ = await http("GET", f"{chat.url}/rooms/lobby/messages")
        assert status == 200
        assert [(m["name"], m["text"]) for m in stored][-1:] == [("Bob", "hello")]
    finally:
        await ada.ws.close()
        await bob.ws.close()


async def test_the_last_50_messages_are_served(chat: ChatApp) -> None:
    ada = await log_in(chat, "Ada")
    try:
        for n in range(55):
            reply = await ada.command(
                op="publish", channel="chat:random", data={"text": f"m{n}"}, id=n
            )
            assert reply["type"] == "ack", reply
        status, stored, _ = await http("GET", f"{chat.url}/rooms/random/messages")
        assert status == 200
        assert [m["text"] for m in stored] == [f"m{n}" for n in range(5, 55)]
    finally:
        await ada.ws.close()


async def test_a_connection_without_a_session_is_refused(chat: ChatApp) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as caught:
        async with connect(f"{chat.ws_url}/ws"):
            pass
    assert caught.value.response.status_code == 401
