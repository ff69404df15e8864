"""What each drill does to the deployment: the fault, and how it is undone."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .deployment import OUTPUT_BUFFER_LIMIT, Deployment
from .load import SteadyPublisher
from .plan import Drill
from .subscribers import FeedSubscriber

__all__ = ["OVERSIZE_BYTES", "Faults"]

#: The publication that goes over the lowered output-buffer limit (32 KB hard), and stays
#: under the instances' --max-message-bytes (64 KiB), which bounds an API publish too.
OVERSIZE_BYTES = 40_000
#: Seconds a SIGTERMed instance may take to exit before the drill says so.
_DRAIN_WAIT_S = 60.0
#: What Redis logs when it closes a client over its output-buffer limit.
_OVER_LIMIT = "overcoming of output buffer limits"
#: The instance a drill crashes, stops or drains.
_VICTIM = 0


@dataclass(slots=True)
class Faults:
    """Injects ``drill``'s fault into ``deployment`` and undoes it; says what it saw in
    :attr:`notes`."""

    drill: Drill
    deployment: Deployment
    publisher: SteadyPublisher
    slow: Sequence[FeedSubscriber]
    notes: list[str] = field(default_factory=list)
    _exited: asyncio.Task[float | None] | None = None

    async def prepare(self) -> None:
        """Before the load starts."""
        if self.drill is Drill.OUTPUT_BUFFER:
            await asyncio.to_thread(
                self.deployment.redis_command,
                "CONFIG", "SET", "client-output-buffer-limit", OUTPUT_BUFFER_LIMIT,
            )  # fmt: skip

    async def inject(self) -> None:
        deployment, drill = self.deployment, self.drill
        if drill is Drill.PUBSUB_KILL:
            killed = await asyncio.to_thread(
                deployment.redis_command, "CLIENT", "KILL", "TYPE", "pubsub"
            )
            self.notes.append(f"CLIENT KILL TYPE pubsub closed {killed} connections")
        elif drill.restarts_redis:
            await asyncio.to_thread(deployment.kill_redis)
        elif drill is Drill.INSTANCE_KILL:
            deployment.signal_instance(_VICTIM, signal.SIGKILL)
        elif drill is Drill.INSTANCE_STOP:
            deployment.signal_instance(_VICTIM, signal.SIGSTOP)
        elif drill is Drill.SLOW_CLIENTS:
            for client in self.slow:
                client.pause()
        elif drill is Drill.DRAIN:
            deployment.signal_instance(_VICTIM, signal.SIGTERM)
            self._exited = asyncio.create_task(
                asyncio.to_thread(deployment.wait_instance, _VICTIM, _DRAIN_WAIT_S)
            )
        elif drill is Drill.OUTPUT_BUFFER:
            self.publisher.publish_one(time.monotonic(), padding=OVERSIZE_BYTES)

    def conclude(self) -> None:
        """After the load: note what shows that the fault happened."""
        if self.drill is Drill.OUTPUT_BUFFER:
            # Redis logs each client it closes so; its INFO counts them only from 7.2 on.
            dropped = self.deployment.redis_log_lines_with(_OVER_LIMIT)
            self.notes.append(f"Redis closed {dropped} pub/sub connections over the limit")

    async def recover(self) -> None:
        deployment, drill = self.deployment, self.drill
        if drill.restarts_redis:
            await asyncio.to_thread(deployment.start_redis)
        elif drill is Drill.INSTANCE_KILL:
            await asyncio.to_thread(deployment.restart_instance, _VICTIM)
        elif drill is Drill.INSTANCE_STOP:
            deployment.signal_instance(_VICTIM, signal.SIGCONT)
        elif drill is Drill.SLOW_CLIENTS:
            for client in self.slow:
                client.resume()
        elif drill is Drill.DRAIN:
            assert self._exited is not None
            drained_s = await self._exited
            if drained_s is None:
                self.notes.append(
                    f"instance {_VICTIM} still running {_DRAIN_WAIT_S:g} s after SIGTERM"
                )
            else:
                self.notes.append(f"instance {_VICTIM} exited {drained_s:.2f} s after SIGTERM")
            await asyncio.to_thread(deployment.restart_instance, _VICTIM)
