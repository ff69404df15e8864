"""What crosses Redis for one event: the pub/sub payloads and the history entry.

Pure functions, no I/O. Three payloads travel on a channel's pub/sub name:

- ``m<offset>:<epoch>:<envelope>``: a publication, built by ``lua/publish.lua``
  around the envelope below (the broker assigns offset and epoch);
- ``j<JSON {"c": client, "i": info}>``: a join;
- ``l<JSON {"c": client}>``: a leave.

The envelope is the JSON object ``{"d": data, "t": ts_ms, "c": client, "r": raw}``
(``c`` and ``r`` only when set); the history stream stores it as field ``e``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..events import Event, Join, Leave, Publication

__all__ = [
    "MalformedPayload",
    "decode_envelope",
    "decode_payload",
    "encode_envelope",
    "encode_membership",
]


class MalformedPayload(ValueError):
    """A pub/sub payload this version cannot read (another program wrote it)."""


def encode_envelope(pub: Publication) -> bytes:
    """The publication without its offset and epoch, which the broker adds."""
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


def encode_membership(event: Join | Leave) -> bytes:
    """The pub/sub payload of a join or a leave (not kept in history)."""
    if isinstance(event, Join):
        return b"j" + orjson.dumps({"c": event.client, "i": event.info})
    return b"l" + orjson.dumps({"c": event.client})


def decode_payload(channel: str, payload: bytes) -> Event:
    """The event a pub/sub payload on ``channel`` carries; raises :class:`MalformedPayload`."""
    kind = payload[:1]
    try:
        if kind == b"m":
            offset, epoch, envelope = payload[1:].split(b":", 2)
            return decode_envelope(channel, int(offset), epoch.decode(), envelope)
        if kind == b"j":
            fields = orjson.loads(payload[1:])
            return Join(channel, fields["c"], fields.get("i"))
        if kind == b"l":
            return Leave(channel, orjson.loads(payload[1:])["c"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MalformedPayload(f"malformed broker message on {channel!r}: {exc}") from None
    raise MalformedPayload(f"malformed broker message on {channel!r}: unknown kind {kind!r}")
