"""Task files made from other schedulers' entries (`daycare import crontab|systemd`).

An imported entry becomes a task that runs the entry's command from a `<run_python>`
block through `subprocess`: its stdout is the run's output, its stderr goes to the run
log, and a non-zero exit fails the run (`SystemExit: N`). No model is set: the output
is delivered as it is, as cron mails it. Pure: texts in, texts out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daycare_cli.core.errors import UserError

# Cron and timers have no time limit; a block's default of 60 s would cut most jobs short.
IMPORTED_TIMEOUT = "15m"

SANDBOX_WARNING = (
    "the command runs in daycare's sandbox: no network and no home directories unless the "
    "task's `sandbox` (network, read, write) allows them"
)


class ImportFileError(UserError):
    """A crontab or unit file that cannot be read into a task."""

    exit_code = 4


@dataclass
class ImportedTask:
    """A task to write: a name for its id, frontmatter fields, the body and warnings."""

    name: str
    fields: dict[str, Any]
    body: str
    origin: str  # path:line of what it was made from
    warnings: list[str] = field(default_factory=list)
    task_id: str | None = None  # a fixed id (a daycare export names its task)
    text: str | None = None  # the whole file, when it is not rendered from fields and body


def _literal(text: str) -> str:
    """A Python string literal that cannot close the block it sits in (`</run_python>`)."""
    return repr(text).replace("<", "\\x3c")


def command_body(
    *, shell: str | None = None, argv: list[str] | None = None, stdin: str | None = None
) -> str:
    """A `<run_python>` block running a shell command line (`shell`) or an argument list.

    `shell` runs through `/bin/sh -c` (as cron runs its lines); `argv` runs directly (as
    systemd runs ExecStart=). `stdin` is fed to the command; otherwise it reads nothing.
    """
    if (shell is None) == (argv is None):
        raise ValueError("give exactly one of shell and argv")
    if argv is None:
        assert shell is not None
        command = f'["/bin/sh", "-c", {_literal(shell)}]'
    else:
        command = "[" + ", ".join(_literal(a) for a in argv) + "]"
    return (
        "<run_python>\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        "done = subprocess.run(\n"
        f"    {command},\n"
        f"    input={_literal(stdin or '')},\n"
        "    capture_output=True,\n"
        "    text=True,\n"
        ")\n"
        "sys.stdout.write(done.stdout)\n"
        "sys.stderr.write(done.stderr)\n"
        "if done.returncode:\n"
        "    raise SystemExit(done.returncode)\n"
        "</run_python>\n"
    )


def short_name(command: str, limit: int = 60) -> str:
    """A task name from a command line: its first words, at most `limit` characters."""
    words = " ".join(command.split())
    return words if len(words) <= limit else words[: limit - 1].rstrip() + "…"


def id_source(command: str) -> str:
    """The text a task id is made from: the program's base name and its first argument."""
    words = command.split()
    if not words:
        return "imported"
    program = words[0].rsplit("/", 1)[-1]
    return " ".join([program, *words[1:2]])
