"""Who a block runs as and what it may use (docs/security.md, "What is contained").

- As root: RLIMIT_NPROC does not bind uid 0 and a root bubblewrap maps to the real root,
  so blocks run unprivileged: each task under a uid of its own (`TASK_UID_BASE` plus a
  hash of the task id, in the group of `daycare-sandbox`, else `nobody`), so that one
  task's blocks cannot write another's `files/`, read another's /proc environment or
  use up another's process budget, with or without bubblewrap. The block's `files/` and
  `artifacts/` are chowned to that uid and made 0700, and the interpreter is one that
  user can run: `sys.executable` when it can (pyenv's lives under a 0700 /root, so
  usually not), else the system's `/usr/bin/python3`; `DAYCARE_SANDBOX_PYTHON` overrides.
- When a directory the block needs sits below one that user cannot enter (`/root/...`),
  a private mount namespace (the "stage") lays a tmpfs over that directory and binds the
  needed directories back at their own paths, so paths are the same inside and outside.
- Always: rlimits, umask 077, a parent-death signal, the run's cgroup when there is one,
  and (without bubblewrap, which loads it itself) the seccomp filter. Without
  bubblewrap, or with a stage, they are set between fork and exec (`preexec`); under
  bubblewrap otherwise, Popen drops the uid and sets the umask, and the limits and the
  cgroup are given to bubblewrap before it makes anything (`process.Gate`), with no
  Python between fork and exec.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import pwd
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from daycare_cli.core.errors import SandboxError
from daycare_cli.core.task import MIB, SandboxSpec
from daycare_cli.run.seccomp import Filter

SANDBOX_USER = "daycare-sandbox"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

FILE_SIZE_LIMIT = 64 * MIB
OPEN_FILES_LIMIT = 256
PROCESS_BUDGET = 128  # processes a block may add to those its user already runs
COUNT_FRESH = 1.0  # seconds a count of a user's processes serves the blocks planned
_COUNTS: dict[int, tuple[float, int]] = {}  # uid -> (monotonic time, processes)
_COUNTS_LOCK = threading.Lock()  # plans are made in worker threads
# Uids of tasks' blocks when the daemon is root: no account may use this range.
TASK_UID_BASE = 0x70000000
TASK_UID_RANGE = 1 << 16

# Linux constants (asm-generic values, the same on x86-64 and arm64).
PR_SET_PDEATHSIG = 1
CLONE_NEWNS = 0x00020000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

Limits: TypeAlias = list[tuple[int, int, int]]  # (resource, soft, hard)


@dataclass(frozen=True)
class Identity:
    """The unprivileged user blocks run as when the daemon is root."""

    uid: int
    gid: int
    name: str
    home: str


@dataclass(frozen=True)
class Stage:
    """Mounts made as root in a private mount namespace before dropping privileges.

    `tops` are directories the sandbox user cannot enter; each gets an empty tmpfs, and
    `binds` (path, is_dir) are mounted back at their own paths inside those.
    """

    tops: tuple[str, ...]
    binds: tuple[tuple[str, bool], ...]


def sandbox_identity(owner: str | None = None) -> Identity | None:
    """None unless the daemon is root; then the uid of task `owner` (see the module
    docstring), or `daycare-sandbox` (else `nobody`) itself when no task is named."""
    base = _base_identity()
    if base is None or not owner:
        return base
    uid = TASK_UID_BASE + zlib.crc32(owner.encode("utf-8")) % TASK_UID_RANGE
    return Identity(uid, base.gid, f"{base.name}/{owner}", base.home)


@functools.cache
def _base_identity() -> Identity | None:
    if os.geteuid() != 0:
        return None
    for name in (SANDBOX_USER, "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return Identity(pw.pw_uid, pw.pw_gid, name, pw.pw_dir)
    return Identity(65534, 65534, "nobody", "/nonexistent")


def sandbox_python(ident: Identity | None = None) -> str:
    """The interpreter blocks run with (`DAYCARE_SANDBOX_PYTHON` overrides)."""
    override = os.environ.get("DAYCARE_SANDBOX_PYTHON")
    if override:
        return override
    # What a task's uid may run is what the base sandbox user may run: neither owns the
    # interpreter, so "other" permissions decide for both. One probe, not one per task.
    return _find_python(_base_identity() if ident is not None else None)


@functools.cache
def _find_python(ident: Identity | None) -> str:
    """An interpreter the block's user can run: ours if it can, else the system's."""
    if ident is None:
        # The interpreter itself, not a venv's wrapper: the sandbox shows its install
        # prefix read-only, and daycare's own venv stays out of the block's sight.
        exe = sys.executable or shutil.which("python3", path=SAFE_PATH) or "python3"
        return os.path.realpath(exe)
    candidates = [sys.executable, os.path.realpath(sys.executable)]
    candidates += ["/usr/bin/python3", "/usr/local/bin/python3"]
    candidates.append(shutil.which("python3", path=SAFE_PATH) or "")
    seen: set[str] = set()
    for c in candidates:
        if not c or c in seen or not os.path.exists(c):
            continue
        seen.add(c)
        if runs_as(ident, [c, "-I", "-c", "import sys; sys.exit(sys.version_info < (3, 8))"]):
            return c
    raise SandboxError(
        f"no Python >= 3.8 interpreter that the sandbox user {ident.name} can run",
        hint="install python3 system-wide or set DAYCARE_SANDBOX_PYTHON",
    )


def runs_as(ident: Identity, argv: list[str], timeout: float = 30) -> bool:
    """Whether `argv` exits 0 when run as `ident` with a clean environment (an interpreter
    the sandbox user can run); any failure to run it is a no."""
    try:
        done = subprocess.run(
            argv,
            user=ident.uid,
            group=ident.gid,
            extra_groups=[],
            cwd="/",
            env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def chown_tree(root: Path, ident: Identity) -> None:
    """Give a directory and what is in it to the sandbox user (first use of a files/),
    private to it: other tasks' uids cannot enter it."""
    os.chown(root, ident.uid, ident.gid)
    os.chmod(root, 0o700)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(dirpath, name), ident.uid, ident.gid)


