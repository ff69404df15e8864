"""What the Node decides from an identity, without a socket: access, the token cache."""

from __future__ import annotations

import time

import jwt
import pytest

from sanic_feeds.auth import Identity
from sanic_feeds.errors import Forbidden, Unauthorized
from sanic_feeds.server.node import Node
from sanic_feeds.settings import Settings

SECRET = "x" * 32


def test_identity_off_lets_everyone_do_everything() -> None:
    access = Node().access_for(None)
    assert access.may_subscribe("any") and access.may_publish("thing")


def test_identity_on_refuses_no_identity_unless_channels_are_public() -> None:
    with pytest.raises(Unauthorized):
        Node(Settings(token_secret=SECRET)).access_for(None)
    with pytest.raises(Unauthorized):
        Node(identities_from_elsewhere=True).access_for(None)
    public = Node(Settings(token_secret=SECRET, anonymous_subscribe=("news", "pub:*")))
    access = public.access_for(None)
    assert access.may_subscribe("pub:x") and not access.may_subscribe("private")
    assert not access.may_publish("news")
    with pytest.raises(Unauthorized):
        Node.check_subscribe(access, "private")


def test_an_identity_gets_its_patterns_for_its_user_plus_the_public_ones() -> None:
    node = Node(Settings(token_secret=SECRET, anonymous_subscribe=("news",)))
    access = node.access_for(Identity("ada", subscribe=["user:$sub"], publish=["chat:*"]))
    assert access.may_subscribe("user:ada") and access.may_subscribe("news")
    assert not access.may_subscribe("user:bob")
    assert access.may_publish("chat:1") and not access.may_publish("news")
    with pytest.raises(Forbidden):
        Node.check_subscribe(access, "user:bob")


def test_an_expired_identity_from_an_apps_hook_is_refused() -> None:
    node = Node(identities_from_elsewhere=True)
    with pytest.raises(Unauthorized, match="expired"):
        node.access_for(Identity("ada", expires_at=time.time() - 1))
    assert node.access_for(Identity("ada", expires_at=time.time() + 60)).user == "ada"


def test_verified_tokens_are_remembered_until_they_expire() -> None:
    node = Node(Settings(token_secret=SECRET))
    token = jwt.encode({"sub": "ada", "exp": time.time() + 60}, SECRET, "HS256")
    first = node.verify_token(token)
    assert node.verify_token(token) is first  # not verified again
    stale = jwt.encode({"sub": "bob", "exp": time.time() + 60}, SECRET, "HS256")
    identity = node.verify_token(stale)
    object.__setattr__(identity, "expires_at", time.time() - 1)  # as if time passed
    with pytest.raises(Unauthorized, match="expired"):
        node.verify_token(stale)
    with pytest.raises(Unauthorized):
        node.verify_token("garbage")


def test_tokens_off_refuses_tokens() -> None:
    with pytest.raises(Unauthorized):
        Node().verify_token("anything")


async def test_the_backend_publish_of_feeds_refuses_data_nested_too_deep() -> None:
    """``Feeds.publish`` is ``Node.publish``: the app's handler gets ``BadRequest``."""
    from sanic_feeds.errors import BadRequest

    node = Node()
    await node.start()
    try:
        deep: object = 1
        for _ in range(300):
            deep = [deep]
        with pytest.raises(BadRequest):
            await node.publish("news", deep)
        assert (await node.publish("news", "fine")).offset == 1
    finally:
        await node.stop()
