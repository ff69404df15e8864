"""Who a connection is: the :class:`Identity` a JWT proves (or an app's own hook returns).

Pure logic, no I/O and no Sanic: :func:`verify_token` takes a token and a
:class:`TokenConfig` and returns an ``Identity`` or raises
:class:`~sanic_feeds.errors.Unauthorized`. docs/protocol.md, "Identity and permissions".

The algorithm is never the token's to choose. A secret verifies HS256 only; a public key
verifies only the algorithm of its own type (RS256 for RSA, ES256 for P-256). A token
whose header names anything else (``none``, or HS256 "signed" with the public key's PEM
text, the algorithm-confusion attack) is refused before its signature is looked at.

Signatures are checked by PyJWT's algorithm objects (``jwt.algorithms``), with the key
loaded once. The compact form around them is read here, as strictly as PyJWT reads it
(canonical base64url, a JSON object header, claims of the right types): PyJWT's own
``decode`` spends about 80 µs per token on that, several times the HMAC itself, and
every connection pays it (``bench/token_cost.py``; ``tests/unit/test_auth.py`` checks
that both agree on every token).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import Algorithm, ECAlgorithm, HMACAlgorithm, RSAAlgorithm

from .codec import check_data
from .errors import FeedsError, Unauthorized

__all__ = ["MAX_TOKEN_BYTES", "MIN_SECRET_BYTES", "Identity", "TokenConfig", "verify_token"]

#: Longer tokens are refused unread: a header is bounded by the HTTP server, a ``refresh``
#: command only by the frame size.
MAX_TOKEN_BYTES = 8192

#: RFC 7518, 3.2: an HS256 key must be at least as long as the hash (256 bits). A
#: shorter secret is taken (tokens minted elsewhere may use one) and warned about: it
#: can be guessed offline from any token.
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is and what it may do.

    ``user`` names it (a token's ``sub``); ``info`` is what presence and ``join`` show of
    it (any JSON value); ``subscribe`` and ``publish`` are channel patterns
    (``permissions.py``: ``news``, ``chat:*``, ``user:$sub``); ``expires_at`` (Unix
    seconds) closes the connection with 4001 when it passes, unless refreshed. Lists are
    kept as tuples.
    """

    user: str
    info: Any = field(default_factory=dict)
    subscribe: Sequence[str] = ()
    publish: Sequence[str] = ()
    expires_at: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.user, str) or not self.user:
            raise TypeError("Identity.user must be a non-empty string")
        for name in ("subscribe", "publish"):
            patterns = getattr(self, name)
            if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
                raise TypeError(f"Identity.{name} must be a list of channel patterns")
            object.__setattr__(self, name, tuple(patterns))
        if self.expires_at is not None and (
            isinstance(self.expires_at, bool) or not isinstance(self.expires_at, int | float)
        ):
            raise TypeError("Identity.expires_at must be Unix seconds or None")
        try:
            check_data(self.info)
        except FeedsError as exc:
            raise TypeError(f"Identity.info: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """How tokens are checked: ``--token-secret`` and/or ``--token-public-key`` (PEM),
    with ``--token-audience`` and ``--token-issuer`` when given.

    Build it with :meth:`create`, which loads the key once and raises ``ValueError`` for
    a key that cannot be used.
    """

    #: HS256 secret, or None.
    secret: bytes | None = None
    #: RSA or P-256 public key, or None.
    public_key: RSAPublicKey | EllipticCurvePublicKey | None = None
    audience: str | None = None
    issuer: str | None = None
    #: Seconds of clock difference forgiven on ``exp`` and ``nbf``.
    leeway_s: float = 0.0

    @classmethod
    def create(
        cls,
        *,
        secret: str | bytes | None = None,
        public_key_pem: bytes | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = 0.0,
    ) -> TokenConfig:
        if secret is None and public_key_pem is None:
            raise ValueError("a token secret or a public key is needed")
        key_bytes = secret.encode() if isinstance(secret, str) else secret
        if key_bytes is not None and not key_bytes:
            raise ValueError("a token secret cannot be empty")
        public_key = None
        if public_key_pem is not None:
            try:
                loaded = load_pem_public_key(public_key_pem)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"not a PEM public key: {exc}") from None
            if isinstance(loaded, EllipticCurvePublicKey) and not isinstance(
                loaded.curve, SECP256R1
            ):
                raise ValueError(f"an EC key must be on P-256 (ES256), not {loaded.curve.name}")
            if not isinstance(loaded, RSAPublicKey | EllipticCurvePublicKey):
                raise ValueError("the public key must be RSA (RS256) or EC P-256 (ES256)")
            public_key = loaded
        return cls(
            secret=key_bytes,
            public_key=public_key,
            audience=audience or None,
            issuer=issuer or None,
            leeway_s=leeway_s,
        )

    @property
    def weak_secret(self) -> bool:
        """The HS256 secret is shorter than RFC 7518 asks (``MIN_SECRET_BYTES``)."""
        return self.secret is not None and len(self.secret) < MIN_SECRET_BYTES

    @property
    def public_algorithm(self) -> str | None:
        """The one algorithm the public key verifies."""
        if self.public_key is None:
            return None
        return "RS256" if isinstance(self.public_key, RSAPublicKey) else "ES256"


#: What verifies each algorithm, given its key.
_ALGORITHMS: dict[str, Algorithm] = {
    "HS256": HMACAlgorithm(HMACAlgorithm.SHA256),
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
    "ES256": ECAlgorithm(ECAlgorithm.SHA256),
}

_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")


def verify_token(token: str, config: TokenConfig) -> Identity:
    """The identity ``token`` proves; raises ``Unauthorized`` saying why not.

    Checks, in this order: the compact form (three canonical base64url segments, a JSON
    object header naming the one algorithm of the configured key, no ``crit``), the
    signature, then the claims: ``exp`` and ``nbf`` (numbers; ``iat`` is not checked),
    ``iss`` and ``aud`` (a token with an ``aud`` needs ``--token-audience``), and the
    shapes: ``sub`` a non-empty string, ``subscribe`` and ``publish`` lists of strings,
    ``info`` any JSON value that can be sent.
    """
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized(f"token longer than {MAX_TOKEN_BYTES} bytes")
    try:
        raw = token.encode("ascii")
        header_part, payload_part, signature_part = raw.split(b".")
        header = _json_object(_segment(header_part))
        signature = _segment(signature_part)
    except (ValueError, UnicodeError):
        raise Unauthorized("malformed token") from None
    named = header.get("alg")
    key, algorithm = _key_for(named, config)
    if named != algorithm:
        raise Unauthorized(f"token algorithm not allowed (only {algorithm})")
    if "crit" in header or header.get("b64", True) is not True:
        raise Unauthorized("malformed token: unsupported header")
    signing_input = raw[: len(header_part) + 1 + len(payload_part)]
    if not _ALGORITHMS[algorithm].verify(signing_input, key, signature):
        raise Unauthorized("token signature does not verify")
    try:
        claims = _json_object(_segment(payload_part))
    except ValueError:
        raise Unauthorized("malformed token") from None
    _check_claims(claims, config)
    return _identity(claims)


def _segment(part: bytes) -> bytes:
    """A base64url segment, decoded; ``ValueError`` unless canonical. Up to two ``=`` of
    padding are taken, as PyJWT takes them (some issuers pad)."""
    stripped = part.rstrip(b"=")
    if stripped != part and (len(part) - len(stripped) > 2 or len(part) % 4 != 0):
        raise ValueError("bad base64url padding")
    part = stripped
    if len(part) % 4 == 1 or _BASE64URL.fullmatch(part) is None:
        raise ValueError("not base64url")
    try:
        decoded = base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    # Canonical only: unused low bits set would give two spellings of one token.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != part:
        raise ValueError("not canonical base64url")
    return decoded


def _json_object(data: bytes) -> dict[str, Any]:
    value = orjson.loads(data)  # orjson.JSONDecodeError is a ValueError
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _number(claims: dict[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized(f"malformed token: {name!r} must be a number")
    return float(value)


def _check_claims(claims: dict[str, Any], config: TokenConfig) -> None:
    now_s = time.time()
    expires_at = _number(claims, "exp")
    if expires_at is not None and expires_at <= now_s - config.leeway_s:
        raise Unauthorized("token expired")
    not_before = _number(claims, "nbf")
    if not_before is not None and not_before > now_s + config.leeway_s:
        raise Unauthorized("token not valid yet (nbf)")
    if config.issuer is not None and claims.get("iss") != config.issuer:
        raise Unauthorized("token issuer not accepted")
    audience = claims.get("aud")
    if config.audience is None:
        if audience:
            raise Unauthorized("token audience not accepted")
    else:
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or config.audience not in audiences:
            raise Unauthorized("token audience not accepted")
    if "sub" not in claims:
        raise Unauthorized("token has no 'sub' claim")


def _key_for(named: Any, config: TokenConfig) -> tuple[Any, str]:
    """The key and the one algorithm to verify a token whose header names ``named``."""
    secret, public_key = config.secret, config.public_key
    if public_key is None:
        return secret, "HS256"
    public_algorithm = "RS256" if isinstance(public_key, RSAPublicKey) else "ES256"
    if secret is None:
        return public_key, public_algorithm
    # Both configured: the header says which key, and each key takes one algorithm only.
    return (secret, "HS256") if named == "HS256" else (public_key, public_algorithm)


def _identity(claims: dict[str, Any]) -> Identity:
    subscribe = _patterns(claims, "subscribe")
    publish = _patterns(claims, "publish")
    try:
        return Identity(
            user=claims["sub"],
            info=claims.get("info", {}),
            subscribe=subscribe,
            publish=publish,
            expires_at=claims.get("exp"),
        )
    except TypeError as exc:
        raise Unauthorized(f"malformed token: {exc}") from None


def _patterns(claims: dict[str, Any], name: str) -> list[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise Unauthorized(f"malformed token: {name!r} must be a list of channel patterns")
    return value
