"""The Typer application: the root command, its global options and the command groups.

Each group lives in its own module with a `register(parent)` function, so adding
`runs`, `events`, `daemon` and friends is one import and one call in `build_app()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from daycare_cli.cli.context import CliContext
from daycare_cli.cli.params import HelpGroup, plain_usage

GLOBAL_OPTIONS = ("--home", "--tasks-dir", "--config")

HELP = """daycare: Markdown task files with schedules, run by a local daemon.

Global options (--home, --tasks-dir, --config) may also follow the command, e.g.
`daycare task lint --tasks-dir tasks.example`.

Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 invalid task file.
"""


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options found after a command to the front, where click expects them.

    Users write `daycare task ls --tasks-dir X`; click only accepts a group's options
    before its subcommand. Arguments after `--` are left alone.
    """
    front: list[str] = []
    rest: list[str] = []
    prefixes = tuple(f"{name}=" for name in GLOBAL_OPTIONS)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in GLOBAL_OPTIONS and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 2
            continue
        if arg.startswith(prefixes):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


class RootGroup(HelpGroup):
    """The `daycare` group: hoists global options and renders user errors without tracebacks."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Parse the arguments after hoisting global options to the front."""
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def invoke(self, ctx: Any) -> Any:
        """Run the command; a UserError becomes a rendered message and its exit code."""
        from daycare_cli.core.errors import UserError

        try:
            return super().invoke(ctx)
        except UserError as err:
            from daycare_cli.cli.render import render_error

            render_error(err)
            raise typer.Exit(err.exit_code) from None


def version_callback(value: bool) -> None:
    """Print the version and stop (the slow path; entry.main answers `--version` alone)."""
    if value:
        from daycare_cli import __version__

        typer.echo(f"daycare {__version__}")
        raise typer.Exit()


def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            metavar="DIR",
            help="Home directory; must exist (default: $DAYCARE_HOME, else platformdirs).",
        ),
    ] = None,
    tasks_dir: Annotated[
        Path | None,
        typer.Option(
            "--tasks-dir", metavar="DIR", help="Tasks directory (default: <home>/tasks or config)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Config file (default: $DAYCARE_CONFIG, else platformdirs).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Keep the global options for the commands; nothing is read until one needs it."""
    ctx.obj = CliContext(home=home, tasks_dir=tasks_dir, config_file=config)


def build_app() -> typer.Typer:
    """The `daycare` Typer application with every command group registered."""
    from daycare_cli.cli import (
        config_cmds,
        cron_cmds,
        daemon_cmds,
        deps_cmds,
        export_cmds,
        history_cmds,
        overview_cmds,
        run_cmds,
        task_cmds,
        trigger_cmds,
    )

    app = typer.Typer(
        cls=RootGroup,
        help=HELP,
        add_completion=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(root)

    task_app = task_cmds.register(app)
    trigger_cmds.register(task_app)
    overview_cmds.register(app)
    cron_cmds.register(app)
    config_cmds.register(app)
    run_cmds.register_task_commands(task_app)
    history_cmds.register(app)
    daemon_cmds.register(app)
    export_cmds.register(app)
    deps_cmds.register(app)
    plain_usage(app)
    return app
