"""Blocks with packages through the daemon (issue 9): the run that builds the environment
says so in the events it streams and in the ledger; the next run reuses it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.append(str(Path(__file__).resolve().parents[1] / "run"))  # tests/run/wheels.py
from wheels import tiny_wheels

if TYPE_CHECKING:
    from conftest import DaemonHome

POLL = """\
---
execute: true
python:
  dependencies: [tinyplus]
---
<run_python>
import tinyplus
print(tinyplus.VALUE)
</run_python>
"""


def test_the_daemon_builds_once_and_says_so(daemon: DaemonHome, tmp_path: Path) -> None:
    wheels = tiny_wheels(tmp_path / "wheels")
    with daemon.config.open("a") as f:
        f.write(f'\n[deps]\nfind_links = ["{wheels}"]\noffline = true\n')
    daemon.write("poll", POLL)
    daemon.start()

    first = daemon.cli("task", "run", "poll", timeout=60)
    assert first.returncode == 0, first.stderr
    assert "building the Python environment of block 1 (tinyplus)" in first.stderr
    assert first.stdout.rstrip().endswith("43")
    (built,) = daemon.events("env.built", "poll")
    detail = json.loads(built["detail"])
    assert detail["key"] and detail["duration_ms"] >= 0
    (run,) = daemon.runs("poll")
    assert run["pid"] == daemon.pid  # the daemon ran it, and built the environment

    second = daemon.cli("task", "run", "poll", timeout=60)
    assert second.returncode == 0, second.stderr
    assert "building" not in second.stderr
    assert len(daemon.events("env.built", "poll")) == 1
    logs = [Path(r["run_dir"]) / "log.jsonl" for r in daemon.runs("poll")]
    kinds = [[json.loads(line)["event"] for line in p.read_text().splitlines()] for p in logs]
    assert "env.built" in kinds[0] and "env.built" not in kinds[1]
