"""Server settings: one dataclass, filled from defaults, a TOML file, the
environment (``FEEDS_*``) and the command line, in that order of precedence."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .auth import TokenConfig

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "load_settings", "option_help"]

ENV_PREFIX = "FEEDS_"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message says which and why."""


def _option(default: Any, help: str, flag: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _option("127.0.0.1", "address to listen on")
    port: int = _option(8000, "port to listen on")
    broker: str = _option(
        "memory://",
        "memory:// (one process), redis://HOST:PORT/DB, "
        "redis+cluster://HOST:PORT[,HOST:PORT...] or "
        "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]",
    )
    workers: int = _option(1, "Sanic worker processes (needs a Redis broker when > 1)")
    max_message_bytes: int = _option(65536, "largest frame a client may send (close 1009)")
    max_queue: int = _option(
        1000, "outbound frames queued per connection before it is closed with 1013"
    )
    flush_tick_ms: float = _option(
        0.0,
        "milliseconds between two writes to the sockets while messages keep coming "
        "(frames of one tick leave a connection in one write; 0: once per loop iteration)",
        "flush-tick",
    )
    publish_window: int = _option(
        16,
        "publishes of one connection in flight at once: its next frames are read while "
        "earlier publishes wait for the broker (1: one at a time)",
    )
    max_connections: int = _option(10000, "WebSocket connections per instance (then HTTP 503)")
    max_subscriptions: int = _option(100, "channels per connection on /ws")
    rate_limit: float = _option(
        100.0,
        "publishes per second per connection, and /ws subscribes per second, counted "
        "apart (0 turns the limit off)",
    )
    rate_burst: int = _option(
        200, "publishes (and, apart, subscribes) a connection may send at once before the rate"
    )
    history_size: int = _option(100, "messages kept per channel for recovery")
    history_ttl_s: int = _option(
        300, "seconds history outlives a channel's last message", "history-ttl"
    )
    recovery_max: int = _option(300, "most messages a client or instance may recover at once")
    ping_interval_s: float = _option(20.0, "seconds between keepalive pings", "ping-interval")
    ping_timeout_s: float = _option(
        20.0, "seconds to wait for a pong before closing", "ping-timeout"
    )
    drain_timeout_s: float = _option(
        10.0, "seconds SIGTERM waits for connections to close", "drain-timeout"
    )
    hook_timeout_s: float = _option(
        5.0,
        "seconds an app's hook (on_connect, on_subscribe, on_publish) may take before "
        "its operation is refused with unavailable",
        "hook-timeout",
    )
    api_key: str = _option("", "key that /api/* requires (Authorization: apikey KEY)")
    allowed_origins: tuple[str, ...] = _option(
        (),
        "comma-separated origins (scheme://host[:port]) whose pages may connect "
        "(empty: any page may open a WebSocket; the API takes only its own origin)",
    )
    token_secret: str = _option(
        "",
        "HS256 secret that connections' JWTs are signed with (32 bytes or more; a shorter "
        "one is taken with a warning)",
    )
    token_public_key: str = _option(
        "", "PEM file of the RS256 or ES256 public key that verifies connections' JWTs"
    )
    token_audience: str = _option("", "the 'aud' a token must carry (empty: none)")
    token_issuer: str = _option("", "the 'iss' a token must carry (empty: any)")
    anonymous_subscribe: tuple[str, ...] = _option(
        (),
        "comma-separated channel patterns that connections without a token may read "
        "while tokens are on (news,public:*)",
    )
    quiet_namespaces: tuple[str, ...] = _option(
        (), "comma-separated channel namespaces without join/leave events ('*': all)"
    )
    join_leave_max: int = _option(
        1000,
        "join/leave events stop on a channel with more local subscribers than this "
        "(presence still lists everyone)",
    )
    log_level: str = _option("info", "debug, info, warning or error")
    log_format: str = _option("text", "text, or json: one JSON object per line")
    metrics: bool = _option(
        True, "count Prometheus metrics and serve GET /metrics (0: neither, to measure their cost)"
    )
    demo_page: bool = _option(True, "serve the demo page at GET / (feeds.js is always served)")

    def __post_init__(self) -> None:
        positive = (
            "port",
            "workers",
            "max_message_bytes",
            "max_queue",
            "publish_window",
            "max_connections",
            "max_subscriptions",
            "rate_burst",
            "history_ttl_s",
            "hook_timeout_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{flag_of(name)} must be greater than 0")
        for name in (
            "rate_limit",
            "history_size",
            "recovery_max",
            "ping_interval_s",
            "ping_timeout_s",
            "drain_timeout_s",
            "flush_tick_ms",
        ):
            if getattr(self, name) < 0:
                raise SettingsError(f"{flag_of(name)} must not be negative")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise SettingsError("--log-level must be debug, info, warning or error")
        if self.log_format not in ("text", "json"):
            raise SettingsError("--log-format must be text or json")
        if self.port > 65535:
            raise SettingsError("--port must be at most 65535")
        from .origins import OriginPolicy

        try:
            OriginPolicy(self.allowed_origins)
        except ValueError as exc:
            raise SettingsError(f"--allowed-origins: {exc}") from None

    @property
    def tokens_on(self) -> bool:
        return bool(self.token_secret or self.token_public_key)

    def token_config(self) -> TokenConfig | None:
        """How tokens are checked (None when they are off); reads ``--token-public-key``.
        Raises ``SettingsError`` for a key that cannot be used."""
        if not self.tokens_on:
            return None
        from .auth import TokenConfig

        pem = None
        if self.token_public_key:
            try:
                pem = Path(self.token_public_key).read_bytes()
            except OSError as exc:
                raise SettingsError(
                    f"--token-public-key {self.token_public_key}: {exc.strerror}"
                ) from None
        try:
            return TokenConfig.create(
                secret=self.token_secret or None,
                public_key_pem=pem,
                audience=self.token_audience,
                issuer=self.token_issuer,
            )
        except ValueError as exc:  # the secret is not empty: tokens_on
            raise SettingsError(f"--token-public-key {self.token_public_key}: {exc}") from None

    def joins_announced(self, namespace: str) -> bool:
        """Whether join and leave events are sent on channels of ``namespace``."""
        quiet = self.quiet_namespaces
        return not ("*" in quiet or namespace in quiet)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def flag_of(name: str) -> str:
    meta_flag = Settings.__dataclass_fields__[name].metadata.get("flag")
    return "--" + (meta_flag or name.replace("_", "-"))


def env_of(name: str) -> str:
    return ENV_PREFIX + flag_of(name)[2:].replace("-", "_").upper()


def option_help() -> list[tuple[str, str, str, Any]]:
    """``(flag, environment variable, help, default)`` of every setting."""
    return [
        (flag_of(f.name), env_of(f.name), f.metadata["help"], f.default) for f in fields(Settings)
    ]


def _coerce(name: str, value: Any, source: str) -> Any:
    default = Settings.__dataclass_fields__[name].default
    try:
        if isinstance(default, tuple):
            if isinstance(value, str):
                return tuple(part.strip() for part in value.split(",") if part.strip())
            return tuple(str(part) for part in value)
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{flag_of(name)} ({source}): cannot use {value!r}") from None


def load_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Merge the sources: command line over environment over config file over defaults.

    ``cli`` maps field names to values (``None`` means not given). The config
    file is TOML with the flag names as keys (``max-queue = 500``) at top
    level or under ``[feeds]``; with a ``[feeds]`` table, the file may be shared with
    other programs, and only that table is read.
    """
    env = os.environ if env is None else env
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            document = tomllib.loads(path.read_text())
        except OSError as exc:
            raise SettingsError(f"--config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"--config {path}: {exc}") from None
        table = document.get("feeds", document)
        by_flag = {flag_of(n)[2:]: n for n in names} | {n: n for n in names}
        for key, value in table.items():
            if key not in by_flag:
                raise SettingsError(f"--config {path}: unknown setting {key!r}")
            values[by_flag[key]] = _coerce(by_flag[key], value, f"in {path}")
    for name in names:
        if (raw := env.get(env_of(name))) is not None and raw != "":
            values[name] = _coerce(name, raw, env_of(name))
    for name, value in (cli or {}).items():
        if value is not None and name in names:
            values[name] = _coerce(name, value, "command line")
    try:
        return Settings(**values)
    except TypeError as exc:
        raise SettingsError(str(exc)) from None
