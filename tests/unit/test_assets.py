"""What the server hands to browsers (``server/assets.py``): paths, types, ETags, 304s."""

from __future__ import annotations

import pytest

from sanic_feeds.server.assets import load_assets, not_modified


def test_the_client_and_the_demo_page_are_package_data() -> None:
    assets = load_assets()
    assert sorted(assets) == ["/", "/demo.css", "/demo.js", "/feeds.d.ts", "/feeds.js"]
    assert assets["/feeds.js"].content_type == "text/javascript; charset=utf-8"
    assert assets["/"].content_type == "text/html; charset=utf-8"
    assert b"export class FeedsClient" in assets["/feeds.js"].body
    assert b"export class FeedsClient" in assets["/feeds.d.ts"].body


def test_without_the_demo_page_only_the_client_is_served() -> None:
    assert sorted(load_assets(demo_page=False)) == ["/feeds.d.ts", "/feeds.js"]


def test_only_the_client_may_be_loaded_by_pages_of_other_origins() -> None:
    assets = load_assets()
    assert {path for path, asset in assets.items() if asset.cross_origin} == {
        "/feeds.js",
        "/feeds.d.ts",
    }


@pytest.mark.parametrize(("prefix", "base"), [("", "/"), ("/live", "/live/"), ("/live/", "/live/")])
def test_the_demo_page_resolves_its_urls_under_the_url_prefix(prefix: str, base: str) -> None:
    page = load_assets(prefix)["/"].body.decode()
    assert f'<base href="{base}">' in page
    assert page.count("<base ") == 1


def test_etags_are_strong_and_follow_the_bytes() -> None:
    plain, prefixed = load_assets()["/"], load_assets("/live")["/"]
    assert plain.etag.startswith('"') and plain.etag.endswith('"')
    assert plain.etag != prefixed.etag
    assert load_assets()["/feeds.js"].etag == load_assets("/live")["/feeds.js"].etag


@pytest.mark.parametrize(
    ("header", "answer"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),  # If-None-Match compares weakly
        ('"x", "abc"', True),
        ('"x",W/"abc"', True),
        ("*", True),
        ('"abcd"', False),
        ("abc", False),
    ],
)
def test_if_none_match(header: str | None, answer: bool) -> None:
    assert not_modified(header, '"abc"') is answer
