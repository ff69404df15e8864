"""The app factory used by ``sanic-feeds serve`` (one worker or many)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from typing import Any

from sanic import Sanic

from .extension import Feeds
from .settings import Settings

__all__ = ["configure_logging", "create_app", "create_app_from_env", "settings_to_env"]

_SETTINGS_ENV = "FEEDS__SERVE_SETTINGS"


def configure_logging(settings: Settings) -> None:
    """Log at ``--log-level`` to stderr; worker processes call it too, as they start afresh."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "debug":
        # A line for every connection that opens and closes is noise at info.
        logging.getLogger("sanic_feeds.websocket.protocol").setLevel(logging.WARNING)


def create_app(settings: Settings) -> Sanic[Any, Any]:
    # Sanic logs through our handler, at --log-level, once (its own handlers would print twice).
    app: Sanic[Any, Any] = Sanic("sanic_feeds", configure_logging=False)
    Feeds(app, settings=settings)
    return app


def settings_to_env(settings: Settings) -> None:
    """Hand the settings to worker processes, which build their app from them."""
    os.environ[_SETTINGS_ENV] = json.dumps(asdict(settings))


def create_app_from_env() -> Sanic[Any, Any]:
    values = json.loads(os.environ[_SETTINGS_ENV])
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    settings = Settings(**values)
    configure_logging(settings)
    return create_app(settings)
