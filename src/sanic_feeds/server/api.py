"""The HTTP API: publish, channel info, liveness and readiness, metrics, the live
instances and their overview page (docs/protocol.md, "HTTP API").

Every ``/api/*`` route (and ``/metrics``) takes the api key (``--api-key``), reads
included, and refuses a page of another origin; a publish takes a JSON body of at most
``--max-message-bytes``. A read writes nothing to the broker. While the instance drains,
publish and channel info answer 503 with ``Connection: close``.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
from collections.abc import Callable, Coroutine
from importlib.resources import files
from typing import Any

import orjson
from sanic import Blueprint, Request, response
from sanic.exceptions import PayloadTooLarge
from sanic.response import HTTPResponse

from ..codec import error_event
from ..errors import (
    BadRequest,
    FeedsError,
    Forbidden,
    TooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from ..names import validate_channel
from ..origins import OriginPolicy, same_host
from . import metrics
from .feed import channel_of_path
from .node import Node

__all__ = ["error_response", "register_api"]

#: How much of a refused body Sanic reads (and drops) after the answer, so that the client
#: sees the answer; past it the connection is closed instead.
_DRAINED_BYTES = 1 << 20


def json_response(body: Any, status: int = 200) -> HTTPResponse:
    return response.raw(orjson.dumps(body), status=status, content_type="application/json")


def error_response(exc: FeedsError) -> HTTPResponse:
    """The one mapping of an error to an HTTP answer."""
    metrics.ERRORS.labels(exc.code.value).inc()
    return json_response(error_event(exc.code, exc.public_message), exc.http_status)


def register_api(
    bp: Blueprint, node: Node, is_ready_now: Callable[[], bool], origins: OriginPolicy
) -> None:
    """Add the API's routes to ``bp``; ``is_ready_now()`` answers ``GET /ready``."""
    settings = node.settings
    # Compared as bytes: hmac refuses str with characters past ASCII.
    api_key = settings.api_key.encode()

    def check_serving(request: Request) -> None:
        if node.draining:
            # Sanic keeps serving a keep-alive connection that was busy when the
            # drain began: this answer closes it, so the client goes elsewhere.
            stream = request.stream
            if stream is not None and hasattr(stream, "keep_alive"):
                stream.keep_alive = False
        node.check_serving()

    def guard(request: Request) -> None:
        """The api key, then the page the request comes from: a browser sends ``Origin``,
        and a page of another site must not use the API with what the browser adds."""
        if api_key:
            scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
            if scheme.lower() != "apikey" or not hmac.compare_digest(
                given.strip().encode("utf-8", "surrogatepass"), api_key
            ):
                raise Unauthorized("this endpoint needs 'Authorization: apikey <key>'")
        origin = request.headers.get("origin")
        if origin is not None and not (
            origins.allows(origin)
            if origins.restricted
            else same_host(origin, request.headers.get("host"))
        ):
            raise Forbidden("origin not allowed")

    def guarded(
        handler: Callable[..., Coroutine[Any, Any, HTTPResponse]],
    ) -> Callable[..., Coroutine[Any, Any, HTTPResponse]]:
        async def route(request: Request, **params: Any) -> HTTPResponse:
            if request.stream is not None:
                # The route streams, so nothing was read yet. A refused body is drained by
                # Sanic up to this much, no further: then the connection is closed.
                request.stream.request_max_size = max(settings.max_message_bytes, _DRAINED_BYTES)
            try:
                guard(request)
                return await handler(request, **params)
            except FeedsError as exc:
                return error_response(exc)

        route.__name__ = handler.__name__
        return route

    async def read_json_body(request: Request) -> Any:
        """The body, at most ``--max-message-bytes`` of JSON, parsed."""
        if not _json_media_type(request.headers.get("content-type")):
            raise UnsupportedMediaType("the body must be JSON (Content-Type: application/json)")
        limit = settings.max_message_bytes
        too_large = TooLarge(f"the body is over {limit} bytes (--max-message-bytes)")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large
        if request.stream is not None:
            request.stream.request_max_size = limit
            try:
                await request.receive_body()  # type: ignore[no-untyped-call]
            except PayloadTooLarge:
                raise too_large from None
        try:
            return orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise BadRequest("the body must be JSON") from None

    async def publish(request: Request) -> HTTPResponse:
        body = await read_json_body(request)
        # After the body: the drain may have begun while it was arriving.
        check_serving(request)
        if not isinstance(body, dict) or "data" not in body:
            raise BadRequest('the body must be {"channel": "...", "data": <JSON>}')
        position = await node.publish(
            validate_channel(body.get("channel")),
            body["data"],
            idempotency_key=body.get("idempotency_key"),
        )
        return json_response({"offset": position.offset, "epoch": position.epoch})

    async def channel_info(request: Request, channel: str) -> HTTPResponse:
        check_serving(request)
        name = channel_of_path(channel)
        presence = await node.presence(name)
        # Never creates the channel's epoch: anyone may read, as often as they like.
        position = await node.peek_position(name)
        return json_response(
            {
                "channel": name,
                "subscribers": len(presence),
                "presence": presence,
                "offset": position.offset if position is not None else 0,
                "epoch": position.epoch if position is not None else None,
            }
        )

    async def health(request: Request) -> HTTPResponse:
        return json_response({"status": "ok"})

    async def ready(request: Request) -> HTTPResponse:
        is_ready = is_ready_now()
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    async def metrics_text(request: Request) -> HTTPResponse:
        if not node.settings.metrics:
            return response.text("metrics are off (--metrics 0)\n", status=404)
        body, content_type = metrics.exposition()
        return response.raw(body, content_type=content_type)

    async def info(request: Request) -> HTTPResponse:
        instances = await node.instances()
        return json_response(
            {
                "instance": node.instance_id,
                "instances": [dataclasses.asdict(status) for status in instances],
            }
        )

    async def admin(request: Request) -> HTTPResponse:
        return response.raw(
            _admin_page(), content_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
        )

    bp.add_route(guarded(publish), "/api/publish", methods=["POST"], name="publish", stream=True)
    bp.add_route(
        guarded(channel_info), "/api/channels/<channel:path>", methods=["GET"], name="channel"
    )
    bp.add_route(health, "/health", methods=["GET"], name="health")
    bp.add_route(ready, "/ready", methods=["GET"], name="ready")
    bp.add_route(guarded(metrics_text), "/metrics", methods=["GET"], name="metrics")
    bp.add_route(guarded(info), "/api/info", methods=["GET"], name="info")
    bp.add_route(admin, "/admin", methods=["GET"], name="admin")


#: Revalidated, so that a browser follows a server upgrade; framed by no other site
#: (the page may hold an api key).
_PAGE_HEADERS = {"cache-control": "no-cache", "x-frame-options": "DENY"}


@functools.cache
def _admin_page() -> bytes:
    """The instances overview, ``admin.html`` beside this module."""
    return files(__package__).joinpath("admin.html").read_bytes()


def _json_media_type(content_type: str | None) -> bool:
    """``application/json``, a ``+json`` type, or none given (a script's bare POST).

    What a web page can send cross-site without a preflight is refused: ``text/plain``
    and the form types. A page can also send no type at all, but then its browser sends
    ``Origin``, which the origin check refuses."""
    if content_type is None:
        return True
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
