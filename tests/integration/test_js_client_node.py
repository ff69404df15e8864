"""feeds.js on Node's own WebSocket, without a browser: the browser tests' recovery check,
faster. The client's instance is SIGKILLed while the channel goes on through another one;
once it is back, the client has every message once, in order, with ``recovered: true``."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import node_command

SCRIPT = Path(__file__).parents[1] / "js" / "subscribe.mjs"


class NodeSubscriber:
    """``tests/js/subscribe.mjs`` in a child process; ``lines`` fills from its stdout."""

    def __init__(self, ws_url: str, channel: str) -> None:
        self.proc = subprocess.Popen(
            [*node_command(), str(SCRIPT), ws_url, channel],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["kind"] == kind]

    def wait(self, condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.lines[-5:]}")
            time.sleep(0.05)

    def close(self) -> int:
        """Close its stdin: the client closes, and node exits by itself."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(10)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def node_subscriber() -> Iterator[Callable[[str, str], NodeSubscriber]]:
    made: list[NodeSubscriber] = []

    def make(ws_url: str, channel: str) -> NodeSubscriber:
        made.append(NodeSubscriber(ws_url, channel))
        return made[-1]

    yield make
    for subscriber in made:
        subscriber.kill()


def publish(base_url: str, channel: str, data: Any) -> None:
    request = urllib.request.Request(
        f"{base_url}/api/publish",
        data=json.dumps({"channel": channel, "data": data}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


def test_feeds_js_on_node_rides_over_its_instance_being_killed(
    feeds_server_factory: Any,
    redis_url: str,
    node_subscriber: Callable[[str, str], NodeSubscriber],
) -> None:
    one = feeds_server_factory(broker=redis_url)
    two = feeds_server_factory(broker=redis_url)
    client = node_subscriber(f"{one.ws_url}/ws", "orders")
    client.wait(lambda: len(client.of("subscribed")) == 1, "the first subscription")
    for n in range(1, 4):
        publish(two.url, "orders", n)
    client.wait(lambda: len(client.of("message")) == 3, "three messages")

    one.kill()
    client.wait(lambda: client.of("state")[-1]["state"] == "connecting", "the client to notice")
    for n in range(4, 9):
        publish(two.url, "orders", n)
    one.start()
    client.wait(lambda: len(client.of("subscribed")) == 2, "the resubscription")
    for n in range(9, 11):
        publish(two.url, "orders", n)
    client.wait(lambda: len(client.of("message")) == 10, "every message")
    assert client.close() == 0

    assert [(m["offset"], m["data"]) for m in client.of("message")] == [
        (n, n) for n in range(1, 11)
    ]
    subscribed = [(s["recovered"], s["wasRecovering"], s["since"]) for s in client.of("subscribed")]
    assert subscribed == [(False, False, None), (True, True, 3)]
    states = [s["state"] for s in client.of("state")]
    assert states[:3] == ["connecting", "connected", "connecting"]
    assert states[-1] == "disconnected"  # closed by its stdin, at the end
    assert client.of("state")[2]["code"] == 1006
