"""Who a connection is: the :class:`Identity` a JWT proves (or an app's own hook returns).

Pure logic, no I/O and no Sanic: :func:`verify_token` takes a token and a
:class:`TokenConfig` and returns an ``Identity`` or raises
:class:`~sanic_feeds.errors.Unauthorized`. docs/protocol.md, "Identity and permissions".

The algorithm is never the token's to choose. A secret verifies HS256 only; a public key
verifies only the algorithm of its own type (RS256 for RSA, ES256 for P-256). A token
whose header names anything else (``none``, or HS256 "signed" with the public key's PEM
text, the algorithm-confusion attack) is refused before its signature is looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .codec import check_data
from .errors import FeedsError, Unauthorized

__all__ = ["MAX_TOKEN_BYTES", "MIN_SECRET_BYTES", "Identity", "TokenConfig", "verify_token"]

#: Longer tokens are refused unread: a header is bounded by the HTTP server, a ``refresh``
#: command only by the frame size.
MAX_TOKEN_BYTES = 8192

#: RFC 7518, 3.2: an HS256 key must be at least as long as the hash (256 bits).
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
    _decoder: jwt.PyJWT = field(default_factory=jwt.PyJWT, repr=False, compare=False)

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
        if key_bytes is not None and len(key_bytes) < MIN_SECRET_BYTES:
            raise ValueError(f"a token secret must be at least {MIN_SECRET_BYTES} bytes")
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
    def public_algorithm(self) -> str | None:
        """The one algorithm the public key verifies."""
        if self.public_key is None:
            return None
        return "RS256" if isinstance(self.public_key, RSAPublicKey) else "ES256"


_DECODE_OPTIONS: Any = {
    "require": ["sub"],
    # ``iat`` says when a token was made, not until when it holds; a token minted by a
    # clock slightly ahead of ours must not fail for it.
    "verify_iat": False,
}


def verify_token(token: str, config: TokenConfig) -> Identity:
    """The identity ``token`` proves; raises ``Unauthorized`` saying why not.

    Checks the signature with the one algorithm of the configured key, ``exp`` and
    ``nbf``, ``aud`` and ``iss`` (a token with an ``aud`` needs ``--token-audience``),
    and the claims' shapes: ``sub`` a non-empty string, ``subscribe`` and ``publish``
    lists of strings, ``info`` any JSON value that can be sent.
    """
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized(f"token longer than {MAX_TOKEN_BYTES} bytes")
    key, algorithm = _key_for(token, config)
    try:
        claims = config._decoder.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway_s,
            options=_DECODE_OPTIONS,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidAlgorithmError:
        raise Unauthorized(f"token algorithm not allowed (only {algorithm})") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("token signature does not verify") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("token not valid yet (nbf)") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized("token audience not accepted") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized("token issuer not accepted") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"token has no {exc.claim!r} claim") from None
    except (jwt.InvalidTokenError, ValueError, TypeError, RecursionError):
        # RecursionError: a header or payload nested deeper than json can read.
        raise Unauthorized("malformed token") from None
    return _identity(claims)


def _key_for(token: str, config: TokenConfig) -> tuple[Any, str]:
    """The key and the one algorithm to verify ``token`` with."""
    secret, public_key = config.secret, config.public_key
    if public_key is None:
        return secret, "HS256"
    public_algorithm = "RS256" if isinstance(public_key, RSAPublicKey) else "ES256"
    if secret is None:
        return public_key, public_algorithm
    # Both configured: the header says which key, and each key takes one algorithm only.
    try:
        named = jwt.get_unverified_header(token).get("alg")
    except (jwt.InvalidTokenError, ValueError, TypeError, RecursionError):
        raise Unauthorized("malformed token") from None
    return (secret, "HS256") if named == "HS256" else (public_key, public_algorithm)


def _identity(claims: dict[str, Any]) -> Identity:
    subscribe = _patterns(claims, "subscribe")
    publish = _patterns(claims, "publish")
    expires_at = claims.get("exp")
    try:
        return Identity(
            user=claims["sub"],
            info=claims.get("info", {}),
            subscribe=subscribe,
            publish=publish,
            expires_at=expires_at,
        )
    except TypeError as exc:
        raise Unauthorized(f"malformed token: {exc}") from None


def _patterns(claims: dict[str, Any], name: str) -> list[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise Unauthorized(f"malformed token: {name!r} must be a list of channel patterns")
    return value
