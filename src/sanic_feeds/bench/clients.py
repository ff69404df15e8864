"""The load generator's WebSocket clients, and the process that runs them.

One worker process runs one :class:`~.scenarios.WorkerPlan` on one event
loop (uvloop when installed): its staying subscribers, its publishers and,
in ``churn``, connections that come and go. It reports to the parent over
its pipe (see :mod:`.ipc`). Subscribers only read and account; they never
write, so their cost per message is one frame parse, one JSON parse and a
few integer operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from multiprocessing.connection import Connection
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import Close

from .errors import BenchError
from .ipc import (
    ChurnTally,
    Connected,
    Drain,
    Failed,
    Go,
    Progress,
    ProgressSlots,
    Published,
    Stop,
    WorkerMessage,
    WorkerResult,
)
from .limits import raise_open_file_limit
from .payload import encode_payload, padding_for, read_probe
from .scenarios import ChurnSpec, PublisherSpec, SubscriberSpec, WorkerPlan
from .stats import ChannelTally, LatencyHistogram, Ledger, Outcome
from .wire import FeedSocket, HandshakeRefused, open_socket

__all__ = ["check_reachable", "feed_url", "run_event_loop", "worker_main"]

T = TypeVar("T")

#: Options of every client connection. No compression: the bench measures
#: routing, not deflate (the server may not offer it anyway). No client
#: pings: the server pings and websockets answers. No proxy from the
#: environment: the target is always reached directly.
_CONNECT_OPTIONS: dict[str, Any] = {
    "compression": None,
    "max_size": 16 * 2**20,
    "max_queue": 128,
    "ping_interval": None,
    "close_timeout": 2,
    "proxy": None,
    "user_agent_header": "sanic-feeds-bench",
}

#: Seconds between progress reports to the parent.
_PROGRESS_INTERVAL_S = 0.5
#: Seconds between refreshes of this process's progress slots (``--rate max``).
_SLOTS_INTERVAL_S = 0.01
#: Seconds a paced publisher sleeps when its window is full.
_PACING_SLEEP_S = 0.001
#: Seconds the shutdown waits for closing handshakes before aborting sockets.
_CLOSE_TIMEOUT_S = 5.0


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a fresh event loop, uvloop's when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def feed_url(base_url: str, channel: str) -> str:
    """``ws://host:port`` + ``/feed/<channel>``."""
    return f"{base_url.rstrip('/')}/feed/{quote(channel, safe=':@$/')}"


def describe_failure(exc: BaseException) -> str:
    """A short, human account of why a connection failed."""
    if isinstance(exc, InvalidStatus):
        return f"the server refused the WebSocket upgrade (HTTP {exc.response.status_code})"
    if isinstance(exc, HandshakeRefused):
        return f"the server refused the WebSocket upgrade ({exc})"
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        return f"the server closed the connection ({code}{' ' + reason if reason else ''})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, orjson.JSONDecodeError):
        return "the server sent a frame that is not JSON (is it a sanic-feeds /feed endpoint?)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


class _Refused(Exception):
    """The server answered the subscription with an ``error`` event."""


_OPEN_ERRORS = (
    OSError,
    HandshakeRefused,
    TimeoutError,
    InvalidHandshake,
    InvalidURI,
    ConnectionClosed,
    orjson.JSONDecodeError,
    _Refused,
)


async def _open(url: str, timeout_s: float) -> ClientConnection:
    """Connect to ``url`` and return once the server said ``subscribed``.

    Raises one of ``_OPEN_ERRORS``; events before ``subscribed`` (join,
    leave) are skipped.
    """
    async with asyncio.timeout(timeout_s):
        ws = await connect(url, open_timeout=None, **_CONNECT_OPTIONS)
        try:
            while True:
                event = orjson.loads(await ws.recv(decode=False))
                kind = event.get("type") if isinstance(event, dict) else None
                if kind == "subscribed":
                    return ws
                if kind == "error":
                    raise _Refused(f"{event.get('code')}: {event.get('message')}")
        except BaseException:
            ws.transport.abort()
            raise


