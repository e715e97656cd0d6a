"""What people type to name a run or filter by a task, resolved against the state database.

A run is named by its full id, a unique prefix of it (like git), `last` (the newest run
of all), or a task id (that task's newest run). Filters (`--task`, `--status`) refuse
values that match nothing, so a typo never reads as "no runs".
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from daycare_cli.core.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from daycare_cli.cli.context import CliContext
    from daycare_cli.store.rows import Run
    from daycare_cli.store.state import State

FULL_RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]+$")
RUN_HINT = (
    "name a run by its id, a unique prefix of it, `last`, or a task id; see `daycare runs ls`"
)


def task_known(cli: CliContext, state: State, task: str) -> bool:
    """A task id with a file, a workspace or runs (deleted tasks keep their history)."""
    from daycare_cli.core.task import valid_task_id

    return valid_task_id(task) and (
        cli.store.dir.joinpath(f"{task}.md").exists()
        or cli.paths.workspace(task).is_dir()
        or bool(state.list_runs(task=task, limit=1))
    )


def check_task_filter(cli: CliContext, state: State, task: str | None) -> None:
    """Refuse a `--task` that names no task, live or deleted (exit 3, with a close match)."""
    if task is None or task_known(cli, state, task):
        return
    import difflib

    ids = [p.name[:-3] for p in cli.store.files()]
    close = difflib.get_close_matches(task, ids, n=1)
    hint = f"did you mean `{close[0]}`?" if close else "list tasks with `daycare task ls`"
    raise NotFoundError(f"no task {task!r}: no task file and no history", hint=hint)


def check_status_filter(status: str | None) -> None:
    """Refuse a `--status` that is not a run status (exit 2, listing the statuses)."""
    from daycare_cli.store.rows import STATUSES

    if status is None or status in STATUSES:
        return
    import difflib

    close = difflib.get_close_matches(status, STATUSES, n=1)
    hint = f"did you mean `{close[0]}`? " if close else ""
    raise UsageError(
        f"--status {status!r} is not a run status",
        hint=f"{hint}statuses: {', '.join(STATUSES)}",
    )


def resolve_run(cli: CliContext, state: State, ref: str) -> Run:
    """The run `ref` names: a full id, `last`, a task id (its newest run), or an id prefix.

    NotFoundError (exit 3) when nothing matches; UsageError (exit 2) for an ambiguous prefix.
    """
    ref = ref.strip()
    if ref == "last":
        newest = state.list_runs(limit=1)
        if not newest:
            raise NotFoundError("there are no runs yet", hint="run a task: `daycare task run TASK`")
        return newest[0]
    if not FULL_RUN_ID.match(ref) and task_known(cli, state, ref):
        newest = state.list_runs(task=ref, limit=1)
        if not newest:
            raise NotFoundError(
                f"task {ref!r} has no runs yet", hint=f"run it: `daycare task run {ref}`"
            )
        return newest[0]
    run = state.get_run(ref) if ref else None
    if run is None:
        raise NotFoundError(f"no run matches {ref!r}", hint=RUN_HINT)
    return run
