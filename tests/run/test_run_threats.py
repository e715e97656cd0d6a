"""Whole runs that misbehave (docs/security.md): through `Runner.run`, with the
launch plan every run gets (run/blocks.py).

The daycare home lives under /var/tmp, which the view shows read-only, so what keeps a
block out of daycare's state, config, logs and other workspaces is the masking, not a
private /tmp. Each attack is followed by a normal run that still works.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from daycare_cli.config import load_config
from daycare_cli.core.task import Task
from daycare_cli.core.taskfile import parse_task
from daycare_cli.run.cgroup import NEEDED, cgroup_parent
from daycare_cli.run.identity import sandbox_identity
from daycare_cli.run.runner import Runner, RunRequest
from daycare_cli.store.paths import Paths
from daycare_cli.store.rows import Run
from daycare_cli.store.state import State

pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

CONFIG_SECRET = "config-secret-4411"
LOG_SECRET = "log-line-secret-7720"


@dataclass
class Home:
    paths: Paths
    state: State
    config_text: str = ""
    token: str = ""

    def configure(self, text: str) -> None:
        self.paths.config_file.write_text(self.config_text + text)
        self.paths.config_file.chmod(0o600)

    def task(self, body: str, task_id: str = "t", **keys: Any) -> Task:
        head = ["---", "execute: true"] + [f"{k}: {v}" for k, v in keys.items()]
        path = self.paths.task_file(task_id)
        path.write_text("\n".join([*head, "---", body]) + "\n")
        return parse_task(path.read_bytes(), path=str(path))

    def run(self, task: Task, **request: Any) -> Run:
        runner = Runner(self.paths, load_config(self.paths.config_file), self.state)
        run = asyncio.run(runner.run(RunRequest(task=task, **request)))
        assert run is not None
        return run


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    for name in ("DAYCARE_CONFIG", "DAYCARE_TASKS_DIR", "DAYCARE_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
    root = Path(tempfile.mkdtemp(prefix="daycare-runs-", dir="/var/tmp"))
    root.chmod(0o755)
    paths = Paths.resolve(home=root / "home")
    paths.home.mkdir()
    paths.tasks_dir.mkdir()
    paths.home.chmod(0o755)  # world-readable on purpose: the sandbox must do the hiding
    paths.tasks_dir.chmod(0o755)
    state = State.open(paths.state_db)
    token = state.issue_token("t", "webhook")
    paths.state_db.chmod(0o644)
    paths.daemon_log.write_text(f"INFO {LOG_SECRET}\n")
    paths.daemon_log.chmod(0o644)
    h = Home(paths, state, f'[secrets]\napi = "{CONFIG_SECRET}"\n', token)
    h.configure("")
    paths.config_file.chmod(0o644)
    try:
        yield h
    finally:
        state.close()
        shutil.rmtree(root, ignore_errors=True)


def test_daycare_places_are_masked(home: Home, isolation: str) -> None:
    other = home.paths.workspace("other") / "files"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("other task's notes")
    (other / "notes.txt").chmod(0o644)
    targets = {
        "state": home.paths.state_db,
        "config": home.paths.config_file,
        "log": home.paths.daemon_log,
        "task": home.paths.task_file("t"),
        "other": other / "notes.txt",
    }
    code = (
        "import os\n"
        f"for name, path in { ({k: str(v) for k, v in targets.items()})!r}.items():\n"
        "    try:\n"
        "        print(name, open(path, errors='replace').read()[:4000].replace('\\n', ' '))\n"
        "    except OSError as exc:\n"
        "        print(name, type(exc).__name__)\n"
    )
    task = home.task(f"<run_python>\n{code}</run_python>")
    if isolation == "reduced":
        # Reduced isolation hides nothing by itself: as root, what keeps the task's uid
        # out is the daemon's 0700 home (umask 077), as the daemon creates it.
        home.paths.home.chmod(0o700)
    run = home.run(task)
    assert run.status == "succeeded", run.error
    assert run.isolation == isolation
    out = run.output or ""
    assert home.token and home.state.lookup_token(home.token) == ("t", "webhook")
    if isolation == "bubblewrap":
        for name in targets:
            assert f"{name} FileNotFoundError" in out
    if isolation == "bubblewrap" or os.geteuid() == 0:
        assert CONFIG_SECRET not in out and LOG_SECRET not in out and home.token not in out
        assert "other task's notes" not in out
    else:  # the control: a normal user's reduced isolation hides nothing
        assert CONFIG_SECRET in out
    assert home.run(home.task("<run_python>\nprint('fine')\n</run_python>")).status == "succeeded"


def test_disk_over_the_limit_fails_the_run(home: Home, isolation: str) -> None:
    body = (
        "<run_python>\n"
        "for i in range(3):\n"
        "    open(f'big{i}.bin', 'wb').write(b'x' * (1024 * 1024))\n"
        "</run_python>\n"
        "<run_python>\nprint('never')\n</run_python>\n"
    )
    task = home.task(body, sandbox="{disk: 1M}")
    run = home.run(task)
    assert run.status == "failed"
    assert run.error is not None
    assert "the run wrote 3 MiB to files/ and artifacts/, over its sandbox.disk of 1 MiB" in (
        run.error
    )
    assert "never" not in (run.output or "")
    assert "not run" in (run.output or "")
    again = home.run(home.task("<run_python>\nprint('small')\n</run_python>", sandbox="{disk: 1M}"))
    assert (again.status, (again.output or "").strip()) == ("succeeded", "small")


def test_without_bubblewrap_blocks_do_not_run(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: bubblewrap missing (simulated by config) and reduced isolation not
    allowed: the run fails with the fix and no block runs. Opting in runs them."""
    monkeypatch.delenv("DAYCARE_SANDBOX", raising=False)
    home.configure('[sandbox]\nbwrap = "/nonexistent/bwrap"\n')
    task = home.task("<run_python>\nopen('ran', 'w').write('1')\nprint('ran')\n</run_python>")
    run = home.run(task)
    assert run.status == "failed"
    assert run.isolation == "none"
    assert run.error is not None
    assert "bubblewrap cannot run here (bwrap not found at /nonexistent/bwrap" in run.error
    assert "apt install bubblewrap" in run.error
    assert "daycare config set sandbox.isolation reduced" in run.error
    assert not (home.paths.workspace("t") / "files" / "ran").exists()

    home.configure('[sandbox]\nbwrap = "/nonexistent/bwrap"\nisolation = "reduced"\n')
    opted = home.run(task)
    assert (opted.status, (opted.output or "").strip(), opted.isolation) == (
        "succeeded",
        "ran",
        "reduced",
    )


