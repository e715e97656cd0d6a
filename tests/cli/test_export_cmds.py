"""`daycare export kubernetes|systemd` and `daycare import systemd|crontab` through the CLI."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from daycare_cli.core.task import CronTrigger
from daycare_cli.core.taskfile import parse_task

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "tasks.example"
Write = Callable[[str, str], Path]
Run = Callable[..., Any]  # the `run` fixture of conftest.py


@pytest.fixture
def examples(tasks: Path) -> Path:
    """The example tasks, copied into the temp home's tasks directory."""
    for path in EXAMPLES.glob("*.md"):
        shutil.copy(path, tasks / path.name)
    return tasks


def test_export_kubernetes_writes_one_manifest_per_task(
    run: Run, examples: Path, tmp_path: Path
) -> None:
    out = tmp_path / "k8s"
    result = run("export", "kubernetes", "-o", str(out), "--image", "registry.local/daycare:1")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    # The webhook task and the one-off reminder have nothing a CronJob can carry.
    assert names == [
        "api-poll.yaml", "daily-reminder.yaml", "error-monitor.yaml", "metrics-digest.yaml",
        "weekday-summary.yaml", "weekly-backup.yaml",
    ]  # fmt: skip
    assert "git-status-webhook: trigger `webhook` (webhook)" in result.stderr
    assert "dentist-reminder: trigger `at`" in result.stderr
    objects = list(yaml.safe_load_all((out / "daily-reminder.yaml").read_text()))
    assert (
        objects[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.local/daycare:1"
    )


def test_export_without_output_prints_the_stream(run: Run, examples: Path) -> None:
    result = run("export", "kubernetes", "daily-reminder")
    assert result.exit_code == 0, result.output
    kinds = [o["kind"] for o in yaml.safe_load_all(result.stdout)]
    assert kinds == ["ConfigMap", "CronJob"]


def test_strict_turns_warnings_into_an_error_and_writes_nothing(
    run: Run, examples: Path, tmp_path: Path
) -> None:
    out = tmp_path / "units"
    result = run("export", "systemd", "--strict", "-o", str(out))
    assert result.exit_code == 1
    assert "do not carry over" in result.stderr
    assert not out.exists()
    clean = run("export", "systemd", "--strict", "daily-reminder", "-o", str(out))
    assert clean.exit_code == 0, clean.output
    assert sorted(p.name for p in out.iterdir()) == [
        "daycare-daily-reminder.service", "daycare-daily-reminder.timer",
    ]  # fmt: skip


def test_an_invalid_task_file_stops_the_export(run: Run, write: Write, tmp_path: Path) -> None:
    write("good", '---\nschedule: "0 9 * * *"\n---\nhi\n')
    write("bad", "---\nschedule: */15 * * * *\n---\nhi\n")
    out = tmp_path / "out"
    result = run("export", "systemd", "-o", str(out))
    assert result.exit_code == 4
    assert "bad.md:2" in result.stderr
    assert not out.exists()
    assert run("export", "systemd", "nope").exit_code == 3


def test_systemd_round_trip_gives_back_every_task_file(
    run: Run, examples: Path, tmp_path: Path, home: Path
) -> None:
    units = tmp_path / "units"
    assert run("export", "systemd", "-o", str(units)).exit_code == 0
    back = tmp_path / "back"
    result = run("import", "systemd", *sorted(str(p) for p in units.glob("*.timer")),
                 "--tasks-dir", str(back))  # fmt: skip
    assert result.exit_code == 0, result.output
    exported = sorted(p.name for p in back.iterdir())
    assert exported == sorted(
        p.name for p in EXAMPLES.glob("*.md") if p.stem != "git-status-webhook"
    )
    for name in exported:
        assert (back / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


def test_a_changed_timer_changes_only_the_schedule(
    run: Run, examples: Path, tmp_path: Path
) -> None:
    units = tmp_path / "units"
    assert run("export", "systemd", "weekday-summary", "-o", str(units)).exit_code == 0
    timer = units / "daycare-weekday-summary.timer"
    timer.write_text(
        timer.read_text().replace(
            "OnCalendar=Mon..Fri *-*-* 17:00:00 America/New_York",
            "OnCalendar=Mon..Fri *-*-* 18:30:00 America/New_York",
        )
    )
    result = run("import", "systemd", str(timer), "--tasks-dir", str(tmp_path / "back"))
    assert result.exit_code == 0, result.output
    old = (EXAMPLES / "weekday-summary.md").read_text().splitlines()
    new = (tmp_path / "back" / "weekday-summary.md").read_text().splitlines()
    assert [(a, b) for a, b in zip(old, new, strict=True) if a != b] == [
        ('schedule: "0 17 * * MON-FRI"', 'schedule: "30 18 * * 1-5"')
    ]


def test_import_a_hand_written_timer(run: Run, tasks: Path, tmp_path: Path) -> None:
    (tmp_path / "backup.timer").write_text(
        "[Unit]\nDescription=Nightly backup\n\n[Timer]\n"
        "OnCalendar=*-*-* 02:30:00 Europe/Berlin\nPersistent=true\n"
        "RandomizedDelaySec=5min\n\n[Install]\nWantedBy=timers.target\n"
    )
    (tmp_path / "backup.service").write_text(
        "[Unit]\nDescription=Nightly backup\n\n[Service]\nType=oneshot\n"
        'ExecStart=/usr/local/bin/backup.sh --to "/srv/backup dir"\n'
        "Environment=KEEP=7 MODE=full\nTimeoutStartSec=1h\n"
    )
    result = run("import", "systemd", str(tmp_path / "backup.timer"))
    assert result.exit_code == 0, result.output
    (path,) = tasks.iterdir()
    task = parse_task(path.read_text(), path=str(path))
    assert task.name == "Nightly backup"
    assert task.triggers == (CronTrigger("30 2 * * *", source="30 2 * * *"),)
    assert (task.timezone, task.catch_up, task.jitter) == ("Europe/Berlin", "latest", 300)
    assert (task.timeout, task.run_timeout) == (3600, 3600)
    assert task.env == {"KEEP": "7", "MODE": "full"}
    assert "'/srv/backup dir'" in task.body


def test_import_crontab_from_stdin_writes_a_task_per_entry(run: Run, tasks: Path) -> None:
    crontab = (
        "MAILTO=me@example.com\n"
        "@reboot /usr/local/bin/tunnel\n"
        "*/5 * * * * curl -fsS https://example.com/ping%payload\n"
    )
    result = run("import", "crontab", "-", input=crontab)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tasks.iterdir()) == ["curl-fss.md", "tunnel.md"]
    assert "MAILTO" in result.stderr
    ping = parse_task((tasks / "curl-fss.md").read_text(), path="curl-fss.md")
    assert ping.triggers[0].expr == "*/5 * * * *"  # type: ignore[union-attr]
    assert "input='payload\\n'" in ping.body


def test_a_bad_crontab_line_writes_nothing(run: Run, tasks: Path, tmp_path: Path) -> None:
    path = tmp_path / "crontab"
    path.write_text("0 9 * * * echo fine\n0 9 * * MOON echo bad\n")
    result = run("import", "crontab", str(path))
    assert result.exit_code == 4
    assert f"{path}:2:9" in result.stderr
    assert list(tasks.iterdir()) == []


def test_dry_run_prints_and_writes_nothing(run: Run, tasks: Path) -> None:
    result = run("import", "crontab", "--dry-run", "-", input="0 9 * * * echo hi\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# ==> echo-hi.md <==\n---\nname: echo hi\n")
    assert list(tasks.iterdir()) == []


def test_the_image_runs_what_the_cronjob_asks(run: Run, examples: Path, tmp_path: Path) -> None:
    """The Containerfile's ENTRYPOINT followed by the CronJob's args is a working run."""
    import json
    import os
    import re
    import subprocess
    import sys

    entrypoint = re.search(r"^ENTRYPOINT (.+)$", (REPO / "Containerfile").read_text(), re.M)
    assert entrypoint is not None and json.loads(entrypoint.group(1)) == ["daycare"]
    result = run("export", "kubernetes", "daily-reminder")
    config_map, cronjob = yaml.safe_load_all(result.stdout)
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    # Mount the ConfigMap and the artifacts volume where the pod would have them.
    task_dir, artifacts = tmp_path / "task", tmp_path / "artifacts"
    task_dir.mkdir()
    for name, text in config_map["data"].items():
        (task_dir / name).write_text(text)
    args = [a.replace("/task", str(task_dir)).replace("/artifacts", str(artifacts)) for a in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAYCARE_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "daycare_cli", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["result"]["status"] == "succeeded"
    assert "Water the plants" in last["result"]["output"]
