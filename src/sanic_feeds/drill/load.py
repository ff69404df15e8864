"""The drill's publishers: a steady rate through the HTTP API, or through a ``Publisher``.

Every publication carries its sequence number ``s`` and the time ``t`` it was
due (on this process's monotonic clock), so that every client can tell its
delay, and an idempotency key made of the run's tag and ``s``, so that a retry
(on the next instance, after a 503 or a lost reply) never publishes twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol

import orjson

from ..backoff import Backoff
from ..errors import BrokerUnavailable
from ..events import StreamPosition
from ..publisher import Publisher
from .http import HttpClient, HttpError
from .ledger import EpochBook

__all__ = ["HttpLoad", "Load", "PublishLog", "PublisherLoad", "SteadyPublisher"]

#: Seconds one publish attempt may take over HTTP (a SIGSTOPped instance never answers).
ATTEMPT_TIMEOUT_S = 1.0
#: Seconds a publication is retried before it counts as failed.
GIVE_UP_S = 60.0


class PublishLog:
    """What the publisher got done: the position the broker gave each sequence number."""

    def __init__(self, book: EpochBook) -> None:
        self._book = book
        self.acknowledged: dict[int, StreamPosition] = {}
        #: Publications given up (retried for ``GIVE_UP_S``, or refused for good).
        self.failed = 0
        #: Publications that needed more than one attempt.
        self.retried = 0
        #: Failed attempts, by HTTP status or ``error`` (no response).
        self.refusals: Counter[str] = Counter()

    def accepted(self, seq: int, position: StreamPosition, attempts: int) -> None:
        self.acknowledged[seq] = position
        self._book.note(position)
        if attempts > 1:
            self.retried += 1


class Load(Protocol):
    """Publishes one publication, retrying as its kind of publisher does, and logs it."""

    log: PublishLog

    async def publish(self, seq: int, data: dict[str, Any]) -> None: ...


class HttpLoad:
    """``POST /api/publish`` with an idempotency key, round-robin over the instances
    (publication ``s`` starts at instance ``s mod N``); a 503, an error or a timeout
    is retried on the next instance, as a load balancer would."""

    def __init__(self, bases: Sequence[str], channel: str, tag: str, log: PublishLog) -> None:
        self._clients = [HttpClient(base, ATTEMPT_TIMEOUT_S) for base in bases]
        self._channel = channel
        self._tag = tag
        self.log = log

    async def publish(self, seq: int, data: dict[str, Any]) -> None:
        body = orjson.dumps(
            {"channel": self._channel, "data": data, "idempotency_key": f"{self._tag}-{seq}"}
        )
        headers = {"Content-Type": "application/json"}
        backoff = Backoff(min_s=0.02, max_s=1.0)
        give_up_at = time.monotonic() + GIVE_UP_S
        attempt = 0
        while True:
            attempt += 1
            client = self._clients[(seq + attempt - 1) % len(self._clients)]
            try:
                reply = await client.request("POST", "/api/publish", body, headers)
            except HttpError:
                refusal = "error"
            else:
                if reply.status == 200:
                    answer = orjson.loads(reply.body)
                    position = StreamPosition(answer["offset"], answer["epoch"])
                    self.log.accepted(seq, position, attempt)
                    return
                refusal = str(reply.status)
                if reply.status != 503:
                    self.log.refusals[refusal] += 1
                    break  # refused for good: a bug of the drill or the server
            self.log.refusals[refusal] += 1
            if time.monotonic() > give_up_at:
                break
            await asyncio.sleep(backoff.next_delay_s())
        self.log.failed += 1

    def close(self) -> None:
        for client in self._clients:
            client.close()


class PublisherLoad:
    """A :class:`~sanic_feeds.Publisher` with a retry buffer, straight to Redis; use
    it as an async context manager (leaving waits for the buffer to drain)."""

    def __init__(
        self, redis_url: str, channel: str, tag: str, log: PublishLog, history_size: int
    ) -> None:
        self._publisher = Publisher(
            redis_url, history_size=history_size, retry_buffer=100_000, retry_for_s=GIVE_UP_S
        )
        self._channel = channel
        self._tag = tag
        self.log = log

    async def __aenter__(self) -> PublisherLoad:
        await self._publisher.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._publisher.__aexit__(exc_type, exc, tb)

    async def publish(self, seq: int, data: dict[str, Any]) -> None:
        accepted = self._publisher.publish_nowait(
            self._channel, data, idempotency_key=f"{self._tag}-{seq}"
        )
        try:
            position = await accepted
        except BrokerUnavailable:
            self.log.failed += 1
            return
        self.log.accepted(seq, position, 1)


class SteadyPublisher:
    """Publishes through ``load`` at ``rate_per_s``, each publication in a task of its
    own, so that one being retried does not hold the others back."""

    def __init__(self, load: Load, rate_per_s: float) -> None:
        self._load = load
        self._rate_per_s = rate_per_s
        self._next_seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: When :meth:`run` started its last publication (monotonic), None before.
        self.last_published_at: float | None = None

    @property
    def published(self) -> int:
        """Publications started."""
        return self._next_seq

    async def run(self, start_at: float, until_s: float) -> None:
        """Publish from ``start_at`` (monotonic) for ``until_s`` seconds."""
        count = int(until_s * self._rate_per_s)
        for number in range(count):
            due = start_at + number / self._rate_per_s
            delay_s = due - time.monotonic()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            self.publish_one(due)
        self.last_published_at = time.monotonic()

    def publish_one(self, due: float, padding: int = 0) -> None:
        """Start one publication due at ``due``, with ``padding`` bytes of filler."""
        seq = self._next_seq
        self._next_seq += 1
        data: dict[str, Any] = {"s": seq, "t": due}
        if padding:
            data["pad"] = "x" * padding
        task = asyncio.create_task(self._load.publish(seq, data), name=f"drill-publish-{seq}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish(self) -> None:
        """Wait for every publication to be accepted or given up."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
