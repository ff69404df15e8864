from __future__ import annotations

import pytest

from sanic_feeds.commands import Command, InvalidCommand, Op, decode_command
from sanic_feeds.errors import ErrorCode


def test_every_op_decodes() -> None:
    assert decode_command('{"op": "ping", "id": 6}') == Command(Op.PING, id=6)
    assert decode_command(
        '{"op": "subscribe", "channel": "news", "since": 41, "epoch": "k2x9", "id": 1}'
    ) == Command(Op.SUBSCRIBE, id=1, channel="news", since=41, epoch="k2x9")
    assert decode_command('{"op": "publish", "channel": "n", "data": null, "id": "x"}') == (
        Command(Op.PUBLISH, id="x", channel="n", data=None)
    )
    assert decode_command('{"op": "history", "channel": "n", "limit": 5}').limit == 5
    # Past what one reply carries: served as that many, not refused.
    assert decode_command('{"op": "history", "channel": "n", "limit": 5000}').limit == 1000
    assert decode_command('{"op": "presence", "channel": "n"}').op is Op.PRESENCE
    assert decode_command('{"op": "unsubscribe", "channel": "n"}').op is Op.UNSUBSCRIBE


@pytest.mark.parametrize(
    ("text", "code", "command_id"),
    [
        ("not json", ErrorCode.BAD_REQUEST, None),
        ("[1, 2]", ErrorCode.BAD_REQUEST, None),
        ('{"id": 3}', ErrorCode.BAD_REQUEST, 3),
        ('{"op": "dance", "id": 4}', ErrorCode.BAD_REQUEST, 4),
        ('{"op": "subscribe", "id": 5}', ErrorCode.BAD_CHANNEL, 5),
        ('{"op": "subscribe", "channel": "a b", "id": 6}', ErrorCode.BAD_CHANNEL, 6),
        ('{"op": "publish", "channel": "n", "id": 7}', ErrorCode.BAD_REQUEST, 7),
        ('{"op": "subscribe", "channel": "n", "since": -1, "id": 8}', ErrorCode.BAD_REQUEST, 8),
        ('{"op": "subscribe", "channel": "n", "since": "4", "id": 9}', ErrorCode.BAD_REQUEST, 9),
        ('{"op": "history", "channel": "n", "limit": 0, "id": 10}', ErrorCode.BAD_REQUEST, 10),
        ('{"op": "history", "channel": "n", "limit": true}', ErrorCode.BAD_REQUEST, None),
        ('{"op": "subscribe", "channel": "n", "epoch": 5}', ErrorCode.BAD_REQUEST, None),
        ('{"op": "ping", "id": {"nested": 1}}', ErrorCode.BAD_REQUEST, {"nested": 1}),
        # Too deep to be echoed (orjson writes 254 levels): the error goes without it.
        ('{"op": "ping", "id": ' + "[" * 300 + "]" * 300 + "}", ErrorCode.BAD_REQUEST, None),
    ],
)
def test_malformed_commands_say_why_and_echo_the_id(
    text: str, code: ErrorCode, command_id: object
) -> None:
    with pytest.raises(InvalidCommand) as caught:
        decode_command(text)
    assert caught.value.error.code is code
    assert caught.value.command_id == command_id
    assert caught.value.error.message


def test_refresh_and_publish_with_an_idempotency_key_decode() -> None:
    assert decode_command('{"op": "refresh", "token": "abc", "id": 9}') == Command(
        Op.REFRESH, id=9, token="abc"
    )
    command = decode_command(
        '{"op": "publish", "channel": "n", "data": 1, "idempotency_key": "k-1"}'
    )
    assert command.idempotency_key == "k-1"


@pytest.mark.parametrize(
    "text",
    [
        '{"op": "refresh", "id": 1}',
        '{"op": "refresh", "token": "", "id": 1}',
        '{"op": "refresh", "token": 42, "id": 1}',
        '{"op": "publish", "channel": "n", "data": 1, "idempotency_key": "a b", "id": 1}',
        '{"op": "publish", "channel": "n", "data": 1, "idempotency_key": 7, "id": 1}',
        # Offsets past 2^53 - 1 are refused here, before a broker could choke on them
        # (Redis: "Invalid stream ID" from since + 1 = 2^64).
        '{"op": "history", "channel": "n", "since": 18446744073709551615, "id": 1}',
        '{"op": "subscribe", "channel": "n", "since": 9007199254740992, "id": 1}',
    ],
)
def test_bad_refresh_keys_and_offsets_are_bad_requests(text: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        decode_command(text)
    assert caught.value.error.code is ErrorCode.BAD_REQUEST
    assert caught.value.command_id == 1


def test_the_largest_offset_is_accepted() -> None:
    command = decode_command('{"op": "history", "channel": "n", "since": 9007199254740991}')
    assert command.since == 2**53 - 1


@pytest.mark.parametrize("field", ["op", "channel"])
def test_a_huge_or_deeply_nested_value_is_named_by_its_type_in_the_error(field: str) -> None:
    """Its repr would be megabytes long, or nested past Python's recursion limit."""
    for value in ("[" * 1000 + "]" * 1000, '"' + "x" * 60_000 + '"'):
        text = '{"op": "subscribe", "channel": "n", "id": 1}'.replace(
            f'"{field}": "{"subscribe" if field == "op" else "n"}"', f'"{field}": {value}'
        )
        with pytest.raises(InvalidCommand) as caught:
            decode_command(text)
        assert len(caught.value.error.message) < 300
