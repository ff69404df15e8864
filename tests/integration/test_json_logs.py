"""``--log-format json`` on a real server: every line it writes, from start to drain, is
one JSON object with the common fields, and each upgrade gets its access line."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.ws import close_code, open_feed, recv_event

pytestmark = pytest.mark.integration

COMMON = {"ts", "level", "logger", "message", "instance"}


def parse_log(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as JSON; fails on the first that is not one object."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        assert set(entry) >= COMMON, line
        entries.append(entry)
    return entries


async def test_every_line_of_a_json_log_parses_from_start_to_drain(
    feeds_server_factory: Any, redis_url: str
) -> None:
    server = feeds_server_factory(
        redis_url,
        ["--workers", "2", "--log-format", "json", "--log-level", "debug", "--rate-burst", "1",
         "--rate-limit", "0.1"],
    )  # fmt: skip

    # Connections that come and go, a refused upgrade, errors, a binary frame.
    chatty = await open_feed(server.ws_url, "news")
    await chatty.send("hello")
    await chatty.send("too fast")  # over the rate limit
    while (event := await recv_event(chatty))["type"] != "error":
        pass
    assert event["code"] == "rate_limited"
    await chatty.close()
    with pytest.raises(InvalidStatus):
        await connect(f"{server.ws_url}/feed/bad%20channel", open_timeout=10)
    multiplex = await connect(f"{server.ws_url}/ws", open_timeout=10)
    await multiplex.send("not a command")
    assert (await recv_event(multiplex))["code"] == "bad_request"
    await multiplex.send(b"\x00")
    assert await close_code(multiplex) == 1003
    # Two that stay until the drain.
    stayers = [await open_feed(server.ws_url, "news") for _ in range(2)]
    closes = [asyncio.create_task(close_code(ws)) for ws in stayers]
    await asyncio.sleep(0.3)

    assert server.stop() == 0
    assert await asyncio.gather(*closes) == [1001, 1001]

    entries = parse_log(server.log())
    assert {e["level"] for e in entries} >= {"debug", "info"}
    instances = {e["instance"] for e in entries if e["logger"] == "sanic_feeds"}
    assert len(instances) == 2 and None not in instances  # one per worker

    access = [e for e in entries if e["logger"] == "sanic_feeds.access"]
    by_status: dict[int, list[dict[str, Any]]] = {}
    for entry in access:
        assert {"method", "path", "status", "duration_ms", "remote"} <= set(entry), entry
        assert entry["duration_ms"] >= 0
        assert entry["instance"] in instances
        by_status.setdefault(entry["status"], []).append(entry)
    assert [e["path"] for e in by_status[400]] == ["/feed/bad%20channel"]
    upgraded = by_status[101]
    assert len(upgraded) == 4
    assert all(isinstance(e["client"], str) for e in upgraded)
    # The code of the close the server started: 1003 for the binary frame, 1001 for the
    # drain; none for the client that closed first.
    assert sorted(str(e.get("code")) for e in upgraded) == ["1001", "1001", "1003", "None"]
