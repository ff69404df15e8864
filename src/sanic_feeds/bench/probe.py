"""Resident memory and CPU time of the server's processes, through psutil.

psutil is optional (``pip install 'sanic-feeds[bench]'``): without it, or
without known PIDs, :class:`ServerProbe` measures nothing and says why in
:attr:`ServerProbe.unavailable`, which the report prints as a note. (The
command line refuses to start ``idle`` and ``--server-pid`` runs without
psutil: this measurement is what they are for.) psutil is imported only
here, in the bench's parent process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ServerProbe", "ServerSample"]


@dataclass(frozen=True, slots=True)
class ServerSample:
    """The server's processes (and their children) at one moment, summed."""

    rss_bytes: int
    #: User plus system CPU time since each process started.
    cpu_s: float


class ServerProbe:
    """Samples the server processes ``pids`` and all their descendants."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = tuple(pids)
        #: Why nothing is measured (None: measuring works).
        self.unavailable: str | None = None
        self._psutil: Any = None
        if not self.pids:
            self.unavailable = (
                "server RSS and CPU not measured: the server PIDs are unknown "
                "(pass --server-pid PID, once per process)"
            )
            return
        try:
            import psutil
        except ImportError:
            self.unavailable = (
                "server RSS and CPU not measured: psutil is not installed "
                "(pip install 'sanic-feeds[bench]')"
            )
            return
        self._psutil = psutil
        for pid in self.pids:
            if not psutil.pid_exists(pid):
                self.unavailable = f"server RSS and CPU not measured: no process has PID {pid}"
                self._psutil = None
                return

    def sample(self) -> ServerSample | None:
        """Sum over the processes alive now; None when not measurable."""
        psutil = self._psutil
        if psutil is None:
            return None
        rss, cpu = 0, 0.0
        for pid in self.pids:
            try:
                root = psutil.Process(pid)
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for process in family:
                try:
                    with process.oneshot():
                        rss += process.memory_info().rss
                        times = process.cpu_times()
                        cpu += times.user + times.system
                except psutil.NoSuchProcess:
                    continue  # exited between listing and sampling: it holds nothing now
        return ServerSample(rss_bytes=rss, cpu_s=cpu)
