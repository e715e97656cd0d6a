"""What the CLI shows about a task: its triggers in words and its next fires.

Also the stable JSON shapes of docs/cli.md, "JSON output" (`task ls --json`, `task show --json`):
extend them, never rename a field.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from daycare_cli.cli.render import error_text

if TYPE_CHECKING:
    from daycare_cli.cli.context import CliContext
    from daycare_cli.core.task import Task, Trigger
    from daycare_cli.store.rows import Run
    from daycare_cli.store.tasks import TaskEntry


@dataclass(frozen=True)
class Fire:
    """One upcoming fire of one trigger of a task."""

    when: datetime  # aware, UTC
    task: Task
    trigger: Trigger
    zone: str
    dst: str | None = None  # what a clock change did to this fire, in words


def trigger_fires(cli: CliContext, task: Task, trigger: Trigger, n: int) -> list[Fire]:
    """The next `n` fires of one trigger after now (none for webhooks and `@reboot`).

    The one answer of docs/task-file.md, "schedule": `upcoming()` from the trigger's stored state,
    as the
    daemon plans it, so every view shows the same slot with or without a daemon.
    """
    from daycare_cli.core.errors import ScheduleError
    from daycare_cli.core.schedule import upcoming

    zone = cli.trigger_zone(task, trigger)
    last_slot = stored_slots(cli, [task]).get((task.id, trigger.id))
    try:
        noted = upcoming(trigger, now=cli.now, last_slot=last_slot, tz=zone, n=n)
    except ScheduleError:
        return []
    return [Fire(fire.at, task, trigger, zone, fire.dst) for fire in noted]


def stored_slots(cli: CliContext, tasks: list[Task]) -> dict[tuple[str, str], datetime]:
    """The stored state `upcoming()` needs for these tasks' `every` triggers (store/anchors.py).

    Read once per task per invocation; pass every task of a listing at once so that the
    `every` anchors it records are one write. A state database that cannot be read is a
    warning: `every` triggers then count from now.
    """
    cache: dict[tuple[str, str], datetime] = cli.__dict__.setdefault("_stored_slots", {})
    loaded: set[str] = cli.__dict__.setdefault("_stored_tasks", set())
    todo = [t for t in tasks if t.id not in loaded]
    # Only `every` fires depend on stored state: no state.db (nor sqlite3) otherwise.
    if any(trigger.type == "every" for t in todo for trigger in t.triggers):
        from daycare_cli.core.errors import UserError
        from daycare_cli.store.anchors import trigger_anchors

        loaded.update(t.id for t in todo)
        try:
            cache.update(trigger_anchors(cli.paths.state_db, todo, cli.now))
        except UserError as err:
            from daycare_cli.cli.render import warn

            warn(f"{err.message}; `every` triggers count from now ({err.where})")
    return cache


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


def apply_daemon_view(
    cli: CliContext,
    entry: TaskEntry,
    record: dict[str, Any],
    fires: list[Fire],
    seen: dict[str, Any] | None,
) -> list[Fire]:
    """Add `record["daemon"]`: the daemon's own next fire and whether it runs a version of
    the task other than the file's (an invalid edit, or one it has not reloaded yet).

    `next_fire` stays the file's: the daemon computes its next fire with the same function
    from the same stored state, so the two differ only for such a stale version.
    """
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
        # An invalid file whose last good version the daemon still runs, or a valid one it
        # has not reloaded yet (its digest is another file's).
        "stale": bool(seen.get("scheduled", True))
        and (entry.task is None or seen.get("digest", entry.digest) != entry.digest),
    }
    return fires


def last_runs(cli: CliContext) -> dict[str, Run]:
    """The newest run of each task, from the state database (none before the first run).

    A state database that cannot be read is a warning: the listing goes on without it.
    """
    return run_history(cli, isolation=False)[0]


def run_history(cli: CliContext, *, isolation: bool) -> tuple[dict[str, Run], dict[str, str]]:
    """The newest run of each task and, when asked, the isolation each task's latest run
    with blocks got ("bubblewrap", "reduced", "none" when refused): one read of state.db.

    A state database that cannot be read is a warning: the listing goes on without it.
    """
    db = cli.paths.state_db
    if not db.exists():
        return {}, {}
    from daycare_cli.core.errors import UserError
    from daycare_cli.store.state import State

    try:
        with State.open(db) as state:
            return state.latest_runs(), state.last_isolation() if isolation else {}
    except UserError as err:
        from daycare_cli.cli.render import warn

        warn(f"{err.message}; last runs are not shown ({err.where})")
        return {}, {}


def last_run_record(run: Run | None) -> dict[str, Any] | None:
    """`last_run` of `task ls --json`: `{id, status, started_at, finished_at}` or null."""
    if run is None:
        return None
    data = run.to_json()
    return {key: data[key] for key in ("id", "status", "started_at", "finished_at")}


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
    executes = any(e.task is not None and e.task.execute for e in entries)
    latest, isolation = run_history(cli, isolation=executes) if entries else ({}, {})
    stored_slots(cli, [e.task for e in entries if e.task is not None])
    rows = []
    for entry in entries:
        fires = task_fires(cli, entry.task, 1) if entry.task is not None else []
        record = task_record(cli, entry, fires)
        record["last_run"] = last_run_record(latest.get(entry.id))
        if entry.task is not None and entry.task.execute:
            record["isolation"] = isolation.get(entry.id)
        if view is not None:
            fires = apply_daemon_view(cli, entry, record, fires, view.get(entry.id))
        rows.append((entry, fires, record, latest.get(entry.id)))
    if as_json:
        from daycare_cli.cli.render import print_json

        print_json([record for _, _, record, _ in rows])
        return
    print_task_table(cli, rows)


STATUS_STYLES = {
    "succeeded": "green",
    "skipped": "yellow",
    "failed": "red",
    "timed_out": "red",
    "interrupted": "red",
    "running": "cyan",
    "queued": "cyan",
}


def last_run_cell(run: Run | None, now: datetime) -> tuple[str, str]:
    """LAST RUN: `5m ago succeeded`, `running 12s`, like systemctl list-timers' LAST/PASSED."""
    from daycare_cli.cli.render import ago

    if run is None:
        return ("-", "dim")
    style = STATUS_STYLES.get(run.status, "")
    if run.status in ("running", "queued"):
        since = run.started_at or run.queued_at
        return (f"{run.status} {ago(since, now).removesuffix(' ago')}", style)
    when = run.finished_at or run.started_at or run.queued_at
    return (f"{ago(when, now)} {run.status}", style)


