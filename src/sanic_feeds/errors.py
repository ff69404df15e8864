"""Error codes, close codes and the exception tree, mapped to the wire in one place."""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = [
    "BadChannel",
    "BadRequest",
    "BrokerUnavailable",
    "CloseCode",
    "ErrorCode",
    "FeedsError",
    "Forbidden",
    "HookFailed",
    "LimitExceeded",
    "RateLimited",
    "TooLarge",
    "Unauthorized",
    "UnsupportedMediaType",
]


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` event (docs/protocol.md, "Error codes")."""

    BAD_REQUEST = "bad_request"
    BAD_CHANNEL = "bad_channel"
    FORBIDDEN = "forbidden"
    UNAUTHORIZED = "unauthorized"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    LIMIT_EXCEEDED = "limit_exceeded"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (RFC 6455 section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    #: The connection's token ran out unrefreshed: get a new one and reconnect with ``since``.
    TOKEN_EXPIRED = 4001


class FeedsError(Exception):
    """Base of every error a client can be told about.

    ``code`` is the wire error code and ``http_status`` the status used when
    the error is answered over HTTP (the API, or a refused upgrade).
    """

    code: ErrorCode = ErrorCode.BAD_REQUEST
    http_status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def public_message(self) -> str:
        """What a client is told: ``message``, unless it may hold what only operators
        should read."""
        return self.message


class BadRequest(FeedsError):
    code = ErrorCode.BAD_REQUEST
    http_status = 400


class BadChannel(FeedsError):
    code = ErrorCode.BAD_CHANNEL
    http_status = 400


class Unauthorized(FeedsError):
    code = ErrorCode.UNAUTHORIZED
    http_status = 401


class UnsupportedMediaType(BadRequest):
    """An HTTP body whose ``Content-Type`` is not JSON (``text/plain``, a form type)."""

    http_status = 415


class Forbidden(FeedsError):
    code = ErrorCode.FORBIDDEN
    http_status = 403


class TooLarge(FeedsError):
    code = ErrorCode.TOO_LARGE
    http_status = 413


class RateLimited(FeedsError):
    code = ErrorCode.RATE_LIMITED
    http_status = 429


class RateLimitedTooOften(RateLimited):
    """Over the rate limit once too often in a row: the reply is closing the connection
    with 1008 (``Connection.send_failure``), in its turn after the replies before it."""


class LimitExceeded(FeedsError):
    code = ErrorCode.LIMIT_EXCEEDED
    http_status = 503


class BrokerUnavailable(FeedsError):
    """The broker cannot be reached. A publish may or may not have taken effect (the reply
    can be what was lost): retry it with the same idempotency key."""

    code = ErrorCode.UNAVAILABLE
    http_status = 503

    @property
    def public_message(self) -> str:
        # ``message`` may carry Redis' own error text (a script's error, an address).
        return "broker unavailable, try again later"


class HookFailed(FeedsError):
    """A hook of the app raised something other than a ``FeedsError``, or ran past
    ``--hook-timeout``: the one operation it was asked about is refused, nothing else.
    What went wrong is logged, never told to the client."""

    code = ErrorCode.UNAVAILABLE
    http_status = 503

    @property
    def public_message(self) -> str:
        # ``message`` names the hook and what it raised: for operators only.
        return "the server could not handle this, try again later"
