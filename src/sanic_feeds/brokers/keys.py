"""Names on Redis: a channel's keys and pub/sub name, the instance registry, heartbeats.

Pure, no I/O; shared by every Redis broker (one Redis, Sentinel, Cluster). Every
name of a channel carries the ``{channel}`` hash tag, so in a Redis Cluster all of
a channel's keys and its sharded pub/sub name live in one slot, which is what lets
one Lua script publish atomically there.
"""

from __future__ import annotations

__all__ = [
    "INSTANCES_KEY",
    "PREFIX",
    "ChannelKeys",
    "channel_keys",
    "channel_of",
    "heartbeat_channel",
    "status_key",
]

PREFIX = "feeds"
#: A sorted set: instance id -> when it last heartbeat (ms), for presence expiry.
INSTANCES_KEY = f"{PREFIX}:instances"
_STATUS_PREFIX = f"{PREFIX}:status:"
_PUBSUB_PREFIX = f"{PREFIX}:{{"


class ChannelKeys:
    """Redis names of one channel. The ``{channel}`` hash tag keeps all of a
    channel's keys in one Redis Cluster slot, so the publish script works there."""

    __slots__ = ("epochs", "history", "meta", "presence", "pubsub")

    def __init__(self, channel: str) -> None:
        tag = f"{PREFIX}:{{{channel}}}"
        self.pubsub = tag
        self.meta = f"{tag}:meta"
        self.history = f"{tag}:history"
        self.presence = f"{tag}:presence"
        #: A hash: an epoch whose history was lost -> the epoch that replaced it.
        self.epochs = f"{tag}:epochs"

    def idempotency(self, key: str) -> str:
        return f"{self.pubsub}:idem:{key}"


def channel_keys(channel: str) -> ChannelKeys:
    return ChannelKeys(channel)


def channel_of(pubsub_name: bytes) -> str:
    """The channel whose pub/sub name (``ChannelKeys.pubsub``) is ``pubsub_name``."""
    return pubsub_name[len(_PUBSUB_PREFIX) : -1].decode()


def heartbeat_channel(instance_id: str, tag: str | None = None) -> bytes:
    """The pub/sub name an instance hears itself on. ``tag``, in Redis Cluster, is a hash
    tag that puts the name in a slot of the shard it must reach (one name per shard)."""
    name = f"{PREFIX}:instance:{instance_id}"
    if tag is not None:
        name += f":{{{tag}}}"
    return name.encode()


def status_key(instance_id: str) -> str:
    """Where an instance's status (``InstanceStatus``) lives, refreshed by its heartbeat."""
    return _STATUS_PREFIX + instance_id
