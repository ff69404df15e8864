"""Broker URLs that name several servers, parsed: pure, no I/O.

- ``redis+cluster://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT...]``: any reachable
  nodes of a Redis Cluster (the others are discovered).
- ``redis+sentinel://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]``: the
  Sentinels, and the name of the master they watch. The credentials are the master's
  and its replicas'; the Sentinels are reached without.

A host may be an IPv6 address in brackets (``[::1]:7000``). Malformed URLs raise
``ValueError`` with a message for the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from .slots import NodeAddress

__all__ = ["ClusterURL", "SentinelURL", "parse_cluster_url", "parse_sentinel_url"]

_CLUSTER_PORT = 6379
_SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class ClusterURL:
    nodes: tuple[NodeAddress, ...]
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class SentinelURL:
    sentinels: tuple[NodeAddress, ...]
    #: The name the Sentinels know the master by (``sentinel monitor NAME ...``).
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_cluster_url(url: str) -> ClusterURL:
    rest = _strip_scheme(url, "redis+cluster")
    location, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError(f"{_shown(url)}: a Redis Cluster has no databases but 0")
    username, password, nodes = _location(url, location, _CLUSTER_PORT)
    return ClusterURL(nodes, username, password)


def parse_sentinel_url(url: str) -> SentinelURL:
    rest = _strip_scheme(url, "redis+sentinel")
    location, _, path = rest.partition("/")
    master, _, db = path.strip("/").partition("/")
    if not master:
        raise ValueError(
            f"{_shown(url)}: name the master, redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]"
        )
    if db and not db.isdigit():
        raise ValueError(f"{_shown(url)}: the database must be a number, not {db!r}")
    username, password, sentinels = _location(url, location, _SENTINEL_PORT)
    return SentinelURL(sentinels, unquote(master), int(db or 0), username, password)


def _strip_scheme(url: str, scheme: str) -> str:
    prefix = scheme + "://"
    if not url.startswith(prefix):
        raise ValueError(f"{_shown(url)}: expected a {prefix} URL")
    rest, _, query = url[len(prefix) :].partition("?")
    if query:
        raise ValueError(f"{_shown(url)}: {prefix} URLs take no options")
    return rest


def _location(
    url: str, location: str, default_port: int
) -> tuple[str | None, str | None, tuple[NodeAddress, ...]]:
    credentials, at, hosts = location.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_address(url, part, default_port) for part in hosts.split(","))
    return username, password, nodes


def _address(url: str, text: str, default_port: int) -> NodeAddress:
    text = text.strip()
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError(f"{_shown(url)}: malformed address {text!r}")
        port = port[1:]
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"{_shown(url)}: an address without a host")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{_shown(url)}: malformed port in {text!r}")
    return NodeAddress(host, int(port) if port else default_port)


def _shown(url: str) -> str:
    """``url`` without its credentials, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest.partition("/")[0]:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
