"""The published payload and how subscribers read it back."""

from __future__ import annotations

import orjson
import pytest

from sanic_feeds.bench.payload import encode_payload, padding_for, read_probe


@pytest.mark.parametrize("size", [100, 1000, 10_000])
def test_padding_brings_the_payload_to_about_the_size_asked(size: int) -> None:
    padding = padding_for("bench:abc-0", size)
    payload = encode_payload(1_234_567, 1_700_000_000_000_000_000, "bench:abc-0", padding)
    assert abs(len(payload) - size) <= 2


def test_padding_is_never_negative() -> None:
    assert padding_for("bench:abc-0", 1) == ""


def test_a_payload_reads_back() -> None:
    data = orjson.loads(encode_payload(7, 123, "bench:x-1", "xx"))
    assert read_probe(data) == (7, 123, "bench:x-1")


@pytest.mark.parametrize(
    "data", [None, "text", [1, 2], {"s": 1, "t": 2}, {"s": 1, "t": "2", "c": "x"}]
)
def test_anything_else_is_not_a_bench_payload(data: object) -> None:
    assert read_probe(data) is None
