"""What checking a connection's token costs: ``auth.verify_token`` per token, HS256 and ES256.

    python bench/token_cost.py [--tokens 20000]

Each connection shows its token once, at the upgrade (and again on ``refresh``); nothing
is checked per delivered message. Every token is distinct (a different ``sub``), so no
cache helps. Prints the median of five runs in µs per token, and the target (50 µs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sanic_feeds.auth import TokenConfig, verify_token

TARGET_US = 50.0
SECRET = "a-benchmark-secret-of-at-least-32-bytes"


def claims(n: int) -> dict[str, object]:
    return {
        "sub": f"user-{n}",
        "exp": int(time.time()) + 3600,
        "info": {"name": f"User {n}"},
        "subscribe": ["news", "chat:*", "user:$sub"],
        "publish": ["chat:*"],
    }


def pem(private_key: object) -> bytes:
    public = private_key.public_key()  # type: ignore[attr-defined]
    return bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def per_token_us(tokens: list[str], config: TokenConfig) -> float:
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for token in tokens:
            verify_token(token, config)
        runs.append((time.perf_counter() - started) / len(tokens) * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000)
    count = parser.parse_args().tokens
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = [
        ("HS256", TokenConfig.create(secret=SECRET), SECRET),
        ("ES256", TokenConfig.create(public_key_pem=pem(ec_key)), ec_key),
        ("RS256", TokenConfig.create(public_key_pem=pem(rsa_key)), rsa_key),
    ]
    for alg, config, key in cases:
        tokens = [jwt.encode(claims(n), key, alg) for n in range(count)]  # type: ignore[arg-type]
        cost = per_token_us(tokens, config)
        verdict = "ok" if cost <= TARGET_US else "over"
        print(
            f"{alg}: {cost:6.1f} µs per token ({count} tokens, median of 5; target {TARGET_US:.0f} µs: {verdict})"
        )


if __name__ == "__main__":
    main()
