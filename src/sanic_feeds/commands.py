"""The ``/ws`` command protocol: JSON text in, validated commands out. Pure logic."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from .codec import check_data
from .errors import BadRequest, FeedsError
from .names import MAX_OFFSET, validate_channel, validate_idempotency_key

__all__ = ["MAX_HISTORY_LIMIT", "Command", "InvalidCommand", "Op", "decode_command"]

MAX_HISTORY_LIMIT = 1000


class Op(StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    PUBLISH = "publish"
    PRESENCE = "presence"
    HISTORY = "history"
    PING = "ping"
    REFRESH = "refresh"


_NEEDS_CHANNEL = frozenset(Op) - {Op.PING, Op.REFRESH}


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
    #: publish: publishes nothing when the key was used on the channel in the last 5 min.
    idempotency_key: str | None = None
    #: refresh: the new token.
    token: str = ""


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
    command_id = echoed = fields.get("id")
    if isinstance(command_id, dict | list):
        try:
            check_data(command_id)
        except BadRequest:
            echoed = None  # too deep to be written back: the error goes without it
    try:
        return _validate(fields, command_id)
    except FeedsError as exc:
        raise InvalidCommand(exc, echoed) from None


def _validate(fields: dict[str, Any], command_id: Any) -> Command:
    if isinstance(command_id, (dict, list)):
        raise BadRequest("'id' must be a number or a string")
    op_name = fields.get("op")
    try:
        op = Op(op_name) if isinstance(op_name, str) else None
    except ValueError:
        op = None
    if op is None:
        known = ", ".join(op.value for op in Op)
        raise BadRequest(f"unknown op {_shown(op_name)}: use one of {known}")
    channel = validate_channel(fields.get("channel")) if op in _NEEDS_CHANNEL else ""
    if op is Op.PUBLISH and "data" not in fields:
        raise BadRequest("publish needs 'data'")
    since = _optional_int(fields, "since", minimum=0, maximum=MAX_OFFSET)
    limit = _optional_int(fields, "limit", minimum=1, maximum=MAX_OFFSET)
    if limit is not None:
        # One reply carries at most this many; a client pages on with the last offset.
        limit = min(limit, MAX_HISTORY_LIMIT)
    epoch = fields.get("epoch") or ""
    if not isinstance(epoch, str):
        raise BadRequest("'epoch' must be a string")
    key = fields.get("idempotency_key")
    if key is not None:
        validate_idempotency_key(key)
    token = fields.get("token")
    if op is Op.REFRESH and (not isinstance(token, str) or not token):
        raise BadRequest("refresh needs 'token', the new token")
    return Command(
        op=op,
        id=command_id,
        channel=channel,
        data=fields.get("data"),
        since=since,
        epoch=epoch,
        limit=limit,
        idempotency_key=key,
        token=token if isinstance(token, str) else "",
    )


def _shown(value: Any) -> str:
    """``value`` for an error message: short strings as they are, anything else by type
    (a client's value may be megabytes long, or nested too deep to ``repr``)."""
    if isinstance(value, str) and len(value) <= 50:
        return repr(value)
    return f"<{type(value).__name__}>"


def _optional_int(fields: dict[str, Any], name: str, *, minimum: int, maximum: int) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{name}' must be an integer")
    if value < minimum or value > maximum:
        raise BadRequest(f"'{name}' must be from {minimum} to {maximum}")
    return value
