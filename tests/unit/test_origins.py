"""``--allowed-origins``: exact scheme, host and port (``origins.py``), pure logic."""

from __future__ import annotations

import pytest

from sanic_feeds.origins import OriginPolicy, parse_origin, same_host

POLICY = OriginPolicy(["https://app.example", "http://localhost:3000"])


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example",
        "https://app.example:443",
        "https://APP.example",
        "HTTPS://app.example",
        "https://app.example/",
        "http://localhost:3000",
    ],
)
def test_the_same_origin_written_differently_is_allowed(origin: str) -> None:
    assert POLICY.allows(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "",
        " ",
        "https://app.example.evil.test",
        "https://evil-app.example",
        "https://app.example.",
        "https://appexample",
        "https://xapp.example",
        "http://app.example",
        "https://app.example:8443",
        "wss://app.example:443/x",
        "https://app.example/path",
        "https://app.example?x=1",
        "https://user@app.example",
        "https://app.example@evil.test",
        "http://localhost:30000",
        "http://localhost",
        "file://",
        "https://app.example:99999",
        "javascript:alert(1)",
        "https://app.example\x00.evil.test",
    ],
)
def test_look_alikes_null_and_garbage_are_refused(origin: str) -> None:
    assert not POLICY.allows(origin)


def test_no_origin_header_is_not_a_browser_and_is_allowed() -> None:
    assert POLICY.allows(None)


def test_an_empty_policy_allows_every_origin() -> None:
    anything = OriginPolicy(())
    assert not anything.restricted and anything.allows("https://evil.test")
    assert POLICY.restricted


def test_a_policy_refuses_what_is_not_an_origin() -> None:
    for bad in ("app.example", "https://app.example/path", "null", "*", "ftp://x"):
        with pytest.raises(ValueError):
            OriginPolicy([bad])


def test_parse_origin() -> None:
    assert parse_origin("https://a.example") == ("https", "a.example", 443)
    assert parse_origin("http://[::1]:8000") == ("http", "::1", 8000)
    assert parse_origin("null") is None


def test_same_host() -> None:
    assert same_host("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert same_host("https://a.example", "a.example")
    assert same_host("https://a.example", "a.example:443")
    assert not same_host("http://127.0.0.1:8000", "127.0.0.1:8001")
    assert not same_host("https://evil.test", "a.example")
    assert not same_host("null", "a.example")
    assert not same_host("https://a.example", None)
