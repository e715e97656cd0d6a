"""`daycare task create`: a new task file from options, or from $EDITOR on a template."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from daycare_cli.cli import render
from daycare_cli.cli.context import get_context
from daycare_cli.cli.lint_cmds import task_warnings
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
    from daycare_cli.core.task import Task

TEMPLATE_BODY = """\
Write the prompt here: what should happen when this task fires.
Without a model, this text itself is delivered as a reminder.
"""


def check_task_id(task_id: str) -> str:
    """Validate an id given with --id."""
    from daycare_cli.core.task import TASK_ID_RULE, valid_task_id

    if not valid_task_id(task_id):
        raise UsageError(f"{task_id!r} is not a valid task id", hint=f"use {TASK_ID_RULE}")
    return task_id


def create(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME", help="Task name; the id is made from it.", show_default=False
        ),
    ],
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
        str | None,
        typer.Option("--id", metavar="TASK", help="Task id (default: made from the name)."),
    ] = None,
    if_not_exists: Annotated[
        bool,
        typer.Option(
            "--if-not-exists",
            help="When a task of that id exists, leave it and exit 0 (for scripts).",
        ),
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Create a task file. Without --prompt or --prompt-file, opens $EDITOR on a template.

    Refuses a name whose id is taken by a task (--if-not-exists accepts it), an unknown
    model and an --at time that has passed (--force writes it anyway).
    """
    from rich.text import Text

    from daycare_cli.cli.editor import edit_until_valid
    from daycare_cli.cli.edits import check_model, given_on_command_line, read_prompt, resolve_at
    from daycare_cli.core.taskchange import check_zone_option, new_task_fields
    from daycare_cli.core.taskedit import render_task
    from daycare_cli.core.taskfile import parse_task
    from daycare_cli.core.taskid import slugify

    cli = get_context(ctx)
    store = cli.store
    with given_on_command_line():
        check_zone_option(tz)
    check_model(model)
    if at is not None:
        at = resolve_at(cli, at, tz or cli.default_zone, force=force)
    with given_on_command_line():
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

    wanted = check_task_id(task_id) if task_id is not None else slugify(name)
    existing = store.paths.task_file(wanted)
    if existing.exists():
        if if_not_exists:
            render.console().print(
                Text.assemble(
                    "Task ", (wanted, "bold"), " exists: ", render.display_path(existing),
                    " (unchanged)",
                )
            )  # fmt: skip
            return
        raise UserError(
            f"task {wanted!r} already exists ({render.display_path(existing)})",
            hint=f"change it with `daycare task update {wanted}`, choose another "
            f"{'--id' if task_id else 'name or --id'}, or pass --if-not-exists",
        )
    new_id = store.new_id(wanted)
    if task_id is not None and new_id != task_id:
        raise UserError(
            f"task id {task_id!r} is kept by a deleted task's archive or history",
            hint="choose another --id, or leave it out to get a fresh one",
        )
    if new_id != wanted:
        render.warn(
            f"the id {wanted!r} is kept by a deleted task's archive or history; "
            f"this task is {new_id!r}"
        )
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
        task = validate(text)
    else:
        text = render_task(fields, body)
        with given_on_command_line():
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
