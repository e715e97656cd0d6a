"""What a block may see of the host (DESIGN.md §5 step 5, "Filesystem view").

An allow-list, like systemd's ProtectSystem=strict + ProtectHome=tmpfs: the system
directories read-only, every home an empty tmpfs, a private /tmp and /run, the block's
own `files/` and `artifacts/`, the payload, and the task's `sandbox.read` and
`sandbox.write` entries. Daycare's own places (home, config, tasks, runtime directory)
are masked wherever they would otherwise show.

`sandbox.read`/`sandbox.write` entries are resolved here, on the host, once per block:
`~` expands to the daemon user's home, every component is opened with O_NOFOLLOW (a
symlink anywhere is refused, so a block cannot move a mount by planting a link), and an
entry inside daycare's home, config or tasks directory is refused. The final component
stays open as an O_PATH descriptor that bubblewrap binds (`--bind-fd`), so what was
checked is what gets mounted.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from daycare_cli.core.errors import SandboxError

# Top-level directories every block sees read-only (or as the same symlink, on merged-/usr
# systems). Nothing else of the host's root shows: not /srv, /mnt, /media, /data.
SYSTEM_DIRS = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/var",
)
# Always empty in the sandbox (tmpfs), whatever they hold on the host.
PRIVATE_DIRS = ("/tmp", "/run", "/home", "/root", "/dev/shm")


@dataclass(frozen=True)
class Entry:
    """A `sandbox.read`/`sandbox.write` entry resolved on the host.

    `fd` is an O_PATH descriptor of the path, opened without following any symlink.
    """

    path: Path
    fd: int
    writable: bool


def homes(extra: Iterable[str] = ()) -> list[Path]:
    """Home directories to cover with a tmpfs: the daemon user's ($HOME and passwd) and
    `extra` (the sandbox user's), besides /home and /root, which are always private."""
    found = {os.environ.get("HOME") or "", _passwd_home(os.geteuid()), *extra}
    out = []
    for h in sorted(found):
        if not h or not os.path.isabs(h) or h == "/":
            continue
        p = Path(os.path.abspath(h))
        if in_system(p) and p.is_dir():
            out.append(p)
    return out


def in_system(path: Path) -> bool:
    """Whether `path` lies in the read-only system part of the view (before binds)."""
    return any(within(path, d) for d in SYSTEM_DIRS) and not any(
        within(path, d) for d in PRIVATE_DIRS
    )


def in_view(path: Path, shown: Sequence[Path], home_dirs: Sequence[Path]) -> bool:
    """Whether a block could see host `path`: in the system part and not under a home,
    or under one of the directories bound for it (`shown`)."""
    if any(within(path, p) for p in shown):
        return True
    return in_system(path) and not any(within(path, h) for h in home_dirs)


def resolve_entries(
    read: Sequence[str],
    write: Sequence[str],
    *,
    forbidden: Sequence[Path],
    where: str,
    read_at: Sequence[int] = (),
    write_at: Sequence[int] = (),
) -> list[Entry]:
    """Resolve a task's entries (module docstring); SandboxError names the entry, the
    task file line (`where:line`) and the fix. Missing paths are left out.

    The caller closes the returned descriptors (`close_entries`).
    """
    out: list[Entry] = []
    try:
        for writable, raw_list, lines in ((False, read, read_at), (True, write, write_at)):
            key = "sandbox.write" if writable else "sandbox.read"
            for i, raw in enumerate(raw_list):
                line = lines[i] if i < len(lines) else 0
                found = _resolve_one(raw, key, forbidden, f"{where}:{line}" if line else where)
                if found is not None:
                    out.append(Entry(found[0], found[1], writable))
    except BaseException:
        close_entries(out)
        raise
    return out


def close_entries(entries: Iterable[Entry]) -> None:
    for e in entries:
        with contextlib.suppress(OSError):
            os.close(e.fd)


def open_nofollow(path: Path) -> int:
    """An O_PATH fd of absolute `path`, every component opened with O_NOFOLLOW.

    Raises FileNotFoundError, or SymlinkError naming the component that is a link.
    """
    fd = os.open("/", os.O_PATH | os.O_CLOEXEC)
    here = Path("/")
    try:
        for part in path.parts[1:]:
            here = here / part
            nfd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nfd
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise SymlinkError(here, os.readlink(here))
    except BaseException:
        os.close(fd)
        raise
    return fd


class SymlinkError(Exception):
    """A component of a path is a symlink."""

    def __init__(self, link: Path, target: str) -> None:
        super().__init__(f"{link} is a symlink to {target}")
        self.link = link
        self.target = target


def _resolve_one(
    raw: str, key: str, forbidden: Sequence[Path], where: str
) -> tuple[Path, int] | None:
    name = key.split(".")[1]
    if raw == "~" or raw.startswith("~/"):
        home = _passwd_home(os.geteuid()) or os.environ.get("HOME") or ""
        raw = home + raw[1:]
    path = Path(raw)
    if not path.is_absolute() or any(p in (".", "..") for p in path.parts):
        raise SandboxError(
            f"{key} entry {raw!r} is not an absolute path",
            path=where,
            hint=f"write it as an absolute path or `~/…`, e.g. {name}: [/srv/data]",
        )
    # normpath keeps a leading `//` (POSIX leaves its meaning open; Linux reads `/`), which
    # would hide the entry from the checks below.
    path = Path("/" + os.path.normpath(path).lstrip("/"))
    for place in forbidden:
        if within(path, place):
            raise SandboxError(
                f"{key} entry {raw!r} is inside daycare's own files ({place})",
                path=where,
                hint="a block already has its files/ and artifacts/; keep other data outside "
                "daycare's home, config and tasks directories",
            )
    try:
        fd = open_nofollow(path)
    except FileNotFoundError:
        return None
    except SymlinkError as exc:
        real = os.path.realpath(path)
        raise SandboxError(
            f"{key} entry {raw!r} goes through a symlink ({exc}); symlinks are not followed",
            path=where,
            hint=f"name the real path: {name}: [{real}]",
        ) from None
    except OSError as exc:
        raise SandboxError(
            f"{key} entry {raw!r} cannot be opened: {exc.strerror or exc}",
            path=where,
            hint="check the path and its permissions",
        ) from None
    return path, fd


def _passwd_home(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return ""


def within(path: Path | str, top: Path | str) -> bool:
    """Whether normalized absolute `path` is `top` or below it, lexically (`top in
    path.parents`, as strings: this runs for every place and home before every block)."""
    p, t = str(path), str(top)
    return p == t or p.startswith(t if t.endswith("/") else t + "/")
