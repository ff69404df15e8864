"""The drills, and when each thing happens in one: pure planning, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

__all__ = [
    "ClientKind",
    "ClientMix",
    "Drill",
    "DrillConfig",
    "Publishing",
    "Timeline",
]


class Publishing(Enum):
    """How the drill publishes."""

    #: ``POST /api/publish``, round-robin over the instances, with idempotency
    #: keys, retried on 503 and connection errors on the next instance.
    HTTP = "http"
    #: A :class:`~sanic_feeds.Publisher` with a retry buffer, straight to Redis.
    PUBLISHER = "publisher"


class Drill(StrEnum):
    """One fault, injected once into a deployment under load (docs/reliability.md)."""

    #: ``CLIENT KILL TYPE pubsub``: every instance loses its pub/sub connection.
    PUBSUB_KILL = "pubsub-kill"
    #: Redis SIGKILLed and started again on its AOF (``appendfsync always``).
    REDIS_RESTART_AOF = "redis-restart-aof"
    #: Redis SIGKILLed and started again empty: every channel gets a new epoch.
    REDIS_RESTART = "redis-restart"
    #: One instance SIGKILLed, started again after ``--fault-for``.
    INSTANCE_KILL = "instance-kill"
    #: One instance SIGSTOPped for ``--fault-for``, then SIGCONTinued.
    INSTANCE_STOP = "instance-stop"
    #: ``--slow-clients`` more ``/feed`` JSON clients stop reading for ``--fault-for``.
    SLOW_CLIENTS = "slow-clients"
    #: One instance SIGTERMed (it drains), started again once it exited and
    #: ``--fault-for`` passed.
    DRAIN = "drain"
    #: Redis SIGKILLed and restarted on its AOF while a ``Publisher`` with a
    #: retry buffer publishes (instead of the HTTP API).
    PUBLISHER_REDIS_RESTART = "publisher-redis-restart"
    #: Redis drops every instance's pub/sub connection over its output-buffer
    #: limit (lowered to ``pubsub 32kb 16kb 1``), on one publication larger than that.
    OUTPUT_BUFFER = "output-buffer"

    @property
    def needs_own_redis(self) -> bool:
        """It crashes or reconfigures Redis: not done to a Redis given with ``--redis``."""
        return self in _OWN_REDIS

    @property
    def appendonly(self) -> bool:
        """Its Redis persists every write (AOF, ``appendfsync always``)."""
        return self in (Drill.REDIS_RESTART_AOF, Drill.PUBLISHER_REDIS_RESTART)

    @property
    def publishing(self) -> Publishing:
        return Publishing.PUBLISHER if self is Drill.PUBLISHER_REDIS_RESTART else Publishing.HTTP

    @property
    def restarts_redis(self) -> bool:
        return self in (Drill.REDIS_RESTART_AOF, Drill.REDIS_RESTART, Drill.PUBLISHER_REDIS_RESTART)

    @property
    def lasts(self) -> bool:
        """The fault lasts ``--fault-for`` (an instance away, clients not reading)."""
        return self in (Drill.INSTANCE_KILL, Drill.INSTANCE_STOP, Drill.SLOW_CLIENTS, Drill.DRAIN)


_OWN_REDIS = frozenset(
    {
        Drill.REDIS_RESTART_AOF,
        Drill.REDIS_RESTART,
        Drill.PUBLISHER_REDIS_RESTART,
        Drill.OUTPUT_BUFFER,
    }
)


class ClientKind(StrEnum):
    """The clients of a drill. All but ``raw`` are held to the guarantee."""

    #: ``/feed/<channel>?format=raw``: no offsets, at-most-once across reconnects.
    RAW = "raw"
    #: ``/feed/<channel>``, reconnecting with ``?since=&epoch=``.
    JSON = "json"
    #: ``/ws`` through :class:`~sanic_feeds.FeedsClient`.
    WS = "ws"
    #: ``/feed/<channel>`` JSON clients that stop reading (``slow-clients`` only).
    SLOW = "slow"

    @property
    def has_offsets(self) -> bool:
        return self is not ClientKind.RAW


@dataclass(frozen=True, slots=True)
class ClientMix:
    """How many clients of each kind: a third each of raw, JSON and ``/ws`` (the
    remainder goes to ``/ws``), plus the slow ones of ``slow-clients``."""

    raw: int
    json: int
    ws: int
    slow: int = 0

    @staticmethod
    def of(clients: int, slow: int = 0) -> ClientMix:
        third = clients // 3
        return ClientMix(raw=third, json=third, ws=clients - 2 * third, slow=slow)

    def count(self, kind: ClientKind) -> int:
        return {
            ClientKind.RAW: self.raw,
            ClientKind.JSON: self.json,
            ClientKind.WS: self.ws,
            ClientKind.SLOW: self.slow,
        }[kind]


@dataclass(frozen=True, slots=True)
class DrillConfig:
    """The load and the fault's timing, the same for every drill of an invocation."""

    instances: int = 3
    clients: int = 300
    slow_clients: int = 50
    rate_per_s: float = 100.0
    #: Seconds of publishing (longer when the fault needs it, see :class:`Timeline`).
    duration_s: float = 10.0
    #: How long a lasting fault lasts (instance away, clients not reading).
    fault_for_s: float = 8.0
    #: How long Redis stays down between its SIGKILL and its restart.
    redis_down_s: float = 1.0
    #: Most seconds to wait after the last publish for every client to catch up.
    settle_s: float = 15.0
    #: The servers' ``--history-size`` when given (a ``Publisher`` must use the same).
    history_size: int | None = None
    #: More arguments for every ``sanic-feeds serve``.
    server_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.instances < 1 or self.clients < 3:
            raise ValueError("a drill needs at least 1 instance and 3 clients")
        if self.rate_per_s <= 0 or self.duration_s <= 0:
            raise ValueError("the rate and the duration must be positive")
        if self.fault_for_s < 0 or self.redis_down_s < 0 or self.slow_clients < 0:
            raise ValueError("--fault-for, --redis-down and --slow-clients must not be negative")

    def mix(self, drill: Drill) -> ClientMix:
        return ClientMix.of(self.clients, self.slow_clients if drill is Drill.SLOW_CLIENTS else 0)

    def server_arguments(self) -> tuple[str, ...]:
        sized = () if self.history_size is None else ("--history-size", str(self.history_size))
        return (*sized, *self.server_args)


@dataclass(frozen=True, slots=True)
class Timeline:
    """Seconds from the first publish: the fault, its end, the last publish.

    The fault comes a quarter into ``duration_s``; a fault that lasts ends
    ``fault_for_s`` later (Redis: ``redis_down_s`` later); publishing goes on
    for at least a quarter of ``duration_s`` after that, so the aftermath is
    measured under load.
    """

    fault_at_s: float
    #: When the fault is undone (restart, SIGCONT, reading again); None: nothing to undo.
    recover_at_s: float | None
    publish_until_s: float

    @staticmethod
    def of(drill: Drill, config: DrillConfig) -> Timeline:
        quarter = config.duration_s / 4
        fault_at = quarter
        if drill.lasts:
            recover_at: float | None = fault_at + config.fault_for_s
        elif drill.restarts_redis:
            recover_at = fault_at + config.redis_down_s
        else:
            recover_at = None
        after = fault_at if recover_at is None else recover_at
        return Timeline(fault_at, recover_at, max(config.duration_s, after + quarter))
