"""Identity and permissions against real servers (docs/protocol.md, "Identity and
permissions"): tokens on both endpoints, channel patterns, ``--anonymous-subscribe``,
``info`` in joins and presence, expiry with 4001 and ``refresh``, the Python client
renewing its token, and an app's own ``authenticate`` hook.

The memory broker keeps these fast; identity is decided before anything reaches a broker.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from sanic_feeds.client import CommandFailed, FeedsClient, Subscribed
from sanic_feeds.events import Publication
from tests.support.feeds_server import FeedsServer
from tests.support.ws import close_code, publish_http, recv_event, track, wait_until

pytestmark = pytest.mark.integration

SECRET = "a-secret-for-tests-of-32-bytes-or-more"


def token(sub: str = "ada", *, key: Any = SECRET, alg: str = "HS256", **claims: Any) -> str:
    payload = {"sub": sub, "exp": int(time.time()) + 300, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, alg)


async def open_ws(server: FeedsServer, path: str = "/ws", **kwargs: Any) -> ClientConnection:
    ws = await connect(f"{server.ws_url}{path}", open_timeout=10, **kwargs)
    track(ws)
    return ws


async def refused_status(server: FeedsServer, path: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as caught:
        await open_ws(server, path, **kwargs)
    return caught.value.response.status_code


async def command(ws: ClientConnection, **fields: Any) -> Any:
    """Send a command and return its reply (skipping messages, joins and leaves)."""
    command_id = fields.setdefault("id", secrets.token_hex(3))
    await ws.send(orjson.dumps(fields).decode())
    while True:
        event = await recv_event(ws)
        if event.get("id") == command_id:
            return event


@pytest.fixture
def hs_server(feeds_server_factory: Any) -> FeedsServer:
    server: FeedsServer = feeds_server_factory(args=["--token-secret", SECRET])
    return server


# -- tokens


async def test_without_a_token_or_with_a_bad_one_the_upgrade_is_401(hs_server: FeedsServer) -> None:
    bad_tokens = [
        "garbage",
        token(exp=int(time.time()) - 5),  # expired
        token(key="another-secret-of-at-least-32-bytes!!"),
        jwt.encode({"sub": "ada"}, None, "none"),  # alg: none
        token(sub=None),
    ]
    for path in ("/ws", "/feed/news"):
        assert await refused_status(hs_server, path) == 401
        for bad in bad_tokens:
            assert await refused_status(hs_server, f"{path}?token={bad}") == 401, bad
            headers = {"Authorization": f"Bearer {bad}"}
            assert await refused_status(hs_server, path, additional_headers=headers) == 401


async def test_the_refusal_says_why_in_json(hs_server: FeedsServer) -> None:
    with pytest.raises(InvalidStatus) as caught:
        await open_ws(hs_server, f"/ws?token={token(exp=int(time.time()) - 5)}")
    body = orjson.loads(caught.value.response.body)
    assert body == {"type": "error", "code": "unauthorized", "message": "token expired"}


async def test_a_token_in_the_query_or_the_header_opens_both_endpoints(
    hs_server: FeedsServer,
) -> None:
    good = token(subscribe=["news"])
    ws = await open_ws(hs_server, f"/ws?token={good}")
    assert (await command(ws, op="ping"))["type"] == "pong"
    ws = await open_ws(hs_server, "/ws", additional_headers={"Authorization": f"Bearer {good}"})
    assert (await command(ws, op="ping"))["type"] == "pong"
    feed = await open_ws(hs_server, f"/feed/news?token={good}")
    assert (await recv_event(feed))["type"] == "subscribed"


async def test_feed_on_a_channel_the_token_does_not_allow_is_403(hs_server: FeedsServer) -> None:
    good = token(subscribe=["news", "chat:*", "user:$sub"])
    for channel in ("sport", "chat", "user:bob", "user:$sub", "newsx"):
        assert await refused_status(hs_server, f"/feed/{channel}?token={good}") == 403, channel
    for channel in ("news", "chat:lobby", "user:ada"):
        feed = await open_ws(hs_server, f"/feed/{channel}?token={good}")
        assert (await recv_event(feed))["type"] == "subscribed"


async def test_ws_ops_on_channels_the_token_does_not_allow_are_forbidden(
    hs_server: FeedsServer,
) -> None:
    ws = await open_ws(
        hs_server, f"/ws?token={token(subscribe=['news', 'user:$sub'], publish=['chat:*'])}"
    )
    for op in ("subscribe", "presence", "history"):
        reply = await command(ws, op=op, channel="secret", id=op)
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "forbidden", op), reply
    reply = await command(ws, op="publish", channel="news", data="no", id="p")
    assert (reply["type"], reply["code"]) == ("error", "forbidden")
    # What it may do works on the same connection.
    assert (await command(ws, op="subscribe", channel="user:ada"))["type"] == "subscribed"
    assert (await command(ws, op="presence", channel="news"))["type"] == "presence"
    assert (await command(ws, op="history", channel="news"))["type"] == "history"
    assert (await command(ws, op="publish", channel="chat:x", data="yes"))["type"] == "ack"
    # Publishing needs no subscription, and subscribing gives no right to publish.
    reply = await command(ws, op="publish", channel="user:ada", data="no")
    assert reply["code"] == "forbidden"


async def test_es256_public_key_and_algorithm_confusion(
    feeds_server_factory: Any, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "key.pem").write_bytes(pem)
    server = feeds_server_factory(args=["--token-public-key", str(tmp_path / "key.pem")])
    ws = await open_ws(server, f"/ws?token={token(key=key, alg='ES256')}")
    assert (await command(ws, op="ping"))["type"] == "pong"
    # HS256 "signed" with the public key's PEM text: the attacker knows it.
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}').decode()
    body = jwt.utils.base64url_encode(
        orjson.dumps({"sub": "root", "publish": ["*"], "exp": int(time.time()) + 60})
    ).decode()
    import hashlib
    import hmac

    signature = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{body}.{jwt.utils.base64url_encode(signature).decode()}"
    assert await refused_status(server, f"/ws?token={forged}") == 401
    assert await refused_status(server, f"/ws?token={token()}") == 401  # HS256 with a secret


async def test_audience_and_issuer(feeds_server_factory: Any) -> None:
    server = feeds_server_factory(
        args=["--token-secret", SECRET, "--token-audience", "feeds", "--token-issuer", "me"]
    )
    assert await refused_status(server, f"/ws?token={token()}") == 401
    assert await refused_status(server, f"/ws?token={token(aud='feeds', iss='you')}") == 401
    ws = await open_ws(server, f"/ws?token={token(aud='feeds', iss='me')}")
    assert (await command(ws, op="ping"))["type"] == "pong"


# -- anonymous readers


async def test_anonymous_subscribe_opens_public_channels_to_connections_without_a_token(
    feeds_server_factory: Any,
) -> None:
    server = feeds_server_factory(
        args=["--token-secret", SECRET, "--anonymous-subscribe", "news,public:*"]
    )
    feed = await open_ws(server, "/feed/public:weather")
    assert (await recv_event(feed))["type"] == "subscribed"
    # Not a public channel: show a token (401), rather than "not you" (403).
    assert await refused_status(server, "/feed/private") == 401
    ws = await open_ws(server, "/ws")
    assert (await command(ws, op="subscribe", channel="news"))["type"] == "subscribed"
    reply = await command(ws, op="subscribe", channel="private")
    assert reply["code"] == "unauthorized"
    reply = await command(ws, op="publish", channel="news", data="x")
    assert reply["code"] == "unauthorized"
    # A token holder reads public channels too, beside its own.
    holder = await open_ws(server, f"/ws?token={token(subscribe=['mine'])}")
    assert (await command(holder, op="subscribe", channel="news"))["type"] == "subscribed"
    assert (await command(holder, op="subscribe", channel="mine"))["type"] == "subscribed"
    # A bad token is refused, not taken for anonymous.
    assert await refused_status(server, "/ws?token=garbage") == 401


# -- who is who


async def test_info_shows_in_joins_presence_and_the_api_and_subscribed_names_the_client(
    hs_server: FeedsServer,
) -> None:
    info = {"name": "Ada Lovelace", "avatar": "/a.png"}
    ws = await open_ws(hs_server, f"/ws?token={token(info=info, subscribe=['room'])}")
    subscribed = await command(ws, op="subscribe", channel="room", id=1)
    own = subscribed["client"]
    assert isinstance(own, str) and len(own) == 16
    join = await recv_event(ws)
    assert join == {"type": "join", "channel": "room", "client": own, "info": info}
    presence = await command(ws, op="presence", channel="room")
    assert presence["clients"] == {own: info}
    feed = await open_ws(hs_server, f"/feed/room?token={token('bob', subscribe=['room'])}")
    feed_subscribed = await recv_event(feed)
    assert feed_subscribed["client"] != own and len(feed_subscribed["client"]) == 16
    bobs_join = await recv_event(feed)
    assert bobs_join["client"] == feed_subscribed["client"]

    def read_presence() -> Any:
        import urllib.request

        with urllib.request.urlopen(f"{hs_server.url}/api/channels/room", timeout=5) as reply:
            return orjson.loads(reply.read())["presence"]

    async def both_present() -> Any:
        presence = await asyncio.to_thread(read_presence)
        return presence if len(presence) == 2 else None

    presence = await wait_until(both_present, what="two present")
    assert presence[own] == info and presence[feed_subscribed["client"]] == {}


# -- expiry and refresh


async def test_a_connection_whose_token_runs_out_is_closed_4001_on_both_endpoints(
    hs_server: FeedsServer,
) -> None:
    soon = token(exp=int(time.time()) + 2, subscribe=["news"])
    ws = await open_ws(hs_server, f"/ws?token={soon}")
    feed = await open_ws(hs_server, f"/feed/news?token={soon}")
    started = time.monotonic()
    assert await close_code(ws) == 4001
    assert await close_code(feed) == 4001
    assert time.monotonic() - started < 5


async def test_refresh_moves_the_deadline_and_keeps_the_subscriptions(
    hs_server: FeedsServer,
) -> None:
    ws = await open_ws(hs_server, f"/ws?token={token(exp=int(time.time()) + 2, subscribe=['n'])}")
    assert (await command(ws, op="subscribe", channel="n"))["type"] == "subscribed"
    later = int(time.time()) + 300
    reply = await command(ws, op="refresh", token=token(exp=later, subscribe=["n"]), id=9)
    assert reply == {"type": "refreshed", "exp": later, "id": 9}
    # Refused refreshes leave the connection as it is.
    reply = await command(ws, op="refresh", token=token("bob", exp=later))
    assert reply["code"] == "forbidden"
    reply = await command(ws, op="refresh", token="garbage")
    assert reply["code"] == "unauthorized"
    await asyncio.sleep(3)
    assert (await command(ws, op="ping"))["type"] == "pong"
    status, _ = await publish_http(hs_server.url, "n", "still subscribed")
    assert status == 200
    while (event := await recv_event(ws))["type"] != "message":
        pass
    assert event["data"] == "still subscribed"


async def test_the_python_client_renews_its_token_after_4001_and_recovers(
    hs_server: FeedsServer,
) -> None:
    issued: list[str] = []

    async def get_token() -> str:
        issued.append(token(exp=int(time.time()) + 2, subscribe=["feed"]))
        return issued[-1]

    events: list[Any] = []
    async with FeedsClient(hs_server.ws_url, get_token=get_token, backoff_min_s=0.05) as client:
        first = await client.subscribe("feed")
        assert first.client is not None

        async def collect() -> None:
            async for event in client:
                events.append(event)

        collector = asyncio.create_task(collect())
        try:
            # Published across the expiries: every one arrives, once, in order.
            for n in range(12):
                status, _ = await publish_http(hs_server.url, "feed", n)
                assert status == 200
                await asyncio.sleep(0.5)

            def offsets() -> list[int]:
                return [e.offset for e in events if isinstance(e, Publication)]

            await wait_until(lambda: len(offsets()) == 12, 15, "12 messages")
            assert offsets() == list(range(1, 13))
            assert len(issued) >= 3  # renewed after each 4001
            resumed = [e for e in events if isinstance(e, Subscribed) and e.resumed]
            assert resumed and all(e.recovered for e in resumed)
        finally:
            collector.cancel()


# -- an app's own hook


async def test_an_apps_authenticate_hook_reads_its_own_cookie(feeds_server_factory: Any) -> None:
    from tests.integration.test_library import start_library_app

    app = start_library_app(feeds_server_factory, "memory://", "--cookie-auth")
    assert await refused_status(app, "/ws") == 401
    assert await refused_status(app, "/ws", additional_headers={"Cookie": "session=nope"}) == 401

    def login(name: str) -> str:
        import urllib.request

        request = urllib.request.Request(f"{app.url}/login/{name}", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=5) as reply:
            return str(orjson.loads(reply.read())["session"])

    session = await asyncio.to_thread(login, "ada")
    cookie = {"Cookie": f"session={session}"}
    assert await refused_status(app, "/feed/user:bob", additional_headers=cookie) == 403
    feed = await open_ws(app, "/feed/user:ada", additional_headers=cookie)
    subscribed = await recv_event(feed)
    assert (await recv_event(feed)) == {
        "type": "join",
        "channel": "user:ada",
        "client": subscribed["client"],
        "info": {"name": "Ada"},
    }
    ws = await open_ws(app, "/ws", additional_headers=cookie)
    assert (await command(ws, op="publish", channel="chat:x", data=1))["type"] == "ack"
    assert (await command(ws, op="publish", channel="news", data=1))["code"] == "forbidden"


async def test_a_short_secret_is_taken_with_a_warning(feeds_server_factory: Any) -> None:
    """Tokens minted elsewhere may use a secret under RFC 7518's 32 bytes: the server
    runs with it (it used to refuse to start) and says in its log why it should not."""
    server: FeedsServer = feeds_server_factory(args=["--token-secret", "secret"])
    with warnings.catch_warnings():  # PyJWT (2.10 and later) warns, and signs
        warnings.simplefilter("ignore")
        signed = token(key="secret")
    ws = await open_ws(server, additional_headers={"Authorization": f"Bearer {signed}"})
    assert (await command(ws, op="ping"))["type"] == "pong"
    assert await refused_status(server, "/ws?token=" + token()) == 401  # another secret
    assert "--token-secret is shorter than 32 bytes" in server.log()


def test_serve_refuses_unusable_token_settings_in_one_line(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "bad.pem").write_text("not a key")
    for args, expected in (
        (["--token-public-key", str(tmp_path / "missing.pem")], "No such file"),
        (["--token-public-key", str(tmp_path / "bad.pem")], "not a PEM public key"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "sanic_feeds", "serve", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1


async def test_the_subscribe_command_takes_a_token(hs_server: FeedsServer) -> None:
    from tests.integration.test_cli import run_cli

    status, _, err = await run_cli("subscribe", "news", "--url", hs_server.ws_url, "--count", "1")
    assert status == 1 and "401" in err and len(err.strip().splitlines()) == 1

    async def publish_soon() -> None:
        await asyncio.sleep(2)
        assert (await publish_http(hs_server.url, "news", "hello"))[0] == 200

    publisher = asyncio.create_task(publish_soon())
    status, out, err = await run_cli(
        "subscribe", "news", "--url", hs_server.ws_url, "--count", "1",
        env={"FEEDS_TOKEN": token(subscribe=["news"])},
    )  # fmt: skip
    await publisher
    assert (status, err) == (0, "")
    assert [orjson.loads(line)["type"] for line in out.splitlines()][-1] == "message"


async def test_the_python_client_refreshes_its_token_in_place(hs_server: FeedsServer) -> None:
    later = int(time.time()) + 600
    first = token(exp=int(time.time()) + 2, publish=["x"])
    async with FeedsClient(hs_server.ws_url, token=first) as client:
        connection = client._ws
        assert await client.refresh(token(exp=later, publish=["x"])) == later
        await asyncio.sleep(3)  # past the first token's exp: still the same connection
        assert await client.publish("x", 1) == 1
        assert client._ws is connection
        with pytest.raises(CommandFailed, match="forbidden"):
            await client.refresh(token("bob", exp=later))
