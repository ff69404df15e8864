from __future__ import annotations

import pytest

from sanic_feeds.errors import BadChannel, ErrorCode
from sanic_feeds.names import namespace_of, validate_channel


@pytest.mark.parametrize(
    "name", ["news", "chat:room-1", "user:$sub", "a.b_c/d@e", "x", "A" * 200, "0"]
)
def test_valid_channel_names(name: str) -> None:
    assert validate_channel(name) == name


@pytest.mark.parametrize(
    "name", ["", "A" * 201, "has space", "tag{x}", "new\nline", "é", "a#b", None, 42]
)
def test_invalid_channel_names_are_bad_channel(name: object) -> None:
    with pytest.raises(BadChannel) as caught:
        validate_channel(name)
    assert caught.value.code is ErrorCode.BAD_CHANNEL
    assert "A-Z a-z 0-9" in caught.value.message


def test_namespace_is_the_part_before_the_first_colon() -> None:
    assert namespace_of("chat:room:1") == "chat"
    assert namespace_of("news") == ""
