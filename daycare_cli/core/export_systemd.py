"""A task as a systemd `.timer` + `.service` pair that runs it in the one-shot mode.

| task | timer / service |
|---|---|
| cron trigger | `OnCalendar=` (exact, with the zone; several lines where cron ORs its day fields) |
| `at` | `OnCalendar=YYYY-MM-DD HH:MM:SS ZONE` |
| `every` | `OnActiveSec=` + `OnUnitActiveSec=` (from the timer's start, then the last run) |
| `@reboot` | `OnStartupSec=0` (when the service manager starts) |
| `catch_up` | `Persistent=` (true for latest/all) |
| `jitter` | `RandomizedDelaySec=` |
| `run_timeout` | `TimeoutStartSec=` (plus a grace, so daycare's own limit records `timed_out`) |
| `overlap: skip` | what systemd does anyway: an active service is not started again |

What has no equivalent is a warning: webhooks, `overlap` queue/allow/replace, `retries`,
`catch_up: all`, an explicit `catch_up_window`, `LW`, and the DST days where systemd
fires differently from cronie (`core/dst.py`). Pure: no I/O; "now" is an argument.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from daycare_cli.core.dst import Engine, describe_differences, engine_differences
from daycare_cli.core.duration import format_duration
from daycare_cli.core.export import (
    HEADER,
    TIMEOUT_GRACE,
    TaskExport,
    comment_lines,
    common_warnings,
    oneshot_args,
    report_lines,
    secret_env_name,
    secret_names,
)
from daycare_cli.core.oncalendar import NotExpressible, cron_to_oncalendar
from daycare_cli.core.schedule import at_instant, describe_trigger_spec
from daycare_cli.core.task import AtTrigger, CronTrigger, EveryTrigger, Task, effective_zone

ENGINE: Engine = "systemd"
ARTIFACTS = "%S/daycare/artifacts"  # %S: the state directory (~/.local/state for user units)


def unit_name(task_id: str) -> str:
    """The base name of a task's units: `daycare-<id>` (.timer and .service)."""
    return f"daycare-{task_id}"


def escape_value(text: str) -> str:
    """A unit file value with systemd's specifiers (`%`) taken literally, on one line."""
    return text.replace("%", "%%").replace("\n", " ")


def exec_arg(arg: str, *, specifiers: bool = False) -> str:
    """One argument of `ExecStart=`: `%` and `$` escaped, quoted when it has spaces."""
    text = arg.replace("\\", "\\\\").replace("$", "$$")
    if not specifiers:
        text = text.replace("%", "%%")
    if any(c.isspace() for c in text) or '"' in text or "'" in text or not text:
        text = '"' + text.replace('"', '\\"') + '"'
    return text


def _timer_lines(task: Task, export: TaskExport, *, default_zone: str, now: datetime) -> list[str]:
    lines: list[str] = []
    for trigger in task.triggers:
        spec = describe_trigger_spec(trigger)
        if isinstance(trigger, CronTrigger) and trigger.reboot:
            lines.append("OnStartupSec=0")
            export.notes.append(
                "@reboot: OnStartupSec=0 fires when the service manager starts (login for a "
                "user timer; use OnBootSec=0 in a system timer)"
            )
        elif isinstance(trigger, CronTrigger):
            zone = effective_zone(task, trigger, default_zone)
            try:
                calendar = cron_to_oncalendar(trigger.expr, zone)
            except NotExpressible as exc:
                export.warnings.append(f"trigger `{trigger.id}` (`{spec}`): {exc}; dropped")
                continue
            lines += [f"OnCalendar={c}" for c in calendar]
            if len(calendar) > 1:
                export.notes.append(
                    f"`{spec}` is {len(calendar)} OnCalendar= lines: cron runs on the day of "
                    "the month or the weekday, systemd on both, so each has a line"
                )
            diff = describe_differences(
                engine_differences(trigger, zone, ENGINE, now=now), zone, ENGINE
            )
            if diff:
                export.warnings.append(f"trigger `{trigger.id}` (`{spec}`): {diff}")
        elif isinstance(trigger, AtTrigger):
            zone = trigger.timezone or effective_zone(task, trigger, default_zone)
            instant = at_instant(trigger, zone)
            local = instant.astimezone(ZoneInfo(zone))
            lines.append(f"OnCalendar={local.strftime('%Y-%m-%d %H:%M:%S')} {zone}")
            if instant.timestamp() <= now.timestamp():
                export.warnings.append(
                    f"trigger `{trigger.id}` (at {spec}) is in the past: the timer never elapses"
                )
        elif isinstance(trigger, EveryTrigger):
            every = format_duration(trigger.seconds)
            lines += [f"OnActiveSec={every}", f"OnUnitActiveSec={every}"]
            export.notes.append(
                f"every {every}: counted from the timer's start, then from the last run; "
                "unlike daycare's stored anchor, the count restarts with the service manager"
            )
    return lines


