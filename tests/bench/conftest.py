"""Fixtures of the bench's tests: small servers on free ports, and the bench itself."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sanic_feeds.bench import add_bench_arguments, run_bench
from sanic_feeds.bench.spawn import free_port, reference_command

FAULTY_SERVER = Path(__file__).with_name("faulty_server.py")

StartServer = Callable[..., str]
RunBench = Callable[..., tuple[int, list[dict[str, Any]]]]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """``start_server(kind, *flags)`` starts the ``reference`` server (as the bench
    does: ``python -m sanic_feeds.bench.reference_server``) or the ``faulty`` one
    with ``flags`` on a free port and returns its ``ws://`` URL; stopped after the test."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(kind: str, *flags: str) -> str:
        port = free_port()
        if kind == "reference":
            command = reference_command(port)
        else:
            assert kind == "faulty", kind
            command = [sys.executable, str(FAULTY_SERVER), "--port", str(port)]
        process = subprocess.Popen([*command, *flags], stdout=subprocess.DEVNULL)
        processes.append(process)
        give_up_at = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"{kind} server exited with {process.returncode}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return f"ws://127.0.0.1:{port}"
            except OSError:
                assert time.monotonic() < give_up_at, f"{kind} server did not listen in time"
                time.sleep(0.05)

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(10)


@pytest.fixture
def bench(capsys: pytest.CaptureFixture[str]) -> RunBench:
    """Run ``sanic-feeds bench *argv`` in two processes; return (status, JSON results)."""

    def run(*argv: str) -> tuple[int, list[dict[str, Any]]]:
        parser = argparse.ArgumentParser()
        add_bench_arguments(parser)
        common = ["--json", "--quiet", "--procs", "2", "--drain", "0.5", "--timeout", "90"]
        status = run_bench(parser.parse_args([*argv, *common]))
        captured = capsys.readouterr()
        sys.stderr.write(captured.err)  # for the test to read in turn
        out = captured.out
        return status, [json.loads(line) for line in out.splitlines() if line.strip()]

    return run
