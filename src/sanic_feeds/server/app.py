"""The app factory used by ``sanic-feeds serve``, and how it runs (one worker or many)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from typing import Any

from sanic import Sanic
from sanic.worker.loader import AppLoader

from ..logs import JsonFormatter
from ..settings import Settings
from . import metrics
from .extension import Feeds

__all__ = ["configure_logging", "create_app", "create_app_from_env", "run", "settings_to_env"]

_SETTINGS_ENV = "FEEDS__SERVE_SETTINGS"


def configure_logging(settings: Settings) -> None:
    """Log at ``--log-level`` to stderr, as text or JSON lines (``--log-format``);
    worker processes call it too, as they start afresh."""
    if settings.log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
        # A warning printed as text would be the one line a log shipper cannot parse.
        logging.captureWarnings(True)
    else:
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
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


def run(settings: Settings) -> None:
    """Serve until stopped: in this process with one worker, else under Sanic's manager,
    whose workers build their app from the settings handed over in the environment."""
    configure_logging(settings)
    run_options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,
        "motd": False,
    }
    if settings.workers == 1:
        # One process: its own registry is the whole story, whatever an inherited
        # PROMETHEUS_MULTIPROC_DIR holds from earlier runs.
        metrics.single_process()
        create_app(settings).run(single_process=True, **run_options)
        return
    settings_to_env(settings)
    # Workers count into files of a shared directory that a scrape of any of
    # them sums; they must find it in their environment when they start.
    metrics_dir, created = metrics.prepare_multiprocess_dir() if settings.metrics else ("", False)
    try:
        loader = AppLoader(factory=create_app_from_env)
        app = loader.load()
        app.prepare(workers=settings.workers, **run_options)
        Sanic.serve(primary=app, app_loader=loader)
    finally:
        if created:
            metrics.remove_multiprocess_dir(metrics_dir)
