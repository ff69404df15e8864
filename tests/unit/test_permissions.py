"""Channel patterns and what a connection may do (``permissions.py``): pure logic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanic_feeds.permissions import Access, ChannelPatterns

CHANNEL = st.text(alphabet="abc:$*/.-_@", min_size=1, max_size=12)


@pytest.mark.parametrize(
    ("patterns", "user", "allowed", "refused"),
    [
        (["news"], None, ["news"], ["new", "news2", "news:x", ""]),
        (["chat:*"], None, ["chat:", "chat:a", "chat:a:b/c"], ["chat", "cha", "xchat:a"]),
        (["*"], None, ["anything", "a:b", "$sub"], []),
        (["user:$sub"], "ada", ["user:ada"], ["user:$sub", "user:bob", "user:ada2"]),
        (["dm:$sub:*"], "ada", ["dm:ada:", "dm:ada:bob"], ["dm:bob:ada", "dm:$sub:x"]),
        (["$sub"], "ada", ["ada"], ["$sub"]),
        # Without a user, $sub patterns match nothing (not the literal text).
        (["user:$sub", "news"], None, ["news"], ["user:$sub", "user:"]),
        # A * that is not at the end is plain text (and no channel holds a *).
        (["a*b"], None, ["a*b"], ["ab", "axb"]),
    ],
)
def test_patterns(
    patterns: list[str], user: str | None, allowed: list[str], refused: list[str]
) -> None:
    compiled = ChannelPatterns(patterns, user)
    for channel in allowed:
        assert compiled.allows(channel), channel
    for channel in refused:
        assert not compiled.allows(channel), channel


def test_a_user_whose_name_holds_wildcards_gets_no_more_than_their_own_channel() -> None:
    sneaky = ChannelPatterns(["user:$sub"], "*")
    assert sneaky.allows("user:*")
    assert not sneaky.allows("user:ada")
    recursive = ChannelPatterns(["user:$sub"], "$sub")
    assert recursive.allows("user:$sub") and not recursive.allows("user:")


def test_no_patterns_allow_nothing() -> None:
    nothing = ChannelPatterns(())
    assert nothing.allows_nothing and not nothing.allows("news")
    assert ChannelPatterns(["user:$sub"]).allows_nothing  # no user: nothing to substitute


def test_union() -> None:
    both = ChannelPatterns(["news"]) | ChannelPatterns(["chat:*"], "ada")
    assert both.allows("news") and both.allows("chat:x") and not both.allows("other")
    assert (ChannelPatterns(["*"]) | ChannelPatterns(())).allows_everything


@given(st.lists(CHANNEL, max_size=5), CHANNEL, st.one_of(st.none(), CHANNEL))
def test_a_pattern_allows_exactly_what_its_definition_says(
    patterns: list[str], channel: str, user: str | None
) -> None:
    def matches(pattern: str) -> bool:
        wildcard = pattern.endswith("*")
        text = pattern[:-1] if wildcard else pattern
        if "$sub" in text:
            if user is None:
                return False
            text = user.join(text.split("$sub"))
        return channel.startswith(text) if wildcard else channel == text

    assert ChannelPatterns(patterns, user).allows(channel) == any(map(matches, patterns))


def test_access() -> None:
    everything = Access.everything()
    assert everything.may_subscribe("x") and everything.may_publish("y")
    reader = Access(ChannelPatterns(["news"]), ChannelPatterns(()), None)
    assert reader.may_subscribe("news") and not reader.may_publish("news")
    assert reader.user is None
