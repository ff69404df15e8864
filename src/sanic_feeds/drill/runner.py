"""One run of one drill, from starting its deployment to its result.

1. Start Redis (its own, fresh, unless ``--redis``) and the instances.
2. Connect the clients (each on instance ``i mod N``) and wait until each is
   subscribed.
3. Publish at a steady rate; a quarter into it, inject the fault; undo it
   when the :class:`~.plan.Timeline` says.
4. After the last publish, wait for every publication to be acknowledged or
   given up, read the channel's final position, and wait (``settle_s`` at
   most) until every client with offsets has reached it.
5. Tally every client against how far each epoch went.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence

import orjson

from ..bench.errors import BenchError
from ..bench.limits import Deadline
from ..bench.scenarios import CHANNEL_NAMESPACE
from ..events import StreamPosition
from ..settings import Settings
from .deployment import Deployment
from .faults import Faults
from .http import HttpClient, HttpError
from .ledger import ClientTally, EpochBook, OffsetLedger, RawLedger, RawTally
from .load import HttpLoad, Load, PublisherLoad, PublishLog, SteadyPublisher
from .plan import ClientKind, Drill, DrillConfig, Publishing, Timeline
from .readiness import ReadinessWatch
from .redis_server import DrillRedis
from .results import DrillResult
from .subscribers import FeedSubscriber, WsSubscriber

__all__ = ["run_drill"]

#: Seconds every client has to get its first ``subscribed``.
_SUBSCRIBE_TIMEOUT_S = 60.0
#: Seconds between the last client subscribed and the first publish (raw
#: clients get no ``subscribed``: their subscription may still be under way).
_QUIET_S = 1.0
#: Seconds raw clients get after the others caught up.
_RAW_GRACE_S = 0.5

Progress = Callable[[str], None]
_Subscriber = FeedSubscriber | WsSubscriber


async def run_drill(
    drill: Drill,
    config: DrillConfig,
    run: int,
    *,
    deadline: Deadline,
    redis_url: str | None = None,
    progress: Progress = lambda line: None,
) -> DrillResult:
    """Run ``drill`` once on a deployment of its own; ``redis_url``: use that Redis (the
    drills that crash or reconfigure Redis are skipped then)."""
    if redis_url is not None and drill.needs_own_redis:
        return DrillResult(drill.value, run, skipped="needs a Redis of its own (not --redis)")
    own = DrillRedis(appendonly=drill.appendonly) if redis_url is None else None
    deployment = Deployment(
        deadline,
        config.instances,
        config.server_arguments(),
        own_redis=own,
        redis_url=None if own is not None else redis_url,
    )
    try:
        progress(f"starting {config.instances} instances")
        await asyncio.to_thread(deployment.start)
        return await _drive(drill, config, run, deployment, deadline, progress)
    finally:
        await asyncio.to_thread(deployment.close)


def _clients(
    drill: Drill, config: DrillConfig, urls: Sequence[str], channel: str
) -> list[tuple[ClientKind, _Subscriber]]:
    mix = config.mix(drill)
    clients: list[tuple[ClientKind, _Subscriber]] = []
    for kind in ClientKind:
        for _ in range(mix.count(kind)):
            start = len(clients)
            client: _Subscriber
            if kind is ClientKind.RAW:
                client = FeedSubscriber(urls, start, channel, RawLedger())
            elif kind is ClientKind.WS:
                client = WsSubscriber(urls, start, channel, OffsetLedger())
            else:
                client = FeedSubscriber(urls, start, channel, OffsetLedger())
            clients.append((kind, client))
    return clients


async def _drive(
    drill: Drill,
    config: DrillConfig,
    run: int,
    deployment: Deployment,
    deadline: Deadline,
    progress: Progress,
) -> DrillResult:
    tag = secrets.token_hex(4)
    channel = f"{CHANNEL_NAMESPACE}:drill-{tag}"
    urls = deployment.urls
    book = EpochBook()
    log = PublishLog(book)
    timeline = Timeline.of(drill, config)
    clients = _clients(drill, config, urls, channel)
    progress(f"connecting {len(clients)} clients")
    tasks = [asyncio.create_task(client.run(), name="drill-client") for _, client in clients]
    watch = ReadinessWatch(urls)
    try:
        await _wait_subscribed(clients, min(_SUBSCRIBE_TIMEOUT_S, deadline.remaining_s()))
        watch.start()
        await asyncio.sleep(_QUIET_S)
        async with contextlib.AsyncExitStack() as stack:
            load: Load
            if drill.publishing is Publishing.PUBLISHER:
                size = config.history_size or Settings().history_size
                load = await stack.enter_async_context(
                    PublisherLoad(deployment.redis_url, channel, tag, log, size)
                )
            else:
                http_load = HttpLoad(urls, channel, tag, log)
                stack.callback(http_load.close)
                load = http_load
            publisher = SteadyPublisher(load, config.rate_per_s)
            slow = [c for kind, c in clients if kind is ClientKind.SLOW]
            faults = Faults(
                drill, deployment, publisher, [c for c in slow if isinstance(c, FeedSubscriber)]
            )
            await faults.prepare()
            start_at = time.monotonic() + 0.05
            progress(
                f"publishing {config.rate_per_s:g}/s for {timeline.publish_until_s:g} s, "
                f"fault at {timeline.fault_at_s:g} s"
            )
            publishing = asyncio.create_task(publisher.run(start_at, timeline.publish_until_s))
            await _sleep_until(start_at + timeline.fault_at_s)
            fault_at = time.monotonic()
            for _, client in clients:
                client.ledger.fault_at = fault_at
            await faults.inject()
            recovered_at_s = None
            if timeline.recover_at_s is not None:
                await _sleep_until(start_at + timeline.recover_at_s)
                await faults.recover()
                recovered_at_s = time.monotonic() - start_at
            await publishing
            publishing_s = (publisher.last_published_at or time.monotonic()) - start_at
            progress("waiting for every publication to be acknowledged")
            await publisher.finish()
            faults.conclude()
        final = await _final_position(urls, channel)
        if final is not None:
            book.note(final)
        progress("waiting for every client to catch up")
        behind = await _settle(clients, final, config.settle_s)
        await asyncio.sleep(_RAW_GRACE_S)
    finally:
        await watch.stop()
        await asyncio.gather(*(client.stop() for _, client in clients), return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    notes = list(faults.notes)
    if behind:
        notes.append(
            f"{behind} clients had not caught up {config.settle_s:g} s after the last publish"
        )
    if log.failed:
        notes.append(f"{log.failed} publications failed after their retries")
    if log.refusals:
        refused = ", ".join(f"{code} x{count}" for code, count in sorted(log.refusals.items()))
        notes.append(f"publish attempts refused: {refused}")
    if final is None:
        notes.append("no instance answered GET /api/channels at the end")
    return _result(
        drill, run, clients, book, log, watch, fault_at, start_at, publishing_s,
        recovered_at_s, notes,
    )  # fmt: skip


def _result(
    drill: Drill,
    run: int,
    clients: Sequence[tuple[ClientKind, _Subscriber]],
    book: EpochBook,
    log: PublishLog,
    watch: ReadinessWatch,
    fault_at: float,
    start_at: float,
    publishing_s: float,
    recovered_at_s: float | None,
    notes: list[str],
) -> DrillResult:
    by_kind: dict[str, list[ClientTally]] = {}
    raw: list[RawTally] = []
    closes: Counter[str] = Counter()
    for kind, client in clients:
        ledger = client.ledger
        if isinstance(ledger, RawLedger):
            raw.append(ledger.tally(log.acknowledged))
        else:
            by_kind.setdefault(kind.value, []).append(ledger.tally(book))
        for code, count in client.closes.items():
            closes[f"{kind.value} {code}"] += count
        if isinstance(client, WsSubscriber) and client.attempts > 1:
            closes[f"{kind.value} reconnects"] += client.attempts - 1
    return DrillResult(
        drill=drill.value,
        run=run,
        published=len(log.acknowledged),
        publish_failed=log.failed,
        publish_retried=log.retried,
        offsets=book.offsets,
        epochs=book.epochs,
        offset_clients={kind: ClientTally.total(tallies) for kind, tallies in by_kind.items()},
        raw=RawTally.total(raw),
        ready_transitions=len(watch.transitions),
        ready_events=tuple(
            (change.at - fault_at, change.instance, change.ready) for change in watch.transitions
        ),
        closes=dict(sorted(closes.items())),
        publishing_s=publishing_s,
        fault_at_s=fault_at - start_at,
        recovered_at_s=recovered_at_s,
        notes=tuple(notes),
    )


async def _sleep_until(at: float) -> None:
    delay_s = at - time.monotonic()
    if delay_s > 0:
        await asyncio.sleep(delay_s)


async def _wait_subscribed(
    clients: Sequence[tuple[ClientKind, _Subscriber]], timeout_s: float
) -> None:
    waits = [asyncio.create_task(client.ready.wait()) for _, client in clients]
    try:
        _, pending = await asyncio.wait(waits, timeout=timeout_s)
    finally:
        for wait in waits:
            wait.cancel()
    if pending:
        raise BenchError(f"{len(pending)} of {len(clients)} clients could not subscribe in time")


async def _final_position(urls: Sequence[str], channel: str) -> StreamPosition | None:
    """The channel's position, from the first instance that answers."""
    for url in urls:
        client = HttpClient(url, 5.0)
        try:
            reply = await client.request("GET", f"/api/channels/{channel}")
        except HttpError:
            continue
        finally:
            client.close()
        if reply.status == 200:
            info = orjson.loads(reply.body)
            return StreamPosition(info["offset"], info["epoch"])
    return None


async def _settle(
    clients: Sequence[tuple[ClientKind, _Subscriber]],
    final: StreamPosition | None,
    settle_s: float,
) -> int:
    """Wait until every client with offsets stands at the final position; return how
    many did not within ``settle_s``."""
    give_up_at = time.monotonic() + settle_s
    while True:
        behind = 0
        for _, client in clients:
            ledger = client.ledger
            if isinstance(ledger, OffsetLedger):
                held = ledger.position
                if (
                    final is None
                    or held is None
                    or held.epoch != final.epoch
                    or held.offset < final.offset
                ):
                    behind += 1
        if not behind or time.monotonic() >= give_up_at:
            return behind
        await asyncio.sleep(0.1)


def print_progress(label: str, began: float) -> Progress:
    """Progress lines on stderr: seconds since ``began`` (monotonic), ``label``, the line."""

    def show(line: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {label}: {line}", file=sys.stderr, flush=True)

    return show