def _policy_lines(task: Task, export: TaskExport, has_calendar: bool) -> list[str]:
    lines: list[str] = []
    if has_calendar:
        lines.append(f"Persistent={'false' if task.catch_up == 'skip' else 'true'}")
        if task.catch_up == "all":
            export.warnings.append(
                "catch_up: all: systemd runs a missed timer once (Persistent=true), not once "
                "per missed slot"
            )
        if task.catch_up != "skip" and task.catch_up_window is not None:
            export.warnings.append(
                f"catch_up_window: {format_duration(task.catch_up_window)}: systemd catches "
                "up a missed slot however long ago it was (Persistent= has no window)"
            )
    if task.jitter:
        lines.append(f"RandomizedDelaySec={format_duration(task.jitter)}")
    lines.append("AccuracySec=1s")  # systemd's default of 1min would make every fire late
    return lines


def _service_warnings(task: Task, export: TaskExport) -> None:
    if task.overlap != "skip":
        export.warnings.append(
            f"overlap: {task.overlap}: systemd never starts a service that is still running, "
            "so a fire during a run is dropped (overlap: skip)"
        )
    if task.retries:
        export.warnings.append(
            f"retries: {task.retries}: systemd has no retry count for a timer's service; "
            "failed runs are not retried"
        )
    if not task.enabled:
        export.warnings.append("enabled: false: exported anyway; do not enable the timer")
    secrets = secret_names(task)
    if secrets:
        names = ", ".join(secret_env_name(s) for s in secrets)
        export.notes.append(
            f"secrets ({', '.join(secrets)}) come from your config.toml as for the daemon, "
            f"or from the environment ({names}; `systemctl --user edit` to set them)"
        )


def export_systemd(
    task: Task,
    *,
    source: str,
    task_file: str,
    executable: str,
    default_zone: str,
    now: datetime,
    artifacts: str = ARTIFACTS,
) -> TaskExport:
    """The `.timer` and `.service` of a task, with what does not carry over.

    `task_file` is the absolute path the service reads the task from, `executable` the
    absolute path of `daycare`, `source` what the header names as the origin.
    """
    export = TaskExport(task.id)
    export.warnings += common_warnings(task, ENGINE)
    timer = _timer_lines(task, export, default_zone=default_zone, now=now)
    if not timer:
        export.warnings.append("no trigger carries over to systemd: nothing exported")
        return export
    has_calendar = any(line.startswith("OnCalendar=") for line in timer)
    timer += _policy_lines(task, export, has_calendar)
    _service_warnings(task, export)
    export.notes.append(
        "the service runs the task file in daycare's one-shot mode: no daemon, no state "
        "between runs (files/ and memory.md start empty), artifacts under "
        f"{artifacts}/{task.id}/; if a daycare daemon also runs this tasks directory, "
        f"disable the task there (`daycare task disable {task.id}`) so it fires once"
    )
    name = unit_name(task.id)
    header = comment_lines([HEADER.format(engine=ENGINE, source=source), *report_lines(export)])
    title = escape_value(task.name)
    args = [exec_arg(executable)]
    for arg in oneshot_args(task_file, artifacts):
        args.append(exec_arg(arg, specifiers=arg == artifacts))
    grace = task.run_timeout + TIMEOUT_GRACE
    service = (
        header
        + "[Unit]\n"
        + f"Description=daycare task: {title}\n"
        + f"X-DaycareTask={task.id}\n\n"
        + "[Service]\n"
        + "Type=oneshot\n"
        + f"ExecStart={' '.join(args)}\n"
        + f"TimeoutStartSec={format_duration(grace)}\n"
        + "Environment=PYTHONUNBUFFERED=1\n"
    )
    timer_text = (
        header
        + "[Unit]\n"
        + f"Description=Timer of daycare task: {title}\n\n"
        + "[Timer]\n"
        + "".join(line + "\n" for line in timer)
        + f"Unit={name}.service\n\n"
        + "[Install]\n"
        + "WantedBy=timers.target\n"
    )
    export.files = {f"{name}.timer": timer_text, f"{name}.service": service}
    return export
