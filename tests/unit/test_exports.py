"""The public API: what ``from sanic_feeds import ...`` offers, pinned."""

from __future__ import annotations

import importlib

import pytest

import sanic_feeds

PUBLIC_API = [
    "BadRequest",
    "Broker",
    "BrokerUnavailable",
    "ClientView",
    "CloseCode",
    "ErrorCode",
    "Feeds",
    "FeedsClient",
    "FeedsError",
    "Forbidden",
    "HookFailed",
    "Identity",
    "Join",
    "Leave",
    "Publication",
    "PublishBufferFull",
    "Publisher",
    "RateLimited",
    "Settings",
    "StreamPosition",
    "Subscribed",
    "SubscriptionRefused",
    "Unauthorized",
    "create_broker",
    "load_settings",
]


def test_all_is_pinned() -> None:
    assert sorted(sanic_feeds.__all__) == PUBLIC_API


@pytest.mark.parametrize("name", PUBLIC_API)
def test_every_exported_name_resolves_to_its_home_module(name: str) -> None:
    value = getattr(sanic_feeds, name)
    home = importlib.import_module(sanic_feeds._SOURCES[name], "sanic_feeds")
    assert value is getattr(home, name)


def test_dir_lists_the_lazy_names() -> None:
    assert set(PUBLIC_API) <= set(dir(sanic_feeds))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = sanic_feeds.Nope  # type: ignore[attr-defined]
