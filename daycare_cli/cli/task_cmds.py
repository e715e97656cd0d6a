"""`daycare task ...`: create, list, show, update, edit, delete, enable, disable, lint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from daycare_cli.cli import render
from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.lint_cmds import lint, task_warnings
from daycare_cli.cli.params import JsonFlag, TaskId
from daycare_cli.core.errors import TaskFileError, UsageError, UserError

if TYPE_CHECKING:
    from daycare_cli.core.task import Task
    from daycare_cli.core.taskchange import Change
    from daycare_cli.store.tasks import TaskEntry

TEMPLATE_BODY = """\
Write the prompt here: what should happen when this task fires.
Without a model, this text itself is delivered as a reminder.
"""

ScheduleOpt = Annotated[
    str | None, typer.Option("--schedule", help="Cron expression, e.g. '0 9 * * 1-5'.")
]
ZoneOpt = Annotated[str | None, typer.Option("--tz", help="IANA time zone, e.g. Europe/Berlin.")]
AtOpt = Annotated[
    str | None, typer.Option("--at", help="Fire once at an ISO date and time (2026-11-24T12:00).")
]
EveryOpt = Annotated[str | None, typer.Option("--every", help="Fire at an interval: 90s, 15m, 2h.")]
PromptOpt = Annotated[str | None, typer.Option("--prompt", help="The prompt (the file's body).")]
PromptFileOpt = Annotated[
    str | None, typer.Option("--prompt-file", help="Read the prompt from a file; - reads stdin.")
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="llm model id or alias; 'none' for no model.")
]


def register(parent: typer.Typer) -> typer.Typer:
    """Add the `task` group to the root app; returns it so `task trigger` can join it."""
    app = typer.Typer(name="task", help="Create, list, change and check task files.")
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


# --- shared output -----------------------------------------------------------------------


def print_schedule(cli: CliContext, task: Task, n: int) -> None:
    """The triggers of a task in words and its next `n` fires."""
    from rich.text import Text

    from daycare_cli.cli.summary import describe, task_fires

    out = render.console()
    width = max([len("next"), *(len(t.id) for t in task.triggers)])
    if not task.triggers:
        out.print(Text(f"  no triggers: runs only with `daycare task run {task.id}`"))
    for trigger in task.triggers:
        label = f"  {trigger.id:<{width}}"
        out.print(Text.assemble((label, "bold"), "  ", describe(cli, task, trigger)))
    if not task.enabled:
        out.print(Text(f"  disabled: turn it on with `daycare task enable {task.id}`", "yellow"))
        return
    for i, fire in enumerate(task_fires(cli, task, n)):
        label = f"  {'next' if i == 0 else '':<{width}}"
        when = render.when_text(fire.when, cli.now, fire.zone)
        out.print(Text.assemble((label, "bold"), "  ", when))


def check_task_id(task_id: str) -> str:
    """Validate an id given with --id."""
    from daycare_cli.core.task import valid_task_id

    if not valid_task_id(task_id):
        raise UsageError(
            f"{task_id!r} is not a valid task id",
            hint="use lower-case letters, digits and dashes, at most 63 characters",
        )
    return task_id


# --- commands ----------------------------------------------------------------------------


def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Task name; the id is made from it.")],
    schedule: ScheduleOpt = None,
    tz: ZoneOpt = None,
    at: AtOpt = None,
    every: EveryOpt = None,
    webhook: Annotated[bool, typer.Option("--webhook", help="Fire on an HTTP webhook.")] = False,
    prompt: PromptOpt = None,
    prompt_file: PromptFileOpt = None,
    execute: Annotated[
        bool, typer.Option("--execute", help="Run the <run_python> blocks of the prompt.")
    ] = False,
    once: Annotated[
        bool, typer.Option("--once", help="Archive the task after its first run.")
    ] = False,
    model: ModelOpt = None,
    task_id: Annotated[
        str | None, typer.Option("--id", help="Task id (default: made from the name).")
    ] = None,
) -> None:
    """Create a task file. Without --prompt or --prompt-file, opens $EDITOR on a template."""
    from rich.text import Text

    from daycare_cli.cli.editor import edit_until_valid
    from daycare_cli.cli.edits import read_prompt
    from daycare_cli.core.taskchange import new_task_fields
    from daycare_cli.core.taskedit import render_task
    from daycare_cli.core.taskfile import parse_task

    cli = get_context(ctx)
    store = cli.store
    fields = new_task_fields(
        name,
        schedule=schedule,
        at=at,
        every=every,
        webhook=webhook,
        timezone=tz,
        execute=execute,
        model=model,
        once=once,
    )

    if task_id is not None:
        check_task_id(task_id)
        if store.new_id(task_id) != task_id:
            raise UsageError(
                f"task id {task_id!r} is taken by a task, an archived task or its history",
                hint="choose another --id, or leave it out to get a fresh one",
            )
        new_id = task_id
    else:
        new_id = store.new_id(name)
    path = store.paths.task_file(new_id)

    def validate(text: str) -> Task:
        return parse_task(text, path=str(path), task_id=new_id)

    body = read_prompt(prompt, prompt_file)
    if body is None:
        template = render_task(fields, TEMPLATE_BODY)
        edited = edit_until_valid(
            template, name=f"{new_id}.md", validate=validate, on_error=render.render_error
        )
        if edited is None:
            raise TaskFileError("the task file was not valid; the task was not created")
        if edited == template:
            raise UserError(
                "the template was not changed; the task was not created",
                hint="write the prompt in the editor, or pass --prompt",
            )
        text = edited
    else:
        text = render_task(fields, body)
    task = validate(text)
    written = store.create(new_id, text)
    cli.audit("task.created", new_id, path=str(written))
    render.console().print(Text.assemble("Created ", (render.display_path(written), "bold")))
    print_schedule(cli, task, 3)
    if any(t.type == "webhook" for t in task.triggers):
        hint = f"  url      `daycare webhook url {new_id}` prints it"
        render.console().print(hint, highlight=False, markup=False)
    for message in task_warnings(cli, task):
        render.warn(message)


def ls(
    ctx: typer.Context,
    json_: JsonFlag = False,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Only tasks with this tag (repeatable).")
    ] = None,
) -> None:
    """List task files with their triggers and next fire; invalid files show their error."""
    from daycare_cli.cli.summary import list_tasks

    list_tasks(get_context(ctx), as_json=json_, tags=tag or [])


def show(ctx: typer.Context, task_id: TaskId, json_: JsonFlag = False) -> None:
    """Show a task: frontmatter, triggers, the next 5 fires and the body."""
    from rich.text import Text

    from daycare_cli.cli.summary import iso, task_fires, task_record
    from daycare_cli.core.frontmatter import split_file

    cli = get_context(ctx)
    entry = cli.store.load(task_id)
    task = entry.task
    fires = task_fires(cli, task, 5) if task is not None else []
    if json_:
        record = task_record(cli, entry, fires[:1])
        record["body"] = task.body if task is not None else None
        record["fires"] = [iso(f) for f in fires]
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
    out.print(Text("body", "bold underline"))
    out.print(Text(task.body.rstrip("\r\n")))


def update(
    ctx: typer.Context,
    task_id: TaskId,
    name: Annotated[str | None, typer.Option("--name", help="New name (the id stays).")] = None,
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
        typer.Option("--set", help="Set a frontmatter key: KEY=VALUE (a YAML value)."),
    ] = None,
    unset: Annotated[
        list[str] | None, typer.Option("--unset", help="Remove a frontmatter key.")
    ] = None,
) -> None:
    """Change a task file in place: only the lines of the changed keys are rewritten.

    --schedule, --at and --every replace the task's time triggers and keep its webhooks.
    """
    from daycare_cli.cli.edits import read_prompt
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
    if tz is not None:
        check_zone_option(tz)
        change.set_keys["timezone"] = tz
    if enabled is not None:
        change.set_keys["enabled"] = enabled
    if execute is not None:
        change.set_keys["execute"] = execute
    if model is not None:
        change.set_keys["model"] = model
    plan_time_trigger(change, before, schedule=schedule, at=at, every=every)
    for item in set_ or []:
        key, value = parse_assignment(item)
        change.set_keys[key] = value
    for key in unset or []:
        change.unset.append(key)
        change.set_keys.pop(key, None)
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
