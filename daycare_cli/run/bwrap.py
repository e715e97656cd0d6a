"""bubblewrap: the probe, its argv, and the filesystem view a block gets (DESIGN.md §5 step 5).

Namespaces (user, pid, mount, ipc, uts, cgroup, and network unless `sandbox.network`),
the allow-list view of `view.py` (system directories read-only, homes and /tmp, /run
empty, daycare's own places masked, the block's directories and the task's entries
bound), no capabilities, a pid namespace that dies with the block, the seccomp filter.
The probe runs once, with a trial the caller gives (a sandboxed `true` through the
block's own launch plan), so what works in the probe is what blocks get.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from daycare_cli.core.task import MIB
from daycare_cli.run.identity import SAFE_PATH, Identity, reachable
from daycare_cli.run.view import SYSTEM_DIRS, Entry, homes, in_view, within

TMP_SIZE = 64 * MIB
SHM_SIZE = 16 * MIB
RUN_SIZE = 1 * MIB


@dataclass(frozen=True)
class Bwrap:
    """A working bubblewrap and the options this one has."""

    path: str
    version: str
    disable_userns: bool
    sized_tmpfs: bool
    gate: bool = False  # --args and --info-fd: spawned with no Python before exec


@dataclass(frozen=True)
class BlockPaths:
    """A block's paths on the host, resolved: its own directories, the task's entries
    (`view.Entry`, open without following links) and extra read-only directories the
    interpreter needs (`runtime`: its install prefix when that is not in the view)."""

    files: Path
    artifacts: Path
    workspace: Path
    payload: Path | None
    entries: tuple[Entry, ...] = ()
    runtime: tuple[Path, ...] = ()
    env_dirs: tuple[Path, ...] = ()  # issue 9: a Python environment, bound read-only

    @property
    def read(self) -> tuple[Path, ...]:
        return tuple(e.path for e in self.entries if not e.writable)

    @property
    def write(self) -> tuple[Path, ...]:
        return tuple(e.path for e in self.entries if e.writable)

    @property
    def fds(self) -> tuple[int, ...]:
        return tuple(e.fd for e in self.entries)

    def shown(self) -> list[Path]:
        """Host directories bound into the view besides the system ones."""
        own = [self.files, self.artifacts, *([self.payload] if self.payload else [])]
        return [*own, *self.runtime, *(e.path for e in self.entries), *self.env_dirs]


Trial = Callable[[Bwrap], tuple[bool, str]]  # (it ran, why not)


def probe(trial: Trial, configured: str | None = None) -> tuple[Bwrap | None, str]:
    """Find bubblewrap (`configured`, config `sandbox.bwrap`, else on PATH) and check
    with `trial` that it works here: with every option it offers, else without the
    gate (`Bwrap.gate`: it sets limits on a process of another uid, which root cannot
    do without CAP_SYS_RESOURCE, nor anyone on a setuid bubblewrap), else with none.
    Returns (bwrap or None, a one-line reason)."""
    if sys.platform != "linux":
        return None, "bubblewrap needs Linux"
    if configured:
        path = configured if os.access(configured, os.X_OK) else None
        if path is None:
            return None, f"bwrap not found at {configured} (config sandbox.bwrap)"
    else:
        path = shutil.which("bwrap") or shutil.which("bwrap", path=SAFE_PATH)
    if not path:
        return None, "bwrap not found"
    try:
        helped = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10)
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, f"bwrap does not run: {first}"
    usage = helped.stdout + helped.stderr
    name = version.stdout.strip() or "bubblewrap"
    full = Bwrap(path, name, "--disable-userns" in usage, "--size" in usage)
    tries = [full, Bwrap(path, name, False, False)]
    if "--args" in usage and "--info-fd" in usage:
        tries.insert(0, dataclasses.replace(full, gate=True))
    why = ""
    for bwrap in tries:
        ok, why = trial(bwrap)
        if ok:
            return bwrap, f"{name} ({path})"
    return None, f"bubblewrap refused to run here: {why}"


def bwrap_argv(
    bwrap: Bwrap,
    paths: BlockPaths,
    network: bool,
    hide: Sequence[Path],
    ident: Identity | None,
    tops: Sequence[str],
    seccomp_fd: int | None = None,
) -> list[str]:
    """bubblewrap's options; the order matters (later mounts cover earlier ones).

    `hide` are daycare's own places, masked where the view would show them; `tops` are
    the directories the stage already covers with a tmpfs (identity.Stage), whose
    entries are bound by path (bubblewrap, running as the sandbox user, could not
    reach them through a descriptor).
    """
    a = [bwrap.path, "--unshare-all", "--unshare-user"]
    if network:
        a.append("--share-net")
    a += ["--die-with-parent", "--new-session"]
    if bwrap.disable_userns:
        a.append("--disable-userns")
    a += ["--cap-drop", "ALL"]
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            a += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            a += ["--ro-bind", d, d]
    a += ["--proc", "/proc", "--dev", "/dev"]
    sized = bwrap.sized_tmpfs
    for where, size in (("/tmp", TMP_SIZE), ("/dev/shm", SHM_SIZE), ("/run", RUN_SIZE)):
        a += (["--size", str(size)] if sized else []) + ["--tmpfs", where]
    home_dirs = homes([ident.home] if ident is not None else [])
    empty = ["/run", "/home", "/root", *map(str, home_dirs)]
    for h in empty[1:]:
        a += (["--size", str(RUN_SIZE)] if sized else []) + ["--tmpfs", h]
    if network:
        a += _resolver_binds()
    for p in paths.runtime:
        a += ["--ro-bind", str(p), str(p)]
    staged = [Path(t) for t in tops]
    for e in paths.entries:
        by_path = any(within(e.path, t) for t in staged)
        if by_path:
            a += ["--bind" if e.writable else "--ro-bind", str(e.path), str(e.path)]
        else:
            a += ["--bind-fd" if e.writable else "--ro-bind-fd", str(e.fd), str(e.path)]
    # Daycare's places come after the entries (so they are masked inside those too) and
    # before the block's own directories (so masking the workspaces keeps this block's).
    shown = [*paths.runtime, *(e.path for e in paths.entries)]
    masked: list[str] = []
    for p in _hidden_paths(hide, ident, tops, shown, home_dirs):
        if p.is_dir():
            a += ["--tmpfs", str(p)]
            masked.append(str(p))
        else:
            # A plain bind would mount /dev/null nodev, unreadable; writes to it vanish.
            a += ["--dev-bind", "/dev/null", str(p)]
    a += ["--bind", str(paths.files), str(paths.files)]
    a += ["--bind", str(paths.artifacts), str(paths.artifacts)]
    if paths.payload is not None:
        a += ["--ro-bind", str(paths.payload), str(paths.payload)]
    # Issue 9: the block's Python environment (run/envs.py) and a uv-managed base
    # interpreter, read-only; after the hiding, so a hidden home or cache cannot mask them.
    for p in paths.env_dirs:
        a += ["--ro-bind", str(p), str(p)]
    a += ["--chdir", str(paths.files)]
    for m in [*empty, *masked]:
        a += ["--remount-ro", m]
    a += ["--remount-ro", "/"]
    if seccomp_fd is not None:
        a += ["--seccomp", str(seccomp_fd)]
    return a


def _resolver_binds() -> list[str]:
    """With network: /etc/resolv.conf often points into /run (systemd-resolved), which
    is empty in the view; bind the file it names, and nothing else of /run."""
    try:
        target = Path(os.path.realpath("/etc/resolv.conf"))
    except OSError:
        return []
    if within(target, Path("/run")) and target.is_file():
        return ["--ro-bind", str(target), str(target)]
    return []


def _hidden_paths(
    hide: Sequence[Path],
    ident: Identity | None,
    tops: Sequence[str],
    shown: Sequence[Path],
    home_dirs: Sequence[Path],
) -> list[Path]:
    """The `hide` paths that exist, that the view would show, and that the sandbox user
    could otherwise reach."""
    seen: set[Path] = set()
    out: list[Path] = []
    wanted = {Path(os.path.abspath(p)) for p in hide}
    for p in hide:
        p = Path(os.path.abspath(p))
        if p in seen or not os.path.lexists(p) or p == Path("/"):
            continue
        seen.add(p)
        if any(q in p.parents for q in wanted):
            continue  # inside another masked directory: already gone
        if not in_view(p, shown, [Path(h) for h in ("/home", "/root")] + list(home_dirs)):
            continue
        # Under a staged tmpfs or behind a directory the user cannot enter, it is
        # already out of sight, and bubblewrap could not mount over it anyway.
        if any(within(p, Path(t)) for t in tops) or not reachable(p, ident):
            continue
        out.append(p)
    return out
