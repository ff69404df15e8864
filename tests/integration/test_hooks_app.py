"""The web edge's half of the hooks, against a real process (``tests/support/hooks_app.py``):
the connect hook and the ``/feed`` subscribe hook answer before the upgrade, over HTTP."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.feeds_server import FeedsServer
from tests.support.ws import publish_http, recv_event, recv_messages

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class HooksApp(FeedsServer):
    """``python -m tests.support.hooks_app``, with a short ``--hook-timeout``."""

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "tests.support.hooks_app",
            "--host", self.host, "--port", str(self.port), "--broker", self.broker,
            "--hook-timeout", "0.3" if not self.args else "2", *self.args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["PYTHONPATH"] = str(ROOT)
        return env


@pytest.fixture(scope="module")
def app() -> Iterator[HooksApp]:
    with HooksApp() as server:
        yield server


async def refused_with(app: HooksApp, path: str) -> int:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(f"{app.ws_url}{path}", open_timeout=10):
            pass
    return caught.value.response.status_code


@pytest.mark.parametrize("path", ["/ws", "/feed/news"])
@pytest.mark.parametrize(
    ("mode", "status"), [("refuse", 403), ("fail", 503), ("hang", 503), ("bad", 503)]
)
async def test_the_connect_hook_refuses_before_the_upgrade(
    app: HooksApp, path: str, mode: str, status: int
) -> None:
    assert await refused_with(app, f"{path}?connect={mode}") == status


async def test_a_failing_connect_hook_is_logged_once_with_its_traceback(app: HooksApp) -> None:
    before = app.log().count("RuntimeError: a bug in on_connect")
    await refused_with(app, "/ws?connect=fail")
    log = app.log()
    assert log.count("RuntimeError: a bug in on_connect") == before + 1
    assert "Traceback" in log


async def test_channels_the_connect_hook_returns_are_subscribed_and_announced(
    app: HooksApp,
) -> None:
    async with connect(f"{app.ws_url}/ws?connect=join", open_timeout=10) as ws:
        first, second = await recv_event(ws), await recv_event(ws)
        assert {first["channel"], second["channel"]} == {"user:alone", "news"}
        assert first["type"] == second["type"] == "subscribed"
        assert "id" not in first and "id" not in second
        await publish_http(app.url, "user:alone", {"for": "you"})
        [message] = await recv_messages(ws, 1)
        assert message["data"] == {"for": "you"}


@pytest.mark.parametrize(
    ("channel", "status"), [("feed:closed", 403), ("feed:broken", 503), ("feed:slow", 503)]
)
async def test_the_feed_subscribe_hook_refuses_before_the_upgrade(
    app: HooksApp, channel: str, status: int
) -> None:
    assert await refused_with(app, f"/feed/{channel}") == status


async def test_the_feed_subscribe_hook_lets_other_channels_in(app: HooksApp) -> None:
    async with connect(f"{app.ws_url}/feed/feed:open", open_timeout=10) as ws:
        assert (await recv_event(ws))["type"] == "subscribed"
        await ws.send('"hello"')
        [message] = await recv_messages(ws, 1)
        assert message["data"] == "hello"


async def test_a_feed_frame_goes_through_the_publish_hook(app: HooksApp) -> None:
    async with (
        connect(f"{app.ws_url}/feed/feed:pub", open_timeout=10) as ws,
        connect(f"{app.ws_url}/feed/feed:pub?format=raw", open_timeout=10) as raw,
    ):
        assert (await recv_event(ws))["type"] == "subscribed"
        await ws.send('"refuse"')
        refused = await recv_event(ws)
        while refused["type"] == "join":  # the raw client's
            refused = await recv_event(ws)
        assert refused["type"] == "error" and refused["code"] == "bad_request"
        # Spaces: a raw client would get this text byte for byte, had the hook not changed it.
        await ws.send('{ "a": 1 }')
        [message] = await recv_messages(ws, 1)
        assert message["data"] == {"a": 1, "seen": True}
        frame = await asyncio.wait_for(raw.recv(), 10)
        while str(frame).startswith("Client "):  # its own join
            frame = await asyncio.wait_for(raw.recv(), 10)
        assert frame == '{"a":1,"seen":true}'


async def test_upgrades_waiting_in_a_hook_count_against_max_connections(
    feeds_server_factory: Any,
) -> None:
    """Two upgrades at once, each half a second in on_connect, on an instance that takes one
    connection: the second is refused with 503, rather than both let in."""
    app = HooksApp(args=("--max-connections", "1"))
    feeds_server_factory.servers.append(app)
    app.start()

    async def open_one() -> int:
        try:
            async with connect(f"{app.ws_url}/ws?connect=slow", open_timeout=10) as ws:
                await asyncio.sleep(1)  # held until the other one was answered
                await ws.ping()
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    assert sorted(await asyncio.gather(open_one(), open_one())) == [101, 503]
