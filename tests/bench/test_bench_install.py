"""The bench runs from an installed package, outside the checkout.

It finds the reference server as a module of the package (not as a file of
the repository), the reference server imports neither Sanic nor the rest of
the bench, a missing optional dependency is one line that says how to get
it, and (integration) a wheel of the work tree installed in a fresh venv
runs ``bench --with-reference`` from a directory of its own.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import sanic_feeds.bench
from sanic_feeds.bench.spawn import REFERENCE_MODULE, reference_command

StartServer = Callable[..., str]
RunBench = Callable[..., tuple[int, list[dict[str, Any]]]]

REPO = Path(__file__).resolve().parents[2]
HINT = "pip install 'sanic-feeds[bench]'"


def test_the_reference_server_is_a_module_of_the_package() -> None:
    assert reference_command(8100) == [sys.executable, "-m", REFERENCE_MODULE, "--port", "8100"]
    assert REFERENCE_MODULE == "sanic_feeds.bench.reference_server"
    spec = importlib.util.find_spec(REFERENCE_MODULE)
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).parent == Path(sanic_feeds.bench.__file__).parent


def test_reference_server_option_runs_that_script_instead(tmp_path: Path) -> None:
    script = tmp_path / "other.py"
    assert reference_command(1, script) == [sys.executable, str(script), "--port", "1"]


def test_the_reference_server_imports_neither_sanic_nor_the_rest_of_the_bench(
    tmp_path: Path,
) -> None:
    code = f"import sys, {REFERENCE_MODULE}; print(*sorted(sys.modules))"
    modules = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    assert [m for m in modules if m == "sanic" or m.startswith("sanic.")] == []
    assert [m for m in modules if m.startswith("sanic_feeds.bench.")] == [REFERENCE_MODULE]


@pytest.mark.integration
def test_the_packaged_reference_server_answers_on_feed_paths(start_server: StartServer) -> None:
    url = start_server("reference")  # started with reference_command(), as the bench does
    with connect(f"{url}/feed/orders", open_timeout=10) as ws:
        subscribed = orjson.loads(ws.recv(timeout=10))
        assert subscribed == {"type": "subscribed", "channel": "orders", "offset": 0, "epoch": ""}
        ws.send('{"id": 7}')
        message = orjson.loads(ws.recv(timeout=10))
        assert (message["type"], message["offset"], message["data"]) == ("message", 1, {"id": 7})
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{url}/elsewhere", open_timeout=10)
    assert refused.value.response.status_code == 404


# -- missing dependencies: one line, before anything starts


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    return error.strip()


def test_idle_without_psutil_says_how_to_get_it(
    bench: RunBench, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil fails
    status, results = bench("idle", "--target", "reference", "--connections", "5")
    assert (status, results) == (1, [])
    assert one_error_line(capsys) == (
        f"sanic-feeds bench: error: idle measures server memory and needs psutil: {HINT}"
    )


def test_server_pid_without_psutil_says_how_to_get_it(
    bench: RunBench, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)
    status, _ = bench("fanout", "--url", "ws://127.0.0.1:1", "--server-pid", str(os.getpid()))
    assert status == 1
    assert one_error_line(capsys) == (
        f"sanic-feeds bench: error: --server-pid needs psutil to measure the servers: {HINT}"
    )


def test_plot_without_matplotlib_fails_before_the_run(
    bench: RunBench,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    # Unreachable URL: had the check come after connecting, the error would be another.
    status, _ = bench("fanout", "--url", "ws://127.0.0.1:1", "--plot", str(tmp_path / "p.png"))
    assert status == 1
    assert one_error_line(capsys) == f"sanic-feeds bench: error: --plot needs matplotlib: {HINT}"


@pytest.mark.integration
def test_a_fanout_without_psutil_runs_and_notes_what_it_did_not_measure(
    bench: RunBench, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)
    status, [result] = bench(
        "fanout", "--target", "reference", "--subscribers", "3", "--messages", "10",
        "--rate", "200",
    )  # fmt: skip
    assert status == 0
    assert result["delivered"] == 3 * 10
    assert (result["server_rss_per_conn_kb"], result["server_cpu_s"]) == (None, None)
    assert f"psutil is not installed ({HINT})" in result["notes"][0]


def test_a_missing_reference_server_file_is_a_usage_error(
    bench: RunBench, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.py"
    status, _ = bench("fanout", "--target", "reference", "--reference-server", str(missing))
    assert status == 2
    error = one_error_line(capsys)
    assert error == f"sanic-feeds bench: error: --reference-server: no file {missing}"


def test_the_reference_server_option_is_what_the_bench_starts(
    bench: RunBench, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = tmp_path / "mine.py"
    script.write_text("import sys\nprint('my reference', sys.argv[1:])\nsys.exit(3)\n")
    status, _ = bench("fanout", "--target", "reference", "--reference-server", str(script))
    assert status == 1
    error = capsys.readouterr().err
    assert "the reference server on ws://127.0.0.1:" in error
    assert "exited with status 3 while starting" in error
    assert "my reference ['--port', '" in error


# -- from a wheel


def run(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=180, **options)


@pytest.mark.integration
def test_the_bench_runs_from_a_wheel_outside_the_checkout(tmp_path: Path) -> None:
    # No network: the wheel is built with this environment's setuptools, and the
    # fresh venv borrows this environment's site-packages for the dependencies
    # (a path in a .pth file; the .pth files there, among them the editable
    # install's pointer to the checkout, are not processed).
    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None:
        pytest.skip("building a wheel without the network needs pip and setuptools here")
    setuptools = importlib.metadata.version("setuptools")
    if int(setuptools.split(".")[0]) < 77:
        pytest.skip(
            f"setuptools {setuptools} here cannot build without the network: "
            "pyproject's license = 'MIT' (PEP 639) needs setuptools 77"
        )
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # A copy, so that the build's own files (build/, *.egg-info) stay out of the work tree.
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(wheels), str(source)]
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("sanic_feeds-*.whl")
    listed = run([sys.executable, "-m", "zipfile", "-l", str(wheel)], check=True).stdout
    for needed in (
        "sanic_feeds/bench/reference_server.py",
        "sanic_feeds/bench/sink.py",
        "sanic_feeds/brokers/lua/publish.lua",
        "sanic_feeds/py.typed",
    ):
        assert needed in listed

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    )
    assert installed.returncode == 0, installed.stderr
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(site.stdout.strip()) / "borrowed-dependencies.pth").write_text("\n".join(ours) + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(
        [str(python), "-c", f"import {REFERENCE_MODULE} as m, sys; print(m.__file__, *sys.path)"],
        cwd=elsewhere,
        env=env,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(venv)), where
    assert str(REPO / "src") not in where  # the checkout's package is out of reach

    bench = run(
        [str(venv / "bin" / "sanic-feeds"), "bench", "fanout", "--spawn", "1",
         "--broker", "memory://", "--with-reference", "--subscribers", "50", "--rate", "50",
         "--duration", "2", "--drain", "0.5", "--procs", "2", "--json", "--quiet"],
        cwd=elsewhere,
        env=env,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    results = [json.loads(line) for line in bench.stdout.splitlines()]
    assert [r["target"] for r in results] == ["feeds", "reference"]
    assert all(r["lost"] == 0 and r["delivered"] == r["expected"] > 0 for r in results)
    assert results[0]["vs_reference"] is not None
    assert "vs ref" in bench.stderr  # the table
