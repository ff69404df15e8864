"""What checking a connection's token costs: ``auth.verify_token`` per token, HS256 and ES256.

    python bench/token_cost.py [--tokens 20000]

Each connection shows its token once, at the upgrade (and again on ``refresh``); nothing
is checked per delivered message. "first sight": every token distinct (a different
``sub``), as new clients connect. "again": the same tokens through ``Node.verify_token``,
which remembers verified tokens, as when clients come back after a restart. Prints the
median of five runs in µs per token, and the target (50 µs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sanic_feeds.auth import TokenConfig, verify_token
from sanic_feeds.server.node import Node
from sanic_feeds.settings import Settings

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


def per_token_us(tokens: list[str], verify: object) -> float:
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for token in tokens:
            verify(token)  # type: ignore[operator]
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
    print(f"{count} tokens, median of 5 runs, target {TARGET_US:.0f} µs per connection")
    for alg, config, key in cases:
        tokens = [jwt.encode(claims(n), key, alg) for n in range(count)]  # type: ignore[arg-type]
        first = per_token_us(tokens, lambda token, config=config: verify_token(token, config))
        node = Node(Settings(token_secret=SECRET))
        node.tokens = config
        node.verify_token(tokens[0])
        for token in tokens:
            node.verify_token(token)
        again = per_token_us(tokens, node.verify_token)
        print(f"{alg}: first sight {first:6.1f} µs, again {again:5.2f} µs per token")


if __name__ == "__main__":
    main()
