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
