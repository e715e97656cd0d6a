"""`daycare config get|set`: values, comments kept, secrets masked in the full dump."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_set_then_get_keeps_comments(run, home: Path) -> None:
    config = home / "config.toml"
    config.write_text('# my settings\nmodel = "gpt-4o-mini"  # cheap\n')
    assert run("config", "set", "timezone", "Europe/Berlin").exit_code == 0
    assert run("config", "set", "webhook.port", "9000").exit_code == 0
    text = config.read_text()
    assert text.startswith('# my settings\nmodel = "gpt-4o-mini"  # cheap\n')
    assert 'timezone = "Europe/Berlin"' in text and "port = 9000" in text
    assert run("config", "get", "timezone").stdout == "Europe/Berlin\n"
    assert run("config", "get", "webhook.port").stdout == "9000\n"
    assert run("config", "get", "max_concurrent_runs").stdout == "4\n"  # a default


def test_the_config_zone_is_the_default_zone_of_tasks(run, home: Path) -> None:
    run("config", "set", "timezone", "Asia/Tokyo")
    data = json.loads(run("cron", "explain", "0 9 * * *", "--json").stdout)
    assert data["timezone"] == "Asia/Tokyo"


def test_get_everything_masks_secrets(run, home: Path) -> None:
    (home / "config.toml").write_text('model = "x"\n[secrets]\ngithub_hook = "s3cret"\n')
    everything = run("config", "get")
    assert everything.exit_code == 0
    assert 'model = "x"' in everything.stdout and "s3cret" not in everything.stdout
    assert run("config", "get", "secrets.github_hook").stdout == "s3cret\n"


def test_get_with_no_file_says_defaults_apply(run) -> None:
    assert "defaults apply" in run("config", "get").stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["get", "nothing.here"], 3, "not a config key"),
        (["get", "model"], 3, "not set"),
        (["get", "webhooks.port"], 3, "did you mean `webhook.port`?"),
        (["set", "webhooks.port", "1"], 3, "did you mean `webhook.port`?"),
        (["set", "timezone", "Mars/Base"], 2, "Mars/Base"),
        (["set", "webhook.port", "many"], 2, "must be a number"),
        (["set", "a..b", "1"], 3, "not a config key"),
    ],
)
def test_config_errors(run, no_traceback, args: list[str], code: int, message: str) -> None:
    result = run("config", *args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert no_traceback(result)


def test_a_broken_config_file_is_an_error_not_a_traceback(run, home: Path, no_traceback) -> None:
    (home / "config.toml").write_text("model = \n")
    result = run("task", "ls", "--json")
    assert result.exit_code == 1
    assert "config is not valid TOML" in result.stderr
    assert no_traceback(result)
