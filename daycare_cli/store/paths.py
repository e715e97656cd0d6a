"""Where things live (docs/operations.md), atomic writes, and per-task lock files."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

APP = "daycare"


@dataclass(frozen=True)
class Paths:
    """Resolved locations of one daycare installation.

    `home` holds tasks, workspaces and the state database; `config_file` may live
    elsewhere (platformdirs' config dir) unless the home was overridden.
    """

    home: Path
    tasks_dir: Path
    config_file: Path
    runtime_dir: Path
    cache: Path | None = None  # None: <home>/cache
    socket_file: Path | None = None  # config `socket`; None: <runtime dir>/daycare.sock

    @property
    def cache_dir(self) -> Path:
        """Rebuildable data: Python environments of blocks and uv's download cache."""
        return self.cache if self.cache is not None else self.home / "cache"

    @property
    def state_db(self) -> Path:
        return self.home / "state.db"

    @property
    def workspaces(self) -> Path:
        return self.home / "workspaces"

    @property
    def archive_dir(self) -> Path:
        return self.tasks_dir / ".archive"

    @property
    def socket(self) -> Path:
        """The control socket: config `socket`, else in the runtime directory."""
        return self.socket_file or self.runtime_dir / "daycare.sock"

    @property
    def pid_file(self) -> Path:
        return self.runtime_dir / "daycare.pid"

    @property
    def daemon_log(self) -> Path:
        return self.home / "daemon.log"

    def workspace(self, task_id: str) -> Path:
        """The workspace directory of a task (not created); ValueError for a bad id."""
        return self.workspaces / _checked(task_id)

    def task_file(self, task_id: str) -> Path:
        """The file of a task in the tasks directory; ValueError for a bad id."""
        return self.tasks_dir / f"{_checked(task_id)}.md"

    @classmethod
    def resolve(
        cls,
        home: str | Path | None = None,
        tasks_dir: str | Path | None = None,
        config_file: str | Path | None = None,
        configured_tasks_dir: str | None = None,
        configured_socket: str | None = None,
    ) -> Paths:
        """Resolve paths from flags, then environment, then platformdirs defaults.

        An overridden home (flag or `DAYCARE_HOME`) is self-contained: its config file and
        control socket live inside it unless `DAYCARE_CONFIG` says otherwise, so a test or
        a second installation never touches the user's real one. So does its cache, unless
        `DAYCARE_CACHE_DIR` names one (platformdirs' cache dir otherwise). A configured
        `socket` (`~` expanded, relative to the home) is the control socket's path.
        """
        env_home = os.environ.get("DAYCARE_HOME")
        chosen = home or env_home
        overridden = bool(chosen)
        env_config = config_file or os.environ.get("DAYCARE_CONFIG")
        if overridden:
            home_path = Path(str(chosen)).expanduser().absolute()
            default_config = home_path / "config.toml"
            default_cache = home_path / "cache"
        else:
            import platformdirs  # only for the defaults (8 ms of `task ls` otherwise)

            home_path = Path(platformdirs.user_data_dir(APP)).absolute()
            default_config = Path(platformdirs.user_config_dir(APP)) / "config.toml"
            default_cache = Path(platformdirs.user_cache_dir(APP))
        env_cache = os.environ.get("DAYCARE_CACHE_DIR")
        cache = Path(env_cache).expanduser().absolute() if env_cache else default_cache.absolute()
        config_path = Path(env_config).expanduser().absolute() if env_config else default_config

        tasks = tasks_dir or os.environ.get("DAYCARE_TASKS_DIR") or configured_tasks_dir
        tasks_path = Path(tasks).expanduser().absolute() if tasks else home_path / "tasks"

        xdg_runtime = os.environ.get("XDG_RUNTIME_DIR")
        if overridden or not xdg_runtime or not Path(xdg_runtime).is_dir():
            # No per-user runtime dir (cron, ssh without a session): keep it in the home.
            runtime = home_path / "run"
        else:
            runtime = Path(xdg_runtime) / APP
        sock = None
        if configured_socket:
            sock = (home_path / Path(configured_socket).expanduser()).absolute()
        return cls(home_path, tasks_path, config_path, runtime, cache, sock)


def _checked(task_id: str) -> str:
    """The id, if it follows the id rule: no path is ever built from anything else."""
    from daycare_cli.core.task import valid_task_id

    if not valid_task_id(task_id):
        raise ValueError(f"not a task id: {task_id!r}")
    return task_id


def atomic_write(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """Write a file so that readers see the old or the new content, never a mix.

    Temp file in the same directory, fsync, rename, fsync of the directory. The mode of
    an existing file is kept unless `mode` is given.
    """
    import tempfile  # only writers need it; `task ls` never writes

    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class LockBusy(Exception):
    """The lock is held by a live process."""

    def __init__(self, holder_pid: int | None, since: float | None) -> None:
        super().__init__(f"held by pid {holder_pid}")
        self.holder_pid = holder_pid
        self.since = since


@dataclass
class TaskLock:
    """A per-task lock file holding the holder's pid and start time.

    The lock is an `flock` on the file, so a dead holder releases it automatically;
    the pid and time inside are for people and for `daycare doctor`. A lock file left
    by a dead process is simply taken over.
    """

    path: Path
    fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to `wait` s; LockBusy when a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    pid, since = _read_holder(fd)
                    os.close(fd)
                    raise LockBusy(pid, since) from None
                time.sleep(0.05)
        # The pid note is for people; the flock is the lock. A full disk failing the note
        # must not leave the lock taken with nobody to release it.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {time.time():.6f}\n".encode())
        self.fd = fd

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> TaskLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> tuple[int | None, float | None]:
    try:
        raw = os.pread(fd, 100, 0).decode().split()
        return int(raw[0]), float(raw[1])
    except (OSError, ValueError, IndexError):
        return None, None


def pid_alive(pid: int) -> bool:
    """True when a process with that pid exists (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


def daemon_pid(paths: Paths) -> int | None:
    """The pid of the running daemon of this home, if one runs (its pid file names a live pid)."""
    try:
        pid = int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None
