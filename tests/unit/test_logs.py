"""``--log-format json``: the formatter alone, on hand-made records (``logs.py``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from sanic_feeds.logs import JsonFormatter, set_instance


@pytest.fixture(autouse=True)
def no_instance() -> Iterator[None]:
    set_instance(None)
    yield
    set_instance(None)


def record(message: str, *args: Any, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("sanic_feeds.test", level, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def formatted(made: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(made)
    assert "\n" not in line
    value: dict[str, Any] = orjson.loads(line)
    return value


def test_a_record_is_one_json_object_with_the_common_fields() -> None:
    made = record("%d clients of %r", 3, "news", level=logging.WARNING)
    made.created = 1_796_000_000.25
    assert formatted(made) == {
        "ts": "2026-11-30T00:53:20.250Z",
        "level": "warning",
        "logger": "sanic_feeds.test",
        "message": "3 clients of 'news'",
        "instance": None,
    }


def test_the_instance_and_the_fields_a_caller_passes_are_included() -> None:
    set_instance("abc123")
    entry = formatted(record("closing", client="c1", channel="news", code=1013, other="x"))
    assert entry["instance"] == "abc123"
    assert (entry["client"], entry["channel"], entry["code"]) == ("c1", "news", 1013)
    assert "other" not in entry  # only the known fields: a log line is no dump of locals


def test_a_traceback_stays_on_the_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        made = record("failed")
        made.exc_info = sys.exc_info()
    entry = formatted(made)
    assert entry["message"] == "failed"
    assert "ValueError: boom\nsecond line" in entry["exception"]


def test_a_value_json_cannot_hold_is_logged_as_text() -> None:
    entry = formatted(record("odd", client=object.__new__(type("Odd", (), {}))))
    assert entry["client"].startswith("<")
