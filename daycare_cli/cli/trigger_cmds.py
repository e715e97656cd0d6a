"""`daycare task trigger add|rm`: add or remove one trigger of a task file.

A file with the `schedule` shorthand turns into the full `triggers` list when a second
trigger joins it; removing the last trigger leaves a manual-only task.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from daycare_cli.cli.context import get_context
from daycare_cli.cli.params import TaskId, group
from daycare_cli.core.errors import NotFoundError, UsageError


def register(task_app: typer.Typer) -> None:
    """Add the `trigger` group under `task`."""
    app = group("trigger", "Add or remove triggers of a task.")
    app.command("add")(add)
    app.command("rm")(rm)
    task_app.add_typer(app)


def add(
    ctx: typer.Context,
    task_id: TaskId,
    cron: Annotated[
        str | None, typer.Option("--cron", metavar="EXPR", help="Cron expression.")
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option("--tz", metavar="ZONE", help="Zone of this cron or at trigger."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="WHEN",
            help="Fire once: ISO, '+2h', 'in 30m', 'tomorrow 09:00', 'next monday 08:00'.",
        ),
    ] = None,
    every: Annotated[
        str | None, typer.Option("--every", metavar="DURATION", help="Interval: 90s, 15m, 2h.")
    ] = None,
    webhook: Annotated[bool, typer.Option("--webhook", help="Fire on an HTTP webhook.")] = False,
    signature: Annotated[
        str | None,
        typer.Option(
            "--signature",
            metavar="KIND",
            help="Webhook signature check: github or hmac-sha256.",
        ),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret", metavar="NAME", help="Name of the secret in config for --signature."
        ),
    ] = None,
    trigger_id: Annotated[
        str | None,
        typer.Option(
            "--trigger-id", metavar="TRIGGER", help="Name of the trigger (default: its type)."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Accept an --at time that has already passed.")
    ] = False,
) -> None:
    """Add a trigger: exactly one of --cron, --at, --every, --webhook."""
    from daycare_cli.cli.edits import given_on_command_line
    from daycare_cli.cli.task_cmds import finish_change
    from daycare_cli.core.taskchange import Change, frontmatter_data, trigger_mapping

    cli = get_context(ctx)
    entry = cli.store.load(task_id)
    task = entry.require()
    raw = frontmatter_data(entry.text or "", str(entry.path))
    existing_ids = {t.id for t in task.triggers}
    if trigger_id is not None and trigger_id in existing_ids:
        raise UsageError(
            f"task {task_id!r} already has a trigger {trigger_id!r}",
            hint="choose another --trigger-id",
        )
    if at is not None:
        from daycare_cli.cli.edits import resolve_at

        at = resolve_at(cli, at, tz or cli.task_zone(task), force=force)
    with given_on_command_line():
        new = trigger_mapping(
            cron=cron,
            at=at,
            every=every,
            webhook=webhook,
            timezone=tz,
            signature=signature,
            secret=secret,
            trigger_id=trigger_id,
        )
    change = Change()
    if not task.triggers and set(new) == {"cron"}:
        change.set_keys["schedule"] = new["cron"]
    else:
        current = current_trigger_list(raw)
        change.set_keys["triggers"] = [*current, new]
        if "schedule" in raw:
            change.unset.append("schedule")
    finish_change(cli, entry, change, raw)


def current_trigger_list(raw: dict[str, Any]) -> list[Any]:
    """The file's triggers as `triggers:` entries, with a `schedule` shorthand turned into one."""
    entries: list[Any] = []
    if raw.get("schedule") is not None:
        entries.append({"cron": raw["schedule"]})
    listed = raw.get("triggers")
    if isinstance(listed, list):
        entries.extend(listed)
    return entries


def rm(
    ctx: typer.Context,
    task_id: TaskId,
    trigger_id: Annotated[
        str,
        typer.Argument(
            metavar="TRIGGER", help="Id of the trigger (see `task show`).", show_default=False
        ),
    ],
) -> None:
    """Remove a trigger; removing the last one leaves a task you run by hand."""
    from daycare_cli.cli.task_cmds import finish_change
    from daycare_cli.core.taskchange import Change, frontmatter_data

    cli = get_context(ctx)
    entry = cli.store.load(task_id)
    task = entry.require()
    ids = [t.id for t in task.triggers]
    if trigger_id not in ids:
        names = ", ".join(ids) if ids else "none"
        raise NotFoundError(
            f"task {task_id!r} has no trigger {trigger_id!r}",
            path=str(entry.path),
            hint=f"its triggers: {names}",
        )
    raw = frontmatter_data(entry.text or "", str(entry.path))
    entries = current_trigger_list(raw)
    if len(entries) != len(ids):
        raise UsageError(
            "cannot match the file's triggers to their ids",
            path=str(entry.path),
            hint=f"edit the file with `daycare task edit {task_id}`",
        )
    index = ids.index(trigger_id)
    has_schedule = raw.get("schedule") is not None
    found = raw.get("triggers")
    listed: list[Any] = found if isinstance(found, list) else []
    change = Change()
    if has_schedule and index == 0:
        change.unset.append("schedule")  # the shorthand's trigger: one line goes
    else:
        position = index - 1 if has_schedule else index
        rest = listed[:position] + listed[position + 1 :]
        if rest:
            change.set_keys["triggers"] = rest
        else:
            change.unset.append("triggers")
    finish_change(cli, entry, change, raw)
