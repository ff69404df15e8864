"""Token checking as a pure function (``auth.verify_token``): no Sanic, no socket.

Every way a token can be wrong is refused with ``Unauthorized``: missing claims, bad
shapes, a wrong key, expiry, audience and issuer, ``alg: none``, and algorithm confusion
(an HS256 token "signed" with the public key's own PEM text).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import warnings
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from sanic_feeds.auth import MAX_TOKEN_BYTES, Identity, TokenConfig, verify_token
from sanic_feeds.errors import Unauthorized

SECRET = "s" * 32
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_of(private_key: Any) -> bytes:
    return bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "ada", "exp": int(time.time()) + 60}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand, HMAC-SHA256 signed with ``key`` (None: unsigned)."""
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(payload))}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64(signature)}"


HS = TokenConfig.create(secret=SECRET)
ES = TokenConfig.create(public_key_pem=pem_of(EC_KEY))
RS = TokenConfig.create(public_key_pem=pem_of(RSA_KEY))


def test_a_good_hs256_token_gives_its_identity() -> None:
    exp = int(time.time()) + 60
    token = jwt.encode(
        claims(exp=exp, info={"name": "Ada"}, subscribe=["news", "chat:*"], publish=["chat:*"]),
        SECRET,
        "HS256",
    )
    assert verify_token(token, HS) == Identity(
        user="ada",
        info={"name": "Ada"},
        subscribe=("news", "chat:*"),
        publish=("chat:*",),
        expires_at=exp,
    )


def test_defaults_subscribe_and_publish_nothing_and_info_is_empty() -> None:
    identity = verify_token(jwt.encode(claims(exp=None), SECRET, "HS256"), HS)
    assert identity == Identity(user="ada", info={}, subscribe=(), publish=(), expires_at=None)


@pytest.mark.parametrize(("config", "key", "alg"), [(ES, EC_KEY, "ES256"), (RS, RSA_KEY, "RS256")])
def test_a_public_key_verifies_its_own_algorithm(config: TokenConfig, key: Any, alg: str) -> None:
    token = jwt.encode(claims(subscribe=["user:$sub"]), key, alg)
    assert verify_token(token, config).subscribe == ("user:$sub",)


def refused(token: str, config: TokenConfig = HS) -> str:
    with pytest.raises(Unauthorized) as caught:
        verify_token(token, config)
    return caught.value.message


def test_an_expired_token_is_refused() -> None:
    assert refused(jwt.encode(claims(exp=int(time.time()) - 1), SECRET, "HS256")) == (
        "token expired"
    )


def test_a_token_signed_with_another_secret_is_refused() -> None:
    assert "signature" in refused(jwt.encode(claims(), "t" * 32, "HS256"))


def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = jwt.encode(claims(), SECRET, "HS256").split(".")
    payload = b64(orjson.dumps(claims(sub="root", publish=["*"])))
    assert "signature" in refused(f"{header}.{payload}.{signature}")


@pytest.mark.parametrize("config", [HS, ES, RS])
def test_alg_none_is_refused(config: TokenConfig) -> None:
    for alg in ("none", "None", "NONE", ""):
        assert refused(forge({"alg": alg, "typ": "JWT"}, claims(), None), config), alg


def test_no_alg_at_all_is_refused() -> None:
    assert refused(forge({"typ": "JWT"}, claims(), SECRET.encode()))


@pytest.mark.parametrize(("config", "key"), [(ES, EC_KEY), (RS, RSA_KEY)])
def test_algorithm_confusion_hs256_signed_with_the_public_key_is_refused(
    config: TokenConfig, key: Any
) -> None:
    """The classic attack: the public key is public, so anyone can HMAC with its PEM text."""
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(publish=["*"]), pem_of(key))
    assert "algorithm not allowed" in refused(token, config)


def test_with_a_secret_and_a_public_key_each_key_verifies_only_its_algorithm() -> None:
    both = TokenConfig.create(secret=SECRET, public_key_pem=pem_of(EC_KEY))
    assert verify_token(jwt.encode(claims(), SECRET, "HS256"), both).user == "ada"
    assert verify_token(jwt.encode(claims(), EC_KEY, "ES256"), both).user == "ada"
    # Confusion either way round: HS256 with the PEM, ES256 header with an HMAC signature.
    assert refused(forge({"alg": "HS256"}, claims(), pem_of(EC_KEY)), both)
    assert refused(forge({"alg": "ES256"}, claims(), SECRET.encode()), both)
    assert refused(forge({"alg": "RS256"}, claims(), SECRET.encode()), both)
    assert refused(forge({"alg": "none"}, claims(), None), both)


