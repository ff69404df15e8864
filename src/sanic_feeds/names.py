"""Rules for the names clients choose: channels and idempotency keys
(docs/protocol.md, "Channel names and idempotency keys")."""

from __future__ import annotations

import re

from .errors import BadChannel, BadRequest

__all__ = [
    "MAX_CHANNEL_LENGTH",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_OFFSET",
    "namespace_of",
    "validate_channel",
    "validate_idempotency_key",
]

MAX_CHANNEL_LENGTH = 200

#: The largest offset a client may name (``since``): 2^53 - 1, the largest integer every
#: JSON reader holds exactly. Brokers count offsets in 64 bits and never get near it.
MAX_OFFSET = 2**53 - 1

_CHANNEL_RE = re.compile(rf"[A-Za-z0-9_\-.:@$/]{{1,{MAX_CHANNEL_LENGTH}}}")

MAX_IDEMPOTENCY_KEY_LENGTH = 128

_IDEMPOTENCY_KEY_RE = re.compile(rf"[A-Za-z0-9_\-.:]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")


def validate_channel(name: object) -> str:
    """Return ``name`` if it is a valid channel name, else raise :class:`BadChannel`.

    Valid: 1 to 200 characters of ``A-Z a-z 0-9 _ - . : @ $ /``. The rule keeps
    ``{`` and ``}`` out, which is what lets channel names sit inside Redis
    Cluster hash tags unescaped.
    """
    if not isinstance(name, str) or _CHANNEL_RE.fullmatch(name) is None:
        # Never the repr of what a client sent: it may be nested too deep to print.
        shown = repr(name[:50]) if isinstance(name, str) else f"<{type(name).__name__}>"
        raise BadChannel(
            f"invalid channel name {shown}: use 1 to {MAX_CHANNEL_LENGTH} characters "
            "of A-Z a-z 0-9 _ - . : @ $ /"
        )
    return name


def namespace_of(channel: str) -> str:
    """The namespace of ``chat:room1`` is ``chat``; a name without ``:`` has namespace ``""``."""
    head, sep, _ = channel.partition(":")
    return head if sep else ""


def validate_idempotency_key(key: object) -> str:
    """Return ``key`` if it is a valid idempotency key, else raise :class:`BadRequest`.

    Valid: 1 to 128 characters of ``A-Z a-z 0-9 _ - . :`` (a UUID, a job id).
    """
    if not isinstance(key, str) or _IDEMPOTENCY_KEY_RE.fullmatch(key) is None:
        raise BadRequest(
            f"invalid idempotency key: use 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters "
            "of A-Z a-z 0-9 _ - . :"
        )
    return key
