"""The daemon's sandbox probe runs in a forked child: the ready line and `daemon status`
show its answer, and the block machinery is loaded only when a run first needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import daycare_cli
from daycare_cli.config import load_config
from daycare_cli.daemon.sandboxprobe import SandboxProbe, describe
from daycare_cli.run.blocks import describe_sandbox

if TYPE_CHECKING:
    from conftest import DaemonHome

REPO = Path(daycare_cli.__file__).resolve().parent.parent
BLOCK = "---\nexecute: true\n---\n<run_python>\nprint('probed')\n</run_python>\n"


def loaded_libseccomp(pid: int) -> bool:
    """Whether the process mapped libseccomp, which only the block machinery loads."""
    return "libseccomp" in Path(f"/proc/{pid}/maps").read_text()


def test_the_child_answers_what_the_daemon_would_find(tmp_path: Path) -> None:
    # In a process of its own: the probe forks only while there is one thread (a test
    # run's process may hold others).
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from daycare_cli.config import load_config\n"
        "from daycare_cli.daemon.sandboxprobe import SandboxProbe, describe\n"
        "config = load_config(Path(sys.argv[1]))\n"
        "child = SandboxProbe.start(config)\n"
        "assert child is not None\n"
        "answer = describe(config, child)\n"
        "# reaped and its pipe closed: a second answer is none, not a hang\n"
        "assert child.answer() is None\n"
        "blocks = sorted(m for m in sys.modules if m.startswith('daycare_cli.run.'))\n"
        "print(json.dumps({'answer': answer, 'loaded': blocks}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "config.toml")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    expected = describe_sandbox(load_config(tmp_path / "config.toml"))
    assert found["answer"] == json.loads(json.dumps(expected))
    assert found["answer"]["isolation"] in ("bubblewrap", "reduced", "none")
    assert found["loaded"] == []  # the child probed: this process loaded nothing of it


def test_a_child_that_fails_leaves_the_probe_to_the_daemon(tmp_path: Path) -> None:
    config = load_config(tmp_path / "config.toml")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os._exit(3)  # a child that died before it answered
    os.close(write_fd)
    assert SandboxProbe(pid, read_fd).answer() is None
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_fd, b"{not json")
        os._exit(0)
    os.close(write_fd)
    failed = SandboxProbe(pid, read_fd)
    assert failed.answer() is None
    assert describe(config, None) == describe_sandbox(config)


def test_the_daemon_shows_the_answer_and_loads_blocks_at_the_first_run(
    daemon: DaemonHome,
) -> None:
    daemon.write("later", BLOCK)  # no trigger: it runs when asked
    line = daemon.start()
    expected = describe_sandbox(load_config(daemon.config))
    assert f"isolation {expected['isolation']}" in line
    status = daemon.cli_json("daemon", "status")
    assert status["sandbox"] == json.loads(json.dumps(expected))
    # Nothing ran a block yet: the daemon did not load what runs them.
    assert not loaded_libseccomp(daemon.pid)
    res = daemon.cli("task", "run", "later")
    assert res.returncode == 0, res.stderr
    assert "probed" in res.stdout
    (run,) = daemon.runs("later")
    assert run["status"] == "succeeded" and run["pid"] == daemon.pid
    has_seccomp = not expected["seccomp"].startswith("none")
    assert loaded_libseccomp(daemon.pid) == has_seccomp  # loaded by the run, off the loop
