"""`daycare task ...`: create, list, show, update, edit, delete, enable, disable, lint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from daycare_cli.cli import render
from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.lint_cmds import lint, task_warnings
from daycare_cli.cli.params import JsonFlag, TaskId, group
from daycare_cli.cli.taskopts import (
    AtOpt,
    EveryOpt,
    ForceOpt,
    ModelOpt,
    PromptFileOpt,
    PromptOpt,
    ScheduleOpt,
    ZoneOpt,
    print_schedule,
)
from daycare_cli.core.errors import TaskFileError, UsageError, UserError

if TYPE_CHECKING:
    from daycare_cli.core.taskchange import Change
    from daycare_cli.store.tasks import TaskEntry


def register(parent: typer.Typer) -> typer.Typer:
    """Add the `task` group to the root app; returns it so `task trigger` can join it."""
    from daycare_cli.cli.create_cmds import create

    app = group("task", "Create, list, change and check task files.")
    app.command("create")(create)
    app.command("ls")(ls)
    app.command("show")(show)
    app.command("update")(update)
    app.command("edit")(edit)
    app.command("delete")(delete)
    app.command("enable")(enable)
    app.command("disable")(disable)
    app.command("lint")(lint)
    parent.add_typer(app)
    return app


# --- commands ----------------------------------------------------------------------------


def ls(
    ctx: typer.Context,
    json_: JsonFlag = False,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Only tasks with this tag (repeatable)."),
    ] = None,
) -> None:
    """List task files with their triggers and next fire; invalid files show their error."""
    from daycare_cli.cli.summary import list_tasks

    list_tasks(get_context(ctx), as_json=json_, tags=tag or [])


def show(ctx: typer.Context, task_id: TaskId, json_: JsonFlag = False) -> None:
    """Show a task: frontmatter, triggers, the next 5 fires and the body."""
    from rich.text import Text

    from daycare_cli.cli.summary import (
        iso,
        last_run_cell,
        last_run_record,
        last_runs,
        task_fires,
        task_record,
    )
    from daycare_cli.core.frontmatter import split_file

    cli = get_context(ctx)
    entry = cli.store.load(task_id)
    task = entry.task
    fires = task_fires(cli, task, 5) if task is not None else []
    if json_:
        record = task_record(cli, entry, fires[:1])
        record["last_run"] = last_run_record(last_runs(cli).get(entry.id))
        record["body"] = task.body if task is not None else None
        record["fires"] = [iso(f) for f in fires]
        record["fires_dst"] = [f.dst for f in fires]  # one a fire: a DST note or null
        render.print_json(record)
        if entry.error is not None:
            raise typer.Exit(entry.error.exit_code)
        return
    if task is None:
        assert entry.error is not None
        raise entry.error
    assert entry.text is not None
    split = split_file(entry.text, str(entry.path))
    out = render.console()
    out.print(
        Text.assemble(
            (task.id, "bold"), "  ", task.name, "  ", (render.display_path(entry.path), "dim")
        )
    )
    out.print(Text("frontmatter", "bold underline"))
    out.print(Text((split.frontmatter or "").rstrip("\r\n")))
    out.print(Text("triggers", "bold underline"))
    print_schedule(cli, task, 5)
    last = last_runs(cli).get(task.id)
    if last is not None:
        words, style = last_run_cell(last, cli.now)
        out.print(Text.assemble(("  last", "bold"), "  ", (words, style), f"  (run {last.id})"))
    out.print(Text("body", "bold underline"))
    out.print(Text(task.body.rstrip("\r\n")))


def update(
    ctx: typer.Context,
    task_id: TaskId,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="New name (the id stays).")
    ] = None,
    schedule: ScheduleOpt = None,
    tz: ZoneOpt = None,
    at: AtOpt = None,
    every: EveryOpt = None,
    enabled: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Turn the task on or off.")
    ] = None,
    execute: Annotated[
        bool | None,
        typer.Option("--execute/--no-execute", help="Run the <run_python> blocks or not."),
    ] = None,
    model: ModelOpt = None,
    prompt: PromptOpt = None,
    prompt_file: PromptFileOpt = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="KEY=VALUE", help="Set a frontmatter key (VALUE is read as YAML)."
        ),
    ] = None,
    unset: Annotated[
        list[str] | None,
        typer.Option("--unset", metavar="KEY", help="Remove a frontmatter key (repeatable)."),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Change a task file in place: only the lines of the changed keys are rewritten.

    --schedule, --at and --every replace the task's time triggers and keep its webhooks.
    """
    from daycare_cli.cli.edits import check_model, given_on_command_line, read_prompt, resolve_at
    from daycare_cli.core.taskchange import (
        Change,
        check_zone_option,
        frontmatter_data,
        parse_assignment,
        plan_time_trigger,
    )

    cli = get_context(ctx)
    entry = cli.store.load(task_id)
    before = frontmatter_data(entry.text or "", str(entry.path))
    change = Change()
    if name is not None:
        change.set_keys["name"] = name
    with given_on_command_line():
        check_zone_option(tz)
    if tz is not None:
        change.set_keys["timezone"] = tz
    if enabled is not None:
        change.set_keys["enabled"] = enabled
    if execute is not None:
        change.set_keys["execute"] = execute
    if model is not None:
        change.set_keys["model"] = model
    if at is not None:
        zone = tz or (cli.task_zone(entry.task) if entry.task else cli.default_zone)
        at = resolve_at(cli, at, zone, force=force)
    with given_on_command_line():
        plan_time_trigger(change, before, schedule=schedule, at=at, every=every)
    for item in set_ or []:
        key, value = parse_assignment(item)
        change.set_keys[key] = value
    for key in unset or []:
        change.unset.append(key)
        change.set_keys.pop(key, None)
    if isinstance(change.set_keys.get("model"), str):
        check_model(change.set_keys["model"])
    change.body = read_prompt(prompt, prompt_file)
    if not change:
        raise UsageError(
            "nothing to update", hint="pass what to change, e.g. --schedule '0 10 * * *'"
        )
    finish_change(cli, entry, change, before)


