"""The client wire codec: events to the bytes a client reads, client frames to values.

Pure functions, no I/O. Two wire formats exist: ``json`` (one JSON object per
frame, docs/protocol.md "Events") and ``raw`` (the seed's plain text, for
``/feed/<channel>?format=raw``). Commands of ``/ws`` are decoded in ``commands.py``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import orjson

from .errors import BadRequest, ErrorCode
from .events import Event, Join, Publication, StreamPosition

__all__ = [
    "MAX_DATA_DEPTH",
    "WireFormat",
    "check_data",
    "data_from_client_text",
    "encode_error",
    "encode_event",
    "encode_reply",
    "encode_subscribed",
    "error_event",
    "message_event",
]


class WireFormat(StrEnum):
    JSON = "json"
    RAW = "raw"


#: How deep a message's data may nest arrays and objects. orjson reads 1024 levels but
#: writes 254, and events wrap data in up to three more (``{"messages": [{"data": ...}]}``):
#: data that could be read but not written would be acked and then never delivered.
MAX_DATA_DEPTH = 250

#: ``check_data`` writes data inside four arrays (lists: orjson does not count tuples), so
#: it fails exactly when data nests deeper than MAX_DATA_DEPTH = 254 - 4. An event that
#: wraps data deeper would need a lower limit.


def check_data(data: Any) -> None:
    """Raise ``BadRequest`` unless ``data`` can be written as JSON inside any event:
    JSON values (and what orjson writes natively) nested at most ``MAX_DATA_DEPTH`` levels."""
    try:
        orjson.dumps([[[[data]]]])
    except orjson.JSONEncodeError as exc:
        if "Recursion limit" in str(exc):
            raise BadRequest(
                f"data nests deeper than {MAX_DATA_DEPTH} levels of arrays and objects"
            ) from None
        raise BadRequest(f"data is not JSON: {exc}") from None


def data_from_client_text(text: str) -> tuple[Any, str | None]:
    """Turn a frame a ``/feed`` client sent into ``(data, raw)``.

    ``data`` is the frame parsed as JSON when it is valid JSON, else the text.
    ``raw`` is the text when raw clients could not re-derive it from ``data``.
    Raises ``BadRequest`` for JSON nested deeper than ``MAX_DATA_DEPTH``.
    """
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text, None
    if isinstance(data, str):
        return data, text
    check_data(data)
    if orjson.dumps(data).decode() != text:
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
    channel: str,
    position: StreamPosition,
    recovered: bool,
    command_id: Any = None,
    *,
    client: str | None = None,
) -> bytes:
    """``subscribed``; ``client`` is the connection's own id (so that it knows its own
    ``join``), left out when None."""
    fields: dict[str, Any] = {
        "channel": channel,
        "offset": position.offset,
        "epoch": position.epoch,
        "recovered": recovered,
    }
    if client is not None:
        fields["client"] = client
    return encode_reply("subscribed", command_id, **fields)


def error_event(code: ErrorCode, message: str, command_id: Any = None) -> dict[str, Any]:
    """The ``error`` event, as a dict: the same body on a WebSocket and over HTTP."""
    event: dict[str, Any] = {"type": "error", "code": code.value, "message": message}
    if command_id is not None:
        event["id"] = command_id
    return event


def encode_error(code: ErrorCode, message: str, command_id: Any = None) -> bytes:
    return orjson.dumps(error_event(code, message, command_id))
