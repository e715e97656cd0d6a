"""A block's launch plan: the one place that decides how a block is started (docs/security.md).

`plan_block` turns a `BlockSpec` into a `BlockPlan` (blocking: system calls, run off the
loop): the user it runs as and its interpreter (`identity.py`), its directories made and
handed to that user, the `sandbox.read`/`sandbox.write` entries resolved without
following a symlink (`view.py`), the seccomp filter (`seccomp.py`), the allow-listed
environment, and the `Launch` (`launch.py`): bubblewrap's argv with the view (`bwrap.py`)
or, in reduced isolation, the limits and the uid set between fork and exec. `task run`,
`task expand`, the daemon, retries and catch-up all reach it through `run_block`, and
the probe of bubblewrap through `launch_plan` with `true` for the block.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daycare_cli.core.errors import SandboxError
from daycare_cli.core.task import SandboxSpec
from daycare_cli.run.bwrap import BlockPaths, Bwrap, bwrap_argv
from daycare_cli.run.identity import (
    SAFE_PATH,
    Identity,
    chown_tree,
    limits,
    preexec,
    sandbox_identity,
    sandbox_python,
    stage_plan,
)
from daycare_cli.run.launch import Gate, Launch, gate_options
from daycare_cli.run.seccomp import Filter, seccomp_filter
from daycare_cli.run.view import close_entries, homes, in_view, resolve_entries

KIB = 1024
PYTHON_FLAGS = ("-I", "-B", "-X", "utf8", "-")


@dataclass(frozen=True)
class BlockSpec:
    """One block to run and where.

    `code` is already dedented. `files_dir` is the cwd (writable, persists across runs),
    `artifacts_dir` is `$DAYCARE_ARTIFACTS`, `workspace` the task workspace root. `env`
    is the task's env with secrets resolved. `task` ({id, name}) and `run` ({id,
    trigger, slot}) become the block's `task` and `run`; `payload_file` holds a webhook
    payload (`payload` is its parsed JSON, else its text, else None). `hide` lists
    daycare's own places, masked wherever the view would show them, and `forbidden`
    where `sandbox.read`/`sandbox.write` entries may not point (`where` is the task
    file, for errors about them). `isolation` is the configured policy (config
    `sandbox.isolation`: "bubblewrap" refuses to run without it, "reduced" accepts
    less), `bwrap` the configured bubblewrap, `cgroup_fd` the run cgroup's
    `cgroup.procs` when the run has one.
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
    # Issue 9: the interpreter of the block's Python environment (None: the system's,
    # `sandbox_python`) and the directories it needs, bound read-only (run/envs.py).
    python: Path | None = None
    env_dirs: tuple[Path, ...] = ()
    stdout_cap: int = 64 * KIB
    # Live view (issue 8): called on the event loop with each piece of stdout as it is
    # read (within the cap), so `task run` and `logs -f` can show it while the block runs.
    on_output: Callable[[bytes], None] | None = field(default=None, compare=False)
    # Issue 12: called on the event loop once the block's process is spawned.
    on_spawn: Callable[[], None] | None = field(default=None, compare=False)
    isolation: str = "bubblewrap"
    bwrap: str | None = None
    forbidden: Sequence[Path] = ()
    where: str = ""
    cgroup_fd: int | None = None


@dataclass(frozen=True)
class BlockPlan:
    """A block ready to spawn: its directories (`paths`, holding the descriptors of its
    `sandbox.read`/`sandbox.write` entries), the seccomp filter's descriptor, the
    `launch`, the payload's text and the interpreter. `close()` once it has run."""

    paths: BlockPaths
    seccomp_fd: int | None
    launch: Launch
    payload_text: str | None
    python: str

    def close(self) -> None:
        """Close the descriptors the plan holds."""
        close_plan(self.paths, self.seccomp_fd)


def plan_block(spec: BlockSpec, bwrap: Bwrap | None) -> BlockPlan | str:
    """What is needed to spawn the block (blocking: run off the loop), or why its
    sandbox cannot start: one line, "SandboxError: ..."."""
    paths: BlockPaths | None = None
    seccomp_fd: int | None = None
    try:
        ident = sandbox_identity(str(spec.task.get("id") or "") or None)
        python = _block_python(spec) or sandbox_python(ident)
        entries = resolve_entries(
            spec.sandbox.read,
            spec.sandbox.write,
            forbidden=spec.forbidden,
            where=spec.where or "the task file",
            read_at=spec.sandbox.read_at,
            write_at=spec.sandbox.write_at,
        )
        paths = prepare_dirs(spec, ident, tuple(entries), python, bwrap is not None)
        flt = seccomp_filter()[0]
        if bwrap is not None and flt is not None:
            seccomp_fd = flt.memfd()
        launch = launch_plan(spec, paths, bwrap, ident, [python, *PYTHON_FLAGS], flt, seccomp_fd)
        return BlockPlan(paths, seccomp_fd, launch, _read_payload(spec.payload_file), python)
    except (OSError, SandboxError) as exc:
        close_plan(paths, seccomp_fd)
        why = (
            f"{exc.where}: {exc.message}; fix: {exc.hint}" if isinstance(exc, SandboxError) else exc
        )
        return f"SandboxError: {one_line(why)}"


