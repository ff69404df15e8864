"""The ``/ws`` command protocol: JSON text in, validated commands out. Pure logic."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from .errors import BadRequest, FeedsError
from .names import validate_channel

__all__ = ["MAX_HISTORY_LIMIT", "Command", "InvalidCommand", "Op", "decode_command"]

MAX_HISTORY_LIMIT = 1000


class Op(StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    PUBLISH = "publish"
    PRESENCE = "presence"
    HISTORY = "history"
    PING = "ping"


_NEEDS_CHANNEL = frozenset(Op) - {Op.PING}


@dataclass(frozen=True, slots=True)
class Command:
    op: Op
    #: Echoed in the reply; any JSON scalar the client chose, or None.
    id: Any = None
    channel: str = ""
    data: Any = None
    #: subscribe: the last offset seen; history: read after this offset.
    since: int | None = None
    epoch: str = ""
    limit: int | None = None


class InvalidCommand(Exception):
    """A command the server cannot run; ``error`` says why, ``command_id`` echoes its id."""

    def __init__(self, error: FeedsError, command_id: Any = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.command_id = command_id


def decode_command(text: str) -> Command:
    try:
        fields = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidCommand(BadRequest("a command is one JSON object per text frame")) from None
    if not isinstance(fields, dict):
        raise InvalidCommand(BadRequest("a command is a JSON object with an 'op'"))
    command_id = fields.get("id")
    try:
        return _validate(fields, command_id)
    except FeedsError as exc:
        raise InvalidCommand(exc, command_id) from None


def _validate(fields: dict[str, Any], command_id: Any) -> Command:
    if isinstance(command_id, (dict, list)):
        raise BadRequest("'id' must be a number or a string")
    try:
        op = Op(str(fields.get("op")))
    except ValueError:
        known = ", ".join(op.value for op in Op)
        raise BadRequest(f"unknown op {fields.get('op')!r}: use one of {known}") from None
    channel = validate_channel(fields.get("channel")) if op in _NEEDS_CHANNEL else ""
    if op is Op.PUBLISH and "data" not in fields:
        raise BadRequest("publish needs 'data'")
    since = _optional_int(fields, "since", minimum=0)
    limit = _optional_int(fields, "limit", minimum=1, maximum=MAX_HISTORY_LIMIT)
    epoch = fields.get("epoch") or ""
    if not isinstance(epoch, str):
        raise BadRequest("'epoch' must be a string")
    return Command(
        op=op,
        id=command_id,
        channel=channel,
        data=fields.get("data"),
        since=since,
        epoch=epoch,
        limit=limit,
    )


def _optional_int(
    fields: dict[str, Any], name: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{name}' must be an integer")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise BadRequest(f"'{name}' must be {bound}")
    return value
