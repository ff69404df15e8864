"""Which web pages may open a connection or call the API: the ``Origin`` header against
``--allowed-origins``. Pure logic.

An origin is ``scheme://host[:port]``. Two origins are the same when scheme, host and port
are: the comparison ignores case and a default port written out (``https://a.example``
is ``https://A.example:443``), and nothing else. ``https://a.example.evil.test``,
``https://a.example:8443`` and ``http://a.example`` are other origins. ``null`` (a
sandboxed frame, a ``file:`` page) is never allowed, nor is anything that does not parse.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["Origin", "OriginPolicy", "parse_origin", "same_host"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

Origin = tuple[str, str, int]


def parse_origin(text: str) -> Origin | None:
    """``(scheme, host, port)`` of an origin, or None when ``text`` is not one (``null``,
    a path, credentials, a query, an unknown scheme)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (
        scheme not in _DEFAULT_PORTS
        or not host
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


class OriginPolicy:
    """``--allowed-origins``: :meth:`allows` a request's ``Origin`` header value.

    Without an ``Origin`` header the request does not come from a browser page, which is
    all that origins protect against: it is allowed. Empty ``allowed``: every origin.
    """

    __slots__ = ("_allowed",)

    def __init__(self, allowed: Iterable[str]) -> None:
        origins = set()
        for text in allowed:
            origin = parse_origin(text)
            if origin is None:
                raise ValueError(f"not an origin (scheme://host[:port]): {text!r}")
            origins.add(origin)
        self._allowed = frozenset(origins)

    @property
    def restricted(self) -> bool:
        return bool(self._allowed)

    def allows(self, header: str | None) -> bool:
        if header is None or not self._allowed:
            return True
        return parse_origin(header) in self._allowed


def same_host(origin_header: str, host_header: str | None) -> bool:
    """Whether a page of ``origin_header`` is on the host and port the request was sent
    to (its ``Host`` header): a same-origin request, the scheme aside (a TLS proxy may
    sit in between)."""
    origin = parse_origin(origin_header)
    if origin is None or not host_header:
        return False
    scheme, host, port = origin
    target = parse_origin(f"{scheme}://{host_header}")
    return target is not None and target[1:] == (host, port)
