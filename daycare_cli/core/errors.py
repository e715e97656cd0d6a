"""One exception type per kind of user error, each carrying where and how to fix.

The CLI renders these with Rich and exits with the documented code; tracebacks are for
bugs only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class UserError(Exception):
    """An expected failure caused by input, rendered for people, never as a traceback.

    `line` and `col` are 1-based; 0 means unknown. `excerpt` is the offending source line
    and `caret` the column to point at in it.
    """

    message: str
    path: str | None = None
    line: int = 0
    col: int = 0
    hint: str | None = None
    excerpt: str | None = None

    exit_code = 1

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def where(self) -> str:
        """`path:line:col` (or as much of it as is known)."""
        parts = [self.path or "<input>"]
        if self.line:
            parts.append(str(self.line))
            if self.col:
                parts.append(str(self.col))
        return ":".join(parts)

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}"
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class TaskFileError(UserError):
    """A task file that cannot be read, parsed or validated."""

    exit_code = 4


class ScheduleError(UserError):
    """A schedule (cron, at, every, time zone) that is malformed or never fires."""

    exit_code = 4


class SandboxError(UserError):
    """The sandbox could not be set up to run a block."""

    exit_code = 1


class DependencyError(UserError):
    """A block's Python environment could not be built (uv's message, the fix)."""

    exit_code = 1


class UsageError(UserError):
    """A command-line usage problem (bad option value, conflicting flags)."""

    exit_code = 2


class NotFoundError(UserError):
    """A task, run or trigger that does not exist."""

    exit_code = 3


def as_usage(err: UserError) -> UsageError:
    """The same error as a mistake on the command line (exit 2): a value typed in an
    option is a usage error even when the same text in a task file would be exit 4."""
    return UsageError(err.message, err.path, err.line, err.col, err.hint, err.excerpt)
