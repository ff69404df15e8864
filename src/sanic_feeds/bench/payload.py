"""The bench's message payload: what a publisher sends, what a subscriber reads back.

A published frame is the JSON object ``{"s": seq, "t": time_ns, "c": channel,
"p": "xxx..."}``: ``s`` numbers the messages of one channel densely from 0
(loss and duplicates), ``t`` is the wall clock at sending in nanoseconds
(latency, on the same machine's clock), ``c`` is the channel it was
published on (misrouting), and ``p`` pads the object to ``--payload`` bytes.
"""

from __future__ import annotations

import time

import orjson

__all__ = ["CHANNEL", "PAD", "SENT_NS", "SEQ", "encode_payload", "padding_for", "read_probe"]

SEQ = "s"
SENT_NS = "t"
CHANNEL = "c"
PAD = "p"


def padding_for(channel: str, payload_bytes: int) -> str:
    """The ``p`` string that brings a payload on ``channel`` to about ``payload_bytes``.

    Computed once per publisher from a payload with a 7-digit sequence number,
    so sizes drift by a few bytes with the number's width; never negative.
    """
    bare = len(encode_payload(1_000_000, time.time_ns(), channel, ""))
    return "x" * max(0, payload_bytes - bare)


def encode_payload(seq: int, sent_ns: int, channel: str, padding: str) -> bytes:
    """The UTF-8 JSON text of one published frame."""
    return orjson.dumps({SEQ: seq, SENT_NS: sent_ns, CHANNEL: channel, PAD: padding})


def read_probe(data: object) -> tuple[object, int, object] | None:
    """``(seq, sent_ns, channel)`` of a message's ``data``, or None if it is
    not a bench payload (then the message was published by someone else)."""
    if type(data) is not dict:
        return None
    try:
        seq, sent_ns, channel = data[SEQ], data[SENT_NS], data[CHANNEL]
    except KeyError:
        return None
    if type(sent_ns) is not int:
        return None
    return seq, sent_ns, channel