async def _subscribe(url: str, timeout_s: float) -> tuple[FeedSocket, list[bytes]]:
    """Connect a read-only subscriber to ``url``; return once the server said ``subscribed``.

    Returns the socket and the frames that arrived after ``subscribed``
    (they are the caller's to account once it takes over ``on_text``).
    Raises one of ``_OPEN_ERRORS``.
    """
    loop = asyncio.get_running_loop()
    subscribed: asyncio.Future[list[bytes]] = loop.create_future()
    after: list[bytes] = []

    def opening(frame: bytes) -> None:
        if subscribed.done():
            after.append(frame)
            return
        try:
            event = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            subscribed.set_exception(exc)
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "subscribed":
            subscribed.set_result(after)
        elif kind == "error":
            subscribed.set_exception(_Refused(f"{event.get('code')}: {event.get('message')}"))

    socket: FeedSocket | None = None
    try:
        async with asyncio.timeout(timeout_s):
            socket = await open_socket(url, opening)
            await asyncio.wait((subscribed, socket.closed), return_when=asyncio.FIRST_COMPLETED)
            if not subscribed.done():
                raise ConnectionClosed(Close(socket.closed.result(), socket.close_reason), None)
            return socket, subscribed.result()
    except BaseException:
        if socket is not None and socket.transport is not None:
            socket.transport.abort()
        raise


async def _check_one(url: str, timeout_s: float) -> None:
    try:
        ws = await _open(url, timeout_s)
    except _OPEN_ERRORS as exc:
        raise BenchError(f"cannot subscribe at {url}: {describe_failure(exc)}") from None
    await ws.close()


def check_reachable(base_urls: list[str], channel: str, timeout_s: float = 10.0) -> None:
    """Subscribe once to ``channel`` on every URL; raise :class:`BenchError` if one fails."""

    async def check_all() -> None:
        for base_url in base_urls:
            await _check_one(feed_url(base_url, channel), timeout_s)

    run_event_loop(check_all())


# -- the worker process


def worker_main(plan: WorkerPlan, conn: Connection, shared: Any) -> None:
    """Entry point of a load-generator process (a ``multiprocessing`` target).

    ``shared`` is the ``RawArray`` behind :class:`~.ipc.ProgressSlots`.
    Exits with status 1 after sending :class:`~.ipc.Failed` when the run
    cannot go on.
    """
    # The parent owns the run: Ctrl-C reaches the whole process group, and
    # the parent stops workers itself, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_open_file_limit()
    slots = ProgressSlots(shared, plan.procs, len(plan.channels))
    try:
        run_event_loop(_Worker(plan, conn, slots).run())
    except Exception as exc:
        error = _find_bench_error(exc)
        message = (
            str(error)
            if error is not None
            else f"load generator process {plan.index} crashed:\n{traceback.format_exc()}"
        )
        with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
            conn.send(Failed(plan.index, message))
        sys.exit(1)