def test_another_algorithm_for_the_same_key_type_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    assert refused(jwt.encode(claims(), other, "ES384"), ES)
    assert refused(jwt.encode(claims(), RSA_KEY, "PS256"), RS)
    assert refused(jwt.encode(claims(), SECRET * 2, "HS512"), HS)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a token",
        "a.b",
        "a.b.c",
        "....",
        "eyJhbGciOiJIUzI1NiJ9.%%%.abc",
        b64(b"[" * 2000 + b"]" * 2000) + ".e30.sig",  # a header nested past json's reach
        b64(b'{"alg":"HS256"}') + "." + b64(b"[" * 5000) + ".sig",
        b64(b"\xff\xfe") + ".e30.sig",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert refused(token)


def test_a_token_longer_than_the_limit_is_refused_unread() -> None:
    token = jwt.encode(claims(info={"pad": "x" * MAX_TOKEN_BYTES}), SECRET, "HS256")
    assert "longer" in refused(token)


@pytest.mark.parametrize(
    "payload",
    [
        {"exp": int(time.time()) + 60},  # no sub
        claims(sub=""),
        claims(sub=42),
        claims(sub=["ada"]),
        claims(subscribe="news"),
        claims(subscribe=[1]),
        claims(publish={"chat": True}),
        claims(publish=[None]),
        claims(exp="tomorrow"),
        claims(exp=True),
    ],
)
def test_claims_of_the_wrong_shape_are_refused(payload: dict[str, Any]) -> None:
    assert refused(jwt.encode(payload, SECRET, "HS256"))


def test_info_nested_deeper_than_events_can_carry_is_refused() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    assert "malformed" in refused(jwt.encode(claims(info=deep), SECRET, "HS256"))


def test_audience_and_issuer_are_checked_when_configured() -> None:
    config = TokenConfig.create(secret=SECRET, audience="feeds", issuer="https://id.example")
    good = claims(aud="feeds", iss="https://id.example")
    assert verify_token(jwt.encode(good, SECRET, "HS256"), config).user == "ada"
    for change in ({"aud": "other"}, {"aud": None}, {"iss": "https://evil.example"}, {"iss": None}):
        token = jwt.encode({k: v for k, v in (good | change).items() if v is not None}, SECRET)
        assert refused(token, config), change


def test_a_token_with_an_audience_needs_the_server_to_expect_one() -> None:
    assert "audience" in refused(jwt.encode(claims(aud="someone-else"), SECRET, "HS256"))


def test_not_before_in_the_future_is_refused_and_iat_is_not_checked() -> None:
    assert "nbf" in refused(jwt.encode(claims(nbf=int(time.time()) + 60), SECRET, "HS256"))
    # Minted by a clock a little ahead of ours: still good.
    ahead = jwt.encode(claims(iat=int(time.time()) + 30), SECRET, "HS256")
    assert verify_token(ahead, HS).user == "ada"


def test_a_short_secret_is_taken_and_flagged_as_weak() -> None:
    """RFC 7518 asks for 32 bytes; tokens minted elsewhere may use less. The server
    warns at start (``Node``) rather than refuse to run."""
    weak = TokenConfig.create(secret="short")
    assert weak.weak_secret and not HS.weak_secret
    with warnings.catch_warnings():  # PyJWT (2.10 and later) warns, and signs
        warnings.simplefilter("ignore")
        short = jwt.encode(claims(), "short", "HS256")
    assert verify_token(short, weak).user == "ada"


