"""What a change to a task file means: the edit model behind `task create/update/trigger`.

A `Change` is the keys to set and unset and maybe a new body; `apply_change` makes the
new text with `core/taskedit.py` and validates it with the one reader, before anything is
written. The functions here turn command-line values into frontmatter values: a new
task's keys, one `triggers:` entry, replacing the time triggers while keeping webhooks,
and `KEY=VALUE` assignments. Errors name the options, since people give them there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml

from daycare_cli.core.duration import parse_duration
from daycare_cli.core.errors import TaskFileError, UsageError
from daycare_cli.core.frontmatter import split_file
from daycare_cli.core.schedule import check_zone, normalize_cron
from daycare_cli.core.task import Task
from daycare_cli.core.taskedit import replace_body, update_frontmatter
from daycare_cli.core.taskfile import parse_task
from daycare_cli.core.yamlrules import LOADER


@dataclass
class Change:
    """A planned change of one task file: keys to set and unset, and maybe a new body."""

    set_keys: dict[str, Any] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)
    body: str | None = None

    def __bool__(self) -> bool:
        return bool(self.set_keys or self.unset or self.body is not None)


def apply_change(text: str | None, change: Change, *, path: str, task_id: str) -> tuple[str, Task]:
    """The new text of a file after `change`, and the task it parses to (validated).

    `text` is None for a file that is not UTF-8 text: such a file is not edited.
    """
    if text is None:
        raise TaskFileError(
            "the file is not UTF-8 text; edit it by hand",
            path=path,
            hint="save it as UTF-8",
        )
    if change.set_keys or change.unset:
        text = update_frontmatter(text, change.set_keys, tuple(change.unset))
    if change.body is not None:
        text = replace_body(text, path, change.body)
    task = parse_task(text, path=path, task_id=task_id)
    return text, task


def frontmatter_data(text: str, path: str) -> dict[str, Any]:
    """The frontmatter as plain data ({} when the file has none or it is not a mapping)."""
    split = split_file(text, path)
    if not split.frontmatter:
        return {}
    try:
        data = yaml.load(split.frontmatter, Loader=LOADER)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def check_zone_option(zone: str | None) -> None:
    """Validate a `--tz` value before it reaches a file."""
    if zone is not None:
        check_zone(zone)


def check_cron_option(expr: str) -> None:
    """Validate a cron expression given on the command line (errors point into it)."""
    normalize_cron(expr)


def check_every_option(value: str) -> None:
    """Validate an `--every` duration."""
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


def new_task_fields(
    name: str,
    *,
    schedule: str | None = None,
    at: str | None = None,
    every: str | None = None,
    webhook: bool = False,
    timezone: str | None = None,
    execute: bool = False,
    model: str | None = None,
    once: bool = False,
) -> dict[str, Any]:
    """The frontmatter of a new task from `task create`'s options (validated here).

    A lone cron expression is written as the `schedule:` shorthand; several triggers as
    a `triggers:` list.
    """
    if schedule is not None:
        check_cron_option(schedule)
    if at is not None:
        check_at_option(at)
    if every is not None:
        check_every_option(every)
    check_zone_option(timezone)

    fields: dict[str, Any] = {"name": name}
    kinds: list[dict[str, Any]] = []
    if schedule is not None:
        kinds.append({"cron": schedule})
    if at is not None:
        kinds.append({"at": at})
    if every is not None:
        kinds.append({"every": every})
    if webhook:
        kinds.append({"webhook": True})
    if len(kinds) == 1 and schedule is not None:
        fields["schedule"] = schedule
    elif kinds:
        fields["triggers"] = kinds
    if timezone is not None:
        fields["timezone"] = timezone
    if execute:
        fields["execute"] = True
    if model is not None:
        fields["model"] = model
    if once:
        fields["delete_after_run"] = True
    return fields


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


def plan_time_trigger(
    change: Change, raw: dict[str, Any], *, schedule: str | None, at: str | None, every: str | None
) -> None:
    """Plan replacing the time triggers (cron, at, every) of a file, keeping its webhooks.

    `raw` is the file's frontmatter as plain data (`frontmatter_data`).
    """
    given = [v for v in (schedule, at, every) if v is not None]
    if not given:
        return
    if len(given) > 1:
        raise UsageError("give one of --schedule, --at, --every")
    new = trigger_mapping(cron=schedule, at=at, every=every)
    existing = raw.get("triggers")
    if schedule is not None and not existing:
        # The shorthand stays the shorthand: one line changes.
        change.set_keys["schedule"] = schedule
        return
    kept = [t for t in existing or [] if isinstance(t, dict) and "webhook" in t]
    kind = "cron" if schedule is not None else ("at" if at is not None else None)
    for old in existing or []:
        # A replaced cron or at trigger keeps the zone it named: a new time, same clock.
        if isinstance(old, dict) and kind in old and old.get("timezone") and "timezone" not in new:
            new["timezone"] = old["timezone"]
            break
    if "schedule" in raw:
        change.unset.append("schedule")
    if schedule is not None and not kept:
        change.set_keys["schedule"] = schedule
        change.unset.append("triggers")
    else:
        change.set_keys["triggers"] = [*kept, new]


def parse_assignment(item: str) -> tuple[str, Any]:
    """`KEY=VALUE` with VALUE read as YAML (`retries=3`, `tags=[a, b]`, `name=Hello`)."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set wants KEY=VALUE, not {item!r}", hint="e.g. --set retries=3")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        raise UsageError(
            f"the value of --set {key} is not valid YAML",
            hint=f"quote it, e.g. --set '{key}=\"{value}\"'",
        ) from None
    return key, parsed
