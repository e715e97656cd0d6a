"""systemd timers -> tasks (`daycare import systemd`), the reverse of `core/export_systemd.py`.

A `.timer` and the `.service` it starts become one task:

| timer / service | task |
|---|---|
| `OnCalendar=` (each) | a cron trigger with its zone (`core/oncalendar.py`), or `at` for one date |
| `OnUnitActiveSec=` (with `OnActiveSec=`/`OnBootSec=`) | `every` |
| `OnBootSec=`/`OnStartupSec=` alone | `@reboot` |
| `Persistent=` | `catch_up` (true: latest, false: skip) |
| `RandomizedDelaySec=` | `jitter` |
| `TimeoutStartSec=` | `run_timeout` and the block's `timeout` |
| `ExecStart=`, `Environment=` | a `<run_python>` block running the command, `env` |

A service that daycare exported runs `daycare task run --file TASK.md`: given that file,
the task comes back byte for byte, with only what the timer now says differently
rewritten in place (round trip).
Pure: unit texts in, an ImportedTask out.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cronsim import CronSim

from daycare_cli.core.duration import format_duration
from daycare_cli.core.export import TIMEOUT_GRACE
from daycare_cli.core.imported import (
    IMPORTED_TIMEOUT,
    SANDBOX_WARNING,
    ImportedTask,
    ImportFileError,
    command_body,
    id_source,
    short_name,
)
from daycare_cli.core.oncalendar import NotExpressible, oncalendar_to_cron, split_zone
from daycare_cli.core.schedule import at_instant, normalize_cron
from daycare_cli.core.task import AtTrigger, CronTrigger, Task, WebhookTrigger, effective_zone
from daycare_cli.core.taskedit import render_task, update_frontmatter
from daycare_cli.core.taskfile import parse_task

_TIMESPAN_UNITS: dict[str, float] = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip
_SPAN_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_AT_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\s+(\d{1,2}:\d{2}(?::\d{2})?))?$")


@dataclass
class Unit:
    """A parsed unit file: (key, value, line) per section, in order."""

    path: str
    sections: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)

    def values(self, section: str, key: str) -> list[tuple[str, int]]:
        """The values of a key in order; an empty assignment resets the list, as in systemd."""
        out: list[tuple[str, int]] = []
        for k, v, line in self.sections.get(section, []):
            if k == key:
                out = [] if v == "" else [*out, (v, line)]
        return out

    def last(self, section: str, key: str) -> tuple[str, int] | None:
        """The value in force (the last assignment), or None."""
        found = self.values(section, key)
        return found[-1] if found else None


def parse_unit(text: str, *, path: str) -> Unit:
    """Sections and assignments of a unit file (comments, continuation lines)."""
    unit = Unit(path)
    section: str | None = None
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            start = start or number
            continue
        line, pending, first = pending + line, "", start or number
        start = 0
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.sections.setdefault(section, [])
            continue
        key, sep, value = line.partition("=")
        if not sep or section is None:
            raise ImportFileError(
                "expected `[Section]` or `Key=value`",
                path=path,
                line=first,
                col=1,
                hint="is this a systemd unit file?",
                excerpt=raw,
            )
        unit.sections[section].append((key.strip(), value.strip(), first))
    return unit


def parse_timespan(value: str, *, path: str, line: int) -> float:
    """Seconds in a systemd time span (`90`, `15min`, `1h 30min`, `2d`)."""
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    total = 0.0
    pos = 0
    for match in _SPAN_RE.finditer(text):
        if text[pos : match.start()].strip() or match.group(2) not in _TIMESPAN_UNITS:
            break
        total += float(match.group(1)) * _TIMESPAN_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise ImportFileError(
            f"cannot read the time span `{value}`",
            path=path,
            line=line,
            hint="write e.g. `90s`, `15min` or `1h 30min`",
        )
    return total


def split_exec(value: str) -> list[str]:
    """ExecStart= as an argument list: prefixes dropped, quotes and `%%`/`$$` undone."""
    text = value.lstrip("@-:+!")
    return [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(text)]


def _triggers(timer: Unit, warnings: list[str]) -> list[dict[str, Any]]:
    triggers: list[dict[str, Any]] = []
    for value, line in timer.values("Timer", "OnCalendar"):
        tokens, zone = split_zone(value.split())
        at = _AT_RE.match(" ".join(tokens))
        try:
            if at is not None:
                clock = at.group(2) or "00:00:00"
                clock = clock if clock.count(":") == 2 else clock + ":00"
                triggers.append({"at": f"{at.group(1)}T{clock}", "timezone": zone})
                continue
            cron, zone = oncalendar_to_cron(value)
        except NotExpressible as exc:
            raise ImportFileError(
                f"OnCalendar={value}: {exc}",
                path=timer.path,
                line=line,
                hint="rewrite it as a calendar event cron can say, or split it in several",
            ) from None
        triggers.append({"cron": cron, "timezone": zone})
    every = timer.last("Timer", "OnUnitActiveSec") or timer.last("Timer", "OnUnitInactiveSec")
    if every is not None:
        seconds = parse_timespan(every[0], path=timer.path, line=every[1])
        triggers.append({"every": format_duration(seconds)})
        if timer.last("Timer", "OnUnitInactiveSec"):
            warnings.append(
                "OnUnitInactiveSec counts from the end of the last run; daycare's `every` "
                "counts from its start"
            )
    elif timer.last("Timer", "OnBootSec") or timer.last("Timer", "OnStartupSec"):
        triggers.append({"cron": "@reboot", "timezone": None})
        warnings.append("@reboot fires when the daycare daemon starts, not at boot or login")
    return triggers


def _schedule_fields(
    timer: Unit, triggers: list[dict[str, Any]], zone: str | None
) -> dict[str, Any]:
    """schedule/triggers, timezone, catch_up and jitter from the timer."""
    fields: dict[str, Any] = {}
    zones = {t["timezone"] for t in triggers if "cron" in t or "at" in t} - {None}
    task_zone = zone if zone in zones or (zone and not zones) else None
    if task_zone is None and len(zones) == 1:
        task_zone = next(iter(zones))
    for t in triggers:
        if t.get("timezone") in (None, task_zone):
            t.pop("timezone", None)
    if task_zone:
        fields["timezone"] = task_zone
    if len(triggers) == 1 and set(triggers[0]) == {"cron"}:
        fields["schedule"] = triggers[0]["cron"]
    else:
        fields["triggers"] = triggers
    persistent = timer.last("Timer", "Persistent")
    if persistent is not None:
        on = persistent[0].lower() in ("1", "yes", "true", "on")
        fields["catch_up"] = "latest" if on else "skip"
    delay = timer.last("Timer", "RandomizedDelaySec")
    fields["jitter"] = (
        format_duration(parse_timespan(delay[0], path=timer.path, line=delay[1])) if delay else None
    )
    return fields


def _oneshot_file(argv: list[str]) -> str | None:
    """The task file of a service that runs daycare's one-shot mode, else None."""
    for i in range(len(argv) - 3):
        if argv[i : i + 3] == ["task", "run", "--file"]:
            return argv[i + 3]
    return None


