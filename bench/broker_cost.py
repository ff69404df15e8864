"""Redis commands and bytes per publish, per Redis primary, for one broker URL.

    python bench/broker_cost.py URL [--instances 2] [--channels 50] [--publishes 5000]
                                    [--payload-bytes 64]

Runs INSTANCES brokers in this process (what INSTANCES ``sanic-feeds serve`` processes
would hold), each subscribed to every channel, and one more that publishes PUBLISHES
messages of PAYLOAD_BYTES round robin over CHANNELS. It reads ``INFO commandstats`` and
``INFO stats`` and ``INFO cpu`` of every primary (one for ``redis://``, each shard's for
``redis+cluster://``) before and after, once while idle for as long as publishing took
(heartbeats, which cost per instance per second, not per publish) and once while
publishing, and prints the difference per publish: commands by name (those a script runs
are counted inside ``evalsha``'s line and on their own), bytes in and out of Redis, and
the Redis process's CPU time (on a busy machine, a rough figure).
No MONITOR: counting costs Redis nothing. Use a Redis nobody else uses meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections import Counter
from typing import Any

from redis.asyncio import Redis

from sanic_feeds.brokers import Broker, BrokerOptions, create_broker
from sanic_feeds.brokers.slots import NodeAddress, SlotMap
from sanic_feeds.brokers.urls import parse_cluster_url
from sanic_feeds.events import Event, Publication


class Counting:
    """A handler that counts the publications it receives; ``done`` once ``expected``."""

    def __init__(self, expected: int = 0) -> None:
        self.received = 0
        self.expected = expected
        self.done = asyncio.Event()

    def on_event(self, event: Event) -> None:
        if isinstance(event, Publication):
            self.received += 1
            if self.received >= self.expected:
                self.done.set()

    def on_resubscribed(self) -> None: ...

    def on_channels_resubscribed(self, channels: object) -> None: ...


async def primaries(url: str) -> list[NodeAddress]:
    if not url.startswith("redis+cluster://"):
        client = Redis.from_url(url)
        kwargs = client.connection_pool.connection_kwargs
        await client.aclose()
        return [NodeAddress(kwargs.get("host", "127.0.0.1"), int(kwargs.get("port", 6379)))]
    node = parse_cluster_url(url).nodes[0]
    client = Redis(host=node.host, port=node.port, protocol=2)
    try:
        slot_map = SlotMap.from_shards(await client.execute_command("CLUSTER SHARDS"))
    finally:
        await client.aclose()
    return sorted(slot_map.primaries)


async def snapshot(nodes: list[NodeAddress]) -> dict[NodeAddress, Counter[str]]:
    """Per node: calls by command, and bytes_in / bytes_out."""
    found: dict[NodeAddress, Counter[str]] = {}
    for node in nodes:
        client = Redis(host=node.host, port=node.port, protocol=2)
        try:
            counts: Counter[str] = Counter()
            for name, fields in (await client.info("commandstats")).items():
                counts[name.removeprefix("cmdstat_")] = int(fields["calls"])
            stats = await client.info("stats")
            counts["bytes_in"] = int(stats["total_net_input_bytes"])
            counts["bytes_out"] = int(stats["total_net_output_bytes"])
            cpu = await client.info("cpu")
            counts["cpu_us"] = int(1e6 * (cpu["used_cpu_user"] + cpu["used_cpu_sys"]))
            found[node] = counts
        finally:
            await client.aclose()
    return found


def difference(
    before: dict[NodeAddress, Counter[str]], after: dict[NodeAddress, Counter[str]]
) -> dict[NodeAddress, Counter[str]]:
    result = {}
    for node, counts in after.items():
        delta = Counter(counts)
        delta.subtract(before[node])
        result[node] = delta
    return result


async def main(args: argparse.Namespace) -> None:
    nodes = await primaries(args.url)
    prefix = f"cost-{secrets.token_hex(3)}"
    channels = [f"{prefix}:{n}" for n in range(args.channels)]
    handlers = [Counting(args.publishes) for _ in range(args.instances)]
    brokers: list[Broker] = []
    for n, handler in enumerate(handlers):
        broker = create_broker(args.url, BrokerOptions(instance_id=f"{prefix}-{n}"))
        await broker.start(handler)
        brokers.append(broker)
        for channel in channels:
            await broker.subscribe(channel)
    publisher = create_broker(args.url, BrokerOptions(instance_id=f"{prefix}-pub"))
    await publisher.start(Counting())
    payload: Any = {"text": "x" * args.payload_bytes}
    try:
        # Publishing: the publisher keeps up to 100 publishes in flight, as busy servers do.
        before = await snapshot(nodes)
        started = time.monotonic()
        semaphore = asyncio.Semaphore(100)

        async def publish(n: int) -> None:
            async with semaphore:
                await publisher.publish(channels[n % len(channels)], payload)

        await asyncio.gather(*(publish(n) for n in range(args.publishes)))
        await asyncio.wait_for(asyncio.gather(*(h.done.wait() for h in handlers)), 60)
        took_s = time.monotonic() - started
        busy = difference(before, await snapshot(nodes))
        # Idle as long: what heartbeats and registrations cost meanwhile.
        before = await snapshot(nodes)
        await asyncio.sleep(took_s)
        idle = difference(before, await snapshot(nodes))
    finally:
        for broker in (*brokers, publisher):
            await broker.close()

    print(
        f"\n{args.url}: {args.publishes} publishes of {args.payload_bytes} B payload over "
        f"{args.channels} channels, {args.instances} subscribed instances, {took_s:.1f} s"
    )
    total: Counter[str] = Counter()
    for node in nodes:
        delta = Counter(busy[node])
        delta.subtract(idle[node])
        total.update(delta)
        print(f"  {node}: " + describe(delta, args.publishes))
    print("  all primaries: " + describe(total, args.publishes))


def describe(delta: Counter[str], publishes: int) -> str:
    commands = sorted(
        ((name, n) for name, n in delta.items() if name not in _NOT_COMMANDS and n > 0),
        key=lambda item: -item[1],
    )
    per = ", ".join(f"{name} {n / publishes:.2f}" for name, n in commands if n / publishes >= 0.01)
    return (
        f"{delta['bytes_in'] / publishes:.0f} B in, {delta['bytes_out'] / publishes:.0f} B out, "
        f"{delta['cpu_us'] / publishes:.1f} us of Redis CPU per publish; "
        f"commands per publish: {per}"
    )


_NOT_COMMANDS = frozenset({"bytes_in", "bytes_out", "cpu_us"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--publishes", type=int, default=5000)
    parser.add_argument("--payload-bytes", type=int, default=64)
    asyncio.run(main(parser.parse_args()))
