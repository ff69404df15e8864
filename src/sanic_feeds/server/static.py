"""``GET /feeds.js``, ``GET /feeds.d.ts`` and the demo page at ``GET /``, with ETags.

Part of the web edge (it makes Sanic routes and responses); what is served is decided in
``server/assets.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from .assets import Asset, not_modified

__all__ = ["register_static"]


def register_static(bp: Blueprint, assets: Mapping[str, Asset]) -> None:
    """Add a GET (and HEAD) route to ``bp`` for each asset, by its path."""
    for number, (path, asset) in enumerate(assets.items()):
        bp.add_route(_handler(asset), path, methods=["GET", "HEAD"], name=f"static_{number}")


def _handler(asset: Asset) -> Callable[[Request], Coroutine[Any, Any, HTTPResponse]]:
    headers = {
        "ETag": asset.etag,
        # Cached, but asked again each time: a new version is seen at once, and an
        # unchanged one costs a 304.
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if asset.cross_origin:
        headers["Access-Control-Allow-Origin"] = "*"

    async def serve(request: Request) -> HTTPResponse:
        if not_modified(request.headers.get("if-none-match"), asset.etag):
            return HTTPResponse(status=304, headers=headers)
        return HTTPResponse(asset.body, headers=headers, content_type=asset.content_type)

    return serve