def service_task_file(service_text: str, *, path: str) -> str | None:
    """The task file a daycare-exported service runs (`task run --file F`), if it is one."""
    starts = parse_unit(service_text, path=path).values("Service", "ExecStart")
    return _oneshot_file(split_exec(starts[0][0])) if starts else None


def _cron_sets(trigger: CronTrigger) -> tuple[object, ...]:
    """What a cron expression means: its value sets and cronie's day rule (7 is Sunday)."""
    expr = normalize_cron(trigger.expr)
    if expr == "@reboot":
        return ("@reboot",)
    sim = CronSim(expr, datetime(2001, 1, 1))
    parts = expr.split()
    weekdays = {(0 if w == 7 else w) if isinstance(w, int) else w for w in sim.weekdays}
    day_and = parts[2].startswith("*") or parts[4].startswith("*")
    return (sim.minutes, sim.hours, sim.days, sim.months, weekdays, day_and)


def same_triggers(a: Task, b: Task, default_zone: str) -> bool:
    """True when two tasks' triggers fire at the same instants (ids and spelling aside)."""
    if len(a.triggers) != len(b.triggers):
        return False
    for x, y in zip(a.triggers, b.triggers, strict=True):
        if type(x) is not type(y):
            return False
        if isinstance(x, CronTrigger) and isinstance(y, CronTrigger):
            zones = effective_zone(a, x, default_zone), effective_zone(b, y, default_zone)
            if _cron_sets(x) != _cron_sets(y) or (not x.reboot and zones[0] != zones[1]):
                return False
        elif isinstance(x, AtTrigger) and isinstance(y, AtTrigger):
            if at_instant(x, a.timezone or default_zone) != at_instant(
                y, b.timezone or default_zone
            ):
                return False
        elif x != y and not isinstance(x, WebhookTrigger):
            return False
    return True


