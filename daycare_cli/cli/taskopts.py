"""What `task create` and `task update` share: their options and the schedule they print."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from daycare_cli.cli import render

if TYPE_CHECKING:
    from daycare_cli.cli.context import CliContext
    from daycare_cli.core.task import Task

ScheduleOpt = Annotated[
    str | None,
    typer.Option("--schedule", metavar="EXPR", help="Cron expression, e.g. '0 9 * * 1-5'."),
]
ZoneOpt = Annotated[
    str | None, typer.Option("--tz", metavar="ZONE", help="IANA time zone, e.g. Europe/Berlin.")
]
AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at",
        metavar="WHEN",
        help="Fire once: ISO (2026-11-24T12:00), '+2h', 'in 30m', 'tomorrow 09:00', "
        "'next monday 08:00'; in the task's zone. A past time needs --force.",
    ),
]
EveryOpt = Annotated[
    str | None,
    typer.Option("--every", metavar="DURATION", help="Fire at an interval: 90s, 15m, 2h."),
]
PromptOpt = Annotated[
    str | None, typer.Option("--prompt", metavar="TEXT", help="The prompt (the file's body).")
]
PromptFileOpt = Annotated[
    str | None,
    typer.Option(
        "--prompt-file", metavar="FILE", help="Read the prompt from a file; - reads stdin."
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        metavar="MODEL",
        help="llm model id or alias (checked against `llm models`); 'none' for no model.",
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Accept an --at time that has already passed.")
]


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
        line = Text.assemble((label, "bold"), "  ", when)
        if fire.dst:
            line.append(f"  ({fire.dst})", "yellow")
        out.print(line)
