"""Totals per run through a cgroup v2 (docs/security.md, "What is contained").

rlimits bind one process at a time: twelve children of 512 MiB each hold 6 GiB. Where a
cgroup v2 subtree is delegated to us (the shipped systemd unit has `Delegate=yes`; or
config `sandbox.cgroup` names one), each run gets a child cgroup with

- `memory.max` = the task's `sandbox.memory` (and no swap), for all its processes;
- `pids.max` = the process budget of a block;
- `cpu.max` = one CPU's worth of time.

Every block process is born in it: bubblewrap's pid is written to an fd of its
`cgroup.procs` opened beforehand while bubblewrap waits for its options
(`process.Gate`), else the child writes "0" there between fork and exec
(`identity.preexec`); `cgroup.kill` ends whatever is left when the run ends. Where no
delegated cgroup exists, `doctor` says so and the per-process limits alone apply.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

NEEDED = ("memory", "pids", "cpu")
CPU_PERIOD = 100_000  # µs


@dataclass(frozen=True)
class Totals:
    """What one run may use in all: bytes of memory, processes, CPUs."""

    memory: int
    pids: int
    cpus: float = 1.0

    def files(self) -> dict[str, str]:
        """The cgroup files and values that set these totals."""
        quota = max(1000, int(CPU_PERIOD * self.cpus))
        return {
            "memory.max": str(self.memory),
            "memory.swap.max": "0",
            "pids.max": str(self.pids),
            "cpu.max": f"{quota} {CPU_PERIOD}",
        }


@dataclass
class RunCgroup:
    """One run's cgroup; `procs_fd` is its `cgroup.procs`, where a block joins."""

    path: Path
    procs_fd: int
    closed: bool = field(default=False)

    def close(self) -> None:
        """Kill everything still in it and remove it (idempotent)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            os.close(self.procs_fd)
        kill_all(self.path)
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)  # processes still being torn down

    def peak_memory(self) -> int | None:
        """The most memory the run's processes held at once, when the kernel tells."""
        try:
            return int((self.path / "memory.peak").read_text())
        except (OSError, ValueError):
            return None


def kill_all(path: Path) -> None:
    """SIGKILL every process in a cgroup: `cgroup.kill` (Linux 5.14), else one by one."""
    try:
        (path / "cgroup.kill").write_text("1")
        return
    except OSError:
        pass
    for _ in range(50):
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        time.sleep(0.01)


def create_run_cgroup(parent: Path, name: str, totals: Totals) -> RunCgroup:
    """Make `parent/name` with the totals set; OSError when the kernel refuses."""
    path = parent / name
    path.mkdir(mode=0o755)
    try:
        for fname, value in totals.files().items():
            try:
                (path / fname).write_text(value)
            except FileNotFoundError:
                if fname != "memory.swap.max":  # no swap accounting: nothing to limit
                    raise
        fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        with contextlib.suppress(OSError):
            path.rmdir()
        raise
    return RunCgroup(path, fd)


def cgroup_parent(configured: str | None) -> tuple[Path | None, str]:
    """The cgroup v2 directory run cgroups go under, or None; and a one-line why.

    `configured` (config `sandbox.cgroup`) names one explicitly; otherwise the process's
    own cgroup is used when it was prepared by `adopt_delegated` (the daemon does that at
    start under systemd's `Delegate=yes`).
    """
    if configured:
        return _usable(Path(configured))
    if _adopted is not None:
        return _usable(_adopted)
    return None, _not_delegated()


@functools.cache
def _not_delegated() -> str:
    """Why runs get no cgroup here, read once: every run with blocks asks, on the loop."""
    own = own_cgroup()
    if own is None:
        return "no cgroup v2 hierarchy (per-process limits only)"
    return f"{own} is not delegated to daycare (per-process limits only)"


_adopted: Path | None = None


def may_make(configured: str | None) -> bool:
    """Whether `cgroup_parent` may find a parent, so that a run would make a cgroup (a
    directory in cgroupfs: off the event loop); False answers without any system call."""
    return bool(configured) or _adopted is not None


def adopt_delegated() -> tuple[Path | None, str]:
    """In the daemon: when our own cgroup is delegated to us, move ourselves into a leaf
    `daemon/` (a cgroup with processes cannot give controllers to children) and enable
    the controllers for run cgroups beside it. Returns what `cgroup_parent` will use."""
    global _adopted
    own = own_cgroup()
    if own is None:
        return None, "no cgroup v2 hierarchy (per-process limits only)"
    if own.name == "daemon":
        own = own.parent  # adopted before (a restart in the same unit)
    # Only a systemd unit's own cgroup is ours to rearrange: never the root, a session's
    # scope or anything a writable hierarchy (root, no systemd) happens to let us touch.
    if own == _mount_point() or not own.name.endswith(".service"):
        return None, f"{own} is not a service cgroup delegated to daycare (per-process limits only)"
    if not os.access(own / "cgroup.subtree_control", os.W_OK) or not os.access(
        own / "cgroup.procs", os.W_OK
    ):
        return None, f"{own} is not delegated to daycare (per-process limits only)"
    try:
        procs = [int(p) for p in (own / "cgroup.procs").read_text().split()]
        mine = {os.getpid(), *_descendants(os.getpid())}
        if any(p not in mine for p in procs):
            return None, f"{own} holds processes that are not daycare's (per-process limits only)"
        leaf = own / "daemon"
        leaf.mkdir(exist_ok=True)
        for pid in procs:
            with contextlib.suppress(OSError):  # a process that ended meanwhile
                (leaf / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        return None, f"{own} is delegated but not usable: {exc.strerror or exc}"
    found = _usable(own)
    if found[0] is not None:
        _adopted = own
    return found


def _descendants(pid: int) -> set[int]:
    import psutil

    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


@functools.cache
def _mount_point() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (None: no cgroup2 mount)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split()[4])
    return None


def own_cgroup() -> Path | None:
    """This process's cgroup v2 directory, or None."""
    mount = _mount_point()
    if mount is None:
        return None
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return mount / line[3:].lstrip("/")
    except OSError:
        return None
    return None


def _usable(parent: Path) -> tuple[Path | None, str]:
    """`parent` if run cgroups with the needed controllers can be made in it."""
    try:
        available = (parent / "cgroup.controllers").read_text().split()
    except OSError:
        return None, f"{parent} is not a cgroup v2 directory (per-process limits only)"
    missing = [c for c in NEEDED if c not in available]
    if missing:
        return None, (
            f"{parent} lacks the {', '.join(missing)} controller(s) (per-process limits only)"
        )
    try:
        enabled = (parent / "cgroup.subtree_control").read_text().split()
        wanted = [c for c in NEEDED if c not in enabled]
        if wanted:
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        if not os.access(parent, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        return None, f"{parent} is not writable for daycare: {exc.strerror or exc}"
    return parent, f"cgroup v2 at {parent}: memory, pids and CPU totals per run"
