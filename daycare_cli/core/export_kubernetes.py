"""A task as Kubernetes objects: a ConfigMap holding the task file and a CronJob per trigger.

| task | CronJob |
|---|---|
| cron trigger | `schedule` + `timeZone` (robfig/cron syntax: `7` for Sunday becomes `0`) |
| `every` dividing an hour or a day | `schedule` in `Etc/UTC`, aligned to the clock |
| `overlap` | `concurrencyPolicy`: skip → Forbid, replace → Replace, allow → Allow, queue → Forbid |
| `catch_up`, `catch_up_window` | `startingDeadlineSeconds` (skip: 60 s; else the window) |
| `retries` | `backoffLimit` (Kubernetes' own backoff between attempts, not `retry_delay`) |
| `run_timeout` | the pod's `activeDeadlineSeconds` (plus a grace, so daycare records `timed_out`) |
| retention `keep_runs` | `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` |
| `${secret:NAME}` in env | `DAYCARE_SECRET_NAME` from key NAME of a Secret |
| `enabled: false` | `suspend: true` |

The container runs `daycare task run --file /task/ID.md --artifacts /artifacts` (the
image the repository's Containerfile builds). What has no equivalent is a warning: webhook,
`at` and `@reboot` triggers, `every` intervals cron cannot express, `overlap: queue`,
`catch_up: all`, `jitter`, `L`/`W`/`#` cron forms, named notify targets (no config in
the pod), host paths in `sandbox.read`/`write`, and DST days (`core/dst.py`).
Pure: objects are plain dicts; `render_manifest` dumps them with PyYAML.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import yaml
from cronsim import CronSim

from daycare_cli.core.dst import describe_differences, engine_differences
from daycare_cli.core.duration import format_duration
from daycare_cli.core.export import (
    HEADER,
    TIMEOUT_GRACE,
    TaskExport,
    comment_lines,
    common_warnings,
    every_as_cron,
    oneshot_args,
    report_lines,
    secret_env_name,
    secret_names,
)
from daycare_cli.core.oncalendar import NotExpressible
from daycare_cli.core.policy import default_catch_up_window
from daycare_cli.core.schedule import describe_trigger_spec, normalize_cron
from daycare_cli.core.task import (
    AtTrigger,
    CronTrigger,
    EveryTrigger,
    Task,
    Trigger,
    effective_zone,
)

ENGINE = "Kubernetes"
TASK_DIR = "/task"
ARTIFACTS_DIR = "/artifacts"
CONCURRENCY = {"skip": "Forbid", "replace": "Replace", "allow": "Allow", "queue": "Forbid"}
SKIP_DEADLINE = 60  # catch_up: skip still allows the controller's usual lateness
MIN_DEADLINE = 10  # the controller checks every 10 s: a shorter deadline can miss slots
CRONJOB_NAME_MAX = 52  # the Job controller appends an 11-character suffix
LABEL = "daycare.dev/task"


def object_name(base: str, limit: int = CRONJOB_NAME_MAX) -> str:
    """A DNS-1123 name of at most `limit` characters; long names end in a short hash."""
    if len(base) <= limit:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    return base[: limit - 7].rstrip("-") + "-" + digest


def robfig_schedule(expr: str) -> str:
    """A cron expression in the syntax of robfig/cron v3, which the CronJob controller uses.

    The same fields; weekday 7 (Sunday) is written 0. Raises NotExpressible for `L`,
    `W` and `#`, which robfig/cron does not know, and for `@reboot`.
    """
    normal = normalize_cron(expr)
    if normal.startswith("@"):
        raise NotExpressible("`@reboot` is not a schedule")
    parts = normal.split()
    sim = CronSim(normal, datetime(2001, 1, 1))
    if any(d < 0 for d in sim.days) or any(isinstance(w, tuple) for w in sim.weekdays):
        raise NotExpressible(
            f"`{parts[2]} {parts[4]}`: L, LW and # are not in Kubernetes' cron syntax"
        )
    if 7 in sim.weekdays and not parts[4].startswith("*"):
        days = sorted({0 if d == 7 else d for d in sim.weekdays if isinstance(d, int)})
        parts[4] = ",".join(str(d) for d in days)
    return " ".join(parts)


def _schedules(
    task: Task, export: TaskExport, *, default_zone: str, now: datetime
) -> list[tuple[Trigger, str, str]]:
    """(trigger, schedule, zone) for each trigger a CronJob can carry."""
    out: list[tuple[Trigger, str, str]] = []
    for trigger in task.triggers:
        spec = describe_trigger_spec(trigger)
        if isinstance(trigger, CronTrigger):
            zone = effective_zone(task, trigger, default_zone)
            try:
                schedule = robfig_schedule(trigger.expr)
            except NotExpressible as exc:
                export.warnings.append(f"trigger `{trigger.id}` (`{spec}`): {exc}; dropped")
                continue
            out.append((trigger, schedule, zone))
            diff = describe_differences(
                engine_differences(trigger, zone, "kubernetes", now=now), zone, "kubernetes"
            )
            if diff:
                export.warnings.append(f"trigger `{trigger.id}` (`{spec}`): {diff}")
        elif isinstance(trigger, EveryTrigger):
            cron = every_as_cron(trigger.seconds)
            if cron is None:
                export.warnings.append(
                    f"trigger `{trigger.id}` (every {spec}): no cron expression fires at this "
                    "interval (it must divide an hour or a day); dropped"
                )
                continue
            out.append((trigger, cron, "Etc/UTC"))
            export.notes.append(
                f"every {spec} is `{cron}` in UTC: aligned to the clock, not counted from "
                "the last run"
            )
        elif isinstance(trigger, AtTrigger):
            export.warnings.append(
                f"trigger `{trigger.id}` (at {spec}): a CronJob repeats; one-off times do not "
                "carry over (create a Job at that time instead)"
            )
    return out


def _deadline(task: Task, trigger: Trigger, zone: str, now: datetime) -> int:
    """startingDeadlineSeconds: how late the controller may still start a slot."""
    if task.catch_up == "skip":
        return SKIP_DEADLINE
    window = task.catch_up_window
    if window is None:
        window = default_catch_up_window(trigger, tz=zone, now=now)
    return max(MIN_DEADLINE, int(window))


def _task_warnings(task: Task, export: TaskExport, default_model: str | None) -> None:
    model = task.model_enabled(None)
    if task.model is None and default_model and default_model.lower() != "none":
        export.warnings.append(
            f"model: the task uses your config's default model ({default_model}), which the "
            f"pod does not have; write `model: {default_model}` in the task"
        )
    if model or (task.model is None and default_model):
        export.notes.append(
            "the model's API key must reach the container: add it to the Secret and to "
            "the container's env under the name its llm plugin reads (e.g. OPENAI_API_KEY)"
        )
    if task.overlap == "queue":
        export.warnings.append(
            "overlap: queue: a CronJob cannot queue a fire behind a running Job; exported "
            "as concurrencyPolicy: Forbid (the fire is dropped)"
        )
    if task.catch_up == "all":
        export.warnings.append(
            "catch_up: all: the CronJob controller starts only the latest missed slot"
        )
    if task.jitter:
        export.warnings.append(
            f"jitter: {format_duration(task.jitter)}: a CronJob has no random delay; every "
            "fire starts on its slot"
        )
    named = [n for n in task.notify if "://" not in n]
    if named:
        export.warnings.append(
            f"notify: {', '.join(named)} name entries of your config.toml, which the pod does "
            "not have; write the apprise URLs in the task (with ${secret:…} if private)"
        )
    if task.execute and (task.sandbox.read or task.sandbox.write):
        paths = ", ".join((*task.sandbox.read, *task.sandbox.write))
        export.warnings.append(
            f"sandbox read/write ({paths}) are host paths; the pod has none of them unless "
            "you mount them"
        )
    if task.retries:
        export.notes.append(
            f"retries: {task.retries} is backoffLimit; Kubernetes waits 10s, 20s, 40s… "
            "between attempts, not retry_delay"
        )
    if not task.enabled:
        export.warnings.append("enabled: false: exported with suspend: true")
    if task.execute:
        export.notes.append(
            "blocks run under bubblewrap when the pod allows it; otherwise the one-shot mode "
            "runs them with reduced isolation and says so in its output, and the pod's own "
            "isolation is the sandbox (sandbox.network is then not enforced: use a "
            "NetworkPolicy)"
        )


def _container(task: Task, image: str, secret: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    for name in secret_names(task):
        env.append(
            {
                "name": secret_env_name(name),
                "valueFrom": {"secretKeyRef": {"name": secret, "key": name}},
            }
        )
    return {
        "name": "task",
        "image": image,
        "args": oneshot_args(f"{TASK_DIR}/{task.id}.md", ARTIFACTS_DIR),
        "env": env,
        "volumeMounts": [
            {"name": "task", "mountPath": TASK_DIR, "readOnly": True},
            {"name": "artifacts", "mountPath": ARTIFACTS_DIR},
        ],
        # The image's user is 10001 (Containerfile): the kubelet can check it is not root.
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }


def export_kubernetes(
    task: Task,
    task_text: str,
    *,
    source: str,
    image: str,
    default_zone: str,
    now: datetime,
    keep_runs: int,
    default_model: str | None = None,
    secret: str = "daycare-secrets",
    artifacts_claim: str | None = None,
) -> tuple[TaskExport, list[dict[str, Any]]]:
    """The ConfigMap and CronJobs of a task, and what does not carry over.

    `task_text` is the task file as written (the ConfigMap holds it byte for byte);
    `artifacts_claim` names a PersistentVolumeClaim for artifacts (else an emptyDir,
    which the cluster removes with the pod).
    """
    export = TaskExport(task.id)
    export.warnings += common_warnings(task, ENGINE)
    schedules = _schedules(task, export, default_zone=default_zone, now=now)
    for trigger in task.triggers:
        if isinstance(trigger, CronTrigger) and trigger.reboot:
            export.warnings.append(
                f"trigger `{trigger.id}` (@reboot): a cluster has no start of its own; dropped"
            )
    if not schedules:
        export.warnings.append("no trigger carries over to a CronJob: nothing exported")
        return export, []
    _task_warnings(task, export, default_model)
    labels = {"app.kubernetes.io/name": "daycare", LABEL: task.id}
    config_map = object_name(f"{task.id}-task", 253)
    artifacts: dict[str, Any] = {"name": "artifacts", "emptyDir": {}}
    if artifacts_claim:
        artifacts = {"name": "artifacts", "persistentVolumeClaim": {"claimName": artifacts_claim}}
    else:
        export.notes.append(
            "artifacts go to an emptyDir, removed with the pod: export with "
            "--artifacts-claim NAME to keep them on a PersistentVolumeClaim"
        )
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": config_map, "labels": labels},
            "data": {f"{task.id}.md": task_text},
        }
    ]
    pod_spec = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": int(task.run_timeout + TIMEOUT_GRACE),
        "containers": [_container(task, image, secret)],
        "volumes": [{"name": "task", "configMap": {"name": config_map}}, artifacts],
    }
    for trigger, schedule, zone in schedules:
        name = task.id if len(schedules) == 1 else f"{task.id}-{trigger.id}"
        job_labels = {**labels, "daycare.dev/trigger": trigger.id}
        objects.append(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": object_name(name), "labels": job_labels},
                "spec": {
                    "schedule": schedule,
                    "timeZone": zone,
                    "concurrencyPolicy": CONCURRENCY[task.overlap],
                    "startingDeadlineSeconds": _deadline(task, trigger, zone, now),
                    "successfulJobsHistoryLimit": keep_runs,
                    "failedJobsHistoryLimit": keep_runs,
                    "suspend": not task.enabled,
                    "jobTemplate": {
                        "metadata": {"labels": job_labels},
                        "spec": {
                            "backoffLimit": task.retries,
                            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
                        },
                    },
                },
            }
        )
    export.files = {f"{task.id}.yaml": render_manifest(objects, export, source)}
    return export, objects


def render_manifest(objects: list[dict[str, Any]], export: TaskExport, source: str) -> str:
    """The objects as one YAML stream, after a comment block with warnings and notes."""
    header = comment_lines([HEADER.format(engine="kubernetes", source=source)])
    header += comment_lines(report_lines(export))
    body = yaml.dump_all(
        objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100
    )
    return header + body


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper: multi-line strings (the task file) as literal blocks, no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
