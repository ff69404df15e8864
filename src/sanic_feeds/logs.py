"""Log records as JSON lines (``--log-format json``), for log shippers.

Pure formatting, no handler of its own: ``server/app.py`` installs it. Each
record becomes one JSON object on one line::

    {"ts": "2026-12-01T10:00:00.123Z", "level": "info", "logger": "sanic_feeds.access",
     "message": "GET /ws 101 5012.3ms", "instance": "3f9c2a1b7d4e",
     "client": "9662674990c3caac", "code": 1000, "status": 101, "duration_ms": 5012.3}

``instance`` is the id of the instance this process serves (null before it
starts, and in the parent of ``--workers N``). The fields in :data:`FIELDS`
appear when the code that logs passes them, as ``extra=``; a traceback goes
into ``exception``, escaped like everything else, so it stays on one line.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

__all__ = ["FIELDS", "JsonFormatter", "set_instance"]

#: Fields a record may carry (``log.info(..., extra={"client": conn.id})``),
#: copied into its JSON object when set.
FIELDS = (
    "client",
    "channel",
    "code",
    "method",
    "path",
    "status",
    "duration_ms",
    "remote",
)

#: The instance this process serves; one per process, as a worker runs one.
_instance: str | None = None


def set_instance(instance_id: str | None) -> None:
    """Name the instance every following record belongs to."""
    global _instance
    _instance = instance_id


def _timestamp(created_s: float) -> str:
    seconds = int(created_s)
    millis = int((created_s - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "instance": _instance,
        }
        fields = record.__dict__
        for name in FIELDS:
            value = fields.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra value JSON cannot hold is still logged, as text.
        return orjson.dumps(entry, default=str).decode()
