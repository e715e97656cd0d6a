"""What exporting a task to another scheduler means, whatever the engine (docs/task-file.md).

An export is honest about what does not carry over: each task's `TaskExport` holds its
files, `warnings` (settings of the task the engine cannot honour: shown on stderr, written
into the files, errors under `--strict`) and `notes` (how a setting was translated when
the translation is close but not exact: written into the files only).

The engines run the task through `daycare task run --file TASK.md`, the one-shot mode that
needs no daemon and no prior state; `oneshot_args` is that command line.
Pure: no I/O; "now" is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daycare_cli.core.task import SECRET_REF_RE, Task, WebhookTrigger

# `${secret:NAME}` in a task's env (the runner resolves it from config or the environment).

# Extra time the engine's own limit allows past `run_timeout`, so that daycare's limit
# fires first and records the run as `timed_out` (start-up, recording, artifacts).
TIMEOUT_GRACE = 60.0

HEADER = "Exported by `daycare export {engine}` from {source}; edit the task, then export again."


@dataclass
class TaskExport:
    """One task's files for an engine, and what did not carry over."""

    task_id: str
    files: dict[str, str] = field(default_factory=dict)  # file name -> text
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def secret_names(task: Task) -> list[str]:
    """Names of the config secrets a task's env takes (`${secret:NAME}`), sorted."""
    return sorted({m for value in task.env.values() for m in SECRET_REF_RE.findall(value)})


def secret_env_name(name: str) -> str:
    """The environment variable the one-shot mode reads a secret from (as config does)."""
    return "DAYCARE_SECRET_" + name.upper().replace("-", "_")


def oneshot_args(task_file: str, artifacts: str) -> list[str]:
    """`daycare` arguments that run one task file once, with no daemon and no home."""
    return ["task", "run", "--file", task_file, "--artifacts", artifacts]


def every_as_cron(seconds: float) -> str | None:
    """A cron expression (in UTC) firing every `seconds`, aligned to the clock, or None.

    Only intervals that divide an hour or a day evenly have one: 15m is `*/15 * * * *`,
    2h is `0 */2 * * *`, 1d is `0 0 * * *`; 7m or 90m have none.
    """
    if seconds <= 0 or seconds % 60:
        return None
    minutes = int(seconds // 60)
    if minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    if minutes % 60 == 0:
        hours = minutes // 60
        if hours < 24 and 24 % hours == 0:
            return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
        if hours == 24:
            return "0 0 * * *"
    return None


def common_warnings(task: Task, engine: str) -> list[str]:
    """Warnings every engine shares: webhooks, deletion after a run, a disabled task."""
    out: list[str] = []
    for trigger in task.triggers:
        if isinstance(trigger, WebhookTrigger):
            out.append(
                f"trigger `{trigger.id}` (webhook): {engine} has no webhooks; it does not "
                "carry over (keep the daycare daemon for it, or start the run from your CI)"
            )
    if task.delete_after_run:
        out.append(
            f"delete_after_run: {engine} keeps firing after the first run; remove the "
            "exported files once it has run"
        )
    return out


def comment_lines(lines: list[str], prefix: str = "# ") -> str:
    """Lines as comments, one item per line, continuation lines indented."""
    out: list[str] = []
    for line in lines:
        first, *rest = line.split("\n")
        out.append(prefix + first)
        out.extend(prefix + "  " + more for more in rest)
    return "".join(text.rstrip() + "\n" for text in out)


def report_lines(export: TaskExport) -> list[str]:
    """The comment block of an exported file: warnings first, then notes."""
    lines = [f"warning: {w}" for w in export.warnings]
    lines += [f"note: {n}" for n in export.notes]
    return lines
