"""Python environments for blocks: built with uv outside the sandbox, cached by content,
shared, and run read-only inside it (issue 9; docs/task-file.md, "Packages").

An environment lives in `<cache>/envs/<key>/`, where the key hashes the requirements,
the requested Python version and the platform (`core/requirements.env_key`). It is
ready when its `daycare-env.json` exists: a run looks for that file (a stat, no lock)
and uses the environment as it is. Otherwise it takes the key's lock, looks again (a
concurrent run may just have built it), and builds: `uv venv`, then `uv pip install`
with bytecode compiled (blocks run with `-B`, so nothing is compiled at run time), files
copied out of uv's cache so an environment stands alone. Then every file is made
read-only and readable by all: the sandbox user of a root daemon runs it, whatever the
daemon's umask.

uv runs as the daemon's user, never in the sandbox, with a clean environment: a PATH of
the system's directories only, uv's cache in `<cache>/uv`, no uv config files, and
interpreters found on that PATH (`--python-preference only-system`, no downloads), so
the base interpreter of a venv is one blocks can see — a pyenv Python under a 0700
/root, or under any home that the sandbox hides, never becomes one. With
`deps.python_downloads`, uv may put a managed CPython in `<cache>/python`, and blocks get
it read-only like the environment. Network is used by uv only, while building.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daycare_cli.config import DepsConfig
from daycare_cli.core.errors import DependencyError
from daycare_cli.core.requirements import RequirementError, describe, env_key, task_needs
from daycare_cli.core.task import PythonSpec, Task

META = "daycare-env.json"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
LOCK_POLL = 0.1  # seconds between tries of a lock another run holds
MESSAGE_CAP = 4096
# What uv may take from the daemon's environment: proxies and certificates.
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
PASSED_ENV = (*_PROXIES, *(p.lower() for p in _PROXIES), "SSL_CERT_FILE", "SSL_CERT_DIR")

Emit = Callable[..., None]  # emit(event_name, **fields)


@dataclass(frozen=True)
class Env:
    """A ready environment: its interpreter, and the directories a block must see
    read-only to run it (the environment, and a uv-managed base interpreter)."""

    key: str
    path: Path
    python: Path
    binds: tuple[Path, ...]


@dataclass(frozen=True)
class EnvInfo:
    """An environment on disk, for `daycare deps ls`: what it holds and its size."""

    key: str
    path: Path
    ready: bool
    size: int
    meta: dict[str, Any]
    last_used: float


async def prepare_envs(cache: EnvCache, task: Task, emit: Emit | None = None) -> dict[int, Env]:
    """The environment of each block of `task` that needs one (by block index), built
    when missing, before any block runs. Events carry the block's index; a failure is
    a DependencyError that names the block and its line in the file."""
    envs: dict[int, Env] = {}
    try:
        needs = task_needs(task)
    except RequirementError as exc:
        raise DependencyError(exc.message, path=task.path, hint=exc.hint) from None
    for block, spec in needs:
        line = block.line + task.body_line - 1

        def tagged(event: str, _block: int = block.index, _line: int = line, **f: Any) -> None:
            if emit is not None:
                emit(event, block=_block, line=_line, **f)

        try:
            envs[block.index], _ = await cache.ensure(spec, tagged)
        except DependencyError as exc:
            raise DependencyError(
                f"block {block.index + 1} (line {line}): {exc.message}",
                path=task.path,
                hint=exc.hint,
            ) from None
    return envs


def platform_tag() -> str:
    """What an environment is built for besides its requirements: OS and machine."""
    return f"{sys.platform}-{platform.machine().lower()}"


def find_uv() -> str:
    """The uv binary: the one the `uv` wheel ships, else one on PATH."""
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise DependencyError(
        "uv is not installed, and it builds the Python environments of blocks",
        hint="install daycare with its dependencies (`pip install daycare` brings uv)",
    )


class EnvCache:
    """The environments under `<cache_dir>/envs`, built with the `[deps]` settings."""

    def __init__(self, cache_dir: Path, deps: DepsConfig) -> None:
        self.cache_dir = cache_dir
        self.root = cache_dir / "envs"
        self.pythons = cache_dir / "python"
        self.deps = deps

    def key(self, spec: PythonSpec) -> str:
        """The content address of `spec` on this machine."""
        return env_key(spec, platform_tag())

    def find(self, spec: PythonSpec) -> Env | None:
        """The ready environment for `spec`, or None: two stats, no lock (the fast path)."""
        return self._ready(self.key(spec))

    async def ensure(self, spec: PythonSpec, emit: Emit | None = None) -> tuple[Env, bool]:
        """The environment for `spec`, built when missing; (env, whether this call built it).

        Concurrent callers for the same key (in this process or another) build it once:
        the others wait on the key's lock and find it ready. Raises DependencyError with
        uv's message when it cannot be built.
        """
        key = self.key(spec)
        env = self._ready(key)
        if env is not None:
            return env, False
        lock = await _lock(self.root / ".locks" / f"{key}.lock")
        try:
            env = self._ready(key)
            if env is not None:
                return env, False
            if emit is not None:
                emit(
                    "env.build", key=key, python=spec.version, dependencies=list(spec.dependencies)
                )
            started = time.monotonic()
            try:
                env = await self._build(key, spec)
            except DependencyError as exc:
                if emit is not None:
                    emit("env.failed", key=key, error=exc.message)
                raise
            if emit is not None:
                ms = int((time.monotonic() - started) * 1000)
                emit("env.built", key=key, duration_ms=ms, path=str(env.path))
            return env, True
        finally:
            _unlock(lock)

    def infos(self) -> list[EnvInfo]:
        """Every environment directory, ready or not (a build cut short leaves one)."""
        out: list[EnvInfo] = []
        if not self.root.is_dir():
            return out
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or not path.is_dir():
                continue
            meta_file = path / META
            meta: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads(meta_file.read_text("utf-8"))
            try:
                used = meta_file.stat().st_mtime
            except OSError:
                used = path.stat().st_mtime
            out.append(EnvInfo(path.name, path, bool(meta), _tree_size(path), meta, used))
        return out

    def remove(self, key: str) -> bool:
        """Delete one environment under its lock; False when a build holds the lock."""
        lock = _try_lock(self.root / ".locks" / f"{key}.lock")
        if lock is None:
            return False
        try:
            _remove_tree(self.root / key)
        finally:
            _unlock(lock)
        # The lock file stays: one unlinked while another process waits on it would let
        # a third lock a new file and build the same directory at the same time.
        return True

    def prune_uv_cache(self) -> None:
        """Let uv drop what its download cache holds that nothing needs any more."""
        if (self.cache_dir / "uv").is_dir():
            subprocess.run(
                [find_uv(), "cache", "prune", "--quiet"],
                env=self._uv_env(),
                cwd=self.cache_dir,
                capture_output=True,
                timeout=300,
                check=False,
            )

    # -- building ---------------------------------------------------------------------

    def _ready(self, key: str) -> Env | None:
        path = self.root / key
        python = path / "bin" / "python"
        meta = path / META
        # exists() follows the venv's link: a base interpreter removed since breaks it.
        if not meta.exists() or not python.exists():
            return None
        with contextlib.suppress(OSError):
            os.utime(meta)  # last use, for `deps ls` and `deps prune`
        return Env(key, path, python, (path, *self._base_binds(python)))

    def _base_binds(self, python: Path) -> tuple[Path, ...]:
        """The uv-managed interpreter under our cache that `python` links to, if any."""
        base = Path(os.path.realpath(python))
        if self.pythons in base.parents:
            return (self.pythons / base.relative_to(self.pythons).parts[0],)
        return ()

    async def _build(self, key: str, spec: PythonSpec) -> Env:
        path = self.root / key
        # Tree walks run in a thread: an environment has thousands of files, and the
        # daemon's event loop must not stall on them.
        await asyncio.to_thread(_remove_tree, path)  # what a build cut short left
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            return await self._build_in(path, key, spec)
        except BaseException:
            _remove_tree(path)  # failed or cancelled: nothing half-built stays
            raise

    async def _build_in(self, path: Path, key: str, spec: PythonSpec) -> Env:
        uv = find_uv()
        venv = [uv, "venv", str(path), "--no-config", "--no-project"]
        if spec.version:
            venv += ["--python", spec.version]
        await self._uv(venv, spec)
        python = path / "bin" / "python"
        if spec.dependencies:
            requirements = path / "requirements.in"
            requirements.write_text("".join(d + "\n" for d in spec.dependencies), "utf-8")
            install = [uv, "pip", "install", "--no-config", "--python", str(python)]
            install += ["--link-mode", "copy", "--compile-bytecode", "-r", str(requirements)]
            install += self._index_options()
            await self._uv(install, spec)
        version = await _python_version(python)
        await asyncio.to_thread(_check_sandbox_can_run, python, self.pythons)
        await asyncio.to_thread(_make_read_only, path)
        meta = {
            "key": key,
            "dependencies": list(spec.dependencies),
            "python": spec.version,
            "python_version": version,
            "base": os.path.realpath(python),
            "platform": platform_tag(),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        meta_file = path / META
        os.chmod(path, 0o755)
        meta_file.write_text(json.dumps(meta, indent=2) + "\n", "utf-8")
        os.chmod(meta_file, 0o444)
        os.chmod(path, 0o555)
        return Env(key, path, python, (path, *self._base_binds(python)))

    def _index_options(self) -> list[str]:
        d = self.deps
        opts: list[str] = []
        if d.index_url:
            opts += ["--index-url", d.index_url]
        for url in d.extra_index_urls:
            opts += ["--extra-index-url", url]
        for place in d.find_links:
            opts += ["--find-links", os.path.expanduser(place)]
        if d.offline:
            opts.append("--offline")
        return opts

    def _uv_env(self) -> dict[str, str]:
        env = {
            "PATH": SAFE_PATH,
            "HOME": os.environ.get("HOME", "/"),
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
            "UV_NO_CONFIG": "1",
            "UV_CACHE_DIR": str(self.cache_dir / "uv"),
            "UV_PYTHON_INSTALL_DIR": str(self.pythons),
            "UV_PYTHON_PREFERENCE": "system" if self.deps.python_downloads else "only-system",
            "UV_PYTHON_DOWNLOADS": "automatic" if self.deps.python_downloads else "never",
        }
        env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
        return env

    async def _uv(self, argv: list[str], spec: PythonSpec) -> None:
        """Run uv; a failure becomes a DependencyError with uv's own words."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=self._uv_env(),
                cwd=str(self.root),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            out, _ = await proc.communicate()
        except OSError as exc:
            raise DependencyError(
                f"cannot run uv: {exc.strerror or exc}",
                hint="reinstall daycare so that its `uv` dependency is present",
            ) from None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError, UnboundLocalError):
                proc.kill()
            raise
        if proc.returncode != 0:
            message = uv_message(out.decode("utf-8", "replace"))
            raise DependencyError(
                f"cannot build the environment for {describe(spec)}: {message}",
                hint=self._hint(spec, message),
            )

    def _hint(self, spec: PythonSpec, message: str) -> str:
        if "No interpreter found" in message:
            return (
                f"install a Python matching {spec.version or 'python3'} system-wide (in "
                "/usr/bin or /usr/local/bin: interpreters in homes, like pyenv's, are not "
                "used), or `daycare config set deps.python_downloads true`"
            )
        if self.deps.offline:
            return (
                "offline mode: put the wheels in a `deps.find_links` directory, or "
                "`daycare config set deps.offline false`"
            )
        return "check the package names and versions, then `daycare deps sync TASK` retries"


