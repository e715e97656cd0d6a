"""Crontab files -> tasks (`daycare import crontab`), read as cronie reads them (crontab(5)).

- Blank lines and lines starting with `#` are ignored.
- `NAME = value` sets a variable for the lines below it (quotes keep blanks). `CRON_TZ`
  is the zone of the schedules below it, `RANDOM_DELAY` (minutes) their jitter, `SHELL`
  the shell, `MAILTO` where cron mailed the output (reported: set `notify` for it); other
  variables become the task's `env`.
- An entry is 5 time fields (or an `@` macro: `@reboot`, `@daily`, …), then, in the
  system crontab (`/etc/crontab`, `/etc/cron.d/*`), a user name, then the command.
- In the command, an unescaped `%` ends the command line: the rest is its standard input,
  each further `%` a newline; `\\%` is a literal `%`.
Pure: the file's text in, ImportedTask values out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from daycare_cli.core.errors import ScheduleError
from daycare_cli.core.imported import (
    IMPORTED_TIMEOUT,
    SANDBOX_WARNING,
    ImportedTask,
    ImportFileError,
    command_body,
    id_source,
    short_name,
)
from daycare_cli.core.schedule import normalize_cron

_ENV_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_FIELDS_RE = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)(\s+)(.*)$")
# Variables cron itself reads; they do not reach the task's env.
CRON_VARIABLES = ("MAILTO", "MAILFROM", "SHELL", "CRON_TZ", "RANDOM_DELAY", "HOME", "LOGNAME")


@dataclass(frozen=True)
class CrontabEntry:
    """One scheduled line: where, when, what, and the variables set above it."""

    line: int
    schedule: str
    command: str  # the command line, before the first unescaped %
    stdin: str | None  # what follows it, with % as newlines
    env: dict[str, str]
    user: str | None = None


def split_percent(text: str) -> tuple[str, str | None]:
    """(command, stdin) of a crontab command: cronie's `%` rules."""
    command: list[str] = []
    stdin: list[str] | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        target = command if stdin is None else stdin
        if ch == "\\" and i + 1 < len(text) and text[i + 1] == "%":
            target.append("%")
            i += 2
            continue
        if ch == "%":
            if stdin is None:
                stdin = []
            else:
                stdin.append("\n")
        else:
            target.append(ch)
        i += 1
    if stdin is None:
        return "".join(command), None
    data = "".join(stdin)
    return "".join(command), data if data.endswith("\n") or not data else data + "\n"


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_crontab(text: str, *, path: str, system: bool = False) -> list[CrontabEntry]:
    """The entries of a crontab; ImportFileError (path:line:col, fix) for a bad line."""
    env: dict[str, str] = {}
    entries: list[CrontabEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_RE.match(line)
        if match:
            env[match.group(1)] = _unquote(match.group(2))
            continue
        indent = len(raw) - len(raw.lstrip())
        if line.startswith("@"):
            schedule, rest = [*re.split(r"\s+", line, maxsplit=1), ""][:2]
        else:
            fields = _FIELDS_RE.match(line)
            if fields is None:
                raise ImportFileError(
                    "expected 5 time fields and a command",
                    path=path,
                    line=number,
                    col=indent + 1,
                    hint="e.g. `30 2 * * * /usr/local/bin/backup.sh`",
                    excerpt=raw,
                )
            schedule = " ".join(fields.group(i) for i in range(1, 6))
            rest = fields.group(7)
        try:
            normalize_cron(schedule)
        except ScheduleError as exc:
            raise ImportFileError(
                exc.message,
                path=path,
                line=number,
                col=indent + (exc.col or 1),  # the fields joined by one space: near enough
                hint=exc.hint,
                excerpt=raw,
            ) from None
        user = None
        if system:
            user, rest = [*re.split(r"\s+", rest, maxsplit=1), ""][:2]
        if not rest.strip():
            raise ImportFileError(
                "the entry has no command",
                path=path,
                line=number,
                col=len(raw.rstrip()) + 1,
                hint="write the command after the time fields"
                + (" and the user name" if system else ""),
                excerpt=raw,
            )
        command, stdin = split_percent(rest)
        entries.append(CrontabEntry(number, schedule, command.strip(), stdin, dict(env), user))
    return entries


def entry_task(entry: CrontabEntry, *, path: str) -> ImportedTask:
    """A task that runs a crontab entry's command on its schedule."""
    origin = f"{path}:{entry.line}"
    warnings = [SANDBOX_WARNING]
    fields: dict[str, object] = {
        "name": short_name(entry.command),
        "description": f"Imported from {origin}",
        "schedule": entry.schedule,
    }
    zone = entry.env.get("CRON_TZ")
    if zone:
        fields["timezone"] = zone
    fields.update(execute=True, model="none", timeout=IMPORTED_TIMEOUT)
    delay = entry.env.get("RANDOM_DELAY", "").strip()
    if delay.isdigit() and int(delay):
        fields["jitter"] = f"{int(delay)}m"
    env = {k: v for k, v in entry.env.items() if k not in CRON_VARIABLES}
    if env:
        fields["env"] = env
    mailto = entry.env.get("MAILTO", None)
    if mailto:
        warnings.append(
            f"cron mailed this entry's output to {mailto} (MAILTO); set `notify` "
            "(e.g. an apprise mailto:// URL) to have daycare deliver it"
        )
    if entry.user:
        warnings.append(f"cron ran it as {entry.user}; daycare runs it as the daemon's user")
    if entry.schedule.lower() == "@reboot":
        warnings.append("@reboot fires when the daycare daemon starts, not when the machine boots")
    shell = entry.env.get("SHELL", "/bin/sh")
    if shell == "/bin/sh":
        body = command_body(shell=entry.command, stdin=entry.stdin)
    else:
        body = command_body(argv=[shell, "-c", entry.command], stdin=entry.stdin)
    return ImportedTask(short_name(id_source(entry.command)), fields, body, origin, warnings)