def _find_bench_error(exc: BaseException) -> BenchError | None:
    if isinstance(exc, BenchError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_bench_error(inner)
            if found is not None:
                return found
    return None


class _Inbox:
    """Commands from the parent, read from the pipe when the loop sees it readable."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        # Three commands at most ever arrive (Go, Drain, Stop), plus a Stop of
        # our own when the parent goes away.
        self._queue: asyncio.Queue[Go | Drain | Stop] = asyncio.Queue(maxsize=4)
        self._loop.add_reader(conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                self._queue.put_nowait(self._conn.recv())
        except (EOFError, OSError):
            # The parent died: stop as if told to, counting nothing as published.
            self.close()
            self._queue.put_nowait(Stop({}))

    async def get(self) -> Go | Drain | Stop:
        return await self._queue.get()

    def close(self) -> None:
        self._loop.remove_reader(self._conn.fileno())


class _Worker:
    """One process's share of a run."""

    def __init__(self, plan: WorkerPlan, conn: Connection, slots: ProgressSlots) -> None:
        self.plan = plan
        self.conn = conn
        self.slots = slots
        #: Latency of every first delivery in this process.
        self.latency = LatencyHistogram()
        self.subscribers = [_Subscriber(self, spec, counted=True) for spec in plan.subscribers]
        self.publishers = [_Publisher(self, spec) for spec in plan.publishers]
        #: Set once a subscriber or publisher has opened (or failed to).
        self.connected = 0
        self.failed = 0
        self.first_error: str | None = None
        self._all_open = asyncio.Event()
        #: First deliveries to staying subscribers.
        self.delivered = 0
        self.first_delivery_ns = 0
        self.last_delivery_ns = 0
        self.closed_by_server: Counter[int] = Counter()
        self.error_events: Counter[str] = Counter()
        self.presence_events = 0
        self.churn = ChurnTally()
        #: Churning connections currently open, to close at shutdown.
        self.churners: set[_Subscriber] = set()
        #: True once the parent said Stop: closes from now on are ours.
        self.stopping = False
        self._end_churn = asyncio.Event()
        #: The task opening churning connections, and owning them.
        self._churning: asyncio.Task[None] | None = None

    def send(self, message: WorkerMessage) -> None:
        self.conn.send(message)

    def client_opened(self, error: str | None) -> None:
        if error is None:
            self.connected += 1
        else:
            self.failed += 1
            self.first_error = self.first_error or error
        if self.connected + self.failed == len(self.subscribers) + len(self.publishers):
            self._all_open.set()

    def deliver(self, sent_ns: int, received_ns: int, counted: bool) -> None:
        self.latency.record(received_ns - sent_ns)
        if counted:
            self.delivered += 1
        else:
            self.churn.delivered += 1
        if not self.first_delivery_ns:
            self.first_delivery_ns = received_ns
        self.last_delivery_ns = received_ns

    async def run(self) -> None:
        inbox = _Inbox(self.conn)
        try:
            async with asyncio.TaskGroup() as tasks:
                progress = tasks.create_task(self._report_progress())
                await self._open_all(tasks)
                pacing = tasks.create_task(self._update_slots()) if self.plan.paced else None
                command = await inbox.get()
                if isinstance(command, Go):
                    await self._publish(tasks)
                    command = await inbox.get()
                if isinstance(command, Drain):
                    # Churn goes on only while messages flow.
                    self._end_churn.set()
                    command = await inbox.get()
                if not isinstance(command, Stop):
                    raise TypeError(f"expected Stop, got {command!r}")
                self.send(self._result(command.published))
                # Stop: no more reports, then every connection closes.
                progress.cancel()
                if pacing is not None:
                    pacing.cancel()
                await self._close_all()
        finally:
            inbox.close()

    async def _open_all(self, tasks: asyncio.TaskGroup) -> None:
        gate = asyncio.Semaphore(self.plan.connect_concurrency)
        started_ns = time.time_ns()
        for subscriber in self.subscribers:
            tasks.create_task(subscriber.run(gate))
        for publisher in self.publishers:
            tasks.create_task(publisher.run(gate))
        if self.subscribers or self.publishers:
            await self._all_open.wait()
        self.send(
            Connected(
                worker=self.plan.index,
                connected=self.connected,
                failed=self.failed,
                first_error=self.first_error,
                started_ns=started_ns,
                finished_ns=time.time_ns(),
            )
        )

    async def _publish(self, tasks: asyncio.TaskGroup) -> None:
        churn = self.plan.churn
        if churn is not None:
            # Runs until publishing ends in every process (Drain); churners
            # still open then live out their lifetime or are ended by Stop.
            self._churning = tasks.create_task(self._churn(churn))
        started_ns = time.time_ns()
        runs = [tasks.create_task(publisher.publish()) for publisher in self.publishers]
        for run in runs:
            await run
        finished_ns = time.time_ns()
        self.send(
            Published(
                worker=self.plan.index,
                counts={p.spec.channel: p.sent for p in self.publishers},
                started_ns=started_ns if self.publishers else None,
                finished_ns=finished_ns if self.publishers else None,
            )
        )

    async def _churn(self, spec: ChurnSpec) -> None:
        """Open ``rate`` connections per second, each closing after its lifetime."""
        interval_s = 1.0 / spec.rate_per_s
        next_at = time.monotonic()
        number = 0
        async with asyncio.TaskGroup() as churners:
            while not self._end_churn.is_set() and not self.stopping:
                url = spec.urls[number % len(spec.urls)]
                number += 1
                churner = _Subscriber(self, SubscriberSpec(url, spec.channel), counted=False)
                churners.create_task(churner.churn(spec.lifetime_s))
                next_at += interval_s
                delay_s = next_at - time.monotonic()
                if delay_s > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._end_churn.wait(), delay_s)

    async def _report_progress(self) -> None:
        while True:
            self.send(
                Progress(
                    worker=self.plan.index,
                    connected=self.connected,
                    delivered=self.delivered,
                    published=sum(p.sent for p in self.publishers),
                    closed=self.closed_by_server.total(),
                )
            )
            await asyncio.sleep(_PROGRESS_INTERVAL_S)

    async def _update_slots(self) -> None:
        """Keep this process's progress slots current for paced publishers."""
        by_channel: dict[int, list[_Subscriber]] = {}
        for subscriber in self.subscribers:
            by_channel.setdefault(subscriber.spec.channel, []).append(subscriber)
        index, nobody = self.plan.index, ProgressSlots.NOBODY
        while True:
            for channel, members in by_channel.items():
                floor = min((s.ledger.next_seq for s in members if s.alive), default=nobody)
                self.slots.set(index, channel, floor)
            await asyncio.sleep(_SLOTS_INTERVAL_S)

    def _result(self, published: Mapping[int, int]) -> WorkerResult:
        tallies: dict[int, ChannelTally] = {}
        for subscriber in self.subscribers:
            ledger = subscriber.ledger
            tally = tallies.setdefault(subscriber.spec.channel, ChannelTally())
            tally.add_ledger(ledger)
            # Count only what was published: a sequence number beyond that
            # can only come from a server that invents messages.
            limit = published.get(subscriber.spec.channel)
            if limit is not None and ledger.next_seq > limit:
                tally.distinct -= ledger.distinct - ledger.distinct_below(limit)
        return WorkerResult(
            worker=self.plan.index,
            latency=self.latency,
            tallies=tallies,
            churn=self.churn,
            closed_by_server=dict(self.closed_by_server),
            error_events=dict(self.error_events),
            presence_events=self.presence_events,
            first_delivery_ns=self.first_delivery_ns,
            last_delivery_ns=self.last_delivery_ns,
        )

    async def _close_all(self) -> None:
        """Close every connection, politely, then forcibly after a while."""
        self.stopping = True
        self._end_churn.set()
        clients: list[_Client] = [*self.subscribers, *self.publishers, *self.churners]
        await asyncio.gather(*(client.close() for client in clients))
        # Churners still in their handshake would otherwise open after this.
        if self._churning is not None:
            self._churning.cancel()


