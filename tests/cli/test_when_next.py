"""The CLI's side of one answer to "when next": stored anchors, its clock, a stale daemon.

An `every` trigger's next fire counts from its anchor in state.db, which the CLI records
the first time it plans the trigger; `DAYCARE_NOW` sets the CLI's clock (for tests).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

NOW = datetime(2026, 3, 1, 10, 0, 7, tzinfo=UTC)
POLL = "---\nname: Poll\ntriggers:\n  - every: 1h\n---\nx\n"


def at(now: datetime) -> dict[str, str]:
    return {"DAYCARE_NOW": now.isoformat()}


def anchors(home: Path) -> dict[tuple[str, str], str]:
    db = sqlite3.connect(home / "state.db")
    try:
        rows = db.execute("SELECT task, trigger_id, last_slot FROM trigger_state").fetchall()
    finally:
        db.close()
    return {(task, trigger): slot for task, trigger, slot in rows}


def next_fire(run, task_id: str, now: datetime) -> str:
    result = run("task", "show", task_id, "--json", env=at(now))
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["next_fire"])


def test_task_create_records_the_anchor_and_an_interval_change_keeps_it(run, home) -> None:
    created = run("task", "create", "Poll", "--every", "1h", "--prompt", "x", env=at(NOW))
    assert created.exit_code == 0, created.output
    assert anchors(home) == {("poll", "every"): NOW.isoformat()}
    later = NOW + timedelta(minutes=90)
    assert next_fire(run, "poll", later) == "2026-03-01T12:00:07+00:00"
    updated = run("task", "update", "poll", "--every", "2h", env=at(later))
    assert updated.exit_code == 0, updated.output
    assert anchors(home) == {("poll", "every"): NOW.isoformat()}
    assert next_fire(run, "poll", later) == "2026-03-01T12:00:07+00:00"
    assert next_fire(run, "poll", NOW + timedelta(hours=2)) == "2026-03-01T14:00:07+00:00"


def test_only_enabled_every_triggers_are_recorded_and_cron_needs_no_state(run, write, home) -> None:
    write("off", POLL.replace("---\nx", "enabled: false\n---\nx"))
    write("daily", '---\nschedule: "0 9 * * *"\ntimezone: UTC\n---\nx\n')
    result = run("task", "ls", "--json", env=at(NOW))
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r["next_fire"] for r in json.loads(result.stdout)}
    assert rows == {"off": None, "daily": "2026-03-02T09:00:00+00:00"}
    assert not (home / "state.db").exists()  # nothing to record, nothing created
    write("poll", POLL)
    assert run("next", "--json", env=at(NOW)).exit_code == 0
    assert anchors(home) == {("poll", "every"): NOW.isoformat()}


def test_an_unreadable_state_database_is_a_warning_and_the_listing_goes_on(
    run, write, home
) -> None:
    write("poll", POLL)
    (home / "state.db").write_bytes(b"not a database, just some bytes" * 100)
    result = run("task", "ls", "--json", env=at(NOW))
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["next_fire"] == (NOW + timedelta(hours=1)).isoformat()  # counted from now
    assert "not a SQLite database" in result.stderr and "count from now" in result.stderr
    assert (home / "state.db").read_bytes().startswith(b"not a database")  # left alone


def test_a_bad_daycare_now_is_a_usage_error(run, write, no_traceback) -> None:
    write("poll", POLL)
    for value in ("tomorrow", "2026-03-01T10:00:00"):  # the second has no offset
        result = run("next", env={"DAYCARE_NOW": value})
        assert result.exit_code == 2 and no_traceback(result)
        assert "DAYCARE_NOW: must be an ISO 8601 time with an offset" in result.stderr


def test_task_ls_marks_a_daemon_running_another_version_of_the_file(run, write, home) -> None:
    from daycare_cli.cli.context import CliContext
    from daycare_cli.cli.summary import apply_daemon_view, task_fires, task_record

    write("poll", POLL)
    cli = CliContext(home=home, started=NOW)
    (entry,) = cli.store.list()
    assert entry.task is not None
    fires = task_fires(cli, entry.task, 1)
    slot = {"every": "2026-03-01T11:00:07+00:00"}
    for digest, stale in ((entry.digest, False), ("an older version", True)):
        record = task_record(cli, entry, fires)
        seen = {"next_fire": slot, "active": [], "digest": digest, "scheduled": True}
        apply_daemon_view(cli, entry, record, fires, seen)
        assert record["daemon"]["stale"] is stale
        assert record["next_fire"] == record["daemon"]["next_fire"] == slot["every"]
