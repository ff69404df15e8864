"""The scenarios, and how one run of them is split over load-generator processes.

Pure planning: a :class:`ScenarioConfig` and the target's URLs in, a
:class:`RunPlan` out (who connects where, in which process, who publishes
what at which rate). Nothing here opens a socket; :mod:`.runner` executes
the plan and :mod:`.clients` is what runs inside each process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "CHANNEL_NAMESPACE",
    "ChurnSpec",
    "PublisherSpec",
    "RunPlan",
    "Scenario",
    "ScenarioConfig",
    "SubscriberSpec",
    "WorkerPlan",
    "plan_run",
]

#: Every bench channel lives in this namespace (``bench:...``), so a server
#: can be told not to announce joins and leaves there (``--quiet-namespaces bench``).
CHANNEL_NAMESPACE = "bench"


class Scenario(StrEnum):
    """What load to offer (docs/benchmarks.md)."""

    #: One channel, N subscribers, one publisher.
    FANOUT = "fanout"
    #: C channels of k subscribers each, a publisher in each.
    ROOMS = "rooms"
    #: N idle connections; what matters is the server's memory per connection.
    IDLE = "idle"
    #: N subscribers stay while others connect and disconnect, messages flowing.
    CHURN = "churn"


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    """The load of one run, independent of the target."""

    scenario: Scenario
    #: Connections that stay for the whole run (fanout N, idle N, churn --stay,
    #: rooms C x k); only they are held to "no message lost".
    subscribers: int
    #: Channels (rooms: C; every other scenario: 1).
    channels: int = 1
    #: Offered publishes per second over all channels; None: as fast as the
    #: slowest subscriber keeps up (``--rate max``, paced by ``window``).
    rate_per_s: float | None = 100.0
    #: Seconds of publishing (or of holding idle connections).
    duration_s: float = 10.0
    #: When set, each publisher sends exactly this many messages instead of
    #: publishing for ``duration_s``.
    messages: int | None = None
    #: Size of each published JSON payload in bytes (about).
    payload_bytes: int = 100
    #: Seconds to wait after the last publish before counting what was lost.
    drain_s: float = 2.0
    #: ``--rate max``: most messages of a channel published but not yet
    #: received by its slowest subscriber.
    window: int = 20
    #: churn: new connections per second (as many leave per second).
    churn_rate_per_s: float = 0.0
    #: churn: seconds each churning connection stays subscribed.
    churn_lifetime_s: float = 1.0
    #: Load-generator processes.
    procs: int = 1
    #: WebSocket handshakes in progress at once, per process.
    connect_concurrency: int = 100
    #: Seconds one connection may take to open and get ``subscribed``.
    open_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.subscribers < 1:
            raise ValueError("a run needs at least one subscriber")
        if self.channels < 1 or self.subscribers % self.channels:
            raise ValueError("subscribers must be a multiple of channels")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ValueError("the rate must be positive (or max)")

    @property
    def publishes(self) -> bool:
        return self.scenario is not Scenario.IDLE

    @property
    def publishing_s(self) -> float | None:
        """How long publishing lasts, None when unknown in advance (max rate, fixed count)."""
        if self.messages is None:
            return self.duration_s
        if self.rate_per_s is None:
            return None
        return self.messages / (self.rate_per_s / self.channels)


@dataclass(frozen=True, slots=True)
class SubscriberSpec:
    url: str
    #: Index into :attr:`WorkerPlan.channels`.
    channel: int


@dataclass(frozen=True, slots=True)
class PublisherSpec:
    url: str
    channel: int
    #: Messages per second on this channel; None: paced by the subscribers.
    rate_per_s: float | None
    #: Exactly this many messages when set, else for ``duration_s``.
    messages: int | None
    duration_s: float


@dataclass(frozen=True, slots=True)
class ChurnSpec:
    #: Churning connections go to these URLs in turn.
    urls: tuple[str, ...]
    channel: int
    #: Connections opened per second by this process.
    rate_per_s: float
    #: Seconds each stays subscribed before it disconnects.
    lifetime_s: float


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """Everything one load-generator process does in a run (sent to it pickled)."""

    index: int
    #: Number of processes in the run (the layout of the shared progress slots).
    procs: int
    #: Channel names of the whole run, by index.
    channels: tuple[str, ...]
    subscribers: tuple[SubscriberSpec, ...]
    publishers: tuple[PublisherSpec, ...]
    churn: ChurnSpec | None
    payload_bytes: int
    window: int
    connect_concurrency: int
    open_timeout_s: float
    #: Some publisher of the run is paced by subscriber progress (``--rate
    #: max``), so this process must keep its progress slots current.
    paced: bool


@dataclass(frozen=True, slots=True)
class RunPlan:
    config: ScenarioConfig
    channels: tuple[str, ...]
    workers: tuple[WorkerPlan, ...]
    #: Staying subscribers of each channel, by channel index.
    subscribers_per_channel: tuple[int, ...]

    @property
    def publishers(self) -> int:
        return sum(len(worker.publishers) for worker in self.workers)

    @property
    def connections(self) -> int:
        """Connections held for the whole run: subscribers and publishers."""
        return sum(len(worker.subscribers) for worker in self.workers) + self.publishers


def plan_run(config: ScenarioConfig, urls: Sequence[str], run_tag: str) -> RunPlan:
    """Split ``config`` over processes and ``urls``.

    Subscribers are numbered, given to channels in contiguous blocks of k
    (rooms), to URLs round-robin and to processes round-robin, so every
    channel's subscribers are spread over every instance and process.
    Channel ``c``'s publisher goes to process ``c mod P`` and URL ``c mod U``.
    ``run_tag`` makes the channel names unique to the run, so nothing left
    over from an earlier run can be mistaken for this one's traffic.
    """
    if not urls:
        raise ValueError("no URL to connect to")
    channels = tuple(f"{CHANNEL_NAMESPACE}:{run_tag}-{index}" for index in range(config.channels))
    per_channel = config.subscribers // config.channels
    publishers = config.channels if config.publishes else 0
    procs = max(1, min(config.procs, config.subscribers + publishers))

    subscribers: list[list[SubscriberSpec]] = [[] for _ in range(procs)]
    for number in range(config.subscribers):
        spec = SubscriberSpec(url=urls[number % len(urls)], channel=number // per_channel)
        subscribers[number % procs].append(spec)

    publisher_specs: list[list[PublisherSpec]] = [[] for _ in range(procs)]
    if config.publishes:
        rate = None if config.rate_per_s is None else config.rate_per_s / config.channels
        for channel in range(config.channels):
            spec_p = PublisherSpec(
                url=urls[channel % len(urls)],
                channel=channel,
                rate_per_s=rate,
                messages=config.messages,
                duration_s=config.duration_s,
            )
            publisher_specs[channel % procs].append(spec_p)

    churn_rate = config.churn_rate_per_s / procs
    workers = tuple(
        WorkerPlan(
            index=index,
            procs=procs,
            channels=channels,
            subscribers=tuple(subscribers[index]),
            publishers=tuple(publisher_specs[index]),
            churn=(
                ChurnSpec(
                    urls=tuple(urls[index % len(urls) :]) + tuple(urls[: index % len(urls)]),
                    channel=0,
                    rate_per_s=churn_rate,
                    lifetime_s=config.churn_lifetime_s,
                )
                if config.scenario is Scenario.CHURN and churn_rate > 0
                else None
            ),
            payload_bytes=config.payload_bytes,
            window=config.window,
            connect_concurrency=config.connect_concurrency,
            open_timeout_s=config.open_timeout_s,
            paced=config.publishes and config.rate_per_s is None,
        )
        for index in range(procs)
    )
    return RunPlan(
        config=config,
        channels=channels,
        workers=workers,
        subscribers_per_channel=tuple([per_channel] * config.channels),
    )
