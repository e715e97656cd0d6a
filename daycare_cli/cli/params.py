"""Typer parameters shared by several commands: task ids (with shell completion), --json,
and the group class that makes a bare group print its help.

Metavars follow one style everywhere: an upper-case word for what the value is (`TASK`,
`RUN`, `ZONE`, `WHEN`, `DURATION`, `N`); `tests/cli/test_help.py` walks the app to hold
every command to it. Kept apart from `context.py` so the `task ls` fast path never
imports Typer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec

import typer
from typer.core import TyperCommand, TyperGroup

from daycare_cli.cli.context import CliContext

P = ParamSpec("P")


class HelpGroup(TyperGroup):
    """A command group that prints its help and exits 0 when called without a command.

    (click's `no_args_is_help` prints it on stderr and exits 2, as for a mistake.)
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Show the help for a bare group; otherwise parse as usual."""
        if not args and not ctx.resilient_parsing:
            typer.echo(ctx.get_help().rstrip("\n"))
            ctx.exit(0)
        return list(super().parse_args(ctx, args))


class Command(TyperCommand):
    """A command whose usage line writes arguments as their metavars: `TASK`, not Typer's
    `{TASK}` for a required one (optional ones keep their brackets)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """The usage line's pieces with `{X}` written `X`."""
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


def plain_usage(app: typer.Typer) -> None:
    """Make every command of `app` and its groups a `Command` (one place, after building)."""
    for info in app.registered_commands:
        if not info.cls or info.cls is TyperCommand:  # the default
            info.cls = Command
    for sub in app.registered_groups:
        if sub.typer_instance is not None:
            plain_usage(sub.typer_instance)


def typed_values(command: Callable[P, None]) -> Callable[P, None]:
    """A command whose arguments are all typed values (no task file): its schedule and
    task-file errors exit 2, as usage errors, not 4."""

    @functools.wraps(command)
    def checked(*args: P.args, **kwargs: P.kwargs) -> None:
        from daycare_cli.cli.edits import given_on_command_line

        with given_on_command_line():
            command(*args, **kwargs)

    return checked


def group(name: str, help: str) -> typer.Typer:
    """A sub-command group: help on a bare call, `-h` as well as `--help`."""
    return typer.Typer(name=name, help=help, cls=HelpGroup)


def cli_context(ctx: typer.Context) -> CliContext:
    """The global options of the command being completed."""
    params = ctx.find_root().params
    return CliContext(
        home=params.get("home"),
        tasks_dir=params.get("tasks_dir"),
        config_file=params.get("config"),
    )


def complete_task_id(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of task ids: the task files of the tasks directory in use."""
    try:
        ids = [path.name[:-3] for path in cli_context(ctx).store.files()]
    except Exception:  # completion must never break the shell, whatever is on disk
        return []
    return [i for i in ids if i.startswith(incomplete)]


def complete_run_ref(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of run references: `last`, task ids, then recent run ids."""
    found = [w for w in ("last",) if w.startswith(incomplete)]
    found += complete_task_id(ctx, incomplete)
    try:
        from daycare_cli.store.state import State

        db = cli_context(ctx).paths.state_db
        if not db.exists():  # completing must not create a home
            return found
        with State.open(db) as state:
            found += [r.id for r in state.list_runs(limit=50) if r.id.startswith(incomplete)]
    except Exception:  # as above: never break the shell
        pass
    return found


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

TaskId = Annotated[
    str,
    typer.Argument(
        metavar="TASK",
        help="Task id (the file name without .md).",
        autocompletion=complete_task_id,
        show_default=False,
    ),
]

RunRef = Annotated[
    str,
    typer.Argument(
        metavar="RUN",
        help="Run id, a unique prefix of one, `last`, or a task id for that task's latest run.",
        autocompletion=complete_run_ref,
        show_default=False,
    ),
]

TaskFilter = Annotated[
    str | None,
    typer.Option(
        "--task",
        metavar="TASK",
        help="Only this task (a task id; deleted tasks with history count).",
        autocompletion=complete_task_id,
    ),
]

LimitOpt = Annotated[int, typer.Option("--limit", "-n", metavar="N", min=1, help="How many.")]
