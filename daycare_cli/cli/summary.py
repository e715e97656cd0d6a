"""What the CLI shows about a task: its triggers in words and its next fires.

Also the stable JSON shapes of DESIGN.md §7 (`task ls --json`, `task show --json`):
extend them, never rename a field.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from daycare_cli.cli.render import error_text

if TYPE_CHECKING:
    from daycare_cli.cli.context import CliContext
    from daycare_cli.core.task import Task, Trigger
    from daycare_cli.store.tasks import TaskEntry


@dataclass(frozen=True)
class Fire:
    """One upcoming fire of one trigger of a task."""

    when: datetime  # aware, UTC
    task: Task
    trigger: Trigger
    zone: str


def trigger_fires(cli: CliContext, task: Task, trigger: Trigger, n: int) -> list[Fire]:
    """The next `n` fires of one trigger after now (none for webhooks and `@reboot`)."""
    from daycare_cli.core.errors import ScheduleError
    from daycare_cli.core.schedule import next_fires

    zone = cli.trigger_zone(task, trigger)
    after, anchor = cli.now, None
    planned = daemon_next(cli, task.id, trigger.id)
    if planned is not None and trigger.type == "every":
        # `every` counts from the daemon's start or last fire, which only the daemon knows.
        after = anchor = planned - timedelta(milliseconds=1)
    try:
        instants = next_fires(trigger, after, n, tz=zone, anchor=anchor)
    except ScheduleError:
        return []
    return [Fire(when, task, trigger, zone) for when in instants]


def task_fires(cli: CliContext, task: Task, n: int) -> list[Fire]:
    """The next `n` fires of a task across its triggers, soonest first; none when disabled."""
    if not task.enabled:
        return []
    fires = [f for t in task.triggers for f in trigger_fires(cli, task, t, n)]
    fires.sort(key=lambda f: f.when.timestamp())
    return fires[:n]


def describe(cli: CliContext, task: Task, trigger: Trigger) -> str:
    """A trigger in words, e.g. 'At 09:00 every day (Europe/Berlin)'."""
    from daycare_cli.core.schedule import explain

    return explain(trigger, tz=cli.trigger_zone(task, trigger))


def trigger_record(cli: CliContext, task: Task, trigger: Trigger) -> dict[str, Any]:
    """`{id, type, spec, timezone, description}`; timezone is null for every and webhook."""
    from daycare_cli.core.schedule import describe_trigger_spec

    zoned = trigger.type in ("cron", "at")
    return {
        "id": trigger.id,
        "type": trigger.type,
        "spec": describe_trigger_spec(trigger),
        "timezone": cli.trigger_zone(task, trigger) if zoned else None,
        "description": describe(cli, task, trigger),
    }


def iso(fire: Fire) -> str:
    """A fire as ISO 8601 in its zone, with the offset."""
    from daycare_cli.core.schedule import format_instant

    return format_instant(fire.when, fire.zone)


def task_record(
    cli: CliContext, entry: TaskEntry, fires: list[Fire] | None = None
) -> dict[str, Any]:
    """The `task ls --json` shape of one task file, valid or not (`fires`: already computed)."""
    task = entry.task
    if task is None:
        assert entry.error is not None
        return {
            "id": entry.id,
            "name": None,
            "path": str(entry.path),
            "enabled": None,
            "triggers": [],
            "next_fire": None,
            "error": error_text(entry.error),
        }
    if fires is None:
        fires = task_fires(cli, task, 1)
    return {
        "id": entry.id,
        "name": task.name,
        "path": str(entry.path),
        "enabled": task.enabled,
        "triggers": [trigger_record(cli, task, t) for t in task.triggers],
        "next_fire": iso(fires[0]) if fires else None,
        "error": None,
    }


_NO_VIEW: dict[str, Any] = {}


def daemon_view(cli: CliContext) -> dict[str, Any] | None:
    """The running daemon's view of the tasks (next fires, stale versions), if one runs.

    Asked once per invocation (cached on the context).
    """
    cached = cli.__dict__.get("_daemon_view")
    if cached is not None:
        return None if cached is _NO_VIEW else dict(cached)
    view: dict[str, Any] | None = None
    if not cli.paths.socket.exists():  # no daemon: skip importing the client (http.client)
        cli.__dict__["_daemon_view"] = _NO_VIEW
        return None
    from daycare_cli.client import connect

    client = connect(cli.paths)
    if client is not None:
        try:
            view = client.tasks()
        except Exception:  # a daemon that does not answer properly: show the files' view
            view = None
    cli.__dict__["_daemon_view"] = _NO_VIEW if view is None else view
    return view


def daemon_next(cli: CliContext, task_id: str, trigger_id: str) -> datetime | None:
    """The daemon's planned next fire of one trigger, if a daemon runs and plans one."""
    view = daemon_view(cli)
    if not view or task_id not in view:
        return None
    value = view[task_id].get("next_fire", {}).get(trigger_id)
    return datetime.fromisoformat(value) if value else None


