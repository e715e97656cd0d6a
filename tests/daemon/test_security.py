"""The daemon's side of docs/security.md: no token in its logs (not even aiohttp's own parser
errors), nothing it writes is readable by others, one rule for task ids at the control
API, and no sandbox process outlives a cancelled run.
"""

from __future__ import annotations

import os
import socket
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from daycare_cli.run.identity import sandbox_identity

HOOK = (
    "---\ntriggers: [{webhook: true}]\nexecute: true\n---\n"
    "<run_python>\nprint(payload)\n</run_python>\n"
)


def _raw(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        return s.recv(200)


def test_http_parser_errors_do_not_log_the_token(daemon: Any) -> None:
    daemon.write("hook", HOOK)
    daemon.start()
    url = daemon.cli("webhook", "url", "hook").stdout.strip()
    base, token = url.rsplit("/hooks/", 1)
    path = f"/hooks/{token}"
    requests = [
        f"POST {path}?{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n",  # line too long
        f"POST {path} HTTP/1.1\r\nHost: x\r\nBad Header {token}\r\n\r\n",  # malformed header
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Sig: {token}\x01\r\n\r\n",  # bad header value
        f"POST {path}\x00 HTTP/1.1\r\nHost: x\r\n\r\n",  # bad character in the URL
    ]
    for request in requests:
        assert _raw(base, request.encode()).startswith(b"HTTP/1.")
    assert daemon.stop() == 0
    log = daemon.output()
    # aiohttp's own lines pass the filter (details withheld); those below WARNING are not
    # logged at all, and repeats are folded into a count (daemon/daemonlog.py).
    assert log.count("details withheld") >= 1
    assert token not in log
    assert token[:16] not in log


def _others_can_use(path: Path) -> bool:
    return bool(path.lstat().st_mode & 0o077)


def test_files_the_daemon_writes_are_private(daemon: Any) -> None:
    """0600 files in 0700 directories, whatever the umask it was started with: state,
    runs, logs, the runtime directory, the workspace and what a block made."""
    old = os.umask(0o022)
    try:
        daemon.write(
            "hook",
            HOOK.replace(
                "print(payload)",
                "import os\nprint(payload)\nopen('kept.txt', 'w').write('1')\n"
                "open(os.environ['DAYCARE_ARTIFACTS'] + '/out.txt', 'w').write('2')",
            ),
        )
        daemon.start()
        url = daemon.cli("webhook", "url", "hook").stdout.strip()
        run = httpx.post(url, content=b'{"n": 1}', timeout=15).json()["run"]
        daemon.wait_for(
            lambda: [r for r in daemon.runs("hook") if r["id"] == run and r["finished_at"]],
            what="the webhook's run",
        )
        assert daemon.stop() == 0
        started = daemon.cli("daemon", "start")  # creates daemon.log itself
        assert started.returncode == 0, started.stderr
        assert daemon.cli("daemon", "stop").returncode == 0
    finally:
        os.umask(old)
    home = daemon.home
    ours = {home, home / "tasks", home / "tasks" / "hook.md", home / "config.toml"}
    checked = []
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path in ours or path.is_symlink():
                continue
            checked.append(path.relative_to(home).as_posix())
            mode = stat.S_IMODE(path.lstat().st_mode)
            assert not _others_can_use(path), f"{path} is {mode:o}"
    for expected in ("state.db", "daemon.log", "run", "workspaces/hook/files/kept.txt"):
        assert expected in checked
    assert any(p.endswith("artifacts/out.txt") for p in checked)
    assert any(p.endswith("/log.jsonl") for p in checked)
    assert any(p.endswith("/payload.json") for p in checked)


def test_control_api_refuses_ids_outside_the_rule(daemon: Any, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = outside / "evil.md"
    evil.write_text("---\nexecute: true\n---\n<run_python>\nopen('/tmp/x', 'w')\n</run_python>\n")
    daemon.write("fine", "---\nname: fine\n---\nhello\n")
    daemon.start()
    before = evil.stat().st_atime_ns
    transport = httpx.HTTPTransport(uds=str(daemon.home / "run" / "daycare.sock"))
    with httpx.Client(transport=transport, base_url="http://daycare", timeout=10) as client:
        for bad in ("..%2F..%2Foutside%2Fevil", "..%2f..%2foutside%2fevil", "Fine", "fine%0A"):
            r = client.post(f"/tasks/{bad}/run")
            assert r.status_code == 404, (bad, r.text)
            assert r.json()["code"] == 3
        assert client.post("/tasks/fine/run").status_code == 202
    assert daemon.stop() == 0
    assert [r["task"] for r in daemon.runs()] == ["fine"]
    assert evil.stat().st_atime_ns == before
    assert not (daemon.home / "workspaces" / "evil").exists()


# -- cancelled runs leave no sandbox process -----------------------------------------------

SLEEPER = (
    "---\nexecute: true\noverlap: replace\n---\n<run_python>\n"
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    if os.fork() == 0:\n"
    "        os.setsid()\n"
    "        time.sleep(120)\n"
    "    os._exit(0)\n"
    "open('up', 'w').write(run.id)\n"
    "time.sleep(120)\n"
    "</run_python>\n"
)


def _of_uid(uid: int) -> list[int]:
    found = []
    for p in psutil.process_iter(["uids", "status"]):
        try:
            if p.info["uids"].real == uid and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="checked by the task's uid, which only root gives")
def test_replaced_and_stopped_runs_leave_no_sandbox_process(daemon: Any) -> None:
    task_id = f"sleeper-{uuid.uuid4().hex[:8]}"
    ident = sandbox_identity(task_id)
    assert ident is not None
    daemon.write(task_id, SLEEPER)
    daemon.start()
    up = daemon.home / "workspaces" / task_id / "files" / "up"

    def started_run() -> str:
        return daemon.wait_for(lambda: up.exists() and up.read_text(), what="the block")

    transport = httpx.HTTPTransport(uds=str(daemon.home / "run" / "daycare.sock"))
    with httpx.Client(transport=transport, base_url="http://daycare", timeout=10) as client:
        assert client.post(f"/tasks/{task_id}/run").status_code == 202
        first = started_run()
        up.unlink()
        assert client.post(f"/tasks/{task_id}/run").status_code == 202  # overlap: replace
        second = started_run()
    assert second != first
    daemon.wait_for(
        lambda: [r for r in daemon.runs(task_id) if r["id"] == first and r["finished_at"]],
        what="the replaced run to end",
    )
    # The replaced run's processes are gone; only the second run's remain.
    time.sleep(0.2)
    alive = _of_uid(ident.uid)
    assert alive, "the running block should be visible by its uid"
    envs = []
    for pid in alive:
        try:
            envs.append(Path(f"/proc/{pid}/environ").read_bytes())
        except OSError:
            continue
    assert not any(f"DAYCARE_RUN_ID={first}".encode() in e for e in envs)
    assert daemon.stop() == 0  # the daemon stops with the second run still running
    daemon.wait_for(lambda: _of_uid(ident.uid) == [], timeout=5, what="no process of the uid")
    statuses = {r["id"]: r["status"] for r in daemon.runs(task_id)}
    assert statuses[first] == "cancelled"
    assert statuses[second] == "interrupted"