class _Client:
    """One WebSocket on ``/feed/<channel>``."""

    def __init__(self, worker: _Worker, url: str, channel: int) -> None:
        self.worker = worker
        self.channel_name = worker.plan.channels[channel]
        self.url = feed_url(url, self.channel_name)

    async def close(self) -> None:
        """Close politely, forcibly after a while; nothing when it never opened."""


class _Subscriber(_Client):
    """A read-only subscriber on the lean client of :mod:`.wire`."""

    def __init__(self, worker: _Worker, spec: SubscriberSpec, *, counted: bool) -> None:
        super().__init__(worker, spec.url, spec.channel)
        self.spec = spec
        #: Staying subscribers count toward loss; churners do not.
        self.counted = counted
        self.ledger = Ledger(self.channel_name)
        #: The open connection; None before it opened or when it failed to.
        self.socket: FeedSocket | None = None
        #: Open and reading.
        self.alive = False

    async def run(self, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                socket, early = await _subscribe(self.url, self.worker.plan.open_timeout_s)
            except _OPEN_ERRORS as exc:
                self.worker.client_opened(f"{self.url}: {describe_failure(exc)}")
                return
        self.worker.client_opened(None)
        self.socket = socket
        self.alive = True
        try:
            code = await self._read(socket, early)
            if not self.worker.stopping:
                self.worker.closed_by_server[code] += 1
        finally:
            self.alive = False

    async def churn(self, lifetime_s: float) -> None:
        """Connect, stay subscribed ``lifetime_s``, disconnect; account in the churn tally."""
        tally = self.worker.churn
        started = time.monotonic_ns()
        try:
            socket, early = await _subscribe(self.url, self.worker.plan.open_timeout_s)
        except _OPEN_ERRORS as exc:
            tally.failures += 1
            tally.first_failure = tally.first_failure or f"{self.url}: {describe_failure(exc)}"
            return
        self.socket = socket
        tally.connects += 1
        tally.connect_latency.record(time.monotonic_ns() - started)
        self.worker.churners.add(self)
        try:
            async with asyncio.timeout(lifetime_s):
                await self._read(socket, early)
            if not self.worker.stopping:
                tally.closed_by_server += 1
        except TimeoutError:
            pass  # its lifetime is over: leave
        finally:
            self.worker.churners.discard(self)
            if not self.worker.stopping:
                await socket.close(timeout_s=_CLOSE_TIMEOUT_S)
                tally.disconnects += 1
            tally.duplicates += self.ledger.duplicates
            tally.misrouted += self.ledger.misrouted

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close(timeout_s=_CLOSE_TIMEOUT_S)

    async def _read(self, socket: FeedSocket, early: list[bytes]) -> int:
        """Account every event until the connection closes; return its close code."""
        on_frame = self._accounting()
        socket.on_text = on_frame
        for frame in early:
            on_frame(frame)
        # Shielded: a churner's lifetime ending must not cancel the socket's own future.
        return await asyncio.shield(socket.closed)

    def _accounting(self) -> Callable[[bytes], None]:
        """The hot path: called with every frame, straight from the socket's data_received."""
        loads, now_ns = orjson.loads, time.time_ns
        ledger = self.ledger
        record, deliver = ledger.record, self.worker.deliver
        counted, other_event = self.counted, self._other_event

        def on_frame(frame: bytes) -> None:
            received_ns = now_ns()
            try:
                event = loads(frame)
            except ValueError:
                ledger.foreign += 1
                return
            if type(event) is not dict:
                ledger.foreign += 1
                return
            kind = event.get("type")
            if kind != "message":
                other_event(kind, event)
                return
            probe = read_probe(event.get("data"))
            if probe is None:
                ledger.foreign += 1
                return
            seq, sent_ns, payload_channel = probe
            if record(seq, payload_channel, event.get("channel")) is Outcome.NEW:
                deliver(sent_ns, received_ns, counted)

        return on_frame

    def _other_event(self, kind: object, event: dict[str, Any]) -> None:
        if kind in ("join", "leave"):
            self.worker.presence_events += 1
        elif kind == "error":
            self.worker.error_events[str(event.get("code"))] += 1


class _Publisher(_Client):
    """Publishes on the ``websockets`` client: one per channel, not on the hot path."""

    def __init__(self, worker: _Worker, spec: PublisherSpec) -> None:
        super().__init__(worker, spec.url, spec.channel)
        self.spec = spec
        #: The open connection; None before it opened or when it failed to.
        self.ws: ClientConnection | None = None
        #: Messages published so far.
        self.sent = 0
        self._padding = padding_for(self.channel_name, worker.plan.payload_bytes)

    async def run(self, gate: asyncio.Semaphore) -> None:
        """Open, then read (and drop) the echoes of this channel until closed.

        Reading matters: an unread socket would fill the server's queue for
        it and get closed. An ``error`` event ends the run with its reason.
        """
        ws = await self.open(gate)
        if ws is None:
            return
        try:
            while True:
                frame = await ws.recv(False)
                if b'"error"' not in frame:
                    continue
                event = orjson.loads(frame)
                if isinstance(event, dict) and event.get("type") == "error":
                    raise BenchError(self._explain_error(event))
        except ConnectionClosed as exc:
            if not self.worker.stopping:
                raise BenchError(
                    f"the server closed the publisher's connection to {self.url}: "
                    f"{describe_failure(exc)}"
                ) from None

    async def open(self, gate: asyncio.Semaphore) -> ClientConnection | None:
        """Open and subscribe; tell the worker how it went."""
        async with gate:
            try:
                self.ws = await _open(self.url, self.worker.plan.open_timeout_s)
            except _OPEN_ERRORS as exc:
                self.worker.client_opened(f"{self.url}: {describe_failure(exc)}")
                return None
        self.worker.client_opened(None)
        return self.ws

    async def close(self) -> None:
        if self.ws is None:
            return
        try:
            await asyncio.wait_for(self.ws.close(), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            self.ws.transport.abort()

    def _explain_error(self, event: dict[str, Any]) -> str:
        code, message = event.get("code"), event.get("message")
        if code == "rate_limited":
            return (
                f"the server rate-limits publishing ({code}: {message}): start it with "
                "--rate-limit 0 to measure it (bench --spawn does)"
            )
        return f"the server refused a publish on {self.channel_name}: {code}: {message}"

    async def publish(self) -> None:
        """Publish at the spec's rate, or paced by the slowest subscriber."""
        ws = self.ws
        if ws is None:
            return
        send: Callable[[int], Awaitable[None]] = self._sender(ws)
        if self.spec.rate_per_s is None:
            await self._publish_paced(send)
        else:
            await self._publish_at(send, self.spec.rate_per_s)

    def _sender(self, ws: ClientConnection) -> Callable[[int], Awaitable[None]]:
        channel, padding = self.channel_name, self._padding

        async def send(seq: int) -> None:
            try:
                await ws.send(encode_payload(seq, time.time_ns(), channel, padding), text=True)
            except ConnectionClosed as exc:
                raise BenchError(
                    f"the server closed the publisher's connection to {self.url}: "
                    f"{describe_failure(exc)}"
                ) from None

        return send

    def _limits(self) -> tuple[int | None, float]:
        """(message count or None, monotonic end time or infinity)."""
        if self.spec.messages is not None:
            return self.spec.messages, float("inf")
        return None, time.monotonic() + self.spec.duration_s

    async def _publish_at(self, send: Callable[[int], Awaitable[None]], rate_per_s: float) -> None:
        # Messages are due on a fixed schedule from the start; when the loop
        # falls behind, it sends what is due in one burst rather than drift.
        count, end_at = self._limits()
        started = time.monotonic()
        while count is None or self.sent < count:
            now = time.monotonic()
            if now >= end_at:
                break
            due = int((now - started) * rate_per_s) + 1
            if count is not None:
                due = min(due, count)
            while self.sent < due:
                await send(self.sent)
                self.sent += 1
            delay_s = started + self.sent / rate_per_s - time.monotonic()
            if delay_s > 0:
                await asyncio.sleep(delay_s)

    async def _publish_paced(self, send: Callable[[int], Awaitable[None]]) -> None:
        # At most `window` messages ahead of the slowest live subscriber of
        # the channel, in any process: as fast as the whole chain keeps up,
        # without letting the server's queues overflow.
        count, end_at = self._limits()
        window, channel, slots = self.worker.plan.window, self.spec.channel, self.worker.slots
        floor = slots.floor(channel)
        while count is None or self.sent < count:
            if time.monotonic() >= end_at:
                break
            if self.sent - floor >= window:
                floor = slots.floor(channel)
                if self.sent - floor >= window:
                    await asyncio.sleep(_PACING_SLEEP_S)
                    continue
            await send(self.sent)
            self.sent += 1
