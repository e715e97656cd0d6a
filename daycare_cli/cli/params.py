"""Typer parameters shared by several commands: task ids (with shell completion), --json.

Kept apart from `context.py` so the `task ls` fast path never imports Typer.
"""

from __future__ import annotations

from typing import Annotated

import typer

from daycare_cli.cli.context import CliContext


def complete_task_id(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of task ids: the task files of the tasks directory in use."""
    params = ctx.find_root().params
    cli = CliContext(
        home=params.get("home"),
        tasks_dir=params.get("tasks_dir"),
        config_file=params.get("config"),
    )
    try:
        ids = [path.name[:-3] for path in cli.store.files()]
    except Exception:  # completion must never break the shell, whatever is on disk
        return []
    return [i for i in ids if i.startswith(incomplete)]


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

TaskId = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="Task id (the file name without .md).",
        autocompletion=complete_task_id,
    ),
]
