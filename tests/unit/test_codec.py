from __future__ import annotations

import orjson
import pytest

from sanic_feeds.codec import (
    WireFormat,
    data_from_client_text,
    encode_error,
    encode_event,
    encode_subscribed,
)
from sanic_feeds.errors import ErrorCode
from sanic_feeds.events import Join, Leave, Publication, StreamPosition


def test_client_text_that_is_json_becomes_its_value() -> None:
    assert data_from_client_text('{"a":1}') == ({"a": 1}, None)
    assert data_from_client_text("[1,2]") == ([1, 2], None)


def test_client_text_keeps_its_exact_spelling_for_raw_clients() -> None:
    data, raw = data_from_client_text('{"a": 1}')
    assert data == {"a": 1}
    assert raw == '{"a": 1}'


def test_client_text_that_is_not_json_is_a_string() -> None:
    assert data_from_client_text("hello world") == ("hello world", None)


def test_client_text_that_is_a_json_string_keeps_the_quotes_for_raw_clients() -> None:
    assert data_from_client_text('"hi"') == ("hi", '"hi"')


def test_message_event_has_every_field_of_the_contract() -> None:
    pub = Publication("news", 42, "k2x9", {"t": 1}, client="c1", ts_ms=1732390000123)
    assert orjson.loads(encode_event(pub, WireFormat.JSON)) == {
        "type": "message",
        "channel": "news",
        "offset": 42,
        "epoch": "k2x9",
        "data": {"t": 1},
        "client": "c1",
        "ts": 1732390000123,
    }


@pytest.mark.parametrize(
    ("pub", "expected"),
    [
        (Publication("c", 1, "e", "plain text"), b"plain text"),
        (Publication("c", 1, "e", {"a": 1}), b'{"a":1}'),
        (Publication("c", 1, "e", {"a": 1}, raw='{"a": 1}'), b'{"a": 1}'),
    ],
)
def test_raw_clients_get_the_published_text_exactly(pub: Publication, expected: bytes) -> None:
    assert encode_event(pub, WireFormat.RAW) == expected


def test_join_and_leave_in_both_formats() -> None:
    assert encode_event(Join("c", "id1", None), WireFormat.RAW) == b"Client id1 has joined"
    assert encode_event(Leave("c", "id1"), WireFormat.RAW) == b"Client id1 has left"
    assert orjson.loads(encode_event(Join("c", "id1", {"n": "ann"}), WireFormat.JSON)) == {
        "type": "join",
        "channel": "c",
        "client": "id1",
        "info": {"n": "ann"},
    }
    assert orjson.loads(encode_event(Leave("c", "id1"), WireFormat.JSON)) == {
        "type": "leave",
        "channel": "c",
        "client": "id1",
    }


def test_subscribed_and_error_echo_the_command_id() -> None:
    subscribed = orjson.loads(encode_subscribed("c", StreamPosition(3, "e"), True, 7))
    assert subscribed == {
        "type": "subscribed",
        "channel": "c",
        "offset": 3,
        "epoch": "e",
        "recovered": True,
        "id": 7,
    }
    error = orjson.loads(encode_error(ErrorCode.BAD_CHANNEL, "no", 9))
    assert error == {"type": "error", "code": "bad_channel", "message": "no", "id": 9}
    assert "id" not in orjson.loads(encode_error(ErrorCode.BAD_REQUEST, "no"))


def nested(depth: int) -> object:
    """``depth`` arrays inside one another."""
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_data_nested_up_to_the_limit_passes_and_deeper_is_a_bad_request() -> None:
    from sanic_feeds.codec import MAX_DATA_DEPTH, check_data
    from sanic_feeds.errors import BadRequest

    check_data(nested(MAX_DATA_DEPTH))
    # What passes fits every event that carries data: the deepest is a history reply.
    orjson.dumps({"type": "history", "messages": [{"data": nested(MAX_DATA_DEPTH)}]})
    for depth in (MAX_DATA_DEPTH + 1, 254, 255, 1023):
        with pytest.raises(BadRequest, match="deeper"):
            check_data(nested(depth))
    with pytest.raises(BadRequest, match="not JSON"):
        check_data({1: "a non-string key"})


def test_a_feed_frame_nested_too_deep_is_a_bad_request_not_a_crash() -> None:
    from sanic_feeds.errors import BadRequest

    with pytest.raises(BadRequest):
        data_from_client_text("[" * 300 + "]" * 300)
    assert data_from_client_text("[" * 2000) == ("[" * 2000, None)  # not JSON: a string


def test_subscribed_carries_the_connections_own_id_when_given() -> None:
    event = orjson.loads(encode_subscribed("n", StreamPosition(3, "e"), True, 7, client="c1"))
    assert event == {
        "type": "subscribed",
        "channel": "n",
        "offset": 3,
        "epoch": "e",
        "recovered": True,
        "client": "c1",
        "id": 7,
    }
