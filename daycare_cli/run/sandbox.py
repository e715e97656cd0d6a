"""Run one Python block in a sandboxed subprocess (DESIGN.md §5 items 2–5, §8).

Layers, outermost first:

- Always: the block's code goes with a prelude (`prelude.py`) on stdin to
  `python -I -B -X utf8 -`, spawned from the event-loop thread in a new session, with a
  clean environment, rlimits and a parent-death signal set before exec, stdout and
  stderr read with caps and a deadline, and results on a private pipe. On cap or
  deadline the process group gets SIGTERM, 0.5 s of grace, then SIGKILL; after a normal
  exit it gets SIGKILL too.
- As root: RLIMIT_NPROC does not bind uid 0 and a root bubblewrap maps to the real root,
  so blocks run as the user `daycare-sandbox` if it exists, else `nobody`. The block's
  `files/` and `artifacts/` are chowned to it, and the interpreter is one that user can
  run: `sys.executable` when it can (pyenv's lives under a 0700 /root, so usually not),
  else the system's `/usr/bin/python3`; `DAYCARE_SANDBOX_PYTHON` overrides. When a
  directory the block needs sits below one that user cannot enter (`/root/...`), a
  private mount namespace lays a tmpfs over that directory and binds the needed
  directories back at their own paths, so paths are the same inside and outside.
- Linux with bubblewrap: namespaces, a read-only system, tmpfs over secrets and over
  `BlockSpec.hide`, no network unless `sandbox.network`, a pid namespace that dies with
  the block. Probed once; `DAYCARE_SANDBOX=reduced` turns it off.
- Without bubblewrap ("reduced"): the process limits alone, plus the prelude acting as
  child subreaper and a /proc sweep of the block's process tree, so a daemonising
  grandchild does not outlive its block.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import math
import os
import pwd
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daycare_cli.core.errors import SandboxError
from daycare_cli.core.task import SandboxSpec
from daycare_cli.run.prelude import PRELUDE

KIB = 1024
MIB = 1024 * KIB

SANDBOX_USER = "daycare-sandbox"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
PYTHON_FLAGS = ("-I", "-B", "-X", "utf8", "-")

STDERR_CAP = 64 * KIB
CHANNEL_CAP = 8 * MIB
FILE_SIZE_LIMIT = 64 * MIB
OPEN_FILES_LIMIT = 256
PROCESS_BUDGET = 128  # processes a block may add to those its user already runs
TMP_SIZE = 64 * MIB
SHM_SIZE = 16 * MIB
GRACE = 0.5  # seconds between SIGTERM and SIGKILL
DRAIN = 1.0  # seconds to wait for pipes to close once the process is gone

# Paths under a home directory that a block never sees under bubblewrap.
HOME_SECRETS = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".config/gcloud",
    ".azure",
    ".kube",
    ".docker",
    ".netrc",
    ".git-credentials",
    ".pypirc",
)

# Linux constants (asm-generic values, the same on x86-64 and arm64).
PR_SET_PDEATHSIG = 1
CLONE_NEWNS = 0x00020000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


@dataclass(frozen=True)
class BlockSpec:
    """One block to run and where.

    `code` is already dedented. `files_dir` is the cwd (writable, persists across runs),
    `artifacts_dir` is `$DAYCARE_ARTIFACTS`, `workspace` the task workspace root. `env`
    is the task's env with secrets resolved. `task` ({id, name}) and `run` ({id,
    trigger, slot}) become the block's `task` and `run`; `payload_file` holds a webhook
    payload (`payload` is its parsed JSON, else its text, else None). `hide` lists paths
    masked under bubblewrap (daycare's config and state, other tasks' workspaces).
    """

    code: str
    files_dir: Path
    artifacts_dir: Path
    workspace: Path
    timeout: float = 60.0
    sandbox: SandboxSpec = field(default_factory=SandboxSpec)
    env: Mapping[str, str] = field(default_factory=dict)
    task: Mapping[str, Any] = field(default_factory=dict)
    run: Mapping[str, Any] = field(default_factory=dict)
    payload_file: Path | None = None
    hide: Sequence[Path] = ()
    stdout_cap: int = 64 * KIB
    # Live view (issue 8): called on the event loop with each piece of stdout as it is
    # read (within the cap), so `task run` and `logs -f` can show it while the block runs.
    on_output: Callable[[bytes], None] | None = field(default=None, compare=False)


@dataclass
class BlockOutcome:
    """What a block did.

    `output` is its stdout without the trailing newline, or, when it printed nothing,
    the value of its last expression (str as is, dict/list as JSON); a cut output sets
    `truncated` (core/prompt.render_result adds the marker). `error` is "Type: message"
    for a failing block
    (`TimeoutError: block exceeded 60s`, `SystemExit: 3`, `Killed: signal 9 (...)`),
    None otherwise. A block that called `skip()` has `skipped` set and no output.
    """

    output: str = ""
    stderr: str = ""
    error: str | None = None
    exit_code: int | None = None
    skipped: bool = False
    skip_reason: str = ""
    truncated: bool = False
    duration_ms: int = 0
    isolation: str = "reduced"


async def run_block(spec: BlockSpec) -> BlockOutcome:
    """Run one block in a fresh sandboxed interpreter and report what it did.

    Never raises for what the block does; a sandbox that cannot start gives an outcome
    whose error starts with `SandboxError:`.
    """
    started = time.monotonic()
    level, _reason = isolation_level()
    bwrap = _probe()[0] if level == "bubblewrap" else None
    try:
        ident = _sandbox_identity()
        python = sandbox_python(ident)
        paths = _prepare_dirs(spec, ident)
        launch = _launch_plan(spec, paths, bwrap, ident, [python, *PYTHON_FLAGS])
        payload_text = _read_payload(spec.payload_file)
    except (OSError, SandboxError) as exc:
        why = f"{exc.message}; fix: {exc.hint}" if isinstance(exc, SandboxError) else exc
        return BlockOutcome(
            error=f"SandboxError: {_one_line(why)}",
            isolation=level,
            duration_ms=_ms_since(started),
        )
    return await _execute(spec, launch, payload_text, level, started)


def isolation_level() -> tuple[str, str]:
    """("bubblewrap" | "reduced", why): the isolation blocks get on this machine.

    Probed once by running a trivial sandboxed `true`; `DAYCARE_SANDBOX=reduced` in the
    environment forces the reduced level (for benchmarks and machines where namespaces
    misbehave).
    """
    if os.environ.get("DAYCARE_SANDBOX", "").strip().lower() == "reduced":
        return "reduced", "forced by DAYCARE_SANDBOX=reduced"
    bwrap, reason = _probe()
    return ("bubblewrap" if bwrap else "reduced"), reason


def sandbox_python(ident: _Identity | None = None) -> str:
    """The interpreter blocks run with (`DAYCARE_SANDBOX_PYTHON` overrides)."""
    override = os.environ.get("DAYCARE_SANDBOX_PYTHON")
    if override:
        return override
    return _find_python(ident)


# ---------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class _Identity:
    """The unprivileged user blocks run as when the daemon is root."""

    uid: int
    gid: int
    name: str
    home: str


@dataclass(frozen=True)
class _Bwrap:
    path: str
    version: str
    disable_userns: bool
    sized_tmpfs: bool


@dataclass(frozen=True)
class _Stage:
    """Mounts made as root in a private mount namespace before dropping privileges.

    `tops` are directories the sandbox user cannot enter; each gets an empty tmpfs, and
    `binds` (path, is_dir) are mounted back at their own paths inside those.
    """

    tops: tuple[str, ...]
    binds: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class _Paths:
    files: Path
    artifacts: Path
    workspace: Path
    payload: Path | None
    read: tuple[Path, ...]
    write: tuple[Path, ...]


@dataclass(frozen=True)
class _Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    preexec: Callable[[], None]
    tree_kill: bool  # no pid namespace: sweep the process tree on stop


def _launch_plan(
    spec: BlockSpec,
    paths: _Paths,
    bwrap: _Bwrap | None,
    ident: _Identity | None,
    command: list[str],
) -> _Launch:
    """Everything needed to spawn a block (or the probe's `true`)."""
    env = _block_env(spec, paths)
    stage = None
    if bwrap is not None and ident is not None:
        stage = _stage_plan(
            [paths.files, paths.artifacts, *paths.read, *paths.write]
            + ([paths.payload] if paths.payload else []),
            ident,
        )
    preexec = _preexec(ident, _limits(spec, ident), stage)
    if bwrap is None:
        return _Launch(command, env, str(paths.files), preexec, tree_kill=sys.platform == "linux")
    tops = stage.tops if stage else ()
    argv = [*_bwrap_argv(bwrap, spec, paths, ident, tops), "--", *command]
    return _Launch(argv, env, "/", preexec, tree_kill=False)


def _block_env(spec: BlockSpec, paths: _Paths) -> dict[str, str]:
    """The allow-listed environment: nothing of the daemon's own env gets through."""
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": str(paths.files)}
    env.update({str(k): str(v) for k, v in spec.env.items()})
    # The DAYCARE_* variables describe this run; a task's env cannot fake them.
    env.update(
        {
            "DAYCARE_TASK_ID": str(spec.task.get("id") or ""),
            "DAYCARE_RUN_ID": str(spec.run.get("id") or ""),
            "DAYCARE_WORKSPACE": str(paths.workspace),
            "DAYCARE_ARTIFACTS": str(paths.artifacts),
        }
    )
    if paths.payload is not None:
        env["DAYCARE_PAYLOAD_FILE"] = str(paths.payload)
    return env


def _bwrap_argv(
    bwrap: _Bwrap,
    spec: BlockSpec,
    paths: _Paths,
    ident: _Identity | None,
    tops: Sequence[str],
) -> list[str]:
    """bubblewrap's options; the order matters (later mounts cover earlier ones)."""
    a = [bwrap.path, "--unshare-all", "--unshare-user"]
    if spec.sandbox.network:
        a.append("--share-net")
    a += ["--die-with-parent", "--new-session"]
    if bwrap.disable_userns:
        a.append("--disable-userns")
    a += ["--cap-drop", "ALL", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    for where, size in (("/tmp", TMP_SIZE), ("/dev/shm", SHM_SIZE)):
        a += (["--size", str(size)] if bwrap.sized_tmpfs else []) + ["--tmpfs", where]
    for p in paths.read:
        a += ["--ro-bind", str(p), str(p)]
    for p in paths.write:
        a += ["--bind", str(p), str(p)]
    # Hidden paths come after sandbox.read/write (so they mask inside those too) and
    # before the block's own directories (so hiding the workspaces root keeps this
    # block's files/ and artifacts/).
    hidden: list[str] = []
    for p in _hidden_paths(spec, ident, tops):
        if p.is_dir():
            a += ["--tmpfs", str(p)]
            hidden.append(str(p))
        else:
            # A plain bind would mount /dev/null nodev, unreadable; writes to it vanish.
            a += ["--dev-bind", "/dev/null", str(p)]
    a += ["--bind", str(paths.files), str(paths.files)]
    a += ["--bind", str(paths.artifacts), str(paths.artifacts)]
    if paths.payload is not None:
        a += ["--ro-bind", str(paths.payload), str(paths.payload)]
    a += ["--chdir", str(paths.files)]
    for h in hidden:
        a += ["--remount-ro", h]
    a += ["--remount-ro", "/"]
    return a


def _hidden_paths(spec: BlockSpec, ident: _Identity | None, tops: Sequence[str]) -> list[Path]:
    """Secrets of the daemon's and the sandbox user's homes, and `spec.hide`, that exist
    and that the sandbox user could otherwise reach."""
    homes = {os.environ.get("HOME") or "", _passwd_home(os.geteuid())}
    if ident is not None:
        homes.add(ident.home)
    wanted = [Path(h) / s for h in sorted(homes) if h and h != "/" for s in HOME_SECRETS]
    wanted += [Path(p) for p in spec.hide]
    seen: set[Path] = set()
    out: list[Path] = []
    for p in wanted:
        p = Path(os.path.abspath(p))
        if p in seen or not os.path.lexists(p) or p == Path("/"):
            continue
        seen.add(p)
        # Under a staged tmpfs or behind a directory the user cannot enter, it is
        # already out of sight, and bubblewrap could not mount over it anyway.
        if any(_is_within(p, Path(t)) for t in tops) or not _reachable(p, ident):
            continue
        out.append(p)
    return out


def _stage_plan(leaves: Sequence[Path], ident: _Identity) -> _Stage | None:
    """Which directories the sandbox user cannot enter, and what to bind back in them."""
    tops: list[str] = []
    binds: list[tuple[str, bool]] = []
    for leaf in sorted(leaves, key=lambda p: len(p.parts)):
        if not leaf.exists():
            continue
        top = next((a for a in _ancestors(leaf) if not _traversable(a, ident)), None)
        if top is None:
            continue
        if str(top) not in tops:
            tops.append(str(top))
        binds.append((str(leaf), leaf.is_dir()))
    return _Stage(tuple(tops), tuple(binds)) if binds else None


def _limits(spec: BlockSpec, ident: _Identity | None) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) for the block, never above the daemon's own hard limits."""
    cpu = spec.sandbox.cpu if spec.sandbox.cpu else spec.timeout + 1
    cpu_soft = max(1, math.ceil(cpu))
    wanted = [
        (resource.RLIMIT_AS, spec.sandbox.memory, spec.sandbox.memory),
        # SIGXCPU at the soft limit, SIGKILL one second later.
        (resource.RLIMIT_CPU, cpu_soft, cpu_soft + 1),
        (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT, FILE_SIZE_LIMIT),
        (resource.RLIMIT_NOFILE, OPEN_FILES_LIMIT, OPEN_FILES_LIMIT),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if sys.platform == "linux":
        # RLIMIT_NPROC counts every process of the user, so the budget is on top of what
        # that user already runs (a desktop user may have hundreds).
        uid = ident.uid if ident else os.getuid()
        nproc = _process_count(uid) + PROCESS_BUDGET
        wanted.append((resource.RLIMIT_NPROC, nproc, nproc))
    out = []
    for res, soft, hard in wanted:
        cur_hard = resource.getrlimit(res)[1]
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
        out.append((res, min(soft, hard), hard))
    return out


def _preexec(
    ident: _Identity | None, limits: list[tuple[int, int, int]], stage: _Stage | None
) -> Callable[[], None]:
    """The function the child runs between fork and exec (ctypes resolved beforehand)."""
    libc = _libc()
    parent = os.getpid()
    linux = sys.platform == "linux"

    def preexec() -> None:
        if stage is not None and libc is not None:
            _enter_stage(libc, stage)
        if ident is not None:
            os.setgroups([])
            os.setresgid(ident.gid, ident.gid, ident.gid)
            os.setresuid(ident.uid, ident.uid, ident.uid)
        if libc is not None:
            # After the uid change: changing credentials clears the parent-death signal.
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)
        for res, soft, hard in limits:
            try:
                resource.setrlimit(res, (soft, hard))
            except (OSError, ValueError):
                # Linux honours every limit; elsewhere (macOS refuses RLIMIT_AS) the
                # block runs without the ones the system will not set.
                if linux:
                    raise

    return preexec


def _enter_stage(libc: Any, stage: _Stage) -> None:
    """In the child, as root: private mounts that make the block's directories reachable."""
    _check(libc.unshare(CLONE_NEWNS), "unshare")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate")
    # Opened in the new namespace (a bind source must be one of its mounts) and before
    # the tmpfs covers them.
    fds = [(os.open(src, os.O_PATH | os.O_CLOEXEC), src, is_dir) for src, is_dir in stage.binds]
    for top in stage.tops:
        _check(
            libc.mount(b"tmpfs", top.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755"),
            "mount tmpfs",
        )
    old = os.umask(0o022)
    for fd, dst, is_dir in fds:
        if is_dir:
            os.makedirs(dst, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "ab"):
                pass
        src = f"/proc/self/fd/{fd}".encode()
        _check(libc.mount(src, dst.encode(), None, MS_BIND | MS_REC, None), "bind mount")
        os.close(fd)
    os.umask(old)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prepare_dirs(spec: BlockSpec, ident: _Identity | None) -> _Paths:
    """Create the block's directories, hand them to the sandbox user, resolve paths."""
    files = spec.files_dir.resolve()
    artifacts = spec.artifacts_dir.resolve()
    for d in (files, artifacts):
        d.mkdir(parents=True, exist_ok=True)
        if ident is not None and d.stat().st_uid != ident.uid:
            _chown_tree(d, ident)
    payload = spec.payload_file.resolve() if spec.payload_file else None

    def extra(raw: Sequence[str]) -> tuple[Path, ...]:
        found = []
        for r in raw:
            p = Path(os.path.expanduser(r))
            p = (p if p.is_absolute() else files / p).resolve()
            if p.exists():
                found.append(p)
        return tuple(found)

    return _Paths(
        files=files,
        artifacts=artifacts,
        workspace=spec.workspace.resolve(),
        payload=payload if payload and payload.exists() else None,
        read=extra(spec.sandbox.read),
        write=extra(spec.sandbox.write),
    )


def _chown_tree(root: Path, ident: _Identity) -> None:
    """Give a directory and what is in it to the sandbox user (first use of a files/)."""
    os.chown(root, ident.uid, ident.gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(dirpath, name), ident.uid, ident.gid)


def _read_payload(path: Path | None) -> str | None:
    if path is None or not path.exists():
        return None
    return path.read_bytes().decode("utf-8", "replace")


# ------------------------------------------------------------------------- execute


class _BlockProtocol(asyncio.SubprocessProtocol):
    """Collects capped stdout/stderr and notices exit and stdout overflow."""

    def __init__(self, stdout_cap: int, on_output: Callable[[bytes], None] | None = None) -> None:
        self.stdout_cap = stdout_cap
        self.on_output = on_output
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.truncated = False
        self.stderr_truncated = False
        self.exited = asyncio.Event()
        self.overflow = asyncio.Event()
        self.pipes_closed = asyncio.Event()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            if self.truncated:
                return
            room = self.stdout_cap - len(self.stdout)
            self.stdout += data[:room]
            if self.on_output is not None and room > 0:
                with contextlib.suppress(Exception):  # a listener must not break the block
                    self.on_output(data[:room])
            if len(data) > room:
                self.truncated = True
                self.overflow.set()
        elif fd == 2:
            room = STDERR_CAP - len(self.stderr)
            self.stderr += data[: max(room, 0)]
            if len(data) > room:
                self.stderr_truncated = True

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open:
            self.pipes_closed.set()

    def process_exited(self) -> None:
        self.exited.set()


class _ChannelProtocol(asyncio.Protocol):
    """The private result pipe: JSON lines from the prelude."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        if len(self.data) < CHANNEL_CAP:
            self.data += data[: CHANNEL_CAP - len(self.data)]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def messages(self) -> list[dict[str, Any]]:
        out = []
        for line in bytes(self.data).splitlines():
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict):
                    out.append(msg)
        return out


async def _execute(
    spec: BlockSpec, launch: _Launch, payload_text: str | None, level: str, started: float
) -> BlockOutcome:
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    channel = _ChannelProtocol()
    ch_transport, _ = await loop.connect_read_pipe(
        lambda: channel, os.fdopen(read_fd, "rb", buffering=0)
    )
    script = _script(spec, write_fd, payload_text, reap=launch.tree_kill)
    try:
        transport, proto = await loop.subprocess_exec(
            lambda: _BlockProtocol(spec.stdout_cap, spec.on_output),
            *launch.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=launch.env,
            cwd=launch.cwd,
            pass_fds=(write_fd,),
            start_new_session=True,
            preexec_fn=launch.preexec,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        ch_transport.close()
        return BlockOutcome(
            error=f"SandboxError: could not start the block: {_one_line(exc)}",
            isolation=level,
            duration_ms=_ms_since(started),
        )
    finally:
        os.close(write_fd)

    pid = transport.get_pid()
    timed_out = False
    try:
        stdin = transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.write(script)  # type: ignore[attr-defined]
            stdin.close()
        ended = await _first(proto.exited, proto.overflow, timeout=spec.timeout)
        timed_out = not ended
        if not proto.exited.is_set():
            await _stop(pid, proto, launch.tree_kill)
        _kill_group(pid, signal.SIGKILL)
        await _first(proto.pipes_closed, timeout=DRAIN)
        await _first(channel.closed, timeout=DRAIN)
    finally:
        if transport.get_returncode() is None:
            # Cancelled (the run was cancelled or the daemon is stopping): kill now, and
            # give the kernel a moment to tear the namespace down before returning.
            _kill_group(pid, signal.SIGKILL)
            if launch.tree_kill:
                _freeze_and_kill(pid)
            with contextlib.suppress(asyncio.CancelledError):
                await _first(proto.pipes_closed, timeout=DRAIN)
        transport.close()
        ch_transport.close()
    return _outcome(spec, proto, channel, transport.get_returncode(), timed_out, level, started)


async def _first(*events: asyncio.Event, timeout: float) -> bool:
    """Wait until one of the events is set; False on timeout."""
    if any(e.is_set() for e in events):
        return True
    tasks = [asyncio.create_task(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
    return bool(done)


async def _stop(pid: int, proto: _BlockProtocol, tree_kill: bool) -> None:
    """SIGTERM the group, 0.5 s of grace, then SIGKILL it (and, without a pid namespace,
    everything descended from the block, even what left the group)."""
    snapshot = _tree(pid) if tree_kill else {}
    _kill_group(pid, signal.SIGTERM)
    await _first(proto.exited, timeout=GRACE)
    if tree_kill and not proto.exited.is_set():
        _freeze_and_kill(pid)
    _kill_group(pid, signal.SIGKILL)
    for p, start in snapshot.items():
        if _start_time(p) == start:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
    await _first(proto.exited, timeout=DRAIN)


def _outcome(
    spec: BlockSpec,
    proto: _BlockProtocol,
    channel: _ChannelProtocol,
    returncode: int | None,
    timed_out: bool,
    level: str,
    started: float,
) -> BlockOutcome:
    msgs = channel.messages()
    skip = next((m for m in msgs if "skip" in m), None)
    result = next((m for m in msgs if "error" in m), None)
    began = any(m.get("started") for m in msgs)
    stderr = bytes(proto.stderr).decode("utf-8", "replace")
    if proto.stderr_truncated:
        stderr += f"\n[stderr truncated at {_size(STDERR_CAP)}]"
    out = BlockOutcome(
        stderr=stderr,
        exit_code=returncode,
        duration_ms=_ms_since(started),
        isolation=level,
    )
    if skip is not None:
        out.skipped = True
        out.skip_reason = str(skip["skip"])
        return out
    text = bytes(proto.stdout).decode("utf-8", "replace")
    truncated = proto.truncated
    if truncated:
        text = text.rstrip("\ufffd")  # a character cut in half at the cap
    elif text.endswith("\n"):
        text = text[:-1]
    value = result.get("value") if result else None
    if not proto.stdout and isinstance(value, str):
        text = value
        if len(text) > spec.stdout_cap:
            text, truncated = text[: spec.stdout_cap], True
    # No marker here: core/prompt.render_result marks cut output (one marker, one place).
    out.output = text
    out.truncated = truncated
    if timed_out:
        out.error = f"TimeoutError: block exceeded {spec.timeout:g}s"
    elif result is not None and result.get("error"):
        out.error = str(result["error"])
    elif truncated or result is not None or returncode == 0:
        out.error = None
    elif not began:
        last = stderr.strip().splitlines()[-1:] or ["the interpreter did not start"]
        out.error = f"SandboxError: {last[0]}"
    else:
        out.error = _exit_error(returncode, level)
        if level == "bubblewrap" and returncode is not None and returncode > 128:
            out.exit_code = 128 - returncode  # as without bubblewrap: -N for signal N
    return out


def _exit_error(returncode: int | None, level: str) -> str:
    """Describe an exit the prelude did not report (os._exit, a signal, a limit)."""
    if returncode is None:
        return "Killed: the block did not exit"
    sig = -returncode if returncode < 0 else 0
    if level == "bubblewrap" and returncode > 128:
        sig = returncode - 128  # bubblewrap's init exits 128+N for a command killed by N
    if not sig:
        return f"SystemExit: {returncode}"
    why = {
        int(signal.SIGKILL): "memory or CPU limit?",
        int(signal.SIGXCPU): "CPU time limit exceeded",
        int(signal.SIGXFSZ): "file size limit exceeded",
    }.get(sig)
    if why is None:
        try:
            why = signal.Signals(sig).name
        except ValueError:
            why = "unknown signal"
    return f"Killed: signal {sig} ({why})"


def _script(spec: BlockSpec, fd: int, payload_text: str | None, reap: bool) -> bytes:
    """The interpreter's stdin: the prelude, then one call with the block as literals.

    Arguments travel as Python literals (plain str/int/dict after a JSON round trip), so
    the prelude needs no JSON parser to read them.
    """
    task, run = (json.loads(json.dumps(dict(m), default=str)) for m in (spec.task, spec.run))
    args = (spec.code, fd, task, run, payload_text, spec.stdout_cap, reap)
    call = f"\n_sys.exit(_daycare_main(*{args!r}))\n"
    return (PRELUDE + call).encode("utf-8", "surrogateescape")


# ------------------------------------------------------------------------ processes


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, sig)


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, start time) from /proc; empty where there is no /proc."""
    table: dict[int, tuple[int, str]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) > 19:
            table[int(name)] = (int(fields[1]), fields[19].decode())
    return table


def _tree(root: int) -> dict[int, str]:
    """The block's process and its descendants: pid -> start time."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _start) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, str] = {}
    todo = [root] if root in table else []
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out[pid] = table[pid][1]
        todo.extend(children.get(pid, ()))
    return out


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def _freeze_and_kill(root: int) -> None:
    """Stop the whole tree (stopped processes cannot fork), then SIGKILL all of it."""
    stopped: dict[int, str] = {}
    for _ in range(200):
        new = {p: s for p, s in _tree(root).items() if p not in stopped}
        if not new:
            break
        for p in new:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGSTOP)
        stopped.update(new)
    for p in stopped:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


def _process_count(uid: int) -> int:
    """How many processes `uid` runs (what RLIMIT_NPROC counts)."""
    count = 0
    try:
        with os.scandir("/proc") as it:
            for entry in it:
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):
                        if entry.stat().st_uid == uid:
                            count += 1
    except OSError:
        return 0
    return count


# -------------------------------------------------------------------- environment


@functools.cache
def _sandbox_identity() -> _Identity | None:
    """None unless the daemon is root; then `daycare-sandbox`, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in (SANDBOX_USER, "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return _Identity(pw.pw_uid, pw.pw_gid, name, pw.pw_dir)
    return _Identity(65534, 65534, "nobody", "/nonexistent")


@functools.cache
def _find_python(ident: _Identity | None) -> str:
    """An interpreter the block's user can run: ours if it can, else the system's."""
    if ident is None:
        return sys.executable or shutil.which("python3", path=SAFE_PATH) or "python3"
    candidates = [sys.executable, os.path.realpath(sys.executable)]
    candidates += ["/usr/bin/python3", "/usr/local/bin/python3"]
    candidates.append(shutil.which("python3", path=SAFE_PATH) or "")
    seen: set[str] = set()
    for c in candidates:
        if not c or c in seen or not os.path.exists(c):
            continue
        seen.add(c)
        try:
            done = subprocess.run(
                [c, "-I", "-c", "import sys; sys.exit(sys.version_info < (3, 8))"],
                user=ident.uid,
                group=ident.gid,
                extra_groups=[],
                cwd="/",
                env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=20,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return c
    raise SandboxError(
        f"no Python >= 3.8 interpreter that the sandbox user {ident.name} can run",
        hint="install python3 system-wide or set DAYCARE_SANDBOX_PYTHON",
    )


@functools.cache
def _probe() -> tuple[_Bwrap | None, str]:
    """Find bubblewrap and check that it works here by running a sandboxed `true`."""
    if sys.platform != "linux":
        return None, "bubblewrap needs Linux"
    path = shutil.which("bwrap") or shutil.which("bwrap", path=SAFE_PATH)
    if not path:
        return None, "bwrap not found (install bubblewrap for full isolation)"
    try:
        helped = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10)
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"bwrap does not run: {_one_line(exc)}"
    usage = helped.stdout + helped.stderr
    name = version.stdout.strip() or "bubblewrap"
    full = _Bwrap(path, name, "--disable-userns" in usage, "--size" in usage)
    why = ""
    for bwrap in (full, _Bwrap(path, name, False, False)):
        ok, why = _try_bwrap(bwrap)
        if ok:
            return bwrap, f"{name} ({path})"
    return None, f"bubblewrap refused to run here: {why}"


def _try_bwrap(bwrap: _Bwrap) -> tuple[bool, str]:
    true = shutil.which("true", path=SAFE_PATH) or "/bin/true"
    ident = _sandbox_identity()
    with tempfile.TemporaryDirectory(prefix="daycare-probe-") as tmp:
        base = Path(tmp)
        spec = BlockSpec(
            code="", files_dir=base / "files", artifacts_dir=base / "art", workspace=base
        )
        try:
            paths = _prepare_dirs(spec, ident)
            launch = _launch_plan(spec, paths, bwrap, ident, [true])
            done = subprocess.run(
                launch.argv,
                env=launch.env,
                cwd=launch.cwd,
                preexec_fn=launch.preexec,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=20,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return False, _one_line(exc)
    if done.returncode != 0:
        return False, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    return True, ""


@functools.cache
def _libc() -> Any:
    """libc with prctl/mount/unshare typed, or None off Linux."""
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.prctl.argtypes.append(ctypes.c_ulong)
    libc.unshare.argtypes = [ctypes.c_int]
    c_str = ctypes.c_char_p
    libc.mount.argtypes = [c_str, c_str, c_str, ctypes.c_ulong, c_str]
    return libc


def _passwd_home(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return ""


def _ancestors(path: Path) -> list[Path]:
    """Strict ancestors of `path`, from / down."""
    return list(reversed(path.parents))


def _traversable(directory: Path, ident: _Identity) -> bool:
    """Whether `ident` (no supplementary groups) may enter `directory`."""
    try:
        st = os.stat(directory)
    except OSError:
        return False
    if st.st_uid == ident.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == ident.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _reachable(path: Path, ident: _Identity | None) -> bool:
    """Whether the block's user can look `path` up (enter every ancestor)."""
    for a in _ancestors(path):
        if ident is not None and not _traversable(a, ident):
            return False
        if ident is None and not os.access(a, os.X_OK):
            return False
    return True


def _is_within(path: Path, top: Path) -> bool:
    return path == top or top in path.parents


def _one_line(what: object) -> str:
    text = str(what).strip().splitlines()
    return text[0] if text else type(what).__name__


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _size(n: int) -> str:
    if n % MIB == 0:
        return f"{n // MIB} MiB"
    if n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} bytes"
