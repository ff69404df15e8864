"""What the browser and Node tests of feeds.js need: Debian's chromium, Node, a bare page.

- ``require_or_skip(reason)``: skip, or with ``FEEDS_REQUIRE_BROWSER=1`` (set by CI) fail, so
  that a missing chromium, Playwright or Node never skips a test silently there.
- ``CHROMIUM`` and ``CHROMIUM_ARGS``: how the tests launch the browser (never a browser that
  Playwright downloads).
- ``node_command()``: ``node`` with the flag Node 20 needs for its global WebSocket.
- ``BarePage``: a page of another origin that imports ``/feeds.js`` from a feeds server and
  records what its client sees in ``window.events`` and ``window.states``.

Import as ``from tests.support.browser import BarePage, require_or_skip``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NoReturn

import pytest

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "REQUIRE_ENV",
    "BarePage",
    "node_command",
    "require_or_skip",
]

REQUIRE_ENV = "FEEDS_REQUIRE_BROWSER"
CHROMIUM = "/usr/bin/chromium"
#: No sandbox (CI runs as root); no background traffic to Google's hosts, which this
#: machine's closed network refuses.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def require_or_skip(reason: str) -> NoReturn:
    """Skip the test, or fail it when ``FEEDS_REQUIRE_BROWSER=1``."""
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(f"{REQUIRE_ENV}=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def node_command() -> list[str]:
    """``node`` and, on Node 20 and 21, the flag that turns on its global WebSocket."""
    node = shutil.which("node")
    if node is None:
        require_or_skip("node is not installed (apt-get install nodejs)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 20:
        require_or_skip(f"node {version.stdout.strip()} is older than 20")
    return [node, "--experimental-websocket"] if major < 22 else [node]


BARE_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>bare page</title>
<script type="module">
  // ?server=<feeds server base URL>&channels=a,b: import the client from the server, as a
  // page of another origin would, and record everything it sees.
  const params = new URLSearchParams(location.search);
  const server = params.get("server");
  const { FeedsClient } = await import(server + "/feeds.js");
  window.events = [];
  window.states = [];
  const client = new FeedsClient(server.replace(/^http/, "ws") + "/ws", {
    storage: sessionStorage, maxReconnectDelayMs: 2000,
  });
  client.on("state", (state, ctx) => window.states.push({ state, ...ctx }));
  for (const channel of (params.get("channels") || "").split(",").filter(Boolean)) {
    const sub = client.subscribe(channel);
    sub.on("subscribed", (ev) => window.events.push({ kind: "subscribed", ...ev }));
    sub.on("message", (msg) => window.events.push({ kind: "message", ...msg }));
    sub.on("error", (err) => window.events.push({ kind: "error", channel, code: err.code }));
  }
  window.client = client;
</script>
"""


class BarePage:
    """Serves ``BARE_PAGE`` at ``url`` from a thread, on a port of its own (so another origin
    than the feeds server's). ``address(server_url, channels)`` is the page to open."""

    def __init__(self) -> None:
        body = BARE_PAGE.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def address(self, server_url: str, channels: list[str]) -> str:
        return f"{self.url}?server={server_url}&channels={','.join(channels)}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> BarePage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