def print_task_table(
    cli: CliContext,
    rows: list[tuple[TaskEntry, list[Fire], dict[str, Any], Run | None]],
) -> None:
    """The `task ls` table: one line a file; a file with errors shows its error in red.

    Ids are never cut; on a narrow terminal the triggers' words give way, then the name.
    Next fires are in one zone, named in the header.
    """
    from daycare_cli.cli import render

    if not rows:
        sys.stdout.write(
            f"No tasks in {render.display_path(cli.store.dir)}. Create one with "
            "`daycare task create NAME --schedule '0 9 * * *' --prompt TEXT`.\n"
        )
        return
    zone = cli.default_zone
    table: list[list[render.Cell]] = []
    invalid = 0
    for entry, fires, record, last in rows:
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
        if not entry.task.enabled:
            next_fire = ("disabled", "yellow")
        elif fires:
            when = fires[0].when
            next_fire = (f"{render.table_time(when, zone)} ({render.ago(when, cli.now)})", "")
        else:
            next_fire = ("-", "dim")
        table.append(
            [
                ("", ""),
                (entry.id, "bold"),
                (entry.task.name, ""),
                (triggers, "") if triggers else ("manual only", "dim"),
                next_fire,
                last_run_cell(last, cli.now),
            ]
        )
    headers = ["", "ID", "NAME", "TRIGGERS", f"NEXT ({render.zone_label(zone)})", "LAST RUN"]
    # Triggers give way first, then the name, then both further; ids and times never.
    render.print_table(headers, table, shrink=((3, 16), (2, 12), (3, 8), (2, 6)))
    ran = sorted({str(r.get("isolation")) for _, _, r, _ in rows if r.get("isolation")})
    if ran:
        note = "blocks last ran with isolation: " + ", ".join(ran)
        if "none" in ran:
            note += " (none: refused, bubblewrap missing; see `daycare doctor`)"
        sys.stdout.write(render.paint(note, "red" if "none" in ran else "dim") + "\n")
    if invalid:
        files = "file has" if invalid == 1 else "files have"
        message = f"{invalid} {files} errors: `daycare task lint` shows how to fix them"
        sys.stdout.write(render.paint(message, "red") + "\n")