def _round_trip(
    timer: Unit,
    triggers: list[dict[str, Any]],
    seconds: float | None,
    original: tuple[str, Task],
    default_zone: str,
) -> str:
    """The original task file with only what the timer changed rewritten in place."""
    text, task = original
    new = _schedule_fields(timer, triggers, task.timezone)
    if seconds is not None:
        new["run_timeout"] = format_duration(max(seconds - TIMEOUT_GRACE, 1))
    probe = render_task({"name": task.name, **new}, "")
    candidate = parse_task(probe, path=timer.path, task_id=task.id)
    sets: dict[str, Any] = {}
    unset: list[str] = []
    if not same_triggers(task, candidate, default_zone):
        for key in ("schedule", "triggers", "timezone"):
            if new.get(key) is not None:
                sets[key] = new[key]
            else:
                unset.append(key)
    if "catch_up" in new and (new["catch_up"] == "skip") != (task.catch_up == "skip"):
        sets["catch_up"] = new["catch_up"]
    if candidate.jitter != task.jitter:
        sets["jitter"] = new["jitter"]
    if seconds is not None and candidate.run_timeout != task.run_timeout:
        sets["run_timeout"] = new["run_timeout"]
    if not sets and not unset:
        return text
    return update_frontmatter(text, sets, unset, path=timer.path)


def timer_task(
    timer_text: str,
    *,
    timer_path: str,
    service_text: str,
    service_path: str,
    original: tuple[str, Task] | None = None,
    default_zone: str = "UTC",
) -> ImportedTask:
    """The task a timer and its service describe.

    `original` is the text and parsed task of the file a daycare-exported service runs,
    when it could be read: the result is then that file, with only the keys the timer
    changed rewritten in place (comments and order kept).
    """
    timer = parse_unit(timer_text, path=timer_path)
    service = parse_unit(service_text, path=service_path)
    warnings: list[str] = []
    triggers = _triggers(timer, warnings)
    if not triggers:
        raise ImportFileError(
            "the timer has no OnCalendar=, OnUnitActiveSec=, OnBootSec= or OnStartupSec=",
            path=timer_path,
            hint="only timers that fire on a calendar, an interval or at start carry over",
        )
    starts = service.values("Service", "ExecStart")
    if not starts:
        raise ImportFileError("the service has no ExecStart=", path=service_path)
    argv = split_exec(starts[0][0])
    origin = f"{timer_path}:1"
    timeout = service.last("Service", "TimeoutStartSec")
    seconds = None
    if timeout and timeout[0].lower() not in ("infinity", "0"):
        seconds = parse_timespan(timeout[0], path=service_path, line=timeout[1])

    if _oneshot_file(argv) is not None and original is not None:
        text = _round_trip(timer, triggers, seconds, original, default_zone)
        task = original[1]
        return ImportedTask(task.name, {}, "", origin, warnings, task.id, text=text)

    if any("%" in a for a in argv):
        warnings.append("ExecStart= uses specifiers (%h, %S, …): replace them with paths")
    if len(starts) > 1:
        warnings.append(f"only the first of {len(starts)} ExecStart= lines is imported")
    description = service.last("Unit", "Description")
    command = shlex.join(argv)
    fields: dict[str, Any] = {
        "name": description[0] if description else short_name(command),
        "description": f"Imported from {timer_path}",
    }
    fields.update(_schedule_fields(timer, triggers, None))
    fields.update(execute=True, model="none")
    fields["timeout"] = format_duration(seconds) if seconds else IMPORTED_TIMEOUT
    if seconds:
        fields["run_timeout"] = format_duration(seconds)
    env: dict[str, str] = {}
    for value, _line in service.values("Service", "Environment"):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    if env:
        fields["env"] = env
    for key in ("User", "WorkingDirectory", "EnvironmentFile"):
        if service.last("Service", key):
            warnings.append(f"{key}= does not carry over")
    warnings.append(SANDBOX_WARNING)
    body = command_body(argv=argv)
    return ImportedTask(short_name(id_source(command)), fields, body, origin, warnings)
