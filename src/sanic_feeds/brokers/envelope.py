"""What crosses Redis for one event: the pub/sub payloads and the history entry.

Pure functions, no I/O. Three payloads travel on a channel's pub/sub name:

- ``m<offset>:<epoch>:<envelope>``: a publication, built by ``lua/publish.lua``
  around the envelope below (the broker assigns offset and epoch);
- ``j<JSON {"c": client, "i": info}>``: a join;
- ``l<JSON {"c": client}>``: a leave.

The envelope is the JSON object ``{"d": data, "t": ts_ms, "c": client, "r": raw}``
(``c`` and ``r`` only when set); the history stream stores it as field ``e``.

An instance's status (``InstanceStatus``) is a JSON object of its fields, kept
under ``feeds:status:<instance id>`` and refreshed by each heartbeat.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from ..events import Event, Join, Leave, Publication
from .base import InstanceStatus

__all__ = [
    "MalformedPayload",
    "decode_envelope",
    "decode_payload",
    "decode_status",
    "encode_envelope",
    "encode_membership",
    "encode_status",
]

_STATUS_FIELDS = frozenset(f.name for f in dataclasses.fields(InstanceStatus))


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


def encode_status(status: InstanceStatus) -> bytes:
    return orjson.dumps(dataclasses.asdict(status))


def decode_status(payload: bytes) -> InstanceStatus:
    """An instance's status; fields another version added are ignored, those it lacks take
    their defaults. Raises :class:`MalformedPayload`."""
    try:
        fields = orjson.loads(payload)
        return InstanceStatus(**{k: v for k, v in fields.items() if k in _STATUS_FIELDS})
    except (ValueError, TypeError, AttributeError) as exc:
        raise MalformedPayload(f"malformed instance status: {exc}") from None
