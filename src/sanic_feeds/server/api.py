"""The HTTP API: publish, channel info, liveness and readiness, metrics, the live
instances and their overview page (docs/protocol.md, "HTTP API")."""

from __future__ import annotations

import dataclasses
import functools
import hmac
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import orjson
from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from ..codec import error_event
from ..errors import BadRequest, FeedsError, Unauthorized
from ..names import validate_channel
from . import metrics
from .node import Node

__all__ = ["error_response", "register_api"]


def json_response(body: Any, status: int = 200) -> HTTPResponse:
    return response.raw(orjson.dumps(body), status=status, content_type="application/json")


def error_response(exc: FeedsError) -> HTTPResponse:
    """The one mapping of an error to an HTTP answer."""
    metrics.ERRORS.labels(exc.code.value).inc()
    return json_response(error_event(exc.code, exc.message), exc.http_status)


def register_api(bp: Blueprint, node: Node, is_ready_now: Callable[[], bool]) -> None:
    """Add the API's routes to ``bp``; ``is_ready_now()`` answers ``GET /ready``."""

    def check_serving(request: Request) -> None:
        if node.draining:
            # Sanic keeps serving a keep-alive connection that was busy when the
            # drain began: this answer closes it, so the client goes elsewhere.
            stream = request.stream
            if stream is not None and hasattr(stream, "keep_alive"):
                stream.keep_alive = False
        node.check_serving()

    def check_api_key(request: Request) -> None:
        key = node.settings.api_key
        if not key:
            return
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "apikey" or not hmac.compare_digest(given.strip(), key):
            raise Unauthorized("this endpoint needs 'Authorization: apikey <key>'")

    async def publish(request: Request) -> HTTPResponse:
        try:
            check_api_key(request)
            check_serving(request)
            try:
                body = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                raise BadRequest("the body must be JSON") from None
            if not isinstance(body, dict) or "data" not in body:
                raise BadRequest('the body must be {"channel": "...", "data": <JSON>}')
            position = await node.publish(
                validate_channel(body.get("channel")),
                body["data"],
                idempotency_key=body.get("idempotency_key"),
            )
        except FeedsError as exc:
            return error_response(exc)
        return json_response({"offset": position.offset, "epoch": position.epoch})

    async def channel_info(request: Request, channel: str) -> HTTPResponse:
        try:
            check_serving(request)
            presence = await node.presence(channel)
            position = await node.position(channel)
        except FeedsError as exc:
            return error_response(exc)
        return json_response(
            {
                "channel": channel,
                "subscribers": len(presence),
                "presence": presence,
                "offset": position.offset,
                "epoch": position.epoch,
            }
        )

    async def health(request: Request) -> HTTPResponse:
        return json_response({"status": "ok"})

    async def ready(request: Request) -> HTTPResponse:
        is_ready = is_ready_now()
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    async def metrics_text(request: Request) -> HTTPResponse:
        try:
            check_api_key(request)
        except FeedsError as exc:
            return error_response(exc)
        if not node.settings.metrics:
            return response.text("metrics are off (--metrics 0)\n", status=404)
        body, content_type = metrics.exposition()
        return response.raw(body, content_type=content_type)

    async def info(request: Request) -> HTTPResponse:
        try:
            check_api_key(request)
            instances = await node.instances()
        except FeedsError as exc:
            return error_response(exc)
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

    bp.add_route(publish, "/api/publish", methods=["POST"], name="publish")
    bp.add_route(channel_info, "/api/channels/<channel:path>", methods=["GET"], name="channel")
    bp.add_route(health, "/health", methods=["GET"], name="health")
    bp.add_route(ready, "/ready", methods=["GET"], name="ready")
    bp.add_route(metrics_text, "/metrics", methods=["GET"], name="metrics")
    bp.add_route(info, "/api/info", methods=["GET"], name="info")
    bp.add_route(admin, "/admin", methods=["GET"], name="admin")


#: Revalidated, so that a browser follows a server upgrade; framed by no other site
#: (the page may hold an api key).
_PAGE_HEADERS = {"cache-control": "no-cache", "x-frame-options": "DENY"}


@functools.cache
def _admin_page() -> bytes:
    """The instances overview, ``admin.html`` beside this module."""
    return files(__package__).joinpath("admin.html").read_bytes()
