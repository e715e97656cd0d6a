"""bubblewrap: the probe, its argv, and the filesystem view a block gets (DESIGN.md §5 step 5).

Namespaces, a read-only system, tmpfs over secrets and over the paths a block must not
see (`hide`), no network unless `sandbox.network`, a pid namespace that dies with the
block. The probe runs once, with a trial the caller gives (a sandboxed `true` through
the block's own launch plan), so what works in the probe is what blocks get.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from daycare_cli.core.task import MIB
from daycare_cli.run.identity import SAFE_PATH, Identity, reachable

TMP_SIZE = 64 * MIB
SHM_SIZE = 16 * MIB

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


@dataclass(frozen=True)
class Bwrap:
    """A working bubblewrap and the options this one has."""

    path: str
    version: str
    disable_userns: bool
    sized_tmpfs: bool


@dataclass(frozen=True)
class BlockPaths:
    """A block's paths on the host, resolved: its own directories and the task's extras."""

    files: Path
    artifacts: Path
    workspace: Path
    payload: Path | None
    read: tuple[Path, ...]
    write: tuple[Path, ...]
    env_dirs: tuple[Path, ...] = ()  # issue 9: a Python environment, bound read-only


Trial = Callable[[Bwrap], tuple[bool, str]]  # (it ran, why not)


def probe(trial: Trial) -> tuple[Bwrap | None, str]:
    """Find bubblewrap and check with `trial` that it works here: with every option it
    offers, else with none. Returns (bwrap or None, a one-line reason)."""
    if sys.platform != "linux":
        return None, "bubblewrap needs Linux"
    path = shutil.which("bwrap") or shutil.which("bwrap", path=SAFE_PATH)
    if not path:
        return None, "bwrap not found (install bubblewrap for full isolation)"
    try:
        helped = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10)
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, f"bwrap does not run: {first}"
    usage = helped.stdout + helped.stderr
    name = version.stdout.strip() or "bubblewrap"
    full = Bwrap(path, name, "--disable-userns" in usage, "--size" in usage)
    why = ""
    for bwrap in (full, Bwrap(path, name, False, False)):
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
) -> list[str]:
    """bubblewrap's options; the order matters (later mounts cover earlier ones).

    `tops` are the directories the stage already covers with a tmpfs (identity.Stage).
    """
    a = [bwrap.path, "--unshare-all", "--unshare-user"]
    if network:
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
    for p in _hidden_paths(hide, ident, tops):
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
    # Issue 9: the block's Python environment (run/envs.py) and a uv-managed base
    # interpreter, read-only; after the hiding, so a hidden home or cache cannot mask them.
    for p in paths.env_dirs:
        a += ["--ro-bind", str(p), str(p)]
    a += ["--chdir", str(paths.files)]
    for h in hidden:
        a += ["--remount-ro", h]
    a += ["--remount-ro", "/"]
    return a


def _hidden_paths(hide: Sequence[Path], ident: Identity | None, tops: Sequence[str]) -> list[Path]:
    """Secrets of the daemon's and the sandbox user's homes, and `hide`, that exist and
    that the sandbox user could otherwise reach."""
    homes = {os.environ.get("HOME") or "", _passwd_home(os.geteuid())}
    if ident is not None:
        homes.add(ident.home)
    wanted = [Path(h) / s for h in sorted(homes) if h and h != "/" for s in HOME_SECRETS]
    wanted += [Path(p) for p in hide]
    seen: set[Path] = set()
    out: list[Path] = []
    for p in wanted:
        p = Path(os.path.abspath(p))
        if p in seen or not os.path.lexists(p) or p == Path("/"):
            continue
        seen.add(p)
        # Under a staged tmpfs or behind a directory the user cannot enter, it is
        # already out of sight, and bubblewrap could not mount over it anyway.
        if any(_is_within(p, Path(t)) for t in tops) or not reachable(p, ident):
            continue
        out.append(p)
    return out


def _passwd_home(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return ""


def _is_within(path: Path, top: Path) -> bool:
    return path == top or top in path.parents
