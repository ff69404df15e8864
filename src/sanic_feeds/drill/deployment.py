"""One drill's deployment: its Redis (its own, or one it was given) and N instances of
``sanic-feeds serve``, with the faults that can be done to them.

The instances are started by the bench's :class:`~sanic_feeds.bench.spawn.ServerGroup`
(one process each, ``--rate-limit 0``, no join/leave events in the ``bench``
namespace); an instance restarted after a fault comes back on its own port,
so the clients' round-robin finds it again. Every method blocks: call them
through ``asyncio.to_thread`` while clients run.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import redis

from ..bench.limits import Deadline
from ..bench.spawn import ServerGroup, ServerProcess
from .redis_server import DrillRedis

__all__ = ["OUTPUT_BUFFER_LIMIT", "Deployment"]

#: The pub/sub output-buffer limit of ``output-buffer``: hard 32 KB, soft 16 KB for 1 s.
OUTPUT_BUFFER_LIMIT = "pubsub 32kb 16kb 1"


class Deployment:
    """Redis and ``instances`` instances; a context manager that stops them all.

    ``own_redis`` is started here (and may be crashed); otherwise ``redis_url``
    names a Redis the drill must leave alone.
    """

    def __init__(
        self,
        deadline: Deadline,
        instances: int,
        server_args: Sequence[str],
        *,
        own_redis: DrillRedis | None = None,
        redis_url: str | None = None,
    ) -> None:
        if (own_redis is None) == (redis_url is None):
            raise ValueError("give either own_redis or redis_url")
        self._redis = own_redis
        self.redis_url = own_redis.url if own_redis is not None else str(redis_url)
        self._count = instances
        self._server_args = list(server_args)
        self._group = ServerGroup(deadline)
        self.instances: list[ServerProcess] = []

    def start(self) -> None:
        if self._redis is not None:
            self._redis.start()
        self.instances = self._group.start_feeds(
            self._count, self.redis_url, announce_joins=False, extra_args=self._server_args
        )

    @property
    def urls(self) -> list[str]:
        """The instances' ``ws://host:port`` base URLs, by index."""
        return [server.url for server in self.instances]

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for server in self.instances:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGCONT)  # a stopped one cannot exit
        self._group.stop()
        if self._redis is not None:
            self._redis.close()

    # -- instances

    def signal_instance(self, index: int, sig: signal.Signals) -> None:
        process = self.instances[index].process
        if process.poll() is None:
            process.send_signal(sig)

    def wait_instance(self, index: int, timeout_s: float) -> float | None:
        """Seconds until instance ``index`` exited (from now), None if it did not in time."""
        began = time.monotonic()
        try:
            self.instances[index].process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - began

    def restart_instance(self, index: int) -> None:
        """Start instance ``index`` again on its port (after it exited or was killed)."""
        old = self.instances[index]
        if old.process.poll() is None:
            old.process.kill()
        old.process.wait()
        port = urlsplit(old.url).port
        assert port is not None
        [server] = self._group.start_feeds(
            1, self.redis_url, announce_joins=False, extra_args=self._server_args, ports=[port]
        )
        self.instances[index] = server

    # -- Redis

    def _own(self) -> DrillRedis:
        if self._redis is None:
            raise RuntimeError("this drill needs a Redis of its own")
        return self._redis

    def kill_redis(self) -> None:
        self._own().kill()

    def start_redis(self) -> None:
        self._own().start()

    def redis_log_lines_with(self, text: str) -> int:
        """Lines of the drill's own Redis's log that contain ``text``."""
        return self._own().log_lines_with(text)

    def redis_command(self, *args: str) -> object:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            client.close()
