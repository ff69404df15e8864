"""``GET /feeds.js``, ``/feeds.d.ts`` and the demo page from a real instance: types, ETags,
304 on If-None-Match, CORS for the client only, ``--demo-page false``, a url prefix, and the
address ``serve`` prints first."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest
from sanic import Sanic

from sanic_feeds import Feeds

pytestmark = pytest.mark.integration


def get(url: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def test_the_client_is_served_with_an_etag_and_answered_304_when_unchanged(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory()
    status, headers, body = get(f"{server.url}/feeds.js")
    assert status == 200
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["access-control-allow-origin"] == "*"  # pages of other origins import it
    assert headers["cache-control"] == "no-cache"
    assert body.startswith(b"// feeds.js")
    etag = headers["etag"]

    status, headers, body = get(f"{server.url}/feeds.js", **{"If-None-Match": etag})
    assert (status, body, headers["etag"]) == (304, b"", etag)
    status, _, body = get(f"{server.url}/feeds.js", **{"If-None-Match": '"other"'})
    assert status == 200 and body.startswith(b"// feeds.js")
    status, headers, body = get(f"{server.url}/feeds.js", method="HEAD")
    assert (status, body, headers["etag"]) == (200, b"", etag)

    status, headers, body = get(f"{server.url}/feeds.d.ts")
    assert status == 200 and b"export class FeedsClient" in body
    assert headers["content-type"] == "application/typescript; charset=utf-8"


def test_the_demo_page_and_its_files(feeds_server_factory: Any) -> None:
    server = feeds_server_factory()
    status, headers, page = get(f"{server.url}/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert "access-control-allow-origin" not in headers
    assert b'<script type="module" src="demo.js">' in page
    for name, kind in (("demo.js", "text/javascript"), ("demo.css", "text/css")):
        status, headers, _ = get(f"{server.url}/{name}")
        assert (status, headers["content-type"]) == (200, f"{kind}; charset=utf-8")
        assert get(f"{server.url}/{name}", **{"If-None-Match": headers["etag"]})[0] == 304
    # Nothing else of the package is reachable through these routes.
    assert get(f"{server.url}/server/static.py")[0] == 404
    assert get(f"{server.url}/../static/feeds.js")[0] in (400, 404)


def test_serve_prints_the_demo_pages_address_first(feeds_server_factory: Any) -> None:
    server = feeds_server_factory()
    assert server.log().splitlines()[0] == f"open http://127.0.0.1:{server.port}/"


def test_demo_page_false_keeps_the_client_and_drops_the_page(feeds_server_factory: Any) -> None:
    server = feeds_server_factory(args=["--demo-page", "false"])
    assert get(f"{server.url}/")[0] == 404
    assert get(f"{server.url}/demo.js")[0] == 404
    assert get(f"{server.url}/feeds.js")[0] == 200
    assert not server.log().startswith("open ")


def test_under_a_url_prefix_the_page_and_the_client_move_with_the_routes() -> None:
    app: Sanic[Any, Any] = Sanic("static_prefix")
    Feeds(app, url_prefix="/live")
    paths = {route.path for route in app.router.routes}
    assert {"live", "live/feeds.js", "live/feeds.d.ts", "live/demo.js", "live/ws"} <= paths
    assert "feeds.js" not in paths
