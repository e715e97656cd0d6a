"""Blocks that misbehave, each a real block (DESIGN.md §5 item 5, §8).

Every test checks the outcome, that nothing the block started is still running, and
that a normal block runs fine afterwards. Tests of what only bubblewrap can refuse run
the same block reduced as a control, so that they fail if the refusal came from
somewhere else (file modes, a missing path).
"""

from __future__ import annotations

import asyncio
import contextlib
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


# -- the allow-list view (bubblewrap) ------------------------------------------------------

HOME_SECRETS = {
    ".config/gh/hosts.yml": "oauth_token: gho_SECRET1",
    ".npmrc": "//registry.npmjs.org/:_authToken=npm_SECRET2",
    ".vault-token": "hvs.SECRET3",
    ".bash_history": "export AWS_SECRET=SECRET4",
}


def plant(home: Path, files: dict[str, str]) -> None:
    """Write world-readable files under `home`, so only the sandbox can keep them out."""
    for rel, text in files.items():
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for d in [path.parent, *path.parent.parents]:
            if d == home.parent:
                break
            d.chmod(0o755)
        path.write_text(text)
        path.chmod(0o644)


def test_home_is_an_empty_tmpfs(block, base, isolation, monkeypatch):
    home = base / "home"
    plant(home, HOME_SECRETS)
    monkeypatch.setenv("HOME", str(home))
    code = (
        "import os\n"
        f"home = {str(home)!r}\n"
        "found = []\n"
        "for rel in " + repr(sorted(HOME_SECRETS)) + ":\n"
        "    try:\n"
        "        found.append(open(os.path.join(home, rel)).read())\n"
        "    except OSError as exc:\n"
        "        found.append(type(exc).__name__)\n"
        "print(found)\n"
        "print(os.listdir(home))"
    )
    out = block(code)
    assert out.error is None
    if isolation == "bubblewrap":
        assert out.output == str(["FileNotFoundError"] * 4) + "\n[]"
        listing = block("import os\nprint(os.listdir('/home'), os.listdir('/root'))")
        assert listing.output == "[] []"
    else:  # the control: reduced isolation hides no file
        assert all(v in out.output for v in HOME_SECRETS.values())
    still_fine(block)


def test_only_system_directories_show(block, isolation):
    out = block("import os\nprint(sorted(os.listdir('/')))")
    if isolation == "bubblewrap":
        shown = set(eval(out.output))
        assert shown <= {
            "usr",
            "bin",
            "sbin",
            "lib",
            "lib32",
            "lib64",
            "libx32",
            "etc",
            "opt",
            "var",
            "proc",
            "dev",
            "tmp",
            "run",
            "home",
            "root",
        }
        assert "work" not in shown and "srv" not in shown and "mnt" not in shown
    else:
        assert "work" in out.output or "srv" in out.output or "mnt" in out.output
    still_fine(block)


def test_outside_the_view_says_so(block, base, require_bwrap, monkeypatch):
    secret = base / "elsewhere" / "data.txt"
    plant(base / "elsewhere", {"data.txt": "x"})
    monkeypatch.setenv("HOME", str(base / "elsewhere"))  # a home: an empty tmpfs
    out = block(f"open({str(secret)!r}).read()")
    assert out.error is not None and out.error.startswith("FileNotFoundError")
    assert "outside the block's sandbox view" in out.error and "`sandbox.read`" in out.error
    own = block(f"open({str(secret)!r}).read()", hide=[base / "elsewhere"])
    assert own.error is not None and "sandbox view" not in own.error  # daycare's: no sharing
    missing = block("open('/var/nonexistent-daycare-file').read()")
    assert missing.error is not None and "sandbox view" not in missing.error


@pytest.mark.parametrize("kind", ["read", "write"])
def test_symlink_in_an_entry_is_refused(block, base, isolation, kind):
    """A block plants a link in a directory it may write; the next run's entry that goes
    through it is refused instead of binding what the link points at."""
    target = base / "tasks"
    target.mkdir()
    (target / "task.md").write_text("owned by the user")
    shared = base / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    spec = SandboxSpec(write=(str(shared),))
    planted = block(
        f"import os\nos.symlink({str(target)!r}, {str(shared / 'link')!r})", sandbox=spec
    )
    assert planted.error is None and (shared / "link").is_symlink()
    entry = str(shared / "link")
    through = SandboxSpec(**{kind: (entry,)}, **{f"{kind}_at": (7,)})
    out = block("print(open('task.md').read())", sandbox=through, where="tasks/t1.md")
    assert out.error is not None and out.error.startswith("SandboxError: tasks/t1.md:7:")
    assert "symlinks are not followed" in out.error and str(target) in out.error
    assert (target / "task.md").read_text() == "owned by the user"
    still_fine(block)


@pytest.mark.parametrize("slashes", ["/", "//", "///"])
def test_entry_inside_daycare_is_refused(block, base, isolation, slashes):
    daycare_home = base / "dchome"
    (daycare_home / "tasks").mkdir(parents=True)
    spec = SandboxSpec(write=(slashes + str(daycare_home / "tasks").lstrip("/"),))
    out = block("print('x')", sandbox=spec, forbidden=[daycare_home])
    assert out.error is not None and "inside daycare's own files" in out.error
    still_fine(block)


# -- the kernel: seccomp -----------------------------------------------------------------

