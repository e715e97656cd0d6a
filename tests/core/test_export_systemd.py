"""Tasks -> systemd .timer + .service, checked by `systemd-analyze verify`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daycare_cli.core.export import TaskExport
from daycare_cli.core.export_systemd import exec_arg, export_systemd
from daycare_cli.core.taskfile import parse_task

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "tasks.example").glob("*.md"))
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DAYCARE = str(Path(sys.executable).with_name("daycare"))
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is absent (Debian package `systemd`)"
)


def export(text: str, task_id: str = "t", **kw: Any) -> TaskExport:
    task = parse_task(text, path=f"{task_id}.md", task_id=task_id)
    options: dict[str, Any] = {
        "source": f"{task_id}.md",
        "task_file": f"/srv/tasks/{task_id}.md",
        "executable": DAYCARE,
        "default_zone": "UTC",
        "now": NOW,
    }
    return export_systemd(task, **{**options, **kw})


def timer_lines(result: TaskExport, task_id: str = "t") -> list[str]:
    text = result.files[f"daycare-{task_id}.timer"]
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def verify(directory: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    units = sorted(str(p) for p in directory.iterdir())
    return subprocess.run(
        [ANALYZE, "verify", *units],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        timeout=60,
    )


@needs_analyze
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_exports_to_units_systemd_accepts(path: Path, tmp_path: Path) -> None:
    result = export(path.read_text(), path.stem, task_file=str(path))
    task = parse_task(path.read_text(), path=str(path))
    if all(t.type == "webhook" for t in task.triggers):
        assert result.files == {}
        assert "nothing exported" in result.warnings[-1]
        return
    assert sorted(result.files) == [f"daycare-{path.stem}.service", f"daycare-{path.stem}.timer"]
    for name, text in result.files.items():
        (tmp_path / name).write_text(text)
    done = verify(tmp_path)
    # verify prints "ignoring" lines for bad settings and still exits 0: both must be clean.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    result = export('---\nschedule: "0 9 * * *"\n---\nhi\n', executable="/nonexistent/daycare")
    for name, text in result.files.items():
        (tmp_path / name).write_text(text.replace("AccuracySec=1s", "AccuracySec=soon"))
    done = verify(tmp_path)
    assert done.returncode != 0
    assert "ignoring: soon" in done.stderr and "/nonexistent/daycare" in done.stderr


def test_the_mapping() -> None:
    result = export(
        """---
name: Backup 100%
schedule: "30 2 * * *"
timezone: Europe/Berlin
jitter: 2m
catch_up: latest
run_timeout: 10m
---
hi
"""
    )
    assert timer_lines(result) == [
        "[Unit]",
        "Description=Timer of daycare task: Backup 100%%",
        "[Timer]",
        "OnCalendar=*-*-* 02:30:00 Europe/Berlin",
        "Persistent=true",
        "RandomizedDelaySec=2m",
        "AccuracySec=1s",
        "Unit=daycare-t.service",
        "[Install]",
        "WantedBy=timers.target",
    ]
    service = result.files["daycare-t.service"]
    assert (
        f"ExecStart={DAYCARE} task run --file /srv/tasks/t.md --artifacts %S/daycare/artifacts\n"
        in service
    )
    assert "TimeoutStartSec=11m\n" in service
    assert "Type=oneshot\n" in service
    # DST: systemd skips 02:30 on the day clocks go forward; daycare runs it at 03:00.
    (warning,) = result.warnings
    assert "daycare fires at 03:00+0200 and systemd does not" in warning
    assert f"# warning: {warning}" in service


def test_every_at_reboot_and_what_does_not_carry_over() -> None:
    result = export(
        """---
triggers:
  - every: 90m
  - at: "2027-05-01T08:00:00"
  - cron: "@reboot"
  - cron: "0 0 LW * *"
  - webhook: true
timezone: Asia/Tokyo
catch_up: skip
overlap: queue
retries: 2
---
hi
"""
    )
    timer = timer_lines(result)
    assert "OnActiveSec=1h30m" in timer and "OnUnitActiveSec=1h30m" in timer
    assert "OnCalendar=2027-05-01 08:00:00 Asia/Tokyo" in timer
    assert "OnStartupSec=0" in timer
    assert "Persistent=false" in timer
    joined = "\n".join(result.warnings)
    for fragment in ("`LW`", "webhook", "overlap: queue", "retries: 2"):
        assert fragment in joined


@pytest.mark.parametrize(
    ("arg", "expected"),
    [("/usr/bin/daycare", "/usr/bin/daycare"), ("/my tasks/a.md", '"/my tasks/a.md"'),
     ("100%", "100%%"), ("$HOME", "$$HOME")],
)  # fmt: skip
def test_exec_arguments_are_escaped(arg: str, expected: str) -> None:
    assert exec_arg(arg) == expected