def _left_behind(uid: int | None, marker: str) -> list[int]:
    """Live processes of `uid` (as root: the task's own) or carrying `marker` in their env."""
    found = []
    for p in psutil.process_iter(["uids", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            mine = uid is not None and p.info["uids"].real == uid
            if mine or marker.encode() in Path(f"/proc/{p.pid}/environ").read_bytes():
                found.append(p.pid)
        except (psutil.Error, OSError):
            continue
    return found


def test_run_timeout_leaves_no_process(home: Home, isolation: str) -> None:
    """The run is cancelled by its run_timeout while its block and a setsid'd grandchild
    sleep: nothing of the task's uid is left, bubblewrap's namespace init included."""
    task_id = f"timeout-{uuid.uuid4().hex[:8]}"
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        time.sleep(120)\n"
        "    os._exit(0)\n"
        "time.sleep(120)\n"
    )
    task = home.task(f"<run_python>\n{code}</run_python>", task_id=task_id, run_timeout="2s")
    run_id = f"r-{uuid.uuid4().hex}"
    ident = sandbox_identity(task_id)
    run = home.run(task, run_id=home.state.create_run(task_id, "manual", None, None).id)
    assert run.status == "timed_out"
    uid = ident.uid if ident is not None else None
    assert _left_behind(uid, run.id) == [], f"left behind by {run_id}"
    assert home.run(home.task("<run_python>\nprint('fine')\n</run_python>")).status == "succeeded"


# -- totals per run (cgroup v2) ------------------------------------------------------------


def _test_cgroup() -> tuple[Path | None, str]:
    """A delegated cgroup v2 for the test: the configured one, else (as root) a new
    directory under the cgroup2 mount; None with the reason where there is none."""
    from daycare_cli.run.cgroup import _mount_point

    mount = _mount_point()
    if mount is None:
        return None, "no cgroup v2 hierarchy is mounted"
    try:
        available = (mount / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return None, f"cannot read {mount}/cgroup.controllers: {exc}"
    missing = [c for c in NEEDED if c not in available]
    if missing:
        return None, (
            f"the cgroup v2 hierarchy at {mount} lacks {', '.join(missing)} "
            "(bound to cgroup v1 on this machine)"
        )
    if os.geteuid() != 0:
        return None, "not root, and no delegated cgroup v2 is configured"
    path = mount / f"daycare-test-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError as exc:
        return None, f"cannot create {path}: {exc}"
    found, why = cgroup_parent(str(path))
    if found is None:
        path.rmdir()
    return found, why


@pytest.mark.parametrize("ahead", [False, True], ids=["first-block", "started-ahead"])
def test_memory_totals_across_children(home: Home, isolation: str, ahead: bool) -> None:
    """Also for a block whose sandbox was started while the block before it ran (before
    the run's cgroup held it): it is moved in at the hand-over."""
    parent, why = _test_cgroup()
    if parent is None:
        pytest.skip(f"no usable cgroup v2 for run totals: {why}")
    try:
        home.configure(f'[sandbox]\ncgroup = "{parent}"\n')
        code = (
            "import subprocess, sys, time\n"
            "child = ('b = bytearray(128 * 1024 * 1024)\\n'\n"
            "         'for i in range(0, len(b), 4096): b[i] = 1\\n'\n"
            "         'import time; time.sleep(30)')\n"
            "kids = [subprocess.Popen([sys.executable, '-c', child]) for _ in range(12)]\n"
            "time.sleep(8)\n"
            "print(sum(k.poll() is None for k in kids), 'alive')\n"
        )
        before = "<run_python>\nprint('before')\n</run_python>\n" if ahead else ""
        task = home.task(f"{before}<run_python>\n{code}</run_python>", sandbox="{memory: 512M}")
        run = home.run(task)
        # 12 x 128 MiB cannot all be held in 512 MiB: the kernel's OOM killer ends some.
        alive = int((run.output or "0").split()[-2]) if run.output else 0
        assert alive < 12, run.output
        assert (
            home.run(home.task("<run_python>\nprint('fine')\n</run_python>")).output.strip()
            == "fine"
        )
    finally:
        for child in parent.glob("run-*"):
            child.rmdir()
        parent.rmdir()


def test_control_socket_and_webhook_port_out_of_reach(home: Home, isolation: str) -> None:
    """The daemon's control socket (in daycare's runtime directory) and a loopback port
    like the webhook listener's, tried from a block without `sandbox.network`."""
    import socket

    home.paths.runtime_dir.mkdir(mode=0o700, exist_ok=True)
    home.paths.home.chmod(0o700)  # as the daemon makes it (umask 077)
    control = socket.socket(socket.AF_UNIX)
    control.bind(str(home.paths.socket))
    home.paths.socket.chmod(0o600)
    control.listen()
    hooks = socket.socket()
    hooks.bind(("127.0.0.1", 0))
    hooks.listen()
    code = (
        "import socket\n"
        f"for family, addr in ((socket.AF_UNIX, {str(home.paths.socket)!r}),\n"
        f"                     (socket.AF_INET, ('127.0.0.1', {hooks.getsockname()[1]}))):\n"
        "    s = socket.socket(family)\n"
        "    s.settimeout(3)\n"
        "    try:\n"
        "        s.connect(addr)\n"
        "        print('connected')\n"
        "    except OSError as exc:\n"
        "        print(type(exc).__name__)\n"
        "    finally:\n"
        "        s.close()\n"
    )
    try:
        run = home.run(home.task(f"<run_python>\n{code}</run_python>"))
    finally:
        control.close()
        hooks.close()
    unix, tcp = (run.output or "").split()
    if isolation == "bubblewrap":
        assert (unix, tcp) == ("FileNotFoundError", "ConnectionRefusedError")
    elif os.geteuid() == 0:  # reduced: the 0700 home keeps the task's uid out; not the net
        assert unix in ("PermissionError", "FileNotFoundError")
        assert tcp == "connected"
    assert home.run(home.task("<run_python>\nprint('fine')\n</run_python>")).status == "succeeded"