def finish_change(
    cli: CliContext, entry: TaskEntry, change: Change, before: dict[str, Any]
) -> None:
    """Validate and write a change, then say what changed and when the task fires next."""
    from rich.text import Text

    from daycare_cli.cli.edits import describe_changes, save_change
    from daycare_cli.core.taskchange import frontmatter_data

    text, task = save_change(cli.store, entry, change)
    if text != entry.text:
        cli.audit("task.updated", entry.id, path=str(entry.path))
    out = render.console()
    if text == entry.text:
        out.print(
            Text.assemble(
                "No change: ", (render.display_path(entry.path), "bold"), " already says so"
            )
        )
    else:
        out.print(Text.assemble("Updated ", (render.display_path(entry.path), "bold")))
        after = frontmatter_data(text, str(entry.path))
        for line in describe_changes(before, after):
            out.print(Text("  " + line))
        if entry.task is not None and task.body != entry.task.body:
            out.print(Text("  ~ body"))
    print_schedule(cli, task, 3)
    for message in task_warnings(cli, task):
        render.warn(message)


def set_enabled(ctx: typer.Context, task_id: str, value: bool) -> None:
    """Set `enabled` with a one-line edit."""
    from daycare_cli.core.taskchange import Change, frontmatter_data

    cli = get_context(ctx)
    entry = cli.store.load(task_id)
    if entry.task is not None and entry.task.enabled == value:
        # Nothing to write: `enable` of a file without the key must not add `enabled: true`.
        state = "enabled" if value else "disabled"
        render.console().print(f"{task_id} is already {state}", markup=False)
        return
    before = frontmatter_data(entry.text or "", str(entry.path))
    finish_change(cli, entry, Change(set_keys={"enabled": value}), before)


def enable(ctx: typer.Context, task_id: TaskId) -> None:
    """Turn a task on (enabled: true)."""
    set_enabled(ctx, task_id, True)


def disable(ctx: typer.Context, task_id: TaskId) -> None:
    """Turn a task off (enabled: false); the file stays."""
    set_enabled(ctx, task_id, False)


def edit(ctx: typer.Context, task_id: TaskId) -> None:
    """Edit a task file in $EDITOR; it is saved only when valid (like crontab -e)."""
    from rich.text import Text

    from daycare_cli.cli.editor import edit_until_valid
    from daycare_cli.core.taskfile import parse_task

    cli = get_context(ctx)
    entry = cli.store.load(task_id)
    if entry.text is None:
        raise TaskFileError(
            "the file is not UTF-8 text", path=str(entry.path), hint="save it as UTF-8"
        )
    original = entry.text

    def validate(text: str) -> None:
        if text != original:
            parse_task(text, path=str(entry.path), task_id=entry.id)

    edited = edit_until_valid(
        original, name=entry.path.name, validate=validate, on_error=render.render_error
    )
    out = render.console()
    if edited is None:
        raise TaskFileError(
            "the edit was not valid and was discarded; the task file is unchanged",
            path=str(entry.path),
        )
    if edited == original:
        out.print(Text(f"No changes to {render.display_path(entry.path)}."))
        return
    cli.store.save(entry, edited)
    cli.audit("task.edited", entry.id, path=str(entry.path))
    task = parse_task(edited, path=str(entry.path), task_id=entry.id)
    out.print(Text.assemble("Saved ", (render.display_path(entry.path), "bold")))
    print_schedule(cli, task, 3)
    for message in task_warnings(cli, task):
        render.warn(message)


def delete(
    ctx: typer.Context,
    task_id: TaskId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Archive a task file to tasks/.archive/; its id is not reused while history exists."""
    from rich.text import Text

    cli = get_context(ctx)
    cli.store.load(task_id)  # not found -> exit 3 before asking anything
    if not yes:
        try:
            sure = typer.confirm(f"Archive task {task_id}?", default=False, err=True)
        except (typer.Abort, EOFError):
            sure = False
        if not sure:
            raise UserError("not deleted", hint="pass --yes to skip the question")
    target = cli.store.archive(task_id)
    cli.audit("task.archived", task_id, path=str(target))
    render.console().print(
        Text.assemble(f"Archived {task_id} to ", (render.display_path(target), "bold"))
    )
