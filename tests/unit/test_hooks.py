"""Which hook a channel gets (``PatternTable``), and how ``Hooks`` checks what it is given
and what a hook returns. Pure logic, no Node."""

from __future__ import annotations

from typing import Any

import pytest

from sanic_feeds import ClientView, HookFailed, Identity
from sanic_feeds.server.hooks import Hooks, PatternTable


def table(*patterns: str) -> PatternTable[str]:
    t: PatternTable[str] = PatternTable()
    for pattern in patterns:
        t.add(pattern, pattern)
    return t


def test_an_exact_name_beats_every_wildcard() -> None:
    t = table("*", "chat:*", "chat:lobby")
    assert t.match("chat:lobby", None) == "chat:lobby"
    assert t.match("chat:lobby2", None) == "chat:*"


def test_the_longer_prefix_wins_whatever_the_order_of_registration() -> None:
    t = table("chat:vip:*", "*", "chat:*")
    assert t.match("chat:vip:1", None) == "chat:vip:*"
    assert t.match("chat:1", None) == "chat:*"
    assert t.match("news", None) == "*"


def test_no_match_is_none() -> None:
    assert table("chat:*", "news").match("newsroom", None) is None
    assert table().match("x", None) is None
    assert not table()


def test_sub_stands_for_the_user_and_matches_nothing_without_one() -> None:
    t = table("user:$sub", "dm:$sub:*", "user:*")
    assert t.match("user:ada", "ada") == "user:$sub"
    assert t.match("user:bob", "ada") == "user:*"
    assert t.match("user:ada", None) == "user:*"
    assert t.match("dm:ada:bob", "ada") == "dm:$sub:*"
    assert t.match("dm:bob:ada", "ada") is None


def test_of_two_patterns_that_come_to_the_same_text_the_first_registered_wins() -> None:
    assert table("user:$sub", "user:ada").match("user:ada", "ada") == "user:$sub"
    assert table("user:ada", "user:$sub").match("user:ada", "ada") == "user:ada"


def test_a_star_inside_a_pattern_is_text_as_in_tokens() -> None:
    t = table("a*b")
    assert t.match("a*b", None) == "a*b"
    assert t.match("axb", None) is None


def test_a_pattern_registered_twice_or_empty_is_refused() -> None:
    t = table("chat:*")
    with pytest.raises(ValueError, match="already"):
        t.add("chat:*", "again")
    with pytest.raises(ValueError):
        t.add("", "empty")


def test_hooks_must_be_async_and_connect_is_registered_once() -> None:
    hooks = Hooks(1.0)

    def sync(client: Any, channel: str) -> None: ...

    async def connect(request: Any, identity: Any) -> None: ...

    with pytest.raises(TypeError, match="async"):
        hooks.add_subscribe("x", sync)  # type: ignore[arg-type]
    hooks.add_connect(connect)
    with pytest.raises(ValueError, match="already"):
        hooks.add_connect(connect)


def test_a_client_view_is_read_only_and_shows_its_identity() -> None:
    channels = {"a"}
    view = ClientView("c1", Identity("ada", info={"name": "Ada"}), channels)
    assert (view.id, view.user, view.info, view.channels) == ("c1", "ada", {"name": "Ada"}, {"a"})
    channels.add("b")
    assert view.channels == {"a", "b"}  # live, but a frozenset a hook cannot change
    with pytest.raises(AttributeError):
        view.id = "c2"  # type: ignore[misc]
    anonymous = ClientView("c3", None, ())
    assert (anonymous.user, anonymous.info) == (None, {})


@pytest.mark.parametrize("returned", ["news", ["bad name"], [1], 42])
async def test_a_connect_hook_must_return_channel_names(returned: Any) -> None:
    hooks = Hooks(1.0)

    async def connect(request: Any, identity: Any) -> Any:
        return returned

    hooks.add_connect(connect)
    with pytest.raises(HookFailed):
        await hooks.connect(None, None)


async def test_a_connect_hook_may_return_none_or_any_iterable_of_names() -> None:
    hooks = Hooks(1.0)
    assert await hooks.connect(None, None) == ()  # no hook

    async def connect(request: Any, identity: Any) -> Any:
        return None if identity is None else (f"user:{identity.user}" for _ in range(1))

    hooks.add_connect(connect)
    assert await hooks.connect(None, None) == ()
    assert await hooks.connect(None, Identity("ada")) == ("user:ada",)


async def test_a_publish_hook_must_return_data_that_can_be_published() -> None:
    hooks = Hooks(1.0)

    async def publish(client: Any, channel: str, data: Any) -> Any:
        return {1, 2} if data == "set" else data

    hooks.add_publish("*", publish)
    client = ClientView("c", None, ())
    with pytest.raises(HookFailed):
        await hooks.publish(client, "x", "set")
    assert await hooks.publish(client, "x", None) is None  # null stays null


async def test_a_hook_with_the_wrong_signature_is_an_unexpected_error() -> None:
    hooks = Hooks(1.0)

    async def publish(client: Any) -> Any: ...

    hooks.add_publish("*", publish)  # type: ignore[arg-type]
    with pytest.raises(HookFailed):
        await hooks.publish(ClientView("c", None, ()), "x", 1)


async def test_a_timeout_raised_by_the_hook_itself_is_an_error_not_the_hook_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = Hooks(10.0)

    async def publish(client: Any, channel: str, data: Any) -> Any:
        raise TimeoutError("the app's own call timed out")

    hooks.add_publish("*", publish)
    with pytest.raises(HookFailed, match="raised TimeoutError"):
        await hooks.publish(ClientView("c", None, ()), "x", 1)
    [record] = caplog.records
    assert record.exc_info is not None
