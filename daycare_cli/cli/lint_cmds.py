"""`daycare task lint`: check task files as the daemon reads them, errors and warnings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from daycare_cli.cli import render
from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import JsonFlag, complete_task_id
from daycare_cli.core.errors import TaskFileError

if TYPE_CHECKING:
    from daycare_cli.core.task import Task
    from daycare_cli.store.tasks import TaskEntry


def task_warnings(cli: CliContext, task: Task) -> list[str]:
    """Lint warnings and frequency warnings of a valid task, now, in the configured zone."""
    from daycare_cli.core.lint import task_warnings as warnings_of

    warnings = warnings_of(task, now=cli.now, default_zone=cli.default_zone)
    if task.model and task.model.strip().lower() != "none":
        from daycare_cli.cli.edits import unknown_model

        problem = unknown_model(task.model)
        if problem:
            warnings.append(f"model: {problem}; `llm models` lists the models llm knows")
    return warnings


def lint(
    ctx: typer.Context,
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[TASK|FILE]...",
            help="Task ids or paths of .md files (default: every task file).",
            autocompletion=complete_task_id,
        ),
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Check task files; print each error as file:line:col with a fix. Exit 4 if any is invalid."""
    cli = get_context(ctx)
    entries = [lint_entry(cli, t) for t in targets] if targets else cli.store.list()
    results = []
    for entry in entries:
        warnings = task_warnings(cli, entry.task) if entry.task is not None else []
        results.append((entry, warnings))
    invalid = sum(1 for entry, _ in results if entry.error is not None)
    if json_:
        render.print_json([lint_record(entry, warnings) for entry, warnings in results])
    else:
        print_lint(results, invalid)
    if invalid:
        raise typer.Exit(TaskFileError.exit_code)


def lint_entry(cli: CliContext, target: str) -> TaskEntry:
    """A task by id, or a file by path (anything with a slash or ending in .md)."""
    from daycare_cli.store.tasks import read_entry

    if target.endswith(".md") or os.sep in target:
        return read_entry(Path(target).absolute())
    return cli.store.load(target)


def lint_record(entry: TaskEntry, warnings: list[str]) -> dict[str, Any]:
    """`task lint --json`: one object a file."""
    err = entry.error
    return {
        "id": entry.id,
        "path": str(entry.path),
        "valid": err is None,
        "error": render.error_text(err) if err else None,
        "line": err.line if err else None,
        "col": err.col if err else None,
        "hint": err.hint if err else None,
        "warnings": warnings,
    }


def print_lint(results: list[tuple[TaskEntry, list[str]]], invalid: int) -> None:
    """Errors as compilers print them, then warnings, then a count."""
    from rich.text import Text

    out = render.console()
    warned = 0
    for entry, warnings in results:
        if entry.error is not None:
            render.render_error(entry.error, stderr=False)
        for message in warnings:
            warned += 1
            out.print(
                Text.assemble(
                    ("warning:", "bold yellow"), f" {render.display_path(entry.path)}: {message}"
                )
            )
    summary = f"{len(results)} file{'s' if len(results) != 1 else ''} checked"
    summary += f", {invalid} invalid" if invalid else ", all valid"
    if warned:
        summary += f", {warned} warning{'s' if warned != 1 else ''}"
    out.print(Text(summary, "red" if invalid else "green"))
