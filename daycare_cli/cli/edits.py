"""Changes the CLI makes to task files: round-trip frontmatter edits, body swaps, triggers.

Every change is validated with the same parser the daemon uses before anything is
written, and written with `TaskStore.save`, which refuses when the file changed on disk
since it was read.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daycare_cli.core.errors import TaskFileError, UsageError

if TYPE_CHECKING:
    from daycare_cli.core.task import Task
    from daycare_cli.store.tasks import TaskEntry, TaskStore


def with_newlines(text: str, newline: str) -> str:
    """`text` with its line endings made `newline`."""
    plain = text.replace("\r\n", "\n")
    return plain.replace("\n", newline) if newline != "\n" else plain


def frontmatter_data(text: str, path: str) -> dict[str, Any]:
    """The frontmatter as plain data ({} when the file has none or it is not a mapping)."""
    import yaml

    from daycare_cli.core.taskfile import split_file

    split = split_file(text, path)
    if not split.frontmatter:
        return {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(split.frontmatter, Loader=loader)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def replace_body(text: str, path: str, body: str) -> str:
    """`text` with its body (everything after the frontmatter) replaced by `body`."""
    from daycare_cli.core.taskfile import split_file

    split = split_file(text, path)
    newline = split.newline
    if split.frontmatter is None:
        prefix = "\ufeff" if split.bom else ""
    else:
        # Task files break lines on "\n" only (see split_file); a CRLF line keeps its "\r".
        prefix = "\n".join(text.split("\n")[: split.body_line - 1])
        prefix += "\n" if prefix.endswith("\r") or newline == "\n" else "\r\n"
    body = with_newlines(body, newline)
    if body and not body.endswith(newline):
        body += newline
    return prefix + body


def read_prompt(prompt: str | None, prompt_file: str | None) -> str | None:
    """The prompt body from `--prompt` or `--prompt-file` (`-` reads stdin), if either is given."""
    if prompt is not None and prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if prompt is not None:
        return prompt
    if prompt_file is None:
        return None
    if prompt_file == "-":
        return sys.stdin.read()
    try:
        return Path(prompt_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no such prompt file: {prompt_file}", path=prompt_file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the prompt file: {exc}", path=prompt_file) from None


def check_zone_option(zone: str | None) -> None:
    """Validate a `--tz` value before it reaches a file."""
    if zone is not None:
        from daycare_cli.core.schedule import check_zone

        check_zone(zone)


def check_cron_option(expr: str) -> None:
    """Validate a cron expression given on the command line (errors point into it)."""
    from daycare_cli.core.schedule import normalize_cron

    normalize_cron(expr)


def check_every_option(value: str) -> None:
    """Validate an `--every` duration."""
    from daycare_cli.core.duration import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(str(exc), hint="e.g. --every 15m") from None
    if seconds < 1:
        raise UsageError("--every must be at least 1s", hint="e.g. --every 15m")


def check_at_option(value: str) -> None:
    """Validate an `--at` ISO datetime."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--at wants an ISO 8601 date and time, not {value!r}",
            hint="e.g. --at 2026-11-24T12:00 (the task's zone) or 2026-11-24T12:00+01:00",
        ) from None


def trigger_mapping(
    *,
    cron: str | None = None,
    at: str | None = None,
    every: str | None = None,
    webhook: bool = False,
    timezone: str | None = None,
    signature: str | None = None,
    secret: str | None = None,
    trigger_id: str | None = None,
) -> dict[str, Any]:
    """One entry of a `triggers:` list from command-line options (validated here)."""
    given = [name for name, v in (("cron", cron), ("at", at), ("every", every)) if v is not None]
    if webhook:
        given.append("webhook")
    if len(given) != 1:
        raise UsageError(
            "give exactly one of --cron, --at, --every, --webhook",
            hint="add one trigger at a time, e.g. --cron '0 9 * * 1-5'",
        )
    if (signature or secret) and not webhook:
        raise UsageError("--signature and --secret only go with --webhook")
    if timezone is not None and cron is None and at is None:
        raise UsageError("--tz only goes with --cron or --at")
    check_zone_option(timezone)
    entry: dict[str, Any] = {}
    if trigger_id is not None:
        entry["id"] = trigger_id
    if cron is not None:
        check_cron_option(cron)
        entry["cron"] = cron
    elif at is not None:
        check_at_option(at)
        entry["at"] = at
    elif every is not None:
        check_every_option(every)
        entry["every"] = every
    else:
        if bool(signature) != bool(secret):
            raise UsageError(
                "--signature and --secret go together",
                hint="e.g. --signature github --secret github_hook",
            )
        entry["webhook"] = {"signature": signature, "secret": secret} if signature else True
    if timezone is not None:
        entry["timezone"] = timezone
    return entry


@dataclass
class Change:
    """A planned change of one task file: keys to set and unset, and maybe a new body."""

    set_keys: dict[str, Any] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)
    body: str | None = None

    def __bool__(self) -> bool:
        return bool(self.set_keys or self.unset or self.body is not None)


def apply_change(entry: TaskEntry, change: Change) -> tuple[str, Task]:
    """The new text of a file after `change`, and the task it parses to (validated)."""
    from daycare_cli.core.taskfile import parse_task, update_frontmatter

    if entry.text is None:
        raise TaskFileError(
            "the file is not UTF-8 text; edit it by hand",
            path=str(entry.path),
            hint="save it as UTF-8",
        )
    text = entry.text
    if change.set_keys or change.unset:
        text = update_frontmatter(text, change.set_keys, tuple(change.unset))
    if change.body is not None:
        text = replace_body(text, str(entry.path), change.body)
    task = parse_task(text, path=str(entry.path), task_id=entry.id)
    return text, task


def save_change(store: TaskStore, entry: TaskEntry, change: Change) -> tuple[str, Task]:
    """Apply, validate and write a change; refuses when the file changed since it was read."""
    text, task = apply_change(entry, change)
    if text != entry.text:
        store.save(entry, text)
    return text, task


def describe_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Lines saying which frontmatter keys a change set, changed or removed."""
    lines: list[str] = []
    for key in after:
        if key not in before:
            lines.append(f"+ {key}: {short(after[key])}")
        elif before[key] != after[key]:
            lines.append(f"~ {key}: {short(before[key])} -> {short(after[key])}")
    lines.extend(f"- {key}" for key in before if key not in after)
    return lines


def short(value: Any) -> str:
    """A frontmatter value in one short line, JSON-like."""
    import json

    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
