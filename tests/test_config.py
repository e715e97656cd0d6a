"""config.toml: reading, validation with a fix for every mistake, comment-keeping writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from daycare_cli.config import DEFAULTS, SCHEMA, ConfigError, load_config, set_config_value


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("max_concurent_runs = 2\n", "`max_concurent_runs`: is not a known", "max_concurrent_runs"),
        ("max_concurrent_runs = 0\n", "must be at least 1", "config set max_concurrent_runs 1"),
        ("max_concurrent_runs = '4'\n", "must be a number", "config set max_concurrent_runs"),
        ("failure_streak = true\n", "must be a number", "failure_streak"),
        ("[webhook]\nport = 'eighty'\n", "`webhook.port`: must be a number", "webhook.port"),
        ("[webhook]\nprt = 1\n", "`webhook.prt`: is not a known", "webhook.port"),
        ("[retention]\nkeep_runs = -1\n", "must be at least 0", "retention.keep_runs"),
        ("timezone = 'Europe/Berln'\n", "`timezone`", "Europe/Berlin"),
        ("timezone = 5\n", "must be a string", "timezone"),
        ("secrets = 'x'\n", "`secrets`: must be a table", "[secrets]"),
        ("webhook = 3\n", "`webhook`: must be a table", "[webhook]"),
        ("[deps]\noffline = 'yes'\n", "`deps.offline`: must be true or false", "offline true"),
        ("[deps]\nfind_links = '/srv'\n", "must be a list of strings", "'[\"VALUE\"]'"),
        ("[deps]\nfind_links = [1]\n", "must be a list of strings", "deps.find_links"),
        ("[deps]\nindex_url = 1\n", "must be a string", "deps.index_url"),
        ("[deps]\nindex = 'x'\n", "`deps.index`: is not a known", "deps.index_url"),
    ],
)
def test_bad_config_is_refused_with_a_fix(
    tmp_path: Path, text: str, message: str, hint: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in err.value.message
    assert hint in (err.value.hint or "")
    assert err.value.path == str(path)


def test_good_config_and_free_tables(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "timezone = 'Europe/Berlin'\nmax_concurrent_runs = 2\n"
        "[webhook]\nport = 0\n[daemon]\ngrace_period = 0.5\n"
        "[secrets]\nanything = 'x'\n[notify.phone]\nurl = 'json://localhost'\n"
    )
    config = load_config(path)
    assert config.get("webhook.port") == 0
    assert config.get("daemon.grace_period") == 0.5
    assert config.secret("anything") == "x"
    assert config.notify_target("phone") == "json://localhost"
    assert config.get("retention.keep_runs") == 100  # the default


def test_set_keeps_comments_and_refuses_what_nothing_could_load(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# my settings\nmax_concurrent_runs = 2  # small machine\n")
    set_config_value(path, "webhook.port", 9000)
    text = path.read_text()
    assert text.startswith("# my settings\nmax_concurrent_runs = 2  # small machine\n")
    assert "port = 9000" in text
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError):
        set_config_value(path, "max_concurrent_runs", 0)
    assert path.read_text() == text  # nothing written


TYPED = (
    "max_concurrent_runs",
    "failure_streak",
    "webhook_host",
    "webhook_port",
    "webhook_queue_size",
    "keep_runs",
    "max_age_days",
    "grace_period",
    "state_retry_limit",
)


def test_every_declared_setting_has_a_default_that_get_returns(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.toml")
    assert set(DEFAULTS) == set(SCHEMA)  # a setting without a default would make callers guess
    for key, default in DEFAULTS.items():
        assert config.get(key) == default, key
    assert [getattr(config, name) for name in TYPED] == [
        4,
        5,
        "127.0.0.1",
        8765,
        10000,
        100,
        30,
        30,
        300,
    ]


def test_typed_settings_read_the_file_with_their_types(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "max_concurrent_runs = 2\nfailure_streak = 3\n"
        "[webhook]\nhost = '0.0.0.0'\nport = 0\nqueue_size = 1\n"
        "[retention]\nkeep_runs = 0\nmax_age_days = 1.5\n[daemon]\ngrace_period = 2\n"
        "state_retry_limit = 60\n"
    )
    config = load_config(path)
    values = [getattr(config, name) for name in TYPED]
    assert values == [2, 3, "0.0.0.0", 0, 1, 0, 1.5, 2.0, 60.0]
    assert isinstance(config.grace_period, float) and isinstance(config.max_age_days, float)


def test_an_empty_webhook_host_means_the_default(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[webhook]\nhost = ''\n")
    assert load_config(path).webhook_host == "127.0.0.1"


def test_deps_settings_read_with_their_types(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert load_config(path).deps.find_links == () and not load_config(path).deps.offline
    set_config_value(path, "deps.find_links", ["/srv/wheels"])
    set_config_value(path, "deps.offline", True)
    path.write_text(path.read_text() + 'index_url = "https://mirror/simple"\n')
    deps = load_config(path).deps
    assert deps.find_links == ("/srv/wheels",) and deps.offline is True
    assert deps.index_url == "https://mirror/simple" and deps.extra_index_urls == ()
    assert deps.python_downloads is False
