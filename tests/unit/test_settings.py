"""Where settings come from (``load_settings``): defaults, a TOML file, the environment and
the command line, in that order of precedence. Pure: no server is started.

``tests/integration/test_cli.py`` keeps one end-to-end check that ``serve`` applies them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sanic_feeds.settings import Settings, SettingsError, env_of, flag_of, load_settings


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feeds.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    assert load_settings({}, env={}) == Settings()


def test_command_line_beats_environment_beats_config_file(tmp_path: Path) -> None:
    path = config(tmp_path, 'port = 1111\nbroker = "memory://"\nmax-message-bytes = 100\n')
    settings = load_settings(
        {"max_message_bytes": "300", "port": None},
        env={"FEEDS_PORT": "2222", "FEEDS_MAX_MESSAGE_BYTES": "1000"},
        config_file=path,
    )
    assert settings.max_message_bytes == 300  # command line
    assert settings.port == 2222  # environment (the command line's None means not given)
    assert settings.broker == "memory://"  # file


def test_the_config_file_may_use_a_feeds_table_and_field_names(tmp_path: Path) -> None:
    path = config(tmp_path, "[feeds]\nport = 9\nmax_queue = 50\nhistory-ttl = 60\n")
    settings = load_settings({}, env={}, config_file=path)
    assert (settings.port, settings.max_queue, settings.history_ttl_s) == (9, 50, 60)


def test_an_empty_environment_variable_is_not_a_value() -> None:
    assert load_settings({}, env={"FEEDS_PORT": ""}).port == Settings().port


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ({"FEEDS_ALLOWED_ORIGINS": "https://a.example, https://b.example,"},
         ("https://a.example", "https://b.example")),
        ({"FEEDS_RATE_LIMIT": "2.5"}, 2.5),
        ({"FEEDS_PING_INTERVAL": "0"}, 0.0),
    ],
)  # fmt: skip
def test_environment_values_are_coerced_to_the_field_type(
    env: dict[str, str], value: object
) -> None:
    settings = load_settings({}, env=env)
    [name] = env
    field = {
        "FEEDS_ALLOWED_ORIGINS": "allowed_origins",
        "FEEDS_RATE_LIMIT": "rate_limit",
        "FEEDS_PING_INTERVAL": "ping_interval_s",
    }[name]
    assert getattr(settings, field) == value


@pytest.mark.parametrize(
    ("cli", "env", "text", "message"),
    [
        ({"port": "eighty"}, {}, None, "--port (command line): cannot use 'eighty'"),
        ({}, {"FEEDS_RATE_LIMIT": "fast"}, None, "--rate-limit (FEEDS_RATE_LIMIT)"),
        ({}, {}, "no-such-setting = 1\n", "unknown setting 'no-such-setting'"),
        ({}, {}, "max-queue = [unclosed\n", "--config"),
        ({"max_queue": "0"}, {}, None, "--max-queue must be greater than 0"),
        ({"history_size": "-1"}, {}, None, "--history-size must not be negative"),
        ({"log_level": "loud"}, {}, None, "--log-level must be"),
        ({}, {"FEEDS_LOG_FORMAT": "xml"}, None, "--log-format must be text or json"),
    ],
)  # fmt: skip
def test_a_bad_value_names_its_flag_and_its_source(
    tmp_path: Path, cli: dict[str, str], env: dict[str, str], text: str | None, message: str
) -> None:
    path = config(tmp_path, text) if text is not None else None
    with pytest.raises(SettingsError) as refused:
        load_settings(cli, env=env, config_file=path)
    assert message in str(refused.value)


def test_a_missing_config_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--config"):
        load_settings({}, env={}, config_file=tmp_path / "absent.toml")


def test_flags_and_variables_keep_their_names_without_the_unit_suffix() -> None:
    assert (flag_of("history_ttl_s"), env_of("history_ttl_s")) == (
        "--history-ttl",
        "FEEDS_HISTORY_TTL",
    )
    assert (flag_of("max_queue"), env_of("max_queue")) == ("--max-queue", "FEEDS_MAX_QUEUE")


@pytest.mark.parametrize(
    ("env", "counted"),
    [({}, True), ({"FEEDS_METRICS": "0"}, False), ({"FEEDS_METRICS": "false"}, False),
     ({"FEEDS_METRICS": "1"}, True)],
)  # fmt: skip
def test_metrics_are_on_unless_turned_off(env: dict[str, str], counted: bool) -> None:
    assert load_settings({}, env=env).metrics is counted
    assert load_settings({"metrics": "0" if counted else "1"}, env=env).metrics is not counted
