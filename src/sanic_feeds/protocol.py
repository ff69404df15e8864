"""The wire codec: events in, bytes out, and client frames in, values out.

Pure functions over frozen dataclasses; no I/O. Two wire formats exist:
``json`` (SPEC "Events") and ``raw`` (the seed's plain text format, for
``/feed/<channel>?format=raw``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from websockets.frames import Frame, Opcode

from .errors import ErrorCode

__all__ = [
    "Join",
    "Leave",
    "Publication",
    "StreamPosition",
    "WireFormat",
    "data_from_client_text",
    "decode_envelope",
    "encode_envelope",
    "encode_error",
    "encode_event",
    "encode_reply",
    "encode_subscribed",
    "message_event",
    "now_ms",
    "text_frame",
]


class WireFormat(StrEnum):
    JSON = "json"
    RAW = "raw"


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a channel's history stands: the last ``offset`` in ``epoch``.

    Offsets are assigned by the broker, strictly increasing per channel
    within one epoch; a new epoch means the history before it was lost.
    """

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Publication:
    """One published message, as every instance sees it."""

    channel: str
    offset: int
    epoch: str
    #: The message as a JSON value.
    data: Any
    #: Sender's client id, ``None`` for the HTTP API and backend publishers.
    client: str | None = None
    ts_ms: int = field(default_factory=lambda: now_ms())
    #: The exact text a raw client receives, when it is not derivable from
    #: ``data`` (a client frame that was JSON but written with other spacing).
    raw: str | None = None

    @property
    def raw_text(self) -> str:
        """What a ``format=raw`` client receives: the published text exactly."""
        if self.raw is not None:
            return self.raw
        if isinstance(self.data, str):
            return self.data
        return orjson.dumps(self.data).decode()


@dataclass(frozen=True, slots=True)
class Join:
    channel: str
    client: str
    info: Any = None


@dataclass(frozen=True, slots=True)
class Leave:
    channel: str
    client: str


Event = Publication | Join | Leave


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def data_from_client_text(text: str) -> tuple[Any, str | None]:
    """Turn a frame a ``/feed`` client sent into ``(data, raw)``.

    ``data`` is the frame parsed as JSON when it is valid JSON, else the text.
    ``raw`` is the text when raw clients could not re-derive it from ``data``.
    """
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text, None
    if isinstance(data, str) or orjson.dumps(data).decode() != text:
        return data, text
    return data, None


def encode_event(event: Event, wire_format: WireFormat) -> bytes:
    """Encode an event once for every subscriber using ``wire_format``."""
    if wire_format is WireFormat.RAW:
        if isinstance(event, Publication):
            return event.raw_text.encode()
        if isinstance(event, Join):
            return f"Client {event.client} has joined".encode()
        return f"Client {event.client} has left".encode()
    if isinstance(event, Publication):
        return orjson.dumps(message_event(event))
    if isinstance(event, Join):
        return orjson.dumps(
            {
                "type": "join",
                "channel": event.channel,
                "client": event.client,
                "info": event.info if event.info is not None else {},
            }
        )
    return orjson.dumps({"type": "leave", "channel": event.channel, "client": event.client})


def message_event(pub: Publication) -> dict[str, Any]:
    """The JSON ``message`` event of a publication, as a dict."""
    return {
        "type": "message",
        "channel": pub.channel,
        "offset": pub.offset,
        "epoch": pub.epoch,
        "data": pub.data,
        "client": pub.client,
        "ts": pub.ts_ms,
    }


def encode_reply(reply_type: str, command_id: Any, **fields: Any) -> bytes:
    """A reply to a ``/ws`` command: ``{"type": reply_type, ...fields, "id": command_id}``."""
    event: dict[str, Any] = {"type": reply_type, **fields}
    if command_id is not None:
        event["id"] = command_id
    return orjson.dumps(event)


def encode_subscribed(
    channel: str, position: StreamPosition, recovered: bool, command_id: Any = None
) -> bytes:
    event: dict[str, Any] = {
        "type": "subscribed",
        "channel": channel,
        "offset": position.offset,
        "epoch": position.epoch,
        "recovered": recovered,
    }
    if command_id is not None:
        event["id"] = command_id
    return orjson.dumps(event)


def encode_error(code: ErrorCode, message: str, command_id: Any = None) -> bytes:
    event: dict[str, Any] = {"type": "error", "code": code.value, "message": message}
    if command_id is not None:
        event["id"] = command_id
    return orjson.dumps(event)


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked server-to-client text frame carrying ``payload``.

    Built once per message and written as is to every subscriber's socket.
    """
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


# The broker envelope: what travels between instances for one publication,
# without the broker-assigned offset and epoch (the broker adds those).


def encode_envelope(pub: Publication) -> bytes:
    envelope: dict[str, Any] = {"d": pub.data, "t": pub.ts_ms}
    if pub.client is not None:
        envelope["c"] = pub.client
    if pub.raw is not None:
        envelope["r"] = pub.raw
    return orjson.dumps(envelope)


def decode_envelope(channel: str, offset: int, epoch: str, envelope: bytes) -> Publication:
    fields = orjson.loads(envelope)
    return Publication(
        channel=channel,
        offset=offset,
        epoch=epoch,
        data=fields.get("d"),
        client=fields.get("c"),
        ts_ms=fields.get("t", 0),
        raw=fields.get("r"),
    )
