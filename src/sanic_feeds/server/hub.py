"""The per-process hub: channel subscriptions, ordering, gap healing, fan-out.

Broker subscriptions belong to the process and are reference-counted: the
first local subscriber of a channel subscribes, the last unsubscribes (that
channel only), under a per-channel lock with rollback on failure.

Each channel remembers the last offset it delivered. A publication that does
not follow it (pub/sub skipped some after a reconnect, or Redis dropped this
subscriber) parks the channel while the missing publications are read from
history; they are delivered in order before anything newer. When history no
longer holds them, the channel's clients are closed with 1013 so that they
resubscribe and learn ``recovered: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..brokers.base import Broker
from ..codec import WireFormat, encode_event
from ..errors import BrokerUnavailable, CloseCode
from ..events import Event, Publication, StreamPosition
from ..recovery import contiguous_after, replay_start
from . import metrics
from .metrics import FanOutCounter
from .outbox import Flusher, Outbox
from .websocket import text_frame

__all__ = ["Hub"]

log = logging.getLogger("sanic_feeds.hub")

#: How long a recovery waits for its channel to catch up with the broker's new epoch
#: before the client is told to try again, and how many times it plans again.
RESYNC_WAIT_S = 1.0
RESYNC_ATTEMPTS = 3


class _Resyncing(Exception):
    """The broker's epoch is not the one the channel delivers: it is being healed."""


@dataclass(slots=True, eq=False)
class _HistoryRead:
    """One read of a channel's history, shared by every recovery that asks meanwhile.

    Until it starts (the end of the loop iteration that created it) it widens
    to cover what later recoveries need; once started, it serves those it covers.
    """

    after: int
    upto: int
    done: asyncio.Future[tuple[list[Publication], StreamPosition]]
    started: bool = False


@dataclass(slots=True, eq=False)
class _Channel:
    #: Local subscribers, by the wire format they receive.
    members: dict[WireFormat, set[Outbox]] = field(
        default_factory=lambda: {WireFormat.JSON: set(), WireFormat.RAW: set()}
    )
    #: The last publication delivered (or the channel's position when subscribed).
    position: StreamPosition = field(default_factory=lambda: StreamPosition(0, ""))
    #: Live publications held back while the channel is being positioned or
    #: healed; None while publications flow straight through.
    parked: list[Publication] | None = None
    #: Pub/sub may have skipped publications (the broker resubscribed, or a history
    #: read failed before it could tell): the heal under way compares the channel
    #: with its history again before it lets publications flow.
    recheck: bool = False
    #: Subscribes past opening the channel but not yet members: the channel is
    #: not closed under them.
    joining: int = 0
    #: History reads pending or in flight for recoveries.
    reads: list[_HistoryRead] = field(default_factory=list)
    #: Epochs this instance saw replaced on the channel -> the epoch that replaced them
    #: (also recorded in the broker, for the other instances).
    successors: dict[str, str] = field(default_factory=dict)
    #: The heal under way (while ``parked`` is not None).
    heal: asyncio.Task[None] | None = None

    @property
    def size(self) -> int:
        return sum(len(outboxes) for outboxes in self.members.values())


