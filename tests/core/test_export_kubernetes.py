"""Tasks -> Kubernetes objects, validated against the official OpenAPI schemas.

kubernetes-validate ships the schemas of each Kubernetes version in its wheel, so this
runs offline; the version is a parameter.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from daycare_cli.core.export_kubernetes import export_kubernetes, object_name, robfig_schedule
from daycare_cli.core.oncalendar import NotExpressible
from daycare_cli.core.taskfile import parse_task

kubernetes_validate = pytest.importorskip("kubernetes_validate")

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "tasks.example").glob("*.md"))
VERSIONS = ["1.27", "1.30", kubernetes_validate.utils.latest_version()]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def export(text: str, task_id: str = "t", **kw: Any) -> tuple[Any, list[dict[str, Any]]]:
    task = parse_task(text, path=f"{task_id}.md", task_id=task_id)
    options: dict[str, Any] = {
        "source": f"{task_id}.md",
        "image": "daycare:test",
        "default_zone": "UTC",
        "now": NOW,
        "keep_runs": 100,
    }
    return export_kubernetes(task, text, **{**options, **kw})


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_exports_to_valid_objects(path: Path, version: str) -> None:
    text = path.read_text()
    result, objects = export(text, path.stem)
    task = parse_task(text, path=str(path))
    schedules = [t for t in task.triggers if t.type in ("cron", "every")]
    if not schedules:
        assert objects == []
        assert "nothing exported" in result.warnings[-1]
        return
    assert [o["kind"] for o in objects] == ["ConfigMap"] + ["CronJob"] * len(schedules)
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    # The manifest file is the same objects, and the ConfigMap holds the file unchanged.
    ((name, manifest),) = result.files.items()
    assert name == f"{path.stem}.yaml"
    assert list(yaml.safe_load_all(manifest)) == objects
    assert objects[0]["data"] == {f"{path.stem}.md": text}


def test_an_invalid_object_is_caught_by_the_validator() -> None:
    _, objects = export('---\nschedule: "0 9 * * *"\n---\nhi\n')
    bad = copy.deepcopy(objects[1])
    bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = {"x": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


TASK = """---
name: Report
schedule: "0 9 * * *"
timezone: Europe/Berlin
execute: true
overlap: {overlap}
catch_up: {catch_up}
retries: 3
run_timeout: 10m
env:
  TOKEN: "${{secret:api-token}}"
  PLAIN: x
---
<run_python>
print(1)
</run_python>
"""


@pytest.mark.parametrize(
    ("overlap", "policy", "warned"),
    [("skip", "Forbid", False), ("replace", "Replace", False), ("allow", "Allow", False),
     ("queue", "Forbid", True)],
)  # fmt: skip
def test_overlap_maps_to_concurrency_policy(overlap: str, policy: str, warned: bool) -> None:
    result, objects = export(TASK.format(overlap=overlap, catch_up="latest"))
    assert objects[1]["spec"]["concurrencyPolicy"] == policy
    assert any("overlap: queue" in w for w in result.warnings) == warned


def test_policies_secrets_and_the_oneshot_command() -> None:
    _, objects = export(TASK.format(overlap="skip", catch_up="latest"), keep_runs=7)
    spec = objects[1]["spec"]
    assert spec["schedule"] == "0 9 * * *"
    assert spec["timeZone"] == "Europe/Berlin"
    assert spec["startingDeadlineSeconds"] == 86400  # one period of a daily trigger
    assert spec["successfulJobsHistoryLimit"] == spec["failedJobsHistoryLimit"] == 7
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 3
    pod = job["template"]["spec"]
    assert pod["activeDeadlineSeconds"] == 600 + 60
    (container,) = pod["containers"]
    assert container["args"] == [
        "task", "run", "--file", "/task/t.md", "--artifacts", "/artifacts",
    ]  # fmt: skip
    secret_env = [e for e in container["env"] if "valueFrom" in e]
    assert secret_env == [
        {
            "name": "DAYCARE_SECRET_API_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "daycare-secrets", "key": "api-token"}},
        }
    ]
    assert pod["volumes"][0] == {"name": "task", "configMap": {"name": "t-task"}}
    skip, _ = export(TASK.format(overlap="skip", catch_up="skip"))
    assert "catch_up" not in " ".join(skip.warnings)
    all_, objs = export(TASK.format(overlap="skip", catch_up="all"))
    assert any("catch_up: all" in w for w in all_.warnings)
    assert objs[1]["spec"]["startingDeadlineSeconds"] == 86400


def test_what_does_not_carry_over_is_warned_and_written_into_the_file() -> None:
    text = """---
triggers:
  - cron: "0 9 * * 1#2"
  - every: 7m
  - every: 15m
  - webhook: true
  - cron: "@reboot"
jitter: 2m
notify: [phone]
---
hi
"""
    result, objects = export(text)
    joined = "\n".join(result.warnings)
    for fragment in ("L, LW and #", "every 7m", "webhook", "@reboot", "jitter: 2m", "phone"):
        assert fragment in joined
    (cronjob,) = objects[1:]
    assert cronjob["spec"]["schedule"] == "*/15 * * * *"
    assert cronjob["spec"]["timeZone"] == "Etc/UTC"
    manifest = result.files["t.yaml"]
    for warning in result.warnings:
        assert f"# warning: {warning.splitlines()[0]}" in manifest


def test_dst_differences_are_warned() -> None:
    result, _ = export('---\nschedule: "30 2 * * *"\ntimezone: Europe/Berlin\n---\nhi\n')
    assert any("Kubernetes fires at 02:30+0100 and daycare does not" in w for w in result.warnings)


def test_a_disabled_task_is_suspended_and_a_config_default_model_is_warned() -> None:
    result, objects = export(
        '---\nschedule: "0 9 * * *"\nenabled: false\n---\nhi\n', default_model="gpt-4o-mini"
    )
    assert objects[1]["spec"]["suspend"] is True
    assert any("model: gpt-4o-mini" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("cron", "expected"),
    [("0 0 * * 7", "0 0 * * 0"), ("0 0 * * 5-7", "0 0 * * 0,5,6"),
     ("0 9 * * MON-FRI", "0 9 * * MON-FRI"), ("@weekly", "0 0 * * 0"),
     ("*/5 * * * *", "*/5 * * * *")],
)  # fmt: skip
def test_robfig_schedule(cron: str, expected: str) -> None:
    assert robfig_schedule(cron) == expected


@pytest.mark.parametrize("cron", ["0 0 L * *", "0 0 * * 5L", "0 0 * * 1#2", "@reboot"])
def test_robfig_refuses_what_it_cannot_parse(cron: str) -> None:
    with pytest.raises(NotExpressible):
        robfig_schedule(cron)


def test_long_names_are_cut_with_a_hash() -> None:
    name = object_name("a" * 63)
    assert len(name) == 52 and name != object_name("a" * 62 + "b")
    assert object_name("short") == "short"
