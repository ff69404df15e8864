"""Where an idle connection's memory goes: ``tracemalloc`` and a ``gc`` census of a server
holding N connections on ``/feed/<channel>``, against the same server before they opened.

    python bench/idle_memory.py [--connections 2000] [--depth 30] [--top 25]

Starts ``sanic-feeds serve``'s app (memory broker, as ``bench idle --spawn 1`` runs it)
in a child process with ``tracemalloc`` on and a route that snapshots it, opens N
subscribers from this process, and prints per connection:

- bytes allocated, grouped by the piece they belong to (the innermost frame of the
  allocation's traceback in sanic, websockets, uvloop, asyncio or sanic-feeds) and by
  file and line;
- objects that the garbage collector tracks, by type, with ``sys.getsizeof`` of each
  (the object alone, not what it points to);
- the child's RSS (``/proc/<pid>/status``), which with tracemalloc on is inflated by
  tracemalloc's own bookkeeping: ``sanic-feeds bench idle`` is the figure to quote.

The kernel's socket buffers are not in a process's RSS (they are in ``/proc/net/sockstat``,
``mem``, in pages).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from typing import Any

_HOST = "127.0.0.1"
_CHANNEL = "bench:idle-memory"

#: Which piece an allocation belongs to: the innermost frame whose file matches.
_PIECES = (
    ("/sanic_feeds/", "sanic-feeds"),
    ("/websockets/", "websockets"),
    ("/sanic/", "sanic"),
    ("/httptools/", "httptools"),
    ("/uvloop/", "uvloop"),
    ("/asyncio/", "asyncio"),
)


def piece_of(traceback: tracemalloc.Traceback) -> str:
    # A Traceback holds its frames oldest first.
    for frame in reversed(traceback):
        for needle, name in _PIECES:
            if needle in frame.filename:
                return f"{name} {_short(frame.filename)}:{frame.lineno}"
    frame = traceback[-1]
    return f"other {_short(frame.filename)}:{frame.lineno}"


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- the server side


def serve(port: int, depth: int, dump_dir: str) -> None:
    tracemalloc.start(depth)
    from sanic import Request
    from sanic.response import HTTPResponse
    from sanic.response import json as json_response

    from sanic_feeds.server.app import create_app
    from sanic_feeds.settings import Settings

    settings = Settings(
        host=_HOST,
        port=port,
        broker="memory://",
        rate_limit=0,
        log_level="warning",
        quiet_namespaces=("bench",),
        max_connections=100_000,
    )
    app = create_app(settings)

    def census() -> tuple[dict[str, int], dict[str, int]]:
        counts: collections.Counter[str] = collections.Counter()
        sizes: collections.Counter[str] = collections.Counter()
        for obj in gc.get_objects():
            kind = type(obj)
            name = f"{kind.__module__}.{kind.__qualname__}"
            counts[name] += 1
            sizes[name] += sys.getsizeof(obj)
        return dict(counts), dict(sizes)

    async def snap(request: Request, tag: str) -> HTTPResponse:
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(os.path.join(dump_dir, f"{tag}.snapshot"))
        counts, sizes = census()
        return json_response({"counts": counts, "sizes": sizes, "rss_kib": rss_kib()})

    async def reach(request: Request) -> HTTPResponse:
        return json_response(per_connection_objects())

    app.add_route(reach, "/_mem_reach")
    app.add_route(snap, "/_mem/<tag>")
    app.run(single_process=True, host=_HOST, port=port, access_log=False, motd=False)


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


def per_connection_objects() -> list[tuple[str, str, int, int]]:
    """The objects that one connection alone holds: everything reachable from its
    asyncio protocol, transport, task and WebSocket, and not from another connection's;
    each (type, where it was allocated, count, bytes), largest first."""
    import types

    from sanic_feeds.server.websocket import ServerWebSocket

    sockets = [o for o in gc.get_objects() if isinstance(o, ServerWebSocket)]
    sockets = [ws for ws in sockets if ws.io_proto is not None]

    def roots(ws: Any) -> list[Any]:
        proto = ws.io_proto
        return [ws, proto, proto.transport, proto._task]

    # Shared by every connection: stop there.
    everyone = {id(o) for ws in sockets[2:] for o in roots(ws)}
    stop_types = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)

    def reachable(start: list[Any]) -> dict[int, Any]:
        seen: dict[int, Any] = {}
        todo = list(start)
        while todo:
            obj = todo.pop()
            if id(obj) in seen or id(obj) in everyone or isinstance(obj, stop_types):
                continue
            if isinstance(obj, (set, dict, list)) and len(obj) > 200:
                continue  # a registry of all connections
            if isinstance(obj, asyncio.AbstractEventLoop):
                continue
            seen[id(obj)] = obj
            todo.extend(gc.get_referents(obj))
        return seen

    one, other = reachable(roots(sockets[0])), reachable(roots(sockets[1]))
    rows: collections.Counter[tuple[str, str]] = collections.Counter()
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for key, obj in one.items():
        if key in other:
            continue
        trace = tracemalloc.get_object_traceback(obj)
        where = piece_of(trace) if trace is not None else "?"
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        rows[(name, where)] += sys.getsizeof(obj)
        counts[(name, where)] += 1
    return [
        (name, where, counts[key], size)
        for key, size in rows.most_common()
        for name, where in [key]
    ]


# -- the client side


async def open_connections(port: int, count: int) -> list[Any]:
    from websockets.asyncio.client import connect

    sockets = []
    gate = asyncio.Semaphore(100)

    async def one() -> None:
        async with gate:
            ws = await connect(
                f"ws://{_HOST}:{port}/feed/{_CHANNEL}",
                compression=None,
                ping_interval=None,
                user_agent_header="sanic-feeds-bench",
                proxy=None,
            )
            frame = await ws.recv()
            assert '"subscribed"' in str(frame), frame
            sockets.append(ws)

    await asyncio.gather(*(one() for _ in range(count)))
    return sockets


def tcp_sockstat() -> dict[str, int]:
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                return {k: int(v) for k, v in zip(fields[::2], fields[1::2], strict=True)}
    return {}


def fetch(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://{_HOST}:{port}{path}", timeout=120) as answer:
        result = json.loads(answer.read())
        return result


def start_server(args: argparse.Namespace, dump_dir: str) -> subprocess.Popen[bytes]:
    port = args.port
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--depth", str(args.depth), dump_dir]
    )
    for _ in range(1200):
        try:
            urllib.request.urlopen(f"http://{_HOST}:{port}/ready", timeout=1)
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit("the server exited") from None
            time.sleep(0.1)
    server.terminate()
    raise SystemExit("the server did not get ready")


async def drive(args: argparse.Namespace, dump_dir: str) -> None:
    port = args.port
    # Warm up: the first connections create what every later one shares.
    warm = await open_connections(port, 50)
    for ws in warm:
        await ws.close()
    await asyncio.sleep(0.5)
    before = await asyncio.to_thread(fetch, port, "/_mem/before")
    sockstat_before = tcp_sockstat()
    sockets = await open_connections(port, args.connections)
    await asyncio.sleep(1.0)
    after = await asyncio.to_thread(fetch, port, "/_mem/after")
    report(args, dump_dir, before, after)
    sockstat_after = tcp_sockstat()
    print(
        "kernel, not in RSS (/proc/net/sockstat, both ends of every connection): TCP "
        f"sockets in use {sockstat_before['inuse']} -> {sockstat_after['inuse']}, "
        f"buffer pages {sockstat_before['mem']} -> {sockstat_after['mem']}"
    )
    if args.reach:
        reach = await asyncio.to_thread(fetch, port, "/_mem_reach")
        total = sum(row[3] for row in reach)
        print(
            f"\nheld by one connection alone (reachable from it, not from another): "
            f"{total:,} B, sys.getsizeof of each object"
        )
        for name, where, count, size in reach:
            print(f"{size:7d} {count:4d}  {name:45s} {where}")
    for ws in sockets:
        ws.transport.abort()


def report(
    args: argparse.Namespace, dump_dir: str, before: dict[str, Any], after: dict[str, Any]
) -> None:
    n = args.connections
    old = tracemalloc.Snapshot.load(os.path.join(dump_dir, "before.snapshot"))
    new = tracemalloc.Snapshot.load(os.path.join(dump_dir, "after.snapshot"))
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old, new = old.filter_traces(ignore), new.filter_traces(ignore)

    rss = (after["rss_kib"] - before["rss_kib"]) * 1024 / n
    print(f"{n} connections; RSS growth (tracemalloc on, inflated) {rss:,.0f} B per connection")

    stats = new.compare_to(old, "traceback")
    total = sum(s.size_diff for s in stats)
    print(f"tracemalloc: {total / n:,.0f} B per connection allocated by Python\n")

    by_piece: collections.Counter[str] = collections.Counter()
    blocks: collections.Counter[str] = collections.Counter()
    examples: dict[str, tracemalloc.Traceback] = {}
    for stat in stats:
        key = piece_of(stat.traceback)
        by_piece[key] += stat.size_diff
        blocks[key] += stat.count_diff
        examples.setdefault(key, stat.traceback)
    print(f"{'B/conn':>8} {'blk/conn':>8}  innermost frame in a known package")
    for key, size in by_piece.most_common(args.top):
        print(f"{size / n:8.0f} {blocks[key] / n:8.2f}  {key}")
    print()

    print("objects tracked by gc, per connection (sys.getsizeof of the object alone):")
    print(f"{'count':>7} {'B/conn':>8}  type")
    rows = []
    for name, count in after["counts"].items():
        dc = (count - before["counts"].get(name, 0)) / n
        ds = (after["sizes"][name] - before["sizes"].get(name, 0)) / n
        if dc >= 0.5:
            rows.append((ds, dc, name))
    for ds, dc, name in sorted(rows, reverse=True):
        print(f"{dc:7.2f} {ds:8.0f}  {name}")
    if args.tracebacks:
        print()
        for key, size in by_piece.most_common(args.tracebacks):
            print(f"--- {size / n:.0f} B/conn: {key}")
            for line in examples[key].format(most_recent_first=True)[:24]:
                print("   ", line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--tracebacks", type=int, default=0, help="print the N largest's")
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--reach", action="store_true", help="list what one connection holds")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("dump_dir", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.depth, args.dump_dir)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as dump_dir:
        server = start_server(args, dump_dir)
        try:
            asyncio.run(drive(args, dump_dir))
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
