"""Blocks that misbehave, each a real block (DESIGN.md §5 item 5, §8).

Every test checks the outcome, that nothing the block started is still running, and
that a normal block runs fine afterwards. Tests of what only bubblewrap can refuse run
the same block reduced as a control, so that they fail if the refusal came from
somewhere else (file modes, a missing path).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from daycare_cli.core.task import SandboxSpec
from daycare_cli.run.sandbox import BlockSpec, run_block

MIB = 1024 * 1024


@pytest.fixture
def marker() -> str:
    """A run id unique to the test; every process of its blocks carries it in its env."""
    return f"run-{uuid.uuid4().hex}"


def still_fine(block) -> None:
    out = block("print('still fine')")
    assert (out.output, out.error) == ("still fine", None)


def test_infinite_loop_times_out(block, isolation, marker, alive_with):
    t0 = time.monotonic()
    out = block("while True:\n    pass", timeout=2, run={"id": marker})
    assert out.error == "TimeoutError: block exceeded 2s"
    assert 2 <= time.monotonic() - t0 < 4.5
    assert alive_with(marker) == []
    still_fine(block)


def test_fork_bomb_is_contained(block, isolation, marker, alive_with):
    code = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    t0 = time.monotonic()
    out = block(code, timeout=1, run={"id": marker})
    assert out.error == "TimeoutError: block exceeded 1s"
    assert time.monotonic() - t0 < 6
    assert alive_with(marker) == []
    still_fine(block)


def test_huge_allocation_fails(block, isolation, marker, alive_with):
    out = block("b = bytearray(4 * 1024 ** 3)\nprint('allocated')", run={"id": marker})
    assert out.output == ""
    assert out.error is not None
    assert out.error.startswith(("MemoryError", "Killed"))
    assert alive_with(marker) == []
    still_fine(block)


def test_flood_of_stdout_is_cut_fast(block, isolation, marker, alive_with):
    code = "import sys\nchunk = 'x' * 1_000_000\nfor _ in range(100):\n    sys.stdout.write(chunk)"
    out = block(code, timeout=30, run={"id": marker})
    assert out.truncated
    assert out.error is None
    assert out.output == "x" * 65536
    assert out.duration_ms < 5000
    assert alive_with(marker) == []
    still_fine(block)


def test_huge_file_write_is_stopped(block, base, isolation, marker, alive_with):
    code = (
        "chunk = b'\\0' * (1024 * 1024)\n"
        "with open('big.bin', 'wb') as f:\n"
        "    for _ in range(1024):\n"
        "        f.write(chunk)\n"
    )
    out = block(code, run={"id": marker})
    assert out.error is not None and "File too large" in out.error
    assert (base / "ws" / "files" / "big.bin").stat().st_size <= 64 * MIB
    assert alive_with(marker) == []
    still_fine(block)


def test_sigterm_ignoring_processes_are_killed(block, base, isolation, marker, alive_with):
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = ('import signal, time; '\n"
        "         'signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)')\n"
        "p = subprocess.Popen([sys.executable, '-c', child])\n"
        "open('started', 'w').write(str(p.pid))\n"
        "while True:\n"
        "    time.sleep(1)\n"
    )
    out = block(code, timeout=1.2, run={"id": marker})
    assert out.error == "TimeoutError: block exceeded 1.2s"
    assert (base / "ws" / "files" / "started").exists()
    assert alive_with(marker) == []
    still_fine(block)


def test_double_forked_grandchild_is_gone(block, base, isolation, marker, alive_with):
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        open('grandchild.pid', 'w').write(str(os.getpid()))\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "while not os.path.exists('grandchild.pid'):\n"
        "    time.sleep(0.01)\n"
        "print('parent done')\n"
    )
    out = block(code, run={"id": marker})
    assert (out.output, out.error) == ("parent done", None)
    pid = int((base / "ws" / "files" / "grandchild.pid").read_text())
    assert alive_with(marker) == []
    if isolation == "reduced":  # same pid namespace: the pid is ours to check
        assert not Path(f"/proc/{pid}").exists()
    still_fine(block)


def test_home_secrets_are_hidden(block, base, isolation, monkeypatch):
    home = base / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh").chmod(0o755)
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    (home / ".ssh" / "id_rsa").chmod(0o644)
    monkeypatch.setenv("HOME", str(home))
    out = block(f"print(open({str(home / '.ssh' / 'id_rsa')!r}).read())")
    if isolation == "bubblewrap":
        assert out.error is not None and out.error.startswith("FileNotFoundError")
        assert "PRIVATE KEY" not in out.output
    else:  # the control: only bubblewrap hides it
        assert (out.output, out.error) == ("PRIVATE KEY", None)
    still_fine(block)


def test_hidden_paths_are_hidden(block, base, isolation):
    secret = base / "state"
    secret.mkdir()
    (secret / "state.db").write_text("rows")
    (secret / "state.db").chmod(0o644)
    lone = base / "config.toml"
    lone.write_text("token = 1")
    lone.chmod(0o644)
    code = f"print(open({str(secret / 'state.db')!r}).read(), open({str(lone)!r}).read())"
    out = block(code, hide=[secret, lone])
    if isolation == "bubblewrap":
        assert out.error is not None and out.error.startswith("FileNotFoundError")
        only_lone = block(f"print(repr(open({str(lone)!r}).read()))", hide=[lone])
        assert (only_lone.output, only_lone.error) == ("''", None)
    else:
        assert (out.output, out.error) == ("rows token = 1", None)
    still_fine(block)


def test_hiding_the_workspaces_root_keeps_own_dirs(block, base, require_bwrap):
    out = block(
        "import os\nopen('f', 'w').write('1')\nprint(os.listdir('..'))",
        hide=[base / "ws"],
    )
    assert out.error is None
    assert (base / "ws" / "files" / "f").read_text() == "1"


def test_writing_outside_is_refused(block, base, isolation):
    outside = base / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    out = block(f"open({str(outside / 'x.txt')!r}, 'w').write('escaped')")
    if isolation == "bubblewrap":
        assert out.error == f"OSError: [Errno 30] Read-only file system: {str(outside / 'x.txt')!r}"
        assert not (outside / "x.txt").exists()
    else:
        assert out.error is None and (outside / "x.txt").exists()
    still_fine(block)


@pytest.mark.parametrize("network", [False, True])
def test_network(block, isolation, network):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        code = (
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n"
            "print('connected')"
        )
        out = block(code, sandbox=SandboxSpec(network=network))
    finally:
        server.close()
    if isolation == "bubblewrap" and not network:
        assert out.error is not None and out.error.startswith("ConnectionRefusedError")
    else:
        assert (out.output, out.error) == ("connected", None)
    still_fine(block)


def test_daemon_environ_is_out_of_reach(block, require_bwrap, monkeypatch):
    monkeypatch.setenv("DAYCARE_TEST_SECRET", "hunter2-in-daemon-env")
    code = (
        "import os\n"
        "hits = []\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n"
        "        if b'hunter2' in open(f'/proc/{pid}/environ', 'rb').read():\n"
        "            hits.append(pid)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(len(hits), len([p for p in os.listdir('/proc') if p.isdigit()]))"
    )
    out = block(code)
    hits, visible = map(int, out.output.split())
    assert hits == 0
    assert visible < 5  # a fresh pid namespace: bwrap's init, the block, little else
    assert os.getpid() > 0


def test_cancelled_block_leaves_nothing(block, base, isolation, marker, alive_with):
    files = base / "ws" / "files"
    spec = BlockSpec(
        code="import time\nopen('up', 'w').write('1')\ntime.sleep(60)",
        files_dir=files,
        artifacts_dir=base / "ws" / "runs" / "r1" / "artifacts",
        workspace=base / "ws",
        run={"id": marker},
    )

    async def cancel_midway() -> None:
        running = asyncio.ensure_future(run_block(spec))
        while not (files / "up").exists():
            await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    t0 = time.monotonic()
    asyncio.run(cancel_midway())
    assert time.monotonic() - t0 < 5
    assert alive_with(marker) == []
    still_fine(block)


def test_cancelled_block_leaves_no_escaped_child(block, base, isolation, marker, alive_with):
    """A child that left the block's session dies with a cancelled block too. Three
    rounds: killing the block before sweeping its tree lost the child about half the
    time (reduced), once the block died first and the child moved to another parent."""
    files = base / "ws" / "files"
    spec = BlockSpec(
        code=(
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    time.sleep(60)\n"
            "open('up', 'w').write('1')\n"
            "time.sleep(60)"
        ),
        files_dir=files,
        artifacts_dir=base / "ws" / "runs" / "r1" / "artifacts",
        workspace=base / "ws",
        run={"id": marker},
    )

    async def cancel_midway() -> None:
        (files / "up").unlink(missing_ok=True)
        running = asyncio.ensure_future(run_block(spec))
        while not (files / "up").exists():
            await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    for _ in range(3):
        asyncio.run(cancel_midway())
        assert alive_with(marker) == []
    still_fine(block)


def test_cancelled_again_during_cleanup_still_cleans_up(block, base, isolation, marker, alive_with):
    """A second cancellation while the block is being torn down (a daemon stopping as a
    run timeout fires) does not cut the clean-up short: what the block started is gone,
    and then the caller sees the cancellation, not an outcome."""
    files = base / "ws" / "files"
    spec = BlockSpec(
        code=(
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    time.sleep(60)\n"
            "open('up', 'w').write('1')\n"
            "time.sleep(60)"
        ),
        files_dir=files,
        artifacts_dir=base / "ws" / "runs" / "r1" / "artifacts",
        workspace=base / "ws",
        run={"id": marker},
    )

    async def cancel_twice() -> None:
        running = asyncio.ensure_future(run_block(spec))
        while not (files / "up").exists():
            await asyncio.sleep(0.01)
        running.cancel()
        await asyncio.sleep(0)  # the block's clean-up runs up to its wait for the pipes
        assert running.cancel(), "the clean-up should still be waiting"
        with pytest.raises(asyncio.CancelledError):
            await running

    t0 = time.monotonic()
    asyncio.run(cancel_twice())
    assert time.monotonic() - t0 < 5
    assert alive_with(marker) == []
    still_fine(block)


@pytest.mark.parametrize(
    ("code", "sandbox", "error"),
    [
        (
            "while True:\n    pass",
            SandboxSpec(cpu=1),
            "Killed: signal 24 (CPU time limit exceeded)",
        ),
        (
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
            SandboxSpec(),
            "Killed: signal 9 (memory or CPU limit?)",
        ),
        (
            "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
            SandboxSpec(),
            "Killed: signal 11 (SIGSEGV)",
        ),
    ],
)
def test_killed_by_a_signal(block, isolation, code, sandbox, error):
    out = block(code, sandbox=sandbox, timeout=10)
    assert out.error == error
    assert out.exit_code == -int(error.split()[2])
    still_fine(block)
