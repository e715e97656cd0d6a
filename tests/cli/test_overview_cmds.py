"""`daycare next` and `daycare topology` across all tasks."""

from __future__ import annotations

import json
from datetime import datetime

DAILY = '---\nname: Daily\nschedule: "0 9 * * *"\ntimezone: Europe/Berlin\nmodel: none\n---\nx\n'
HOURLY = '---\nname: Hourly\nschedule: "15 * * * *"\nexecute: true\ntags: [ops]\n---\nx\n'
HOOK = (
    '---\nname: Hook\ntriggers:\n  - webhook: true\n  - cron: "0 3 * * *"\n'
    "notify: [phone]\n---\nx\n"
)
MANUAL = "---\nname: Manual\n---\nx\n"
OFF = '---\nname: Paused\nschedule: "* * * * *"\nenabled: false\n---\nx\n'
BAD = "---\nname: [Bad\n---\nx\n"


def write_all(write) -> None:
    for task_id, text in [
        ("daily", DAILY), ("hourly", HOURLY), ("hook", HOOK),
        ("manual", MANUAL), ("off", OFF), ("bad", BAD),
    ]:  # fmt: skip
        write(task_id, text)


def test_next_lists_fires_soonest_first_without_disabled_tasks(run, write) -> None:
    write_all(write)
    result = run("next", "-n", "30", "--json")
    assert result.exit_code == 0, result.output
    fires = json.loads(result.stdout)
    assert len(fires) == 30
    instants = [datetime.fromisoformat(f["slot"]).timestamp() for f in fires]
    assert instants == sorted(instants)
    assert {f["task"] for f in fires} == {"daily", "hourly", "hook"}
    assert sum(f["task"] == "hourly" for f in fires) >= 24
    daily = next(f for f in fires if f["task"] == "daily")
    assert daily == {
        "task": "daily",
        "name": "Daily",
        "trigger": "cron",
        "type": "cron",
        "slot": daily["slot"],
        "timezone": "Europe/Berlin",
    }
    assert daily["slot"][11:] in ("09:00:00+01:00", "09:00:00+02:00")
    assert "invalid task file" in result.stderr


def test_next_for_people(run, write, home) -> None:
    write("daily", DAILY)
    result = run("next", "-n", "2")
    assert result.exit_code == 0
    # One zone for the table (the default zone, named in the header): UTC here.
    assert result.stdout.count("daily") == 2 and result.stdout.startswith("WHEN (UTC)")
    (home / "config.toml").write_text('timezone = "Europe/Berlin"\n')
    berlin = run("next", "-n", "2").stdout
    assert berlin.startswith("WHEN (Europe/Berlin)") and berlin.count(" 09:00 ") == 2


def test_topology_groups_tasks_by_how_they_fire(run, write) -> None:
    write_all(write)
    result = run("topology", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    ids = {group: [t["id"] for t in data[group]] for group in data}
    assert ids == {
        "cron": ["daily", "hook", "hourly", "off"],
        "at": [],
        "every": [],
        "webhook": ["hook"],
        "manual": ["manual"],
        "invalid": ["bad"],
    }
    hourly = data["cron"][2]
    assert hourly["execute"] is True and hourly["tags"] == ["ops"] and hourly["model"] is None
    assert data["webhook"][0]["notify"] == ["phone"]
    assert data["webhook"][0]["triggers"] == ["On webhook"]
    assert data["invalid"][0]["error"].endswith("bad.md:2:7: unclosed `[` or `{`")

    tree = run("topology")
    assert tree.exit_code == 0
    assert "cron schedules (4)" in tree.stdout and "invalid files (1)" in tree.stdout