def _retrieve(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


class _KeyedLock:
    """One asyncio.Lock per key, forgotten when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Hub:
    """Implements :class:`~sanic_feeds.brokers.base.BrokerHandler`."""

    def __init__(
        self,
        broker: Broker,
        flusher: Flusher,
        *,
        heal_max: int = 300,
        announce_max: int = 1000,
        fan_out_counter: FanOutCounter | None = None,
    ) -> None:
        self._broker = broker
        self.flusher = flusher
        #: The largest gap healed from history; a larger one gives clients up.
        self._heal_max = heal_max
        #: Join and leave reach a channel's local subscribers only while
        #: there are at most this many: announcing every join to everyone
        #: costs O(N²) frames while a large channel fills.
        self._announce_max = announce_max
        self._channels: dict[str, _Channel] = {}
        self._lock = _KeyedLock()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Counts deliveries and samples their lag, once per batch; None counts nothing.
        self._counter = fan_out_counter

    # -- subscriptions

    async def subscribe(
        self,
        channel: str,
        outbox: Outbox,
        wire_format: WireFormat,
        greet: Callable[[StreamPosition, bool], None] | None = None,
        since: StreamPosition | None = None,
    ) -> tuple[StreamPosition, bool]:
        """Add ``outbox`` to ``channel``; it receives everything after the returned position.

        With ``since`` (the last offset and epoch the client saw), the
        publications it missed are queued first when history still holds all
        of them and there are at most ``heal_max``; the returned flag says
        whether they were (recovery is never partial). When ``since`` is in the
        epoch that the channel's epoch replaced (``Broker.successor``: its history
        was lost), the new epoch is queued whole instead, under the same conditions,
        and the flag is False: the returned position is then offset 0 of the new
        epoch, where what is queued starts. ``greet(position, recovered)`` is
        called right before anything can reach the outbox (to queue
        ``subscribed`` first). Raises ``BrokerUnavailable`` with nothing changed
        when the broker fails.
        """
        # The lock covers opening the channel only: recoveries read history
        # concurrently, and those of one moment share one read.
        async with self._lock(channel):
            state = self._channels.get(channel)
            if state is None:
                state = await self._open(channel)
            state.joining += 1
        try:
            replay = await self._replay_since(channel, state, since) if since else None
        except BaseException:
            state.joining -= 1
            await self._close_if_unused(channel, state)
            raise
        state.joining -= 1
        # From here to the end nothing awaits, so no publication can slip
        # between the recovered ones and the live ones.
        position, missed, recovered = state.position, None, False
        if replay is not None:
            start, missed, recovered = replay
            if not recovered:
                position = start  # the new epoch, from its start
        if greet is not None:
            greet(position, recovered)
        if missed:
            outbox.put_batch(_frames(missed, wire_format))
            if self._counter is not None:
                self._counter.recovered(wire_format, len(missed))
        state.members[wire_format].add(outbox)
        return position, recovered

    async def _replay_since(
        self, channel: str, state: _Channel, since: StreamPosition
    ) -> tuple[StreamPosition, list[Publication], bool] | None:
        """What to queue for a client that saw ``since``: where the replay starts, what it
        holds, and whether it is a recovery; None when nothing can be replayed.

        When the channel turns out to be behind the broker's new epoch, or turns to it
        meanwhile, the replay is planned again once it caught up: the clients of the lost
        epoch come back right then, and a plan made with the old epoch would start them
        from now.
        """
        for _ in range(RESYNC_ATTEMPTS):
            epoch = state.position.epoch
            successor = None
            if since.epoch and since.epoch != epoch:
                successor = state.successors.get(since.epoch)
                if successor is None:
                    successor = await self._broker.successor(channel, since.epoch)
                    if successor == state.position.epoch:  # for the others coming back
                        state.successors[since.epoch] = successor
            plan = replay_start(since, epoch, successor)
            if plan is None:
                return None
            start, recovered = plan
            try:
                missed = await self._missed_since(channel, state, start, whole=not recovered)
            except _Resyncing:
                await self._resynced(channel, state)
                continue
            if missed is None and state.position.epoch != epoch:
                continue
            return None if missed is None else (start, missed, recovered)
        raise BrokerUnavailable("broker unavailable: resyncing this channel, try again")

    async def _resynced(self, channel: str, state: _Channel) -> None:
        """Wait (``RESYNC_WAIT_S`` at most) for the heal that brings ``channel`` to the
        broker's epoch; raises ``BrokerUnavailable`` when it takes longer."""
        heal = state.heal
        if heal is not None and self._channels.get(channel) is state:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(heal), RESYNC_WAIT_S)
                return
        raise BrokerUnavailable("broker unavailable: resyncing this channel, try again")

    async def _missed_since(
        self, channel: str, state: _Channel, since: StreamPosition, *, whole: bool = False
    ) -> list[Publication] | None:
        """What a client that saw ``since`` missed, up to what the channel delivered;
        None when that cannot be told completely. ``whole``: ``since`` is the start of
        an epoch that replaced the client's, whose start the broker keeps apart from
        history while it is new (``Broker.epoch_start``).

        Raises ``_Resyncing`` when the broker's epoch is not the one this instance
        delivers (its history was lost and the instance has not caught up yet): a
        recovery answered from that would be a promise not kept.
        """
        missed: list[Publication] = []
        last = since.offset
        confirmed = False
        while True:
            delivered = state.position
            if delivered.epoch != since.epoch or last > delivered.offset:
                return None
            if delivered.offset - since.offset > self._heal_max:
                return None
            if last == delivered.offset and confirmed:
                return missed
            history, current = await self._read_history(channel, state, last, delivered.offset)
            confirmed = True
            if self._channels.get(channel) is not state:
                return None
            if current.epoch != state.position.epoch:
                if state.parked is None:
                    # Nothing told this instance yet (no publication since, no
                    # reconnect): look now, so that the client's retry finds it done.
                    state.parked = []
                    self._heal_soon(channel, state, check_history=True)
                raise _Resyncing
            if last == delivered.offset:
                continue
            ready, _ = contiguous_after(last, history)
            if not ready and whole:
                start = await self._broker.epoch_start(
                    channel, since.epoch, last, delivered.offset - last
                )
                ready, _ = contiguous_after(last, history, start)
            if not ready or ready[-1].epoch != since.epoch:
                return None  # history no longer holds them all
            # The channel may be behind what history holds (publications in
            # flight): keep only what it already delivered, the rest comes live.
            ready = [pub for pub in ready if pub.offset <= state.position.offset]
            missed.extend(ready)
            if ready:
                last = ready[-1].offset

    async def _read_history(
        self, channel: str, state: _Channel, after: int, upto: int
    ) -> tuple[list[Publication], StreamPosition]:
        """The publications after offset ``after`` up to ``upto``, and the channel's position
        in the broker, from one read shared with the other recoveries of the moment."""
        for read in state.reads:
            if read.after <= after and read.upto >= upto:
                break
            if not read.started:
                read.after, read.upto = min(read.after, after), max(read.upto, upto)
                break
        else:
            read = _HistoryRead(after, upto, asyncio.get_running_loop().create_future())
            # Whoever waits may be cancelled: the outcome is retrieved regardless.
            read.done.add_done_callback(_retrieve)
            state.reads.append(read)
            self._spawn(self._run_read(channel, state, read), f"feeds-history:{channel}")
        publications, position = await asyncio.shield(read.done)
        return [pub for pub in publications if after < pub.offset <= upto], position

    async def _run_read(self, channel: str, state: _Channel, read: _HistoryRead) -> None:
        await asyncio.sleep(0)  # the recoveries of this loop iteration join in
        read.started = True
        try:
            result = await self._broker.history(channel, read.after, read.upto - read.after)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else BrokerUnavailable("closing")
            read.done.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
        else:
            read.done.set_result(result)
        finally:
            state.reads.remove(read)

    async def _close_if_unused(self, channel: str, state: _Channel) -> None:
        async with self._lock(channel):
            if self._channels.get(channel) is state and state.size == 0 and not state.joining:
                await self._close(channel)

    async def _open(self, channel: str) -> _Channel:
        # Park publications until the channel's position is known: those
        # at or before it are history, those after it are delivered.
        state = _Channel(parked=[])
        self._channels[channel] = state
        try:
            await self._broker.subscribe(channel)
            state.position = await self._broker.position(channel)
        except BaseException:
            del self._channels[channel]
            with contextlib.suppress(BrokerUnavailable):
                await self._broker.unsubscribe(channel)
            raise
        metrics.CHANNELS.inc()
        self._heal_soon(channel, state, check_history=False)
        return state

    async def unsubscribe(self, channel: str, outbox: Outbox) -> None:
        """Remove ``outbox``; the last one out unsubscribes the process from ``channel``."""
        async with self._lock(channel):
            state = self._channels.get(channel)
            if state is None:
                return
            for outboxes in state.members.values():
                outboxes.discard(outbox)
            if state.size == 0 and not state.joining:
                await self._close(channel)

    async def _close(self, channel: str) -> None:
        del self._channels[channel]
        metrics.CHANNELS.dec()
        with contextlib.suppress(BrokerUnavailable):
            await self._broker.unsubscribe(channel)

    def local_subscribers(self, channel: str) -> int:
        state = self._channels.get(channel)
        return 0 if state is None else state.size

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    # -- BrokerHandler

    def on_event(self, event: Event) -> None:
        state = self._channels.get(event.channel)
        if state is None:
            return
        if not isinstance(event, Publication):
            if state.size <= self._announce_max:
                self._fan_out(state, event)
            return
        if state.parked is not None:
            state.parked.append(event)
            return
        position = state.position
        if event.epoch == position.epoch and event.offset == position.offset + 1:
            state.position = StreamPosition(event.offset, event.epoch)
            self._fan_out(state, event)
            counter = self._counter
            if counter is not None:
                counter.fanned_out(state.members, event)
        elif event.epoch == position.epoch and event.offset <= position.offset:
            return  # delivered already (read from history while healing)
        else:
            # Another epoch or a gap. (A new channel's epoch exists from its
            # first position read, so an epoch differing from the one
            # subscribed to means history was lost; healing tells.)
            state.parked = [event]
            self._heal_soon(event.channel, state, check_history=True)

    def observe(self, channel: str, position: StreamPosition) -> None:
        """The broker told this process, on another path than pub/sub (a publish's reply,
        a read), that ``channel`` is at ``position``: a new epoch is healed at once."""
        state = self._channels.get(channel)
        if (
            state is not None
            and state.parked is None
            and state.position.epoch
            and position.epoch != state.position.epoch
        ):
            state.parked = []
            self._heal_soon(channel, state, check_history=True)

    def on_resubscribed(self) -> None:
        metrics.BROKER_RECONNECTS.inc()
        # Whatever was published while pub/sub was down was not delivered:
        # compare every channel with its history.
        self.on_channels_resubscribed(list(self._channels))

    def on_channels_resubscribed(self, channels: Collection[str]) -> None:
        # The same, for the channels of one shard of a Redis Cluster.
        for channel in channels:
            state = self._channels.get(channel)
            if state is None:
                continue
            if state.parked is None:
                state.parked = []
                self._heal_soon(channel, state, check_history=True)
            else:
                # Opening or healing already, maybe from a history read made before
                # this gap: that heal reads history again before it ends. (Ignoring
                # the notice left the gap until a later publication showed it, and
                # forever when none came.)
                state.recheck = True

    # -- healing

    def _heal_soon(self, channel: str, state: _Channel, *, check_history: bool) -> None:
        state.heal = self._spawn(self._heal(channel, state, check_history), f"feeds-heal:{channel}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _heal(self, channel: str, state: _Channel, check_history: bool) -> None:
        """Deliver what was parked, filling gaps from history, then let publications flow."""
        if check_history:
            state.recheck = True
        while self._channels.get(channel) is state and state.parked is not None:
            position = state.position
            if not state.recheck and all(p.epoch == position.epoch for p in state.parked):
                ready, waiting = contiguous_after(position.offset, state.parked)
                if not waiting:
                    self._deliver_all(state, ready)
                    state.parked = None
                    return
            # A resubscribe from now on is not covered by this read: it sets it again.
            state.recheck = False
            try:
                # When the epoch changed, this one read tells so and gives the new
                # epoch from its start, before history trims it.
                history, current = await self._broker.history(
                    channel, position.offset, self._heal_max + 1, epoch=position.epoch or None
                )
            except BrokerUnavailable:
                # Keep the channel parked, and compare it with history once the
                # broker answers (the reader reconnects meanwhile).
                state.recheck = True
                log.warning("cannot heal %r now: broker unavailable", channel)
                await asyncio.sleep(0.5)
                continue
            if self._channels.get(channel) is not state:
                return
            if position.epoch and current.epoch != position.epoch:
                # Said before the clients are closed, so that wherever they resubscribe
                # with the old epoch, they are given the new one from its start.
                state.successors[position.epoch] = current.epoch
                try:
                    await self._broker.supersede(channel, position.epoch, current.epoch)
                except BrokerUnavailable:
                    log.warning("cannot record the new epoch of %r: broker unavailable", channel)
                if self._channels.get(channel) is not state:
                    return
                live = [p for p in state.parked if p.epoch == current.epoch]
                self._give_up(channel, state, "its history was lost (new epoch)")
                # Follow the new epoch from its start (from history, the start the
                # broker keeps apart, and what pub/sub brought meanwhile), as the
                # clients just closed will be given it.
                position = state.position = StreamPosition(0, current.epoch)
                state.parked = live
                # On with ``history``, the new epoch from its start.
            if not position.epoch:
                position = state.position = StreamPosition(position.offset, current.epoch)
            live = [p for p in state.parked if p.epoch == current.epoch]
            ready, _ = contiguous_after(position.offset, history, live)
            missing = current.offset - position.offset
            if (
                0 < missing <= self._heal_max
                and not ready
                and current.epoch in state.successors.values()
            ):
                # An epoch this instance saw begin: its start is kept apart from history
                # for a while, for the gap the backlog made before pub/sub was back.
                start: list[Publication] = []
                with contextlib.suppress(BrokerUnavailable):
                    start = await self._broker.epoch_start(
                        channel, current.epoch, position.offset, missing
                    )
                if self._channels.get(channel) is not state:
                    return
                live = [p for p in state.parked if p.epoch == current.epoch]
                ready, _ = contiguous_after(position.offset, history, live, start)
            if missing > self._heal_max or (missing > 0 and not ready):
                self._give_up(channel, state, f"{missing} publications are no longer in history")
                # Whoever subscribes from now on starts from there.
                state.position = current
                return
            parked_offsets = {p.offset for p in live}
            healed = sum(1 for p in ready if p.offset not in parked_offsets)
            if healed:
                metrics.GAPS_HEALED.inc()
                metrics.MESSAGES_HEALED.inc(healed)
            self._deliver_all(state, ready)
            # What arrived during the read waits for the next round, which
            # delivers it at once if it follows on.
            last = state.position
            state.parked = [
                p for p in state.parked if p.epoch == last.epoch and p.offset > last.offset
            ]
            if not state.parked and not state.recheck:
                state.parked = None

    def _deliver_all(self, state: _Channel, publications: list[Publication]) -> None:
        """Deliver what filled a gap as one batch per connection: a gap longer than
        ``max_queue`` is not an overflow of clients that read."""
        if not publications:
            return
        last = publications[-1]
        state.position = StreamPosition(last.offset, last.epoch)
        for wire_format, outboxes in state.members.items():
            if outboxes:
                frames = _frames(publications, wire_format)
                for outbox in list(outboxes):
                    outbox.put_batch(frames)
        counter = self._counter
        if counter is not None:
            counter.fanned_out(state.members, last, len(publications))

    def _give_up(self, channel: str, state: _Channel, why: str) -> None:
        metrics.GAPS_GIVEN_UP.inc()
        log.warning(
            "closing %d clients of %r: %s",
            state.size,
            channel,
            why,
            extra={"channel": channel, "code": int(CloseCode.TRY_AGAIN_LATER)},
        )
        for outboxes in state.members.values():
            for outbox in list(outboxes):
                outbox.abort("missed messages history no longer holds")
        state.parked = None
        state.recheck = False

    # -- fan-out

    def _fan_out(self, state: _Channel, event: Event) -> None:
        for wire_format, outboxes in state.members.items():
            if outboxes:
                try:
                    frame = text_frame(encode_event(event, wire_format))
                except Exception:
                    # Brokers refuse what cannot be written (check_data), but a foreign
                    # publisher may not: one publication must not end a channel.
                    _unwritable(event)
                    return
                for outbox in outboxes:
                    outbox.put(frame)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # The channels go with the hub: they no longer count.
        metrics.CHANNELS.dec(len(self._channels))
        self._channels.clear()


def _frames(publications: list[Publication], wire_format: WireFormat) -> list[bytes]:
    """The frames of a batch (a recovery, a healed gap), without those that cannot be
    written."""
    frames = []
    for pub in publications:
        try:
            frames.append(text_frame(encode_event(pub, wire_format)))
        except Exception:
            _unwritable(pub)
    return frames


def _unwritable(event: Event) -> None:
    offset = getattr(event, "offset", None)
    log.exception("dropping an event of %r (offset %s): cannot be written", event.channel, offset)