SYSCALLS = {  # x86-64 numbers
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "ptrace": 101,
    "bpf": 321,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "mount": 165,
}


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="system call numbers are x86-64's")
def test_seccomp_refuses_system_calls(block, isolation):
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "out = {}\n"
        f"for name, nr in {SYSCALLS!r}.items():\n"
        "    ctypes.set_errno(0)\n"
        "    rc = libc.syscall(nr, 0, 0, 0, 0, 0)\n"
        "    out[name] = (rc, ctypes.get_errno())\n"
        "print(out)"
    )
    out = block(code)
    results = eval(out.output)
    assert results == {name: (-1, 1) for name in SYSCALLS}  # EPERM, from the filter
    still_fine(block)


def test_no_notes_through_the_keyring(block, isolation):
    """Blocks could leave each other notes in the user's kernel keyring; not any more."""
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "rc = libc.syscall(248, b'user', b'daycare-note', b'hello', 5, -4)\n"  # add_key
        "print(rc, ctypes.get_errno())"
    )
    if os.uname().machine != "x86_64":
        pytest.skip("system call numbers are x86-64's")
    assert block(code).output == "-1 1"
    still_fine(block)


# -- capped text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "field"),
    [
        ("import sys\nsys.exit('E' * 7_000_000)", "error"),
        ("raise ValueError('V' * 7_000_000)", "error"),
        ("skip('S' * 7_000_000)", "skip_reason"),
    ],
)
def test_huge_error_text_is_capped(block, isolation, code, field):
    out = block(code)
    text = getattr(out, field)
    assert 4096 < len(text) < 4200
    assert text.endswith("cut at 4 KiB]")
    still_fine(block)


# -- other blocks ------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give each task a uid of its own")
def test_another_tasks_environ_and_files_are_out_of_reach(block, base, isolation, marker):
    """Reduced isolation too: each task's blocks run under their own uid."""
    victim = BlockSpec(
        code="import time\nopen('up', 'w').write('1')\ntime.sleep(30)",
        files_dir=base / "victim" / "files",
        artifacts_dir=base / "victim" / "art",
        workspace=base / "victim",
        env={"VICTIM_SECRET": "hunter2-victim"},
        task={"id": "victim", "name": "victim"},
        run={"id": marker},
    )
    (base / "victim").mkdir()
    (base / "victim").chmod(0o755)
    spy = (
        "import os\n"
        "hits = []\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n"
        "        if b'hunter2-victim' in open(f'/proc/{pid}/environ', 'rb').read():\n"
        "            hits.append(pid)\n"
        "    except OSError:\n"
        "        pass\n"
        f"try:\n    open({str(base / 'victim' / 'files' / 'planted')!r}, 'w').write('x')\n"
        "    wrote = 'wrote'\n"
        "except OSError as exc:\n    wrote = type(exc).__name__\n"
        "print(len(hits), wrote)"
    )

    async def both() -> str:
        running = asyncio.ensure_future(run_block(victim))
        while not (base / "victim" / "files" / "up").exists():
            await asyncio.sleep(0.01)
        try:
            spied = await asyncio.to_thread(block, spy)
        finally:
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
        return spied.output

    seen = asyncio.run(both())
    hits, wrote = seen.split()
    assert hits == "0"
    assert wrote in ("PermissionError", "FileNotFoundError")
    assert not (base / "victim" / "files" / "planted").exists()
    still_fine(block)


def test_grandchild_of_an_exited_block_is_gone(block, base, isolation, marker, alive_with):
    """The block dies by os._exit (no atexit, no reaper of its own) after double-forking:
    the grandchild is re-parented to the spawner, which sweeps it."""
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
        "os._exit(0)\n"
    )
    out = block(code, run={"id": marker})
    assert out.error is None
    assert alive_with(marker) == []
    if isolation == "reduced":
        pid = int((base / "ws" / "files" / "grandchild.pid").read_text())
        assert not Path(f"/proc/{pid}").exists() or b"Z" in Path(f"/proc/{pid}/stat").read_bytes()
    still_fine(block)


def _of_uid(uid: int) -> list[int]:
    """Live processes whose real uid is `uid` (zombies are dead)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in st.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and "zombie" not in fields["State"]:
            found.append(int(name))
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives each task a uid of its own")
def test_cancelled_at_any_moment_leaves_nothing_of_the_uid(base, isolation):
    """`overlap: replace` cancels a run at any moment, even while bubblewrap is still
    setting up: its pid-namespace init (own session, immune to SIGTERM) must not be left
    re-parented to pid 1. Checked by uid: the task's own."""
    from daycare_cli.run.identity import sandbox_identity

    task_id = f"cancel-{uuid.uuid4().hex[:8]}"
    ident = sandbox_identity(task_id)
    assert ident is not None
    spec = BlockSpec(
        code="import time\ntime.sleep(60)",
        files_dir=base / "ws" / "files",
        artifacts_dir=base / "ws" / "runs" / "r1" / "artifacts",
        workspace=base / "ws",
        task={"id": task_id, "name": task_id},
        run={"id": f"run-{uuid.uuid4().hex}"},
    )

    async def cancel_after(delay: float) -> None:
        running = asyncio.ensure_future(run_block(spec))
        await asyncio.sleep(delay)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    for delay in (0, 0.001, 0.003, 0.006, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3):
        asyncio.run(cancel_after(delay))
        assert _of_uid(ident.uid) == [], f"left behind when cancelled after {delay}s"