def apply_daemon_view(
    cli: CliContext,
    entry: TaskEntry,
    record: dict[str, Any],
    fires: list[Fire],
    seen: dict[str, Any] | None,
) -> list[Fire]:
    """Prefer the daemon's next fire (it knows `every` anchors and catch-up) and note a
    stale version it still runs after an invalid edit. Adds `record["daemon"]`."""
    from daycare_cli.core.schedule import format_instant

    if seen is None:
        record["daemon"] = {"scheduled": False, "next_fire": None, "active": []}
        return fires
    planned = [datetime.fromisoformat(v) for v in seen.get("next_fire", {}).values()]
    nxt = min(planned, key=lambda d: d.timestamp()) if planned else None
    zone = fires[0].zone if fires else cli.default_zone
    if entry.task is not None:
        zone = cli.task_zone(entry.task) if not fires else zone
    record["daemon"] = {
        "scheduled": bool(seen.get("scheduled", True)),
        "next_fire": format_instant(nxt, zone) if nxt else None,
        "active": list(seen.get("active", [])),
        # An invalid file whose last good version the daemon still runs.
        "stale": entry.task is None and bool(seen.get("scheduled", True)),
    }
    if entry.task is not None and nxt is not None and fires:
        record["next_fire"] = record["daemon"]["next_fire"]
        return [Fire(nxt, fires[0].task, fires[0].trigger, zone)]
    return fires


def list_tasks(cli: CliContext, *, as_json: bool, tags: list[str]) -> None:
    """`daycare task ls`: the JSON list, or the table. Never raises for a bad file.

    Shared by the Typer command and the fast path in `entry.py`, which skips Typer.
    """
    entries = cli.store.list()
    if tags:
        wanted = set(tags)
        # A file with errors has no readable tags; it stays listed so it is never hidden.
        entries = [e for e in entries if e.task is None or wanted & set(e.task.tags)]
    view = daemon_view(cli)
    isolation = last_isolation(cli, entries)
    rows = []
    for entry in entries:
        fires = task_fires(cli, entry.task, 1) if entry.task is not None else []
        record = task_record(cli, entry, fires)
        if entry.task is not None and entry.task.execute:
            record["isolation"] = isolation.get(entry.id)
        if view is not None:
            fires = apply_daemon_view(cli, entry, record, fires, view.get(entry.id))
        rows.append((entry, fires, record))
    if as_json:
        from daycare_cli.cli.render import print_json

        print_json([record for _, _, record in rows])
        return
    print_task_table(cli, rows)


def last_isolation(cli: CliContext, entries: list[TaskEntry]) -> dict[str, str]:
    """The isolation the latest run of each `execute: true` task got ("bubblewrap",
    "reduced", "none" when refused); read only when such a task is listed."""
    if not any(e.task is not None and e.task.execute for e in entries):
        return {}
    if not cli.paths.state_db.exists():
        return {}
    from daycare_cli.store.state import State

    try:
        with State.open(cli.paths.state_db) as state:
            return state.last_isolation()
    except Exception:  # the listing never fails for want of history
        return {}


def print_task_table(
    cli: CliContext, rows: list[tuple[TaskEntry, list[Fire], dict[str, Any]]]
) -> None:
    """The `task ls` table: one line a file; a file with errors shows its error in red."""
    from daycare_cli.cli import render

    if not rows:
        sys.stdout.write(
            f"No tasks in {render.display_path(cli.store.dir)}. Create one with "
            "`daycare task create NAME --schedule '0 9 * * *' --prompt TEXT`.\n"
        )
        return
    table: list[list[render.Cell]] = []
    invalid = 0
    for entry, fires, record in rows:
        if entry.task is None:
            invalid += 1
            error = entry.error.message if entry.error else "invalid"
            if entry.error and entry.error.line:
                error = f"line {entry.error.line}: {error}"
            if record.get("daemon", {}).get("stale"):
                error += " (the daemon keeps running the last good version)"
            table.append([("✗", "bold red"), (entry.id, "red"), (error, "red")])
            continue
        triggers = "; ".join(t["description"] for t in record["triggers"])
        next_fire = ("-", "dim")
        if fires:
            next_fire = (render.when_text(fires[0].when, cli.now, fires[0].zone), "")
        enabled = ("yes", "green") if entry.task.enabled else ("no", "yellow")
        table.append(
            [
                ("", ""),
                (entry.id, "bold"),
                (entry.task.name, ""),
                (triggers, "") if triggers else ("manual only", "dim"),
                next_fire,
                enabled,
            ]
        )
    headers = ["", "ID", "NAME", "TRIGGERS", "NEXT FIRE", "ENABLED"]
    # On a narrow terminal the words of the triggers give way first, then the name.
    render.print_table(headers, table, shrink=(3, 2))
    ran = sorted({str(r.get("isolation")) for _, _, r in rows if r.get("isolation")})
    if ran:
        note = "blocks last ran with isolation: " + ", ".join(ran)
        if "none" in ran:
            note += " (none: refused, bubblewrap missing; see `daycare doctor`)"
        sys.stdout.write(render.paint(note, "red" if "none" in ran else "dim") + "\n")
    if invalid:
        files = "file has" if invalid == 1 else "files have"
        message = f"{invalid} {files} errors: `daycare task lint` shows how to fix them"
        sys.stdout.write(render.paint(message, "red") + "\n")