def uv_message(output: str) -> str:
    """uv's error in a few lines: from its first `error:`, without its progress lines."""
    lines = [line.rstrip() for line in output.strip().splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("error")), 0)
    kept = [line.strip() for line in lines[start:] if line.strip()]
    if kept:
        kept[0] = kept[0].removeprefix("error:").strip()
    text = " ".join(kept) or "uv failed without a message"
    return text if len(text) <= MESSAGE_CAP else text[:MESSAGE_CAP] + "…"


def unused(infos: Iterable[EnvInfo], needed: set[str], *, min_age: float, now: float) -> list[str]:
    """Keys of environments no task needs and no run used in the last `min_age` seconds."""
    return [i.key for i in infos if i.key not in needed and now - i.last_used >= min_age]


async def _python_version(python: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(python),
        "-I",
        "-c",
        "import platform; print(platform.python_version())",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"},
    )
    out, _ = await proc.communicate()
    return out.decode().strip() or "?"


def _check_sandbox_can_run(python: Path, managed: Path) -> None:
    """As root, refuse a base interpreter the sandbox user cannot run, with the fix."""
    from daycare_cli.run.identity import runs_as, sandbox_identity

    ident = sandbox_identity()
    base = os.path.realpath(python)
    if ident is None or managed in Path(base).parents:
        return  # the daemon's own user runs blocks; a managed one is bound like the env
    if not runs_as(ident, [base, "-I", "-c", "pass"]):
        raise DependencyError(
            f"the interpreter {base} cannot be run by the sandbox user {ident.name}",
            hint="make it readable by all (its directories too), install that Python "
            "system-wide, or `daycare config set deps.python_downloads true`",
        )


async def _lock(path: Path) -> int:
    """An exclusive flock on `path`, polled (one open file all along) so that a cancelled
    wait leaves nothing held."""
    fd = _open_lock(path)
    try:
        while not _flock(fd):
            await asyncio.sleep(LOCK_POLL)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _try_lock(path: Path) -> int | None:
    fd = _open_lock(path)
    if _flock(fd):
        return fd
    os.close(fd)
    return None


def _open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _make_read_only(root: Path) -> None:
    """Files 0444 (0555 when executable), directories 0555: readable by the sandbox user,
    writable by no one but root."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, 0o555 if st.st_mode & stat.S_IXUSR else 0o444)
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o555)
    os.chmod(root, 0o555)


def _remove_tree(path: Path) -> None:
    """rmtree that first gives back the write bits `_make_read_only` took."""
    if not os.path.lexists(path):
        return
    for dirpath, dirnames, _ in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o755)
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                with contextlib.suppress(OSError):
                    os.chmod(p, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def _tree_size(path: Path) -> int:
    """Bytes on disk under `path` (allocated blocks, links not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total
