"""The ``sanic-feeds`` command line: serve, publish, subscribe, bench, drill."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, NoReturn
from urllib.parse import urlsplit

import orjson

from .brokers import SUPPORTED_SCHEMES, URL_FORMS, check_reachable, redact_url
from .brokers.failures import describe
from .errors import BrokerUnavailable
from .events import StreamPosition
from .settings import ENV_PREFIX, Settings, SettingsError, env_of, flag_of, load_settings

__all__ = ["main"]

PROG = "sanic-feeds"


def _fail(message: str, status: int = 1) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


# -- serve


def _add_serve(sub: Any) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the feed server",
        description="Run the feed server. Every option also reads the environment variable "
        f"shown ({ENV_PREFIX}...) and the --config TOML file; the command line wins.",
    )
    _add_config(parser)
    for f in fields(Settings):
        _add_setting(parser, f.name)


def _add_config(parser: Any) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings (env FEEDS_CONFIG)")


def _add_setting(parser: Any, name: str) -> None:
    """``--<flag>`` for the ``Settings`` field ``name``, with its help, variable and default."""
    field = Settings.__dataclass_fields__[name]
    shown = ",".join(field.default) if isinstance(field.default, tuple) else field.default
    parser.add_argument(
        flag_of(name),
        dest=name,
        default=None,
        metavar=name.upper().removesuffix("_S"),
        help=f"{field.metadata['help']} (env {env_of(name)}, default {shown!r})",
    )


def _load_settings(args: argparse.Namespace, names: Sequence[str]) -> Settings:
    """The settings as ``serve`` reads them: ``names`` from the command line, over the
    environment, over the ``--config`` file (or ``FEEDS_CONFIG``), over the defaults."""
    try:
        return load_settings(
            {name: getattr(args, name) for name in names},
            config_file=args.config or os.environ.get("FEEDS_CONFIG") or None,
        )
    except SettingsError as exc:
        _fail(str(exc), 2)


def _serve(args: argparse.Namespace) -> int:
    settings = _load_settings(args, [f.name for f in fields(Settings)])
    scheme = urlsplit(settings.broker).scheme
    if scheme not in SUPPORTED_SCHEMES:
        _fail(f"unsupported broker URL {redact_url(settings.broker)!r}: use {URL_FORMS}")
    if scheme == "memory" and settings.workers > 1:
        _fail(
            f"--workers {settings.workers} needs a shared broker: memory:// lives inside one "
            "process, so messages would not cross workers. Use --broker redis://HOST:PORT/DB "
            "(or --workers 1)."
        )
    try:
        settings.token_config()  # an unreadable key fails here, in one line
    except SettingsError as exc:
        _fail(str(exc), 2)
    if scheme != "memory":
        _check_broker(settings.broker)
    _check_address(settings.host, settings.port)

    from .server.app import run

    if settings.demo_page and settings.log_format != "json":
        # The first line a person reads: where to look. (JSON logs are read by a
        # collector, which wants every line to be one object.)
        print(f"open {_demo_url(settings.host, settings.port)}", flush=True)
    try:
        run(settings)
    except OSError as exc:
        # Taken between the check and Sanic's own bind.
        _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    return 0


def _demo_url(host: str, port: int) -> str:
    """The demo page's address as a browser on this machine reaches it."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _check_address(host: str, port: int) -> None:
    """Fail in one line, before Sanic starts, when ``host:port`` cannot be listened on
    (a port in use, a host that does not resolve or is not this machine's)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            # As Sanic binds: a port left in TIME_WAIT by a previous run is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def _check_broker(url: str) -> None:
    """Fail in one line, before Sanic starts, when the broker cannot be reached."""
    try:
        asyncio.run(check_reachable(url))
    except Exception as exc:
        _fail(f"cannot reach the broker at {redact_url(url)}: {describe(exc)}")


# -- publish


#: The settings ``publish --broker`` reads, like ``serve``: a publisher trims the channel's
#: history to its size and TTL on every publish (and keeps a new epoch's first
#: ``--recovery-max`` apart), so they must be the servers'.
_PUBLISH_SETTINGS = ("broker", "history_size", "history_ttl_s", "recovery_max")


def _add_publish(sub: Any) -> None:
    parser = sub.add_parser(
        "publish",
        help="publish one message",
        description="Publish DATA (JSON if it parses, else the text) on CHANNEL, through the "
        "HTTP API of a running server (--url) or straight through the broker (--broker). "
        "Straight through the broker, the publish trims the channel's history to "
        "--history-size messages and --history-ttl seconds (a new epoch's first "
        "--recovery-max are kept apart for 30 s): give it the servers' values. "
        "Like serve, --broker and these read the environment variable shown and the "
        "--config TOML file; the command line wins.",
    )
    parser.add_argument("channel")
    parser.add_argument("data")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--url",
        help="a server's base URL (default, when no broker is given: where serve listens "
        "with the same settings, http://127.0.0.1:8000 by default)",
    )
    target.add_argument(
        "--broker",
        help=f"broker URL, redis://HOST:PORT/DB, redis+cluster://... or redis+sentinel://... "
        f"(env {env_of('broker')}, or broker in --config)",
    )
    parser.add_argument("--api-key", help=f"the server's API key (env {ENV_PREFIX}API_KEY)")
    _add_config(parser)
    _add_setting(parser, "history_size")
    _add_setting(parser, "history_ttl_s")
    _add_setting(parser, "recovery_max")


def _publish(args: argparse.Namespace) -> int:
    from .codec import data_from_client_text
    from .errors import BadChannel
    from .names import validate_channel

    try:
        validate_channel(args.channel)
    except BadChannel as exc:
        _fail(exc.message, 2)
    data, _ = data_from_client_text(args.data)
    api_key = args.api_key or os.environ.get(ENV_PREFIX + "API_KEY")
    settings = None if args.url else _load_settings(args, _PUBLISH_SETTINGS)
    if settings is not None and not settings.broker.startswith("memory:"):
        result = asyncio.run(_publish_broker(settings, args.channel, data))
    else:
        if args.broker is not None:
            _fail("memory:// lives inside the server's process: use --url http://HOST:PORT", 2)
        # A server on the memory broker (the default): its HTTP API, where the same
        # settings (FEEDS_HOST, FEEDS_PORT, --config) have it listen.
        url = args.url if settings is None else _server_url(settings)
        given = [
            flag
            for flag, value in (
                ("--config", args.config if args.url else None),
                (flag_of("history_size"), args.history_size),
                (flag_of("history_ttl_s"), args.history_ttl_s),
                (flag_of("recovery_max"), args.recovery_max),
            )
            if value is not None
        ]
        if given:
            _fail(
                f"{', '.join(given)} only go with --broker: the server at {url} publishes "
                "with its own settings",
                2,
            )
        result = _publish_http(url, args.channel, data, api_key)
    print(orjson.dumps(result).decode())
    return 0


def _server_url(settings: Settings) -> str:
    """Where a server started with ``settings`` answers HTTP on this machine."""
    host = settings.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _publish_http(base_url: str, channel: str, data: Any, api_key: str | None) -> Any:
    request = urllib.request.Request(
        base_url.rstrip("/") + "/api/publish",
        data=orjson.dumps({"channel": channel, "data": data}),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    if api_key:
        request.add_header("Authorization", f"apikey {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return orjson.loads(reply.read())
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read())["message"]
        except Exception:
            message = exc.reason
        _fail(f"{base_url} refused the publish ({exc.code}): {message}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        _fail(f"cannot reach {base_url}: {reason}")


async def _publish_broker(settings: Settings, channel: str, data: Any) -> Any:
    from .publisher import Publisher

    try:
        async with Publisher(
            settings.broker,
            history_size=settings.history_size,
            history_ttl_s=settings.history_ttl_s,
            recovery_max=settings.recovery_max,
        ) as publisher:
            position = await publisher.publish(channel, data)
    except (BrokerUnavailable, ValueError) as exc:
        _fail(str(exc))
    return {"offset": position.offset, "epoch": position.epoch}


# -- subscribe


def _add_subscribe(sub: Any) -> None:
    parser = sub.add_parser(
        "subscribe",
        help="print a channel's events as JSON lines",
        description="Subscribe to CHANNEL on a running server and print every event as one "
        "JSON line on stdout until interrupted. Reconnects by itself and recovers what it "
        "missed; a 'subscribed' line with recovered=false says messages were lost.",
    )
    parser.add_argument("channel")
    parser.add_argument(
        "--url", default="ws://127.0.0.1:8000", help="the server (default ws://127.0.0.1:8000)"
    )
    parser.add_argument("--count", type=int, default=0, help="exit after COUNT messages")
    parser.add_argument(
        "--token", help=f"a JWT for servers with identity on (env {ENV_PREFIX}TOKEN)"
    )


def _subscribe(args: argparse.Namespace) -> int:
    from .errors import BadChannel
    from .names import validate_channel

    try:
        validate_channel(args.channel)
    except BadChannel as exc:
        _fail(exc.message, 2)
    token = args.token or os.environ.get(ENV_PREFIX + "TOKEN") or None
    try:
        return asyncio.run(_print_events(args.url, args.channel, args.count, token))
    except KeyboardInterrupt:
        return 0


async def _print_events(base_url: str, channel: str, count: int, token: str | None) -> int:
    from websockets.exceptions import InvalidHandshake, InvalidURI

    from .client import CommandFailed, FeedsClient, Subscribed, SubscriptionRefused
    from .codec import WireFormat, encode_event, encode_subscribed
    from .events import Publication

    client = FeedsClient(base_url, token=token)
    try:
        await client.connect()
        await client.subscribe(channel)
    except (InvalidHandshake, InvalidURI, OSError, TimeoutError, CommandFailed) as exc:
        # CommandFailed: the server refused the subscription (its broker is down, say).
        await client.close()
        _fail(f"cannot subscribe at {client.url}: {exc}")
    messages = 0
    try:
        async for event in client:
            if isinstance(event, Subscribed):
                position = StreamPosition(event.offset, event.epoch)
                line = encode_subscribed(
                    event.channel, position, event.recovered, client=event.client
                )
            else:
                line = encode_event(event, WireFormat.JSON)
            print(line.decode(), flush=True)
            if isinstance(event, Publication):
                messages += 1
                if count and messages >= count:
                    return 0
    except BrokenPipeError:
        raise  # our stdout, not the server: main() handles it
    except ConnectionError as exc:
        _fail(f"the connection to {client.url} ended: {exc}")
    except SubscriptionRefused as exc:
        # Back from a reconnect, the server would not take the channel again.
        _fail(f"{client.url} refused {channel!r} after a reconnect: {exc}")
    finally:
        await client.close()
    return 0


# -- main


def build_parser(*, with_bench: bool = False, with_drill: bool = False) -> argparse.ArgumentParser:
    """The command line's parser; the options of ``bench`` (``drill``) are declared only
    ``with_bench`` (``with_drill``), so that the other commands import nothing of them."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="A horizontally scalable WebSocket feed server on Sanic."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_publish(sub)
    _add_subscribe(sub)
    bench = sub.add_parser("bench", help="measure a deployment under load")
    if with_bench:
        from .bench import add_bench_arguments

        add_bench_arguments(bench)
    drill = sub.add_parser("drill", help="inject faults under load and count every message")
    if with_drill:
        from .drill import add_drill_arguments

        add_drill_arguments(drill)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(with_bench=args[:1] == ["bench"], with_drill=args[:1] == ["drill"])
        return _run(parser.parse_args(args))
    except BrokenPipeError:
        # Whoever read our output went away (`| head`): stop quietly, and keep Python's
        # final flush from raising again (the recipe of the `signal` module's docs).
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    if args.command == "publish":
        return _publish(args)
    if args.command == "subscribe":
        return _subscribe(args)
    if args.command == "drill":
        from .drill import run_drills

        drilled: int = run_drills(args)
        return drilled
    from .bench import run_bench

    status: int = run_bench(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
