"""A real ``sanic-feeds serve`` process for integration tests.

Import as ``from tests.support.feeds_server import FeedsServer, free_port``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from .redis_server import free_port, log_tail, reap, spawn, terminate_group

__all__ = ["FeedsServer", "free_port"]

HOST = "127.0.0.1"
_START_ATTEMPTS = 3
_ADDRESS_IN_USE = "address already in use"

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FeedsServer:
    """``python -m sanic_feeds serve --host 127.0.0.1 --port PORT --broker BROKER *args``.

    The child's environment is this process's minus every inherited ``FEEDS_*`` variable,
    plus ``PYTHONUNBUFFERED=1``, plus ``env``: only what the test passes configures the
    server. stdout and stderr go to a log file (``log()``), which outlives ``stop()`` and is
    deleted by ``close()``. The process runs in its own process group: ``kill()`` and every
    clean-up take its Sanic workers down with it.

    ``port=None`` picks a free port (retried with another one if the server reports it was
    taken meanwhile); once started, the port does not change, so ``start()`` after
    ``stop()`` comes back on the same URL.
    """

    host = HOST

    def __init__(
        self,
        broker: str = "memory://",
        port: int | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self.port = free_port() if port is None else port
        self._port_pinned = port is not None
        self.args = tuple(args)
        self.env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        self._dir = Path(tempfile.mkdtemp(prefix="sanic-feeds-server-"))
        self.log_path = self._dir / "server.log"
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has exited (negative: killed by that signal)."""
        return self._proc.poll() if self._proc is not None else None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "sanic_feeds", "serve",
            "--host", self.host,
            "--port", str(self.port),
            "--broker", self.broker,
            *self.args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("FEEDS_")}
        base["PYTHONUNBUFFERED"] = "1"
        base.update(self.env)
        return base

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready (see ``wait_ready``, ``wait``).

        For tests of start-up failures: ``server.spawn(); assert server.wait() == 1``.
        """
        if self.running:
            raise RuntimeError(f"{self.url} is already running")
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc = spawn(self.command(), self.log_path, self.environment())

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll ``GET /ready`` until it returns 200.

        Raises RuntimeError with the log tail if the process exits first, or kills it and
        raises TimeoutError with the log tail after ``timeout`` seconds.
        """
        proc = self._require_proc()
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"sanic-feeds serve on port {self.port} exited with status {code} before "
                    f"it was ready:\n{self.log_tail()}"
                )
            if self.ready_status() == 200:
                return
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"sanic-feeds serve on port {self.port}: GET /ready did not return 200 "
                    f"within {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def start(self, timeout: float = 20.0) -> None:
        """``spawn()`` then ``wait_ready(timeout)``; see those for the failures it raises."""
        for _ in range(_START_ATTEMPTS):
            self.spawn()
            try:
                self.wait_ready(timeout)
                self._port_pinned = True
                return
            except RuntimeError:
                if self._port_pinned or _ADDRESS_IN_USE not in self.log_tail().lower():
                    raise
                self._reap(None)
                self.port = free_port()
        raise RuntimeError(
            f"sanic-feeds serve: no free port after {_START_ATTEMPTS} attempts:\n{self.log_tail()}"
        )

    def ready_status(self) -> int | None:
        """The status of ``GET /ready`` (None if nothing answers)."""
        try:
            with _no_proxy.open(f"{self.url}/ready", timeout=2) as reply:
                status: int = reply.status
                return status
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code
        except OSError:
            return None

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit by itself and return its exit status.

        Raises TimeoutError (leaving it running) after ``timeout`` seconds.
        """
        try:
            return self._reap(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"sanic-feeds serve on port {self.port} still running after {timeout}s"
            ) from None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the server (a graceful drain) and return its exit status.

        If it has not exited after ``timeout`` seconds it is killed and TimeoutError is raised
        with the log tail: the contract says SIGTERM exits within a bounded time.
        """
        proc = self._require_proc()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return self._reap(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(
                f"sanic-feeds serve on port {self.port} did not exit within {timeout}s of "
                f"SIGTERM and was killed:\n{self.log_tail()}"
            ) from None

    def kill(self) -> int:
        """SIGKILL the server and its workers (a crash) and return the exit status."""
        proc = self._require_proc()
        terminate_group(proc, signal.SIGKILL)
        return self._reap(None)

    def _reap(self, timeout: float | None) -> int:
        return reap(self._require_proc(), timeout)

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("the server was never started")
        return self._proc

    def log(self) -> str:
        """Everything the server has written to stdout and stderr, over all its starts."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines written since the latest start."""
        return log_tail(self.log_path, self._log_start, lines)

    def close(self) -> None:
        """Kill the process if it still runs (no drain: call ``stop()`` first for that) and
        delete the log."""
        if self._proc is not None and self._proc.returncode is None:
            self.kill()
        self._cleanup()

    def __enter__(self) -> FeedsServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.running:
                self.stop()
        finally:
            self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<FeedsServer {self.url} broker={self.broker} {state}>"
