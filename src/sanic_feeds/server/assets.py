"""The files every instance hands to browsers: ``feeds.js``, its types, and the demo page.

They ship as package data (``sanic_feeds/static/``) and are read once, when the routes are
made; ``server/static.py`` serves them. Pure besides that read: which paths exist, what each
one's bytes, type and ETag are, and whether a conditional request is answered 304.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

__all__ = ["CLIENT_FILES", "DEMO_FILES", "Asset", "load_assets", "not_modified"]

#: The client, served whether or not the demo page is: (file, content type).
CLIENT_FILES = (
    ("feeds.js", "text/javascript; charset=utf-8"),
    ("feeds.d.ts", "application/typescript; charset=utf-8"),
)
#: The demo page and what it loads; ``index.html`` is served at the prefix's root.
DEMO_FILES = (
    ("index.html", "text/html; charset=utf-8"),
    ("demo.js", "text/javascript; charset=utf-8"),
    ("demo.css", "text/css; charset=utf-8"),
)
#: index.html names its base this way; the page's relative URLs (demo.js, feeds.js, ws)
#: then resolve under the url prefix the routes are mounted on.
_BASE_TAG = b'<base href="/">'


@dataclass(frozen=True, slots=True)
class Asset:
    """One file as served: its bytes, ``Content-Type`` and strong ``ETag`` (quoted)."""

    name: str
    body: bytes
    content_type: str
    etag: str

    @property
    def cross_origin(self) -> bool:
        """Whether any page may load it: the client is public code that pages of another
        origin import as a module, which needs CORS; the demo page is not."""
        return self.name in dict(CLIENT_FILES)


def load_assets(url_prefix: str = "", demo_page: bool = True) -> dict[str, Asset]:
    """The assets by route path (``/feeds.js``, ``/`` for the demo page), relative to
    ``url_prefix``. Without ``demo_page``, only the client's two files."""
    files = CLIENT_FILES + (DEMO_FILES if demo_page else ())
    folder = resources.files("sanic_feeds") / "static"
    assets: dict[str, Asset] = {}
    for name, content_type in files:
        body = (folder / name).read_bytes()
        if name == "index.html":
            body = body.replace(_BASE_TAG, f'<base href="{url_prefix.rstrip("/")}/">'.encode())
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        path = "/" if name == "index.html" else f"/{name}"
        assets[path] = Asset(name, body, content_type, etag)
    return assets


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether a request with this ``If-None-Match`` gets 304 for ``etag``: ``*``, or a
    listed tag equal to it under the weak comparison (a ``W/`` prefix is ignored, RFC 9110)."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag.removeprefix("W/") in tags
