"""config.toml: reading, validation with a fix for every mistake, comment-keeping writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from daycare_cli.config import ConfigError, load_config, set_config_value


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