def reachable(path: Path, ident: Identity | None) -> bool:
    """Whether the block's user can look `path` up (enter every ancestor)."""
    for a in _ancestors(path):
        if ident is not None and not _traversable(a, ident):
            return False
        if ident is None and not os.access(a, os.X_OK):
            return False
    return True


def stage_plan(leaves: Sequence[Path], ident: Identity) -> Stage | None:
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
    return Stage(tuple(tops), tuple(binds)) if binds else None


def limits(sandbox: SandboxSpec, timeout: float, ident: Identity | None) -> Limits:
    """(resource, soft, hard) for the block, never above the daemon's own hard limits."""
    cpu = sandbox.cpu if sandbox.cpu else timeout + 1
    cpu_soft = max(1, math.ceil(cpu))
    wanted = [
        (resource.RLIMIT_AS, sandbox.memory, sandbox.memory),
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


def preexec(
    ident: Identity | None,
    rlimits: Limits,
    stage: Stage | None,
    *,
    seccomp: Filter | None = None,
    cgroup_fd: int | None = None,
) -> Callable[[], None]:
    """The function the child runs between fork and exec (ctypes resolved beforehand).

    `seccomp` is loaded last (reduced isolation; bubblewrap loads it itself);
    `cgroup_fd` is the run cgroup's `cgroup.procs`, joined first, so every process the
    block starts is counted in the run's totals.
    """
    libc = _libc()
    parent = os.getpid()
    linux = sys.platform == "linux"

    def child() -> None:
        if cgroup_fd is not None:
            os.write(cgroup_fd, b"0")
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
        for res, soft, hard in rlimits:
            try:
                resource.setrlimit(res, (soft, hard))
            except (OSError, ValueError):
                # Linux honours every limit; elsewhere (macOS refuses RLIMIT_AS) the
                # block runs without the ones the system will not set.
                if linux:
                    raise
        os.umask(0o077)  # what a block creates is its task's alone
        if seccomp is not None and libc is not None:
            seccomp.load(libc)

    return child


def _enter_stage(libc: Any, stage: Stage) -> None:
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


def _process_count(uid: int) -> int:
    """How many processes `uid` runs (what RLIMIT_NPROC counts), counted at most
    COUNT_FRESH seconds ago.

    The walk of /proc was half of a block's launch plan (1-2.5 ms of its 3-5, issue 12),
    paid before every block; blocks planned within a second share one count. A count a
    second old is off by what the user started or ended since: a budget that tight is
    stricter, and one looser by the processes ended in that second is still bounded.
    """
    now = time.monotonic()
    with _COUNTS_LOCK:
        known = _COUNTS.get(uid)
    if known is not None and now - known[0] < COUNT_FRESH:
        return known[1]
    count = _walk_proc(uid)
    with _COUNTS_LOCK:
        _COUNTS[uid] = (now, count)
    return count


def _walk_proc(uid: int) -> int:
    """Count `uid`'s processes: a stat of each /proc entry relative to /proc, not psutil,
    which reads each process's status file instead (0.65 ms here against 6.9 ms, 80
    processes)."""
    count = 0
    try:
        proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        for name in os.listdir(proc):
            if name.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(name, dir_fd=proc).st_uid == uid:
                        count += 1
    except OSError:
        return 0
    finally:
        os.close(proc)
    return count


def _ancestors(path: Path) -> list[Path]:
    """Strict ancestors of `path`, from / down."""
    return list(reversed(path.parents))


def _traversable(directory: Path, ident: Identity) -> bool:
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
