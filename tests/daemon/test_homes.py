"""Several homes on one machine: the webhook listener only where it is needed, and a busy
port is one clear error that names the other daemon and stops nothing else."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import DaemonHome

TICK = (
    "---\ntriggers:\n  - every: 1s\nexecute: true\n---\n<run_python>\nprint('t')\n</run_python>\n"
)
HOOK = (
    "---\ntriggers:\n  - webhook: true\nexecute: true\n---\n"
    "<run_python>\nprint('hooked')\n</run_python>\n"
)
MANUAL = "---\nexecute: true\n---\n<run_python>\nprint('by hand')\n</run_python>\n"


@pytest.fixture
def other(daemon: DaemonHome, tmp_path: Path) -> Iterator[DaemonHome]:
    """A second home beside `daemon`'s, with a daemon of its own."""
    home = type(daemon)(tmp_path / "other")
    try:
        yield home
    finally:
        if home.proc is not None and home.proc.poll() is None:
            home.stop()
        print(f"--- other daemon ({home.home}) ---\n{home.output()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def published(home: DaemonHome) -> Path:
    return home.home / "run" / "webhook.url"


def fire_webhook(home: DaemonHome, task: str) -> httpx.Response:
    res = home.cli("webhook", "url", task)
    assert res.returncode == 0, res.stderr
    return httpx.post(res.stdout.strip(), content=b"{}", timeout=10)


def test_two_homes_side_by_side_each_fire_their_tasks(
    daemon: DaemonHome, other: DaemonHome
) -> None:
    daemon.write("hook", HOOK)
    daemon.write("tick", TICK)
    other.write("tick", TICK)
    other.write("manual", MANUAL)
    daemon.start()
    other.start()

    # The home with a webhook task listens on a free port (port = 0), which `webhook url`
    # prints: the real one, as published by the daemon.
    url = published(daemon).read_text().strip()
    assert not url.endswith(":0")
    assert daemon.cli("webhook", "url", "hook").stdout.startswith(url + "/hooks/")
    res = fire_webhook(daemon, "hook")
    assert res.status_code == 202
    run_id = res.json()["run"]
    daemon.wait_for(lambda: daemon.runs("hook", id=run_id, status="succeeded"), 10, "the hook")

    # The other has none: no listener, and healthy.
    assert not published(other).exists()
    status = other.cli_json("daemon", "status")
    assert status["webhook_url"] is None and status["healthy"] is True
    assert status["parts"]["webhooks"]["detail"] == "not listening: no task has a webhook trigger"
    ran = other.cli_json("task", "run", "manual")
    assert ran["status"] == "succeeded" and ran["output"] == "by hand\n"
    (row,) = other.runs("manual")
    assert row["pid"] == other.pid

    # Both go on scheduling their own tasks, each in its own database.
    for home in (daemon, other):
        home.wait_for(lambda h=home: len(h.runs("tick", status="succeeded")) >= 2, 10, "ticks")
    assert not daemon.runs("manual") and not other.runs("hook")


def test_a_busy_port_names_the_other_daemon_and_stops_nothing_else(
    daemon: DaemonHome, other: DaemonHome
) -> None:
    port = free_port()
    fixed = config_with_port(port)
    daemon.config.write_text(fixed)
    other.config.write_text(fixed)
    daemon.write("hook", HOOK)
    other.write("hook", HOOK)
    other.write("tick", TICK)
    daemon.start()
    ready = other.start()

    assert "webhooks not listening (see the error above)" in ready
    expected = (
        f"webhooks cannot listen: 127.0.0.1:{port} is in use by the daycare daemon of "
        f"{daemon.home} (pid {daemon.pid})"
    )
    errors = [x for x in other.lines if "webhooks cannot listen" in x]
    assert len(errors) == 1 and expected in errors[0]
    assert "webhook.port" in errors[0] and str(other.config) in errors[0]
    # The other tasks are scheduled all the same.
    other.wait_for(lambda: len(other.runs("tick", status="succeeded")) >= 2, 10, "ticks")
    res = other.cli("daemon", "status", "--json")
    assert res.returncode == 1
    hooks = json.loads(res.stdout)["parts"]["webhooks"]
    assert hooks["healthy"] is False and expected in hooks["error"]
    text = other.cli("daemon", "status")
    assert text.returncode == 1 and f"the daycare daemon of {daemon.home}" in text.stdout
    # Retried (with backoff) without a line each time.
    other.wait_for(lambda: hooks_restarts(other) >= 2, 10, "retries")
    assert len([x for x in other.lines if "webhooks cannot listen" in x]) == 1

    # The fix the error names: another port (0: any free one), applied by a reload.
    other.config.write_text(config_with_port(0))
    other.signal(signal.SIGHUP)
    other.wait_for(lambda: published(other).exists(), 10, "the listener on a free port")
    assert other.cli("daemon", "status").returncode == 0
    assert fire_webhook(other, "hook").status_code == 202
    assert fire_webhook(daemon, "hook").status_code == 202


def test_the_listener_starts_and_stops_as_webhook_tasks_come_and_go(daemon: DaemonHome) -> None:
    daemon.write("tick", TICK)
    daemon.start()
    assert not published(daemon).exists()

    hook = daemon.write("hook", HOOK)
    daemon.wait_for(published(daemon).exists, 5, "the listener to start")
    url = published(daemon).read_text().strip()
    assert fire_webhook(daemon, "hook").status_code == 202
    daemon.wait_for(
        lambda: any("webhooks listening on" in x for x in daemon.lines), 5, "the log line"
    )

    hook.unlink()
    daemon.wait_for(lambda: not published(daemon).exists(), 5, "the listener to stop")
    host, port = url.rsplit("/", 1)[1].split(":")
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), 2):
        pass
    status = daemon.cli_json("daemon", "status")
    assert status["parts"]["webhooks"]["healthy"] is True and status["webhook_url"] is None


def hooks_restarts(home: DaemonHome) -> int:
    res = home.cli("daemon", "status", "--json")
    return int(json.loads(res.stdout)["parts"]["webhooks"]["restarts"])


def config_with_port(port: int) -> str:
    """The test config (grace 5 s) with the webhook port `port`."""
    return f"[webhook]\nport = {port}\n\n[daemon]\ngrace_period = 5\n"