def close_plan(paths: BlockPaths | None, seccomp_fd: int | None) -> None:
    """Close a plan's descriptors (its entries', the filter's)."""
    if paths is not None:
        close_entries(paths.entries)
    if seccomp_fd is not None:
        os.close(seccomp_fd)


def launch_plan(
    spec: BlockSpec,
    paths: BlockPaths,
    bwrap: Bwrap | None,
    ident: Identity | None,
    command: list[str],
    flt: Filter | None,
    seccomp_fd: int | None,
) -> Launch:
    """Everything needed to spawn a block (or the probe's `true`)."""
    env = block_env(spec, paths)
    stage = None
    if ident is not None:
        # Also without bubblewrap: the daemon's 0700 home must not stop the task's uid.
        stage = stage_plan(
            [paths.files, paths.artifacts, *paths.read, *paths.write, *paths.env_dirs]
            + ([paths.payload] if paths.payload else []),
            ident,
        )
    rlimits = limits(spec.sandbox, spec.timeout, ident)
    # Without a pid namespace, and with one too: bubblewrap's init runs in a session
    # of its own, out of reach of the group kill, so the whole tree is swept.
    tree_kill = sys.platform == "linux"
    # What escapes the tree anyway (a double fork and os._exit; bubblewrap's init when
    # its parent dies before it set its death signal) comes back to us as a subreaper
    # and is swept: by the task's uid as root, else by the run id in its environment.
    uid = ident.uid if ident is not None else os.getuid()
    mark = None if ident is not None else f"DAYCARE_RUN_ID={env['DAYCARE_RUN_ID']}".encode()
    if bwrap is None:
        # The child loads the filter itself; limits, uid and cgroup between fork and exec.
        child = preexec(ident, rlimits, stage, seccomp=flt, cgroup_fd=spec.cgroup_fd)
        return Launch(
            command,
            env,
            str(paths.files),
            child,
            tree_kill=tree_kill,
            orphans_of=uid,
            orphan_env=mark,
        )
    tops = stage.tops if stage else ()
    view = bwrap_argv(bwrap, paths, spec.sandbox.network, spec.hide, ident, tops, seccomp_fd)
    # No Python between fork and exec when no mounts must be made as root first (the
    # stage): bubblewrap gets the limits and the cgroup while it waits for its options
    # (process.Gate), the uid and the umask from Popen itself.
    gated = stage is None and bwrap.gate and len(gate_options(view[1:])) <= select.PIPE_BUF
    return Launch(
        [*view, "--", *command],
        env,
        "/",
        None if gated else preexec(ident, rlimits, stage, cgroup_fd=spec.cgroup_fd),
        tree_kill=tree_kill,
        pass_fds=paths.fds + ((seccomp_fd,) if seccomp_fd is not None else ()),
        orphans_of=uid,
        orphan_env=mark,
        sweep_after_exit=False,
        user=(ident.uid, ident.gid) if gated and ident is not None else None,
        umask=0o077 if gated else -1,
        gate=Gate(len(view), rlimits, spec.cgroup_fd) if gated else None,
    )


def block_env(spec: BlockSpec, paths: BlockPaths) -> dict[str, str]:
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


def prepare_dirs(
    spec: BlockSpec,
    ident: Identity | None,
    entries: tuple[Any, ...],
    python: str,
    viewed: bool,
) -> BlockPaths:
    """Create the block's directories, hand them to the task's user, resolve paths.

    Under bubblewrap, an interpreter outside the view (pyenv's in a home) gets its
    install prefix bound read-only.
    """
    files = spec.files_dir.resolve()
    artifacts = spec.artifacts_dir.resolve()
    for d in (files, artifacts):
        d.mkdir(parents=True, exist_ok=True)
        if ident is not None and d.stat().st_uid != ident.uid:
            chown_tree(d, ident)
    payload = spec.payload_file.resolve() if spec.payload_file else None
    runtime: tuple[Path, ...] = ()
    exe = Path(os.path.realpath(python))
    if viewed and exe.is_absolute() and not in_view(exe, [], homes()):
        prefix = Path(sys.base_prefix)
        runtime = (prefix,) if prefix in exe.parents else (exe.parent,)
    return BlockPaths(
        files=files,
        artifacts=artifacts,
        workspace=spec.workspace.resolve(),
        payload=payload if payload and payload.exists() else None,
        entries=entries,
        runtime=runtime,
        env_dirs=tuple(Path(os.path.realpath(p)) for p in spec.env_dirs),
    )


def _block_python(spec: BlockSpec) -> str | None:
    """The environment's interpreter at its real path (its directory is bound there);
    the file name stays the venv's own, which is how Python finds the venv."""
    if spec.python is None:
        return None
    return os.path.join(os.path.realpath(spec.python.parent), spec.python.name)


def _read_payload(path: Path | None) -> str | None:
    if path is None or not path.exists():
        return None
    return path.read_bytes().decode("utf-8", "replace")


def one_line(what: object) -> str:
    """The first line of what an error says (its type's name when it says nothing)."""
    text = str(what).strip().splitlines()
    return text[0] if text else type(what).__name__
