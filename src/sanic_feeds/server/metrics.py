"""The server's Prometheus metrics, and how a scrape reads them (one worker or many).

Every metric is created once per process, on import, in prometheus-client's
default registry; every Node of the process counts into the same ones. Names
start with ``feeds_`` and carry their unit; labels take a few fixed values
(wire formats, error and close codes, outcomes), never a channel name or a
client id, so the number of series stays bounded.

Counting happens where the event is decided (docs/architecture.md,
"Metrics"); fan-out counts once per wire format per batch, never per
subscriber.

With ``--workers N`` prometheus-client runs in its multiprocess mode: each
worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``, which must
be set before the worker imports prometheus-client (:func:`prepare_multiprocess_dir`,
in the parent, before the workers spawn), and a scrape of any worker sums
them (:func:`exposition`). Gauges count live workers only (``livesum``): a
worker that stops removes its gauge files (:func:`process_stopped`), and a
scrape removes those of workers that died without doing so.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sized

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from ..codec import WireFormat
from ..errors import CloseCode, ErrorCode
from ..events import Publication

__all__ = [
    "API_FORMAT",
    "BROKER_PUBLISH_SECONDS",
    "BROKER_RECONNECTS",
    "CHANNELS",
    "CLOSES_SENT",
    "CONNECTIONS",
    "CONTENT_TYPE",
    "DELIVERY_LAG_SECONDS",
    "ERRORS",
    "GAPS_GIVEN_UP",
    "GAPS_HEALED",
    "MESSAGES_DELIVERED",
    "MESSAGES_HEALED",
    "MESSAGES_PUBLISHED",
    "MULTIPROC_ENV",
    "RECOVERIES",
    "SLOW_CLIENT_CLOSES",
    "SUBSCRIPTIONS",
    "FanOutCounter",
    "exposition",
    "multiprocess_dir",
    "prepare_multiprocess_dir",
    "process_stopped",
    "prune_dead_processes",
    "remove_multiprocess_dir",
    "single_process",
]

#: Where prometheus-client's multiprocess mode keeps each process's values.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: The classic Prometheus text format, which every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The ``format`` of what the backend publishes (HTTP API, ``Feeds.publish``).
API_FORMAT = "api"

# Publishing to Redis takes a fraction of a millisecond on a quiet machine and
# tens under load; delivery lag adds the reader and the loop's backlog.
_PUBLISH_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CONNECTIONS = Gauge(
    "feeds_connections",
    "Open WebSocket connections.",
    multiprocess_mode="livesum",
)
SUBSCRIPTIONS = Gauge(
    "feeds_subscriptions",
    "Channel subscriptions of the open connections.",
    multiprocess_mode="livesum",
)
CHANNELS = Gauge(
    "feeds_channels",
    "Channels this instance is subscribed to on the broker (with local subscribers).",
    multiprocess_mode="livesum",
)
MESSAGES_PUBLISHED = Counter(
    "feeds_messages_published_total",
    "Messages the broker accepted, by where they came from: a WebSocket client's wire "
    "format (json, raw) or api (HTTP API, Feeds.publish).",
    ["format"],
)
MESSAGES_DELIVERED = Counter(
    "feeds_messages_delivered_total",
    "Messages queued to local subscribers (one per subscriber: live, healed and "
    "recovered), by wire format.",
    ["format"],
)
SLOW_CLIENT_CLOSES = Counter(
    "feeds_slow_client_closes_total",
    "Connections closed with 1013 because their outbound queue overflowed (--max-queue).",
)
CLOSES_SENT = Counter(
    "feeds_closes_sent_total",
    "WebSocket closes the server started, by close code (closes answering the client's "
    "are not counted).",
    ["code"],
)
RECOVERIES = Counter(
    "feeds_recoveries_total",
    "Subscriptions with since, by outcome: recovered, or not_recovered (recovered: false).",
    ["outcome"],
)
GAPS_HEALED = Counter(
    "feeds_gaps_healed_total",
    "Gaps in a channel's live stream filled from history.",
)
MESSAGES_HEALED = Counter(
    "feeds_messages_healed_total",
    "Messages read from history to fill gaps in live streams.",
)
GAPS_GIVEN_UP = Counter(
    "feeds_gaps_given_up_total",
    "Gaps history no longer covered: the channel's local clients were closed with 1013.",
)
BROKER_RECONNECTS = Counter(
    "feeds_broker_reconnects_total",
    "Times the broker lost its subscriptions and got them back.",
)
ERRORS = Counter(
    "feeds_errors_total",
    "Errors told to clients (error events, refused upgrades, HTTP API errors), by code.",
    ["code"],
)
BROKER_PUBLISH_SECONDS = Histogram(
    "feeds_broker_publish_duration_seconds",
    "Time the broker took to accept a publish.",
    buckets=_PUBLISH_BUCKETS_S,
)
DELIVERY_LAG_SECONDS = Histogram(
    "feeds_delivery_lag_seconds",
    "From a message's publish (its ts, on the publishing instance's clock) to its fan-out "
    "here; one sample per fan-out batch.",
    buckets=_LAG_BUCKETS_S,
)

# Every labelled series exists from the start, at zero: a dashboard's rate()
# sees the first event instead of a series appearing with it.
for _format in (*(f.value for f in WireFormat), API_FORMAT):
    MESSAGES_PUBLISHED.labels(_format)
for _wire_format in WireFormat:
    MESSAGES_DELIVERED.labels(_wire_format.value)
for _code in ErrorCode:
    ERRORS.labels(_code.value)
for _outcome in ("recovered", "not_recovered"):
    RECOVERIES.labels(_outcome)
for _close in CloseCode:
    CLOSES_SENT.labels(str(int(_close)))


class FanOutCounter:
    """What fan-out counts, once per batch: one increment per wire format in use
    on the channel (one, unless JSON and raw clients share it) and one lag sample.

    A hub without one (``--metrics 0``) counts nothing on its hot path.
    """

    __slots__ = ("_delivered",)

    def __init__(self) -> None:
        # Bound once: looking a labelled series up costs more than incrementing it.
        self._delivered = {fmt: MESSAGES_DELIVERED.labels(fmt.value) for fmt in WireFormat}

    def fanned_out(
        self,
        members: Mapping[WireFormat, Sized],
        last: Publication,
        messages: int = 1,
    ) -> None:
        """``messages`` publications, the last being ``last``, were queued to every
        subscriber in ``members`` (by wire format) just now."""
        delivered = self._delivered
        for wire_format, subscribers in members.items():
            count = len(subscribers)
            if count:
                delivered[wire_format].inc(count * messages)
        # Clocks of two machines can disagree by a little: never a negative lag.
        DELIVERY_LAG_SECONDS.observe(max(0.0, time.time() - last.ts_ms / 1000))

    def recovered(self, wire_format: WireFormat, messages: int) -> None:
        """One subscriber of ``wire_format`` was queued the ``messages`` it missed (no lag
        sample: they are old on purpose)."""
        self._delivered[wire_format].inc(messages)


# -- exposition and multiprocess mode


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process writes its values to, or None (one worker)."""
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets, and its content type: this process's metrics, or every
    worker's summed (counters and histograms of stopped workers too, gauges of live ones)."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE
    prune_dead_processes(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE


def single_process() -> None:
    """Serve this process's own metrics (the default registry) even when
    ``PROMETHEUS_MULTIPROC_DIR`` is set in its environment."""
    os.environ.pop(MULTIPROC_ENV, None)


def prepare_multiprocess_dir(path: str | None = None) -> tuple[str, bool]:
    """Set up the multiprocess directory for workers about to spawn; call it in the parent.

    ``path`` (default: ``PROMETHEUS_MULTIPROC_DIR`` when set, else a new temporary
    directory) is emptied of earlier runs' files and exported as
    ``PROMETHEUS_MULTIPROC_DIR``, which the workers inherit. Returns the path and
    whether it was created here (and is the caller's to remove when the workers are
    gone, with :func:`remove_multiprocess_dir`).
    """
    path = path or os.environ.get(MULTIPROC_ENV) or None
    created = path is None
    if path is None:
        path = tempfile.mkdtemp(prefix="sanic-feeds-metrics-")
    else:
        os.makedirs(path, exist_ok=True)
        # Values of a previous run would be summed with this one's.
        for db in glob.glob(os.path.join(path, "*.db")):
            os.remove(db)
    os.environ[MULTIPROC_ENV] = path
    return path, created


def remove_multiprocess_dir(path: str) -> None:
    """Remove a directory :func:`prepare_multiprocess_dir` created, once no worker runs."""
    shutil.rmtree(path, ignore_errors=True)


def process_stopped() -> None:
    """This worker stops: its gauges no longer count (multiprocess mode only)."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def _live_gauge_pids(path: str) -> Iterator[int]:
    for name in os.listdir(path):
        match = _LIVE_GAUGE_FILE.fullmatch(name)
        if match:
            yield int(match.group(1))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process now; not ours to judge, keep it
    return True


def prune_dead_processes(path: str) -> list[int]:
    """Remove the gauge files of workers that died without :func:`process_stopped` (killed,
    crashed), so that their connections stop counting; returns their pids."""
    dead = sorted({pid for pid in _live_gauge_pids(path) if not _alive(pid)})
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    return dead
