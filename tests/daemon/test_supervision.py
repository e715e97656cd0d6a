"""The daemon never stops silently: a part that dies is logged, shown and restarted.

Faults are injected into the real daemon process through its one test-only hook
(`daycare_cli/daemon/faults.py`): with `DAYCARE_TEST_FAULT=<file>` in its environment, a
part raises where a bug would while that file names it. A test writes the file, watches
what the daemon does about the failure (its log, `daemon status`, the ledger, systemd's
watchdog), removes the file, and checks that the part came back and did its job.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import DaemonHome

EVERY = (
    "---\ntriggers:\n  - every: 1s\nexecute: true\n---\n<run_python>\nprint('t')\n</run_python>\n"
)
HOOK = "---\ntriggers:\n  - webhook: true\n---\nhooked\n"


@pytest.fixture
def fault(tmp_path: Path) -> Path:
    """The fault file the daemon reads (DAYCARE_TEST_FAULT); absent means no fault."""
    return tmp_path / "fault"


def start(daemon: DaemonHome, fault: Path, **env: str) -> None:
    daemon.start(env={"DAYCARE_TEST_FAULT": str(fault), **env})


def status(daemon: DaemonHome) -> tuple[int, dict[str, Any]]:
    """`daemon status --json`: its exit code and what it printed."""
    res = daemon.cli("daemon", "status", "--json")
    return res.returncode, json.loads(res.stdout)


def part(daemon: DaemonHome, name: str) -> dict[str, Any]:
    return status(daemon)[1]["parts"][name]


def runs_since(daemon: DaemonHome, task: str, when: datetime, status: str = "succeeded") -> int:
    rows = daemon.runs(task, status=status)
    return sum(1 for r in rows if daemon.utc(r["queued_at"]) > when)


def logged(daemon: DaemonHome, text: str) -> list[str]:
    return [line for line in daemon.lines if text in line]


def test_a_failed_loop_is_logged_shown_restarted_and_scheduling_goes_on(
    daemon: DaemonHome, fault: Path
) -> None:
    daemon.write("tick", EVERY)
    start(daemon, fault)
    daemon.wait_for(lambda: daemon.runs("tick", status="succeeded"), 10, "a first run")
    code, healthy = status(daemon)
    assert code == 0 and healthy["healthy"] is True
    assert set(healthy["parts"]) == {"scheduler", "watcher", "webhooks", "control", "state"}
    assert all(p["healthy"] and p["error"] is None for p in healthy["parts"].values())
    lag = healthy["loop_lag_ms"]
    assert lag["samples"] > 0 and 0 <= lag["p50"] <= lag["p99"] <= lag["max"]

    fault.write_text("scheduler\n")
    daemon.wait_for(lambda: logged(daemon, "scheduler failed: InjectedFault"), 10, "the log")
    # Logged with its cause: the exception and its traceback (once, not per restart).
    assert logged(daemon, "Traceback (most recent call last)")
    assert logged(daemon, "in handle")
    code, down = status(daemon)
    assert code == 1 and down["healthy"] is False
    sched = down["parts"]["scheduler"]
    assert sched["healthy"] is False and "injected fault in scheduler" in sched["error"]
    human = daemon.cli("daemon", "status")
    assert human.returncode == 1
    assert "unhealthy: scheduler" in human.stdout and "InjectedFault" in human.stdout

    fault.unlink()
    back = daemon.wait_for(
        lambda: (p := part(daemon, "scheduler"))["healthy"] and p, 15, "the loop back"
    )
    assert back["restarts"] >= 1 and back["error"] is None
    recovered = datetime.now(UTC)
    daemon.wait_for(lambda: runs_since(daemon, "tick", recovered) >= 2, 10, "runs after it")
    assert status(daemon)[0] == 0
    failed = [json.loads(e["detail"]) for e in daemon.events("part.failed")]
    assert failed and failed[0]["part"] == "scheduler" and "InjectedFault" in failed[0]["error"]
    assert daemon.events("part.recovered")
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_a_loop_that_cannot_recover_stops_the_daemon_with_exit_code_1(
    daemon: DaemonHome, fault: Path
) -> None:
    daemon.write("tick", EVERY)
    start(daemon, fault)
    daemon.wait_for(lambda: daemon.runs("tick", status="succeeded"), 10, "a first run")
    fault.write_text("scheduler\n")
    # Five failures (backoff 0.5 + 1 + 2 + 4 s): the daemon gives up, so systemd restarts it.
    assert daemon.wait_exit(30) == 1
    assert logged(daemon, "scheduler failed 5 times in 60 s")
    (gave_up,) = daemon.events("daemon.failed")
    assert json.loads(gave_up["detail"])["part"] == "scheduler"
    (stopped,) = daemon.events("daemon.stopped")
    assert json.loads(stopped["detail"])["exit_code"] == 1
    assert not daemon.runs(status="running")


def test_a_planning_error_does_not_stop_the_watcher_and_is_retried(
    daemon: DaemonHome, fault: Path
) -> None:
    """Issue [6]: a planning error used to kill the watcher for good (new files never
    scheduled, deleted ones firing on). Now the watcher reports it and keeps watching,
    the file whose planning failed is planned again once planning works, and a file
    deleted meanwhile stops at once."""
    daemon.write("keep", EVERY)
    gone = daemon.write("gone", EVERY)
    start(daemon, fault)
    daemon.wait_for(lambda: daemon.runs("gone", status="succeeded"), 10, "gone to run")

    fault.write_text("plan\n")
    daemon.write("new", EVERY)  # planning it raises
    daemon.wait_for(
        lambda: logged(daemon, "watcher: planning new failed (InjectedFault"), 10, "the log"
    )
    assert [e for e in daemon.events("watcher.failed", "new") if "InjectedFault" in e["detail"]]
    code, meanwhile = status(daemon)
    # Nothing is down: the watcher reported the failure and went on; the loop too.
    assert code == 0 and meanwhile["parts"]["watcher"]["healthy"] is True
    assert meanwhile["parts"]["scheduler"]["healthy"] is True
    during = datetime.now(UTC)
    daemon.wait_for(lambda: runs_since(daemon, "keep", during) >= 1, 5, "keep running")
    gone.unlink()  # the watcher still watches: unscheduled at once
    daemon.wait_for(lambda: daemon.events("task.removed", "gone"), 5, "gone to be removed")
    removed = datetime.now(UTC)
    assert not daemon.runs("new")

    fault.unlink()  # planning works again: the failed file is retried (rescan, backoff)
    daemon.wait_for(lambda: daemon.runs("new", status="succeeded"), 15, "the new file to run")
    daemon.holds_for(lambda: runs_since(daemon, "gone", removed, "queued") == 0, 2, "no gone")
    assert not [r for r in daemon.runs("gone") if daemon.utc(r["queued_at"]) > removed]
    daemon.write("newer", EVERY)
    daemon.wait_for(lambda: daemon.runs("newer", status="succeeded"), 10, "newer to run")
    assert status(daemon)[0] == 0


def test_a_failed_webhook_listener_is_restarted_on_its_port(
    daemon: DaemonHome, fault: Path
) -> None:
    import httpx

    daemon.write("hook", HOOK)
    start(daemon, fault)
    url = (daemon.home / "run" / "webhook.url").read_text().strip()
    fault.write_text("webhooks\n")
    daemon.wait_for(lambda: logged(daemon, "webhooks failed: InjectedFault"), 10, "the log")
    fault.unlink()
    daemon.wait_for(lambda: part(daemon, "webhooks")["healthy"], 10, "the listener back")
    # Port 0 took a free port; the restarted listener asked for the same one first.
    assert (daemon.home / "run" / "webhook.url").read_text().strip() == url
    token = daemon.cli("webhook", "url", "hook").stdout.strip().rsplit("/", 1)[1]
    res = httpx.post(f"{url}/hooks/{token}", content=b"{}", timeout=10)
    assert res.status_code == 202
    assert part(daemon, "webhooks")["restarts"] >= 1


def test_a_removed_control_socket_is_made_again(daemon: DaemonHome) -> None:
    daemon.write("tick", EVERY)
    daemon.start()
    sock = daemon.home / "run" / "daycare.sock"
    sock.unlink()  # e.g. a clean-up of the runtime directory
    daemon.wait_for(lambda: logged(daemon, "control failed"), 10, "the failure to be noticed")
    daemon.wait_for(lambda: daemon.cli("daemon", "status").returncode == 0, 10, "the API back")
    assert part(daemon, "control")["restarts"] >= 1


# --- systemd's watchdog --------------------------------------------------------------------


def test_the_watchdog_ping_stops_while_the_loop_is_unhealthy(
    daemon: DaemonHome, fault: Path, notify_socket: tuple[Path, list[tuple[float, str]]]
) -> None:
    address, messages = notify_socket
    daemon.write("tick", EVERY)
    start(daemon, fault, NOTIFY_SOCKET=str(address), WATCHDOG_USEC="200000")

    def pings() -> int:
        return sum(m == "WATCHDOG=1" for _, m in messages)

    daemon.wait_for(lambda: pings() >= 5, 5, "watchdog pings")
    fault.write_text("scheduler\n")
    daemon.wait_for(
        lambda: any("loop unhealthy" in m for _, m in messages), 10, "the unhealthy STATUS"
    )
    time.sleep(1.0)  # the loop stays down (in its backoff); no ping meanwhile
    fault.unlink()
    daemon.wait_for(lambda: any(m == "STATUS=running" for _, m in messages), 15, "recovery")
    resumed = pings()
    daemon.wait_for(lambda: pings() >= resumed + 5, 5, "pings again")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(15) == 0

    texts = [m for _, m in messages]
    down = next(i for i, m in enumerate(texts) if "loop unhealthy" in m)
    up = next(i for i, m in enumerate(texts) if m == "STATUS=running")
    assert down < up and "WATCHDOG=1" not in texts[down:up]
    times = [t for t, m in messages if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Every 0.1 s while healthy; one gap as long as the loop was down (more than 1 s).
    assert sorted(gaps)[len(gaps) // 2] < 0.2
    assert max(gaps) > 1.0
