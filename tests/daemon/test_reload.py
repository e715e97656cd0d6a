"""SIGHUP applies every config key at once, or names the ones that need a restart."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import DaemonHome

# A run that waits (bounded) for the test to write `go` into its task's files/ directory.
GATED = """---
triggers:
  - cron: "@reboot"
execute: true
---
<run_python>
import os, time
deadline = time.time() + 30
while not os.path.exists("go") and time.time() < deadline:
    time.sleep(0.02)
print("gate open" if os.path.exists("go") else "gate timeout")
</run_python>
"""


TICK = "---\ntriggers:\n  - every: 1s\n---\ntick\n"


def reloaded(daemon: DaemonHome, n: int) -> None:
    daemon.wait_for(
        lambda: sum("reloaded config" in x for x in daemon.lines) >= n, 5, f"reload {n}"
    )


def test_a_raised_cap_starts_the_waiting_runs_at_once(daemon: DaemonHome) -> None:
    daemon.config.write_text("max_concurrent_runs = 1\n" + daemon.CONFIG)
    for task in "abc":
        daemon.write(task, GATED)
    daemon.start()
    daemon.wait_for(lambda: len(daemon.runs(status="running")) == 1, 10, "one run started")
    daemon.wait_for(lambda: len(daemon.runs(status="queued")) == 2, 5, "two waiting")
    daemon.holds_for(lambda: len(daemon.runs(status="running")) == 1, 0.5, "the cap of 1")

    daemon.config.write_text("max_concurrent_runs = 3\n" + daemon.CONFIG)
    raised = datetime.now(UTC)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: len(daemon.runs(status="running")) == 3, 5, "all three running")
    late = [
        (daemon.utc(r["started_at"]) - raised).total_seconds()
        for r in daemon.runs(status="running")
    ]
    assert max(late) < 2.0, late  # at once, not when the first run ends
    for task in "abc":
        (daemon.home / "workspaces" / task / "files" / "go").write_text("")
    daemon.wait_for(lambda: len(daemon.runs(status="succeeded")) == 3, 15, "the runs to end")
    (event,) = daemon.events("config.reloaded")
    assert json.loads(event["detail"]) == {
        "applied": ["max_concurrent_runs"],
        "restart_needed": [],
    }


def test_a_reload_names_the_keys_that_need_a_restart(daemon: DaemonHome) -> None:
    daemon.write("tick", TICK)
    daemon.start()
    other = daemon.home / "elsewhere"
    daemon.config.write_text(
        f'tasks_dir = "{other}"\nmodel = "echo"\n'
        + daemon.CONFIG
        + '\n[retention]\nkeep_runs = 7\n\n[secrets]\ntoken = "s3cr3t-value"\n'
    )
    daemon.signal(signal.SIGHUP)
    reloaded(daemon, 1)
    warned = [x for x in daemon.lines if "apply only after a restart" in x]
    assert len(warned) == 1 and warned[0].endswith(": tasks_dir")
    (event,) = daemon.events("config.reloaded")
    detail = json.loads(event["detail"])
    assert detail == {
        "applied": ["model", "retention.keep_runs", "secrets.token"],
        "restart_needed": ["tasks_dir"],
    }
    assert "s3cr3t-value" not in "\n".join(daemon.lines) + event["detail"]
    # The daemon goes on with the tasks it watches.
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert daemon.cli("daemon", "status").returncode == 0


def test_a_failing_reload_is_logged_and_the_daemon_goes_on(daemon: DaemonHome) -> None:
    fault = daemon.home / "fault"
    daemon.write("tick", TICK)
    daemon.start(env={"DAYCARE_TEST_FAULT": str(fault)})
    fault.write_text("plan\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.events("reload.failed"), 5, "the failed reload")
    # The task whose planning failed keeps the version it had; the others are reloaded.
    assert any("reload failed for tick, which goes on as it was" in x for x in daemon.lines)
    assert "InjectedFault" in daemon.events("reload.failed")[0]["detail"]
    fault.unlink()
    before = len(daemon.runs("tick"))
    daemon.wait_for(lambda: len(daemon.runs("tick")) > before + 1, 5, "ticks going on")
    daemon.write("another", TICK.replace("every: 1s", "every: 1h"))
    daemon.signal(signal.SIGHUP)
    reloaded(daemon, 1)
    status = daemon.cli_json("daemon", "status")
    assert status["tasks"] == 2 and status["healthy"] is True
