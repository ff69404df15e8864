"""The HTTP API: publish, channel info, liveness and readiness."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

import orjson
from sanic import Request, response
from sanic.response import HTTPResponse

from .channels import validate_channel
from .errors import BadRequest, FeedsError, Unauthorized

if TYPE_CHECKING:
    from .extension import Feeds

__all__ = ["error_response", "register_api"]


def json_response(body: Any, status: int = 200) -> HTTPResponse:
    return response.raw(orjson.dumps(body), status=status, content_type="application/json")


def error_response(exc: FeedsError) -> HTTPResponse:
    """The one mapping of an error to an HTTP answer."""
    return json_response(
        {"type": "error", "code": exc.code.value, "message": exc.message}, exc.http_status
    )


def register_api(feeds: Feeds, bp: Any) -> None:
    def check_api_key(request: Request) -> None:
        key = feeds.settings.api_key
        if not key:
            return
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "apikey" or not hmac.compare_digest(given.strip(), key):
            raise Unauthorized("this endpoint needs 'Authorization: apikey <key>'")

    async def publish(request: Request) -> HTTPResponse:
        try:
            check_api_key(request)
            try:
                body = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                raise BadRequest("the body must be JSON") from None
            if not isinstance(body, dict) or "data" not in body:
                raise BadRequest('the body must be {"channel": "...", "data": <JSON>}')
            position = await feeds.publish(
                validate_channel(body.get("channel")),
                body["data"],
                idempotency_key=body.get("idempotency_key"),
            )
        except FeedsError as exc:
            return error_response(exc)
        return json_response({"offset": position.offset, "epoch": position.epoch})

    async def channel_info(request: Request, channel: str) -> HTTPResponse:
        try:
            validate_channel(channel)
            presence = await feeds.broker.presence(channel)
            position = await feeds.broker.position(channel)
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
        is_ready = feeds.ready
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    bp.add_route(publish, "/api/publish", methods=["POST"], name="publish")
    bp.add_route(channel_info, "/api/channels/<channel:path>", methods=["GET"], name="channel")
    bp.add_route(health, "/health", methods=["GET"], name="health")
    bp.add_route(ready, "/ready", methods=["GET"], name="ready")
