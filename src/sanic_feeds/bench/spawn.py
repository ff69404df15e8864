"""Server processes the bench starts itself, and stops.

Three kinds, each a child process on a free port of 127.0.0.1:

- ``feeds``: ``python -m sanic_feeds serve``, ready when ``GET /ready`` is 200;
- ``reference``: ``python -m sanic_feeds.bench.reference_server``
  (:mod:`.reference_server`), or the script ``--reference-server FILE``,
  ready when its port accepts;
- ``sink``: :mod:`.sink`, the ``--ceiling`` broadcaster, likewise.

Each is started by the bench's own interpreter (``sys.executable``) as a
module of the installed package, so an installed wheel runs them from
anywhere; nothing here looks for a source checkout.

Each runs in a session of its own, so Ctrl-C on the bench does not reach it
before the bench has stopped its own clients; :class:`ServerGroup` stops
them all with SIGTERM (then SIGKILL after a grace period) on the way out.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from .errors import BenchError
from .limits import Deadline
from .scenarios import CHANNEL_NAMESPACE

__all__ = ["REFERENCE_MODULE", "ServerGroup", "ServerProcess", "free_port", "reference_command"]

#: The reference server the bench starts unless told another script.
REFERENCE_MODULE = "sanic_feeds.bench.reference_server"

_HOST = "127.0.0.1"
#: Seconds between readiness polls.
_POLL_S = 0.1
#: Seconds a server has to exit after SIGTERM before it is killed.
_STOP_GRACE_S = 15.0


def reference_command(port: int, script: Path | None = None) -> list[str]:
    """The command line that starts a reference server on ``port`` of 127.0.0.1.

    By default the package's own :mod:`.reference_server`, run as a module by
    this interpreter; ``script`` (``--reference-server FILE``) runs that file
    instead, which must take ``--port`` likewise and listen on 127.0.0.1.
    """
    target = [str(script)] if script is not None else ["-m", REFERENCE_MODULE]
    return [sys.executable, *target, "--port", str(port)]


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(slots=True)
class ServerProcess:
    kind: str
    url: str
    process: subprocess.Popen[bytes]
    #: Where its stdout and stderr go, shown when it fails to start.
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 8) -> str:
        self.log.flush()
        self.log.seek(0)
        text = self.log.read().decode(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])


class ServerGroup:
    """The servers of one bench invocation; a context manager that stops them all."""

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self.servers: list[ServerProcess] = []

    def __enter__(self) -> ServerGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start_feeds(
        self,
        count: int,
        broker: str,
        *,
        announce_joins: bool,
        extra_args: Sequence[str],
        ports: Sequence[int] = (),
    ) -> list[ServerProcess]:
        """``count`` instances of ``sanic-feeds serve`` on ``broker``, all ready.

        Publishing is not rate-limited (the publisher is the load), and
        unless ``announce_joins``, the bench's channel namespace has no join
        and leave events (they would make subscribing N clients cost N²
        frames and measure that instead of messages). ``ports`` gives the
        first instances their ports (the drill restarts an instance on its
        own); the others get free ones.
        """
        started = []
        for number in range(count):
            port = ports[number] if number < len(ports) else free_port()
            command = [sys.executable, "-m", "sanic_feeds", "serve", "--host", _HOST]
            command += ["--port", str(port), "--broker", broker]
            command += ["--rate-limit", "0", "--log-level", "warning"]
            if not announce_joins:
                command += ["--quiet-namespaces", CHANNEL_NAMESPACE]
            command += list(extra_args)
            started.append(self._start("feeds", command, port))
        for server in started:
            self._wait_http_ready(server)
        return started

    def start_reference(self, script: Path | None = None) -> ServerProcess:
        """A reference server (see :func:`reference_command`), its port open."""
        if script is not None and not script.is_file():
            raise BenchError(f"--reference-server: no file {script}")
        port = free_port()
        server = self._start("reference", reference_command(port, script), port)
        self._wait_port_open(server, port)
        return server

    def start_sink(self) -> ServerProcess:
        port = free_port()
        command = [sys.executable, "-m", "sanic_feeds.bench.sink", "--port", str(port)]
        server = self._start("sink", command, port)
        self._wait_port_open(server, port)
        return server

    def _start(self, kind: str, command: list[str], port: int) -> ServerProcess:
        # The log lives as long as the server; stop() closes it.
        log = tempfile.TemporaryFile(prefix=f"sanic-feeds-bench-{kind}-")  # noqa: SIM115
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        server = ServerProcess(kind=kind, url=f"ws://{_HOST}:{port}", process=process, log=log)
        self.servers.append(server)
        return server

    def _check_alive(self, server: ServerProcess) -> None:
        status = server.process.poll()
        if status is not None:
            raise BenchError(
                f"the {server.kind} server on {server.url} exited with status {status} "
                f"while starting:\n{server.log_tail()}"
            )

    def _wait_http_ready(self, server: ServerProcess) -> None:
        ready_url = server.url.replace("ws://", "http://", 1) + "/ready"
        last = "no answer yet"
        while True:
            self._check_alive(server)
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as reply:
                    if reply.status == 200:
                        return
                    last = f"HTTP {reply.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            if self._deadline.expired():
                raise BenchError(
                    f"the feeds server on {server.url} was not ready in time "
                    f"(GET /ready: {last}):\n{server.log_tail()}"
                )
            time.sleep(_POLL_S)

    def _wait_port_open(self, server: ServerProcess, port: int) -> None:
        while True:
            self._check_alive(server)
            try:
                with socket.create_connection((_HOST, port), timeout=1):
                    return
            except OSError:
                if self._deadline.expired():
                    raise BenchError(
                        f"the {server.kind} server on {server.url} did not open its port "
                        f"in time:\n{server.log_tail()}"
                    ) from None
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """SIGTERM every server, wait for them to exit, SIGKILL the stragglers."""
        for server in self.servers:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        give_up_at = time.monotonic() + _STOP_GRACE_S
        for server in self.servers:
            try:
                server.process.wait(timeout=max(0.0, give_up_at - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
            server.log.close()
        self.servers.clear()