def test_token_config_refuses_keys_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="empty"):
        TokenConfig.create(secret="")
    with pytest.raises(ValueError, match="PEM"):
        TokenConfig.create(public_key_pem=b"-----BEGIN PUBLIC KEY-----\nnope\n")
    with pytest.raises(ValueError, match="P-256"):
        TokenConfig.create(public_key_pem=pem_of(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(ValueError, match="secret or a public key"):
        TokenConfig.create()
    assert ES.public_algorithm == "ES256" and RS.public_algorithm == "RS256"
    assert HS.public_algorithm is None


def test_identity_checks_what_an_apps_hook_returns() -> None:
    assert Identity("ada", subscribe=["a", "b"]).subscribe == ("a", "b")
    for bad in (
        {"user": ""},
        {"user": 7},
        {"user": "ada", "subscribe": "news"},
        {"user": "ada", "publish": [3]},
        {"user": "ada", "expires_at": "soon"},
        {"user": "ada", "info": {1: "not a JSON key"}},
    ):
        with pytest.raises(TypeError):
            Identity(**bad)


# -- the same verdicts as PyJWT's own decode, on every token


def pyjwt_verdict(token: str, config: TokenConfig, key: Any, alg: str) -> Any:
    """What ``jwt.decode`` says of ``token``, with the options verify_token promises."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=config.audience,
            issuer=config.issuer,
            options={"require": ["sub"], "verify_iat": False},
        )
    except (jwt.InvalidTokenError, ValueError, TypeError, RecursionError):
        return None
    try:
        return Identity(
            user=claims["sub"],
            info=claims.get("info", {}),
            subscribe=claims.get("subscribe", []),
            publish=claims.get("publish", []),
            expires_at=claims.get("exp"),
        )
    except (TypeError, ValueError):
        return None


def our_verdict(token: str, config: TokenConfig) -> Any:
    try:
        return verify_token(token, config)
    except Unauthorized:
        return None


CLAIM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from(["ada", "", "feeds", "me", "news", "chat:*"]),
    st.lists(st.sampled_from(["feeds", "news", "x"]), max_size=3),
    st.just(int(time.time()) + 300),
    st.just(int(time.time()) - 300),
)


@st.composite
def tokens(draw: st.DrawFn) -> tuple[str, str]:
    """A token signed by one of the keys (or another), from good claims with some changed,
    maybe mangled afterwards."""
    claims: dict[str, Any] = {"sub": "ada", "exp": int(time.time()) + 300}
    if draw(st.booleans()):
        claims.update(aud="feeds", iss="me")
    names = ["sub", "exp", "nbf", "iat", "aud", "iss", "info", "subscribe", "publish"]
    for name in draw(st.lists(st.sampled_from(names), unique=True, max_size=3)):
        if draw(st.booleans()):
            claims.pop(name, None)
        else:
            claims[name] = draw(CLAIM_VALUES)
    alg, key = draw(
        st.sampled_from(
            [("HS256", SECRET), ("HS256", SECRET), ("HS256", "t" * 32), ("ES256", EC_KEY)]
        )
    )
    # Signed as given (jwt.encode would refuse claims of the wrong type).
    token = jwt.api_jws.encode(orjson.dumps(claims), key, alg)
    mangle = draw(st.sampled_from(["none"] * 6 + ["pad", "flip", "cut", "swap", "dot", "space"]))
    header, payload, signature = token.split(".")
    if mangle == "pad":
        token = ".".join(part + "=" * (-len(part) % 4) for part in (header, payload, signature))
    elif mangle == "flip":
        index = draw(st.integers(0, len(token) - 1))
        replacement = draw(st.sampled_from("AB_-z9=+/"))
        token = token[:index] + replacement + token[index + 1 :]
    elif mangle == "cut":
        token = token[: draw(st.integers(0, len(token)))]
    elif mangle == "swap":
        token = ".".join((payload, header, signature))
    elif mangle == "dot":
        token += "."
    elif mangle == "space":
        token = " " + token
    return token, alg


@pytest.mark.parametrize("audience", [None, "feeds"])
@pytest.mark.parametrize("issuer", [None, "me"])
@given(sample=tokens())
@settings(max_examples=150, deadline=None)
def test_verdicts_agree_with_pyjwts_decode(
    sample: tuple[str, str], audience: str | None, issuer: str | None
) -> None:
    token, _ = sample
    try:
        payload = orjson.loads(jwt.utils.base64url_decode(token.split(".")[1]))
        # PyJWT takes true and false for times (int(True) is 1); verify_token does not.
        stricter = any(isinstance(payload.get(n), bool) for n in ("exp", "nbf"))
    except Exception:
        stricter = False
    for config, key, alg in (
        (TokenConfig.create(secret=SECRET, audience=audience, issuer=issuer), SECRET, "HS256"),
        (
            TokenConfig.create(public_key_pem=pem_of(EC_KEY), audience=audience, issuer=issuer),
            EC_KEY.public_key(),
            "ES256",
        ),
    ):
        ours, theirs = our_verdict(token, config), pyjwt_verdict(token, config, key, alg)
        assert ours == theirs or (stricter and ours is None), (token, ours, theirs)
