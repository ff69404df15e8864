"""What crosses Redis (``brokers/envelope.py``): payloads in and out, pure."""

from __future__ import annotations

import pytest

from sanic_feeds.brokers.base import InstanceStatus
from sanic_feeds.brokers.envelope import (
    MalformedPayload,
    decode_envelope,
    decode_payload,
    decode_status,
    encode_envelope,
    encode_membership,
    encode_status,
)
from sanic_feeds.events import Join, Leave, Publication


def test_envelope_round_trip_keeps_everything_but_offset_and_epoch() -> None:
    pub = Publication("c", 0, "", {"k": [1, "2"]}, client="me", ts_ms=5, raw='{"k": [1, "2"]}')
    assert decode_envelope("c", 9, "ep", encode_envelope(pub)) == Publication(
        "c", 9, "ep", {"k": [1, "2"]}, client="me", ts_ms=5, raw='{"k": [1, "2"]}'
    )


def test_a_message_payload_as_the_publish_script_builds_it() -> None:
    envelope = encode_envelope(Publication("news", 0, "", "hi", ts_ms=7))
    event = decode_payload("news", b"m42:k2x9:" + envelope)
    assert event == Publication("news", 42, "k2x9", "hi", client=None, ts_ms=7)


@pytest.mark.parametrize("event", [Join("news", "c1", {"name": "Ada"}), Leave("news", "c1")])
def test_join_and_leave_round_trip(event: Join | Leave) -> None:
    assert decode_payload("news", encode_membership(event)) == event


@pytest.mark.parametrize(
    "payload", [b"", b"x{}", b"m", b"mnot-a-number:e:{}", b"m1:e:not json", b"j{}", b"l[1]"]
)
def test_a_malformed_payload_is_refused_with_one_error(payload: bytes) -> None:
    with pytest.raises(MalformedPayload, match="news"):
        decode_payload("news", payload)


def test_an_instance_status_round_trips() -> None:
    status = InstanceStatus("i1", "http://h:1", 42, "0.1.0", 12.5, 3, 4, 2)
    assert decode_status(encode_status(status)) == status


def test_a_status_from_another_version_keeps_what_this_one_knows() -> None:
    newer = b'{"id": "i2", "connections": 7, "shards": 3}'
    assert decode_status(newer) == InstanceStatus("i2", connections=7)


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'{"address": "no id"}'])
def test_a_status_this_version_cannot_read_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedPayload):
        decode_status(payload)
