"""Run one Python block in a sandbox: the public API, the launch plan, the outcome.

See docs/security.md and docs/task-file.md, "Inside a block". A block's code goes with a prelude
(`prelude.py`) on
stdin to `python -I -B -X utf8 -`, with a clean environment. One function,
`_launch_plan`, decides how a block is started; the parts it puts together live in:

- `identity.py`: the user a block runs as (as root, a uid of the task's own), its
  interpreter, rlimits, umask, the parent-death signal, the run's cgroup, and the
  private mounts that make a workspace below a 0700 directory reachable to that user
  (set between fork and exec, or, under bubblewrap, given to it at its gate);
- `view.py` and `bwrap.py`: the allow-list filesystem view (system read-only, homes,
  /tmp and /run empty, daycare's own places masked, the block's directories and the
  task's `sandbox.read`/`sandbox.write` entries, resolved without following symlinks),
  namespaces, no network unless `sandbox.network`; bubblewrap is probed once;
- `seccomp.py`: the system calls no block may make;
- `process.py`: spawning (under bubblewrap without Python between fork and exec:
  bubblewrap waits at `--args` until the limits and the cgroup bind it), capped pipes,
  the deadline, and the kill of the block's whole process tree (the pid-namespace init
  of bubblewrap included);
- `outcome.py`: what a failure says beyond the interpreter's words (signals, limits, a
  path outside the view).

Fail closed: without a working bubblewrap, blocks do not run unless the config allows
reduced isolation (`sandbox.isolation = "reduced"`); `DAYCARE_SANDBOX=reduced` in the
environment forces it (benchmarks, tests). Reduced isolation is the process limits, the
uid change as root, the seccomp filter, and the prelude acting as child subreaper with a
sweep of the block's process tree, so a daemonising grandchild does not outlive its
block; it hides no file (docs/security.md).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import select
import shutil
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
from daycare_cli.core.text import TEXT_CAP, cap
from daycare_cli.run.bwrap import BlockPaths, Bwrap, bwrap_argv, probe
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
from daycare_cli.run.launch import Gate, Launch, SpawnError, gate_options, run_to_end
from daycare_cli.run.outcome import exit_error, view_hint
from daycare_cli.run.pipes import STDERR_CAP
from daycare_cli.run.prelude import stdin_head
from daycare_cli.run.process import Finished, run_process
from daycare_cli.run.seccomp import Filter, seccomp_filter
from daycare_cli.run.view import close_entries, homes, in_view, resolve_entries

KIB = 1024
MIB = 1024 * KIB

PYTHON_FLAGS = ("-I", "-B", "-X", "utf8", "-")
ISOLATION_POLICIES = ("bubblewrap", "reduced")
REFUSED_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt install bubblewrap), or accept reduced "
    "isolation with `daycare config set sandbox.isolation reduced` (docs/security.md "
    "says what it does not hide)"
)


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

    Never raises for what the block does; a sandbox that cannot start (or may not:
    no bubblewrap and reduced isolation not allowed) gives an outcome whose error
    starts with `SandboxError:`.
    """
    started = time.monotonic()
    level, reason = isolation_level(spec.isolation, spec.bwrap)
    if level == "refused":
        return BlockOutcome(
            error=f"SandboxError: {refusal(reason)}",
            isolation="none",
            duration_ms=_ms_since(started),
        )
    bwrap = _probe(spec.bwrap)[0] if level == "bubblewrap" else None
    # The plan (identity, directories, /proc read for the process limit, bubblewrap's
    # argv) takes milliseconds of system calls: off the loop, or every block due at once
    # holds up the others' starts (issue 12). Cancelled, the plan is closed when made.
    planning = asyncio.ensure_future(asyncio.to_thread(_plan, spec, bwrap, level, started))
    try:
        plan = await asyncio.shield(planning)
    except asyncio.CancelledError:
        planning.add_done_callback(_drop_plan)
        raise
    if isinstance(plan, BlockOutcome):
        return plan
    paths, seccomp_fd, launch, payload_text, python = plan
    try:
        out = await _execute(spec, launch, payload_text, level, started, python)
    finally:
        _close(paths, seccomp_fd)
    if bwrap is not None and out.error:
        out.error = view_hint(out.error, paths, spec.hide)
    return out


def refusal(reason: str) -> str:
    """The error of a block that may not run: no bubblewrap, reduced not allowed."""
    return (
        f"bubblewrap cannot run here ({reason}), and blocks of `execute: true` tasks "
        f"do not run without it; fix: {REFUSED_HINT}"
    )


def isolation_level(policy: str = "bubblewrap", bwrap: str | None = None) -> tuple[str, str]:
    """("bubblewrap" | "reduced" | "refused", why): the isolation blocks get here.

    `policy` is config `sandbox.isolation` and `bwrap` config `sandbox.bwrap`.
    bubblewrap is probed once by running a trivial sandboxed `true`; when it cannot
    run, blocks are refused unless the policy is "reduced". `DAYCARE_SANDBOX=reduced`
    in the environment forces the reduced level (benchmarks, tests).
    """
    if os.environ.get("DAYCARE_SANDBOX", "").strip().lower() == "reduced":
        return "reduced", "forced by DAYCARE_SANDBOX=reduced"
    found, reason = _probe(bwrap)
    if found is not None:
        return "bubblewrap", reason
    if policy == "reduced":
        return "reduced", f'{reason}; allowed by sandbox.isolation = "reduced"'
    return "refused", reason


_Plan = tuple[BlockPaths, int | None, Launch, str | None, str]


def _plan(spec: BlockSpec, bwrap: Bwrap | None, level: str, started: float) -> _Plan | BlockOutcome:
    """What `run_block` needs to spawn the block (blocking: run off the loop), or the
    outcome of a sandbox that cannot start."""
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
        paths = _prepare_dirs(spec, ident, tuple(entries), python, bwrap is not None)
        flt = seccomp_filter()[0]
        if bwrap is not None and flt is not None:
            seccomp_fd = flt.memfd()
        launch = _launch_plan(spec, paths, bwrap, ident, [python, *PYTHON_FLAGS], flt, seccomp_fd)
        return paths, seccomp_fd, launch, _read_payload(spec.payload_file), python
    except (OSError, SandboxError) as exc:
        _close(paths, seccomp_fd)
        why = (
            f"{exc.where}: {exc.message}; fix: {exc.hint}" if isinstance(exc, SandboxError) else exc
        )
        return BlockOutcome(
            error=f"SandboxError: {_one_line(why)}",
            isolation=level,
            duration_ms=_ms_since(started),
        )


def _drop_plan(planning: asyncio.Future[_Plan | BlockOutcome]) -> None:
    """Close what a plan holds when its block will not run (cancelled meanwhile)."""
    if planning.cancelled() or planning.exception() is not None:
        return
    plan = planning.result()
    if not isinstance(plan, BlockOutcome):
        _close(plan[0], plan[1])


def _close(paths: BlockPaths | None, seccomp_fd: int | None) -> None:
    if paths is not None:
        close_entries(paths.entries)
    if seccomp_fd is not None:
        os.close(seccomp_fd)


@functools.cache
def _probe(configured: str | None = None) -> tuple[Bwrap | None, str]:
    """bubblewrap, when it runs here with the launch plan blocks get; and why (not)."""
    return probe(_try_bwrap, configured)


def _try_bwrap(bwrap: Bwrap) -> tuple[bool, str]:
    """Run `true` under `bwrap` through the launch plan, as a block would be run."""
    true = shutil.which("true", path=SAFE_PATH) or "/bin/true"
    ident = sandbox_identity()
    flt = seccomp_filter()[0]
    with tempfile.TemporaryDirectory(prefix="daycare-probe-") as tmp:
        base = Path(tmp)
        # Enterable by the sandbox user, as a workspace is: no stage, so the gate is tried.
        base.chmod(0o755)
        spec = BlockSpec(
            code="", files_dir=base / "files", artifacts_dir=base / "art", workspace=base
        )
        seccomp_fd = None
        try:
            paths = _prepare_dirs(spec, ident, (), true, True)
            seccomp_fd = flt.memfd() if flt is not None else None
            launch = _launch_plan(spec, paths, bwrap, ident, [true], flt, seccomp_fd)
            returncode, stderr = run_to_end(launch, timeout=20)
        except (OSError, SpawnError, subprocess.SubprocessError) as exc:
            return False, _one_line(exc)
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)
    if returncode != 0:
        text = stderr.decode("utf-8", "replace")
        return False, (text.strip().splitlines() or [f"exit {returncode}"])[-1]
    return True, ""


# ---------------------------------------------------------------------------- plan


def _launch_plan(
    spec: BlockSpec,
    paths: BlockPaths,
    bwrap: Bwrap | None,
    ident: Identity | None,
    command: list[str],
    flt: Filter | None,
    seccomp_fd: int | None,
) -> Launch:
    """Everything needed to spawn a block (or the probe's `true`)."""
    env = _block_env(spec, paths)
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


def _block_env(spec: BlockSpec, paths: BlockPaths) -> dict[str, str]:
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


def _prepare_dirs(
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


# ------------------------------------------------------------------------- execute


async def _execute(
    spec: BlockSpec,
    launch: Launch,
    payload_text: str | None,
    level: str,
    started: float,
    python: str,
) -> BlockOutcome:
    # The prelude reaps the block's descendants itself only without a pid namespace:
    # under bubblewrap the namespace ends with the block, and all in it (its ctypes
    # import alone cost 2 ms a block there).
    reap = launch.tree_kill and level == "reduced"

    def script(fd: int) -> bytes:
        return _script(spec, fd, payload_text, reap=reap, python=python)

    try:
        done = await run_process(
            launch,
            script,
            timeout=spec.timeout,
            stdout_cap=spec.stdout_cap,
            on_output=spec.on_output,
            on_spawn=spec.on_spawn,
        )
    except SpawnError as exc:
        return BlockOutcome(
            error=f"SandboxError: could not start the block: {_one_line(exc.cause)}",
            isolation=level,
            duration_ms=_ms_since(started),
        )
    return _outcome(spec, done, level, started)


def _outcome(spec: BlockSpec, done: Finished, level: str, started: float) -> BlockOutcome:
    msgs = done.messages
    returncode = done.returncode
    skip = next((m for m in msgs if "skip" in m), None)
    result = next((m for m in msgs if "error" in m), None)
    began = any(m.get("started") for m in msgs)
    stderr = done.stderr.decode("utf-8", "replace")
    if done.stderr_truncated:
        stderr += f"\n[stderr truncated at {_size(STDERR_CAP)}]"
    out = BlockOutcome(
        stderr=stderr,
        exit_code=returncode,
        duration_ms=_ms_since(started),
        isolation=level,
    )
    if skip is not None:
        out.skipped = True
        out.skip_reason = cap(str(skip["skip"]), TEXT_CAP, "skip reason")
        return out
    text = done.stdout.decode("utf-8", "replace")
    truncated = done.truncated
    if truncated:
        text = text.rstrip("\ufffd")  # a character cut in half at the cap
    elif text.endswith("\n"):
        text = text[:-1]
    value = result.get("value") if result else None
    if not done.stdout and isinstance(value, str):
        text = value
        if len(text) > spec.stdout_cap:
            text, truncated = text[: spec.stdout_cap], True
    # No marker here: core/prompt.render_result marks cut output (one marker, one place).
    out.output = text
    out.truncated = truncated
    if done.timed_out:
        out.error = f"TimeoutError: block exceeded {spec.timeout:g}s"
    elif result is not None and result.get("error"):
        out.error = cap(str(result["error"]), TEXT_CAP, "error")
    elif truncated or result is not None or returncode == 0:
        out.error = None
    elif not began:
        last = stderr.strip().splitlines()[-1:] or ["the interpreter did not start"]
        out.error = f"SandboxError: {last[0]}"
    else:
        out.error = exit_error(returncode, level)
        if level == "bubblewrap" and returncode is not None and returncode > 128:
            out.exit_code = 128 - returncode  # as without bubblewrap: -N for signal N
    return out


def _script(
    spec: BlockSpec, fd: int, payload_text: str | None, reap: bool, python: str = ""
) -> bytes:
    """The interpreter's stdin: the prelude, then one call with the block as literals.

    Arguments travel as Python literals (plain str/int/dict after a JSON round trip), so
    the prelude needs no JSON parser to read them. The prelude's source comes along
    unless `python` is the daemon's own interpreter (run_block's caller's).
    """
    task, run = (json.loads(json.dumps(dict(m), default=str)) for m in (spec.task, spec.run))
    args = (spec.code, fd, task, run, payload_text, spec.stdout_cap, reap)
    call = f"\n_sys.exit(_daycare_main(*{args!r}))\n"
    source = os.path.realpath(python) != _own_python()
    return (stdin_head(source) + call).encode("utf-8", "surrogateescape")


@functools.cache
def _own_python() -> str:
    return os.path.realpath(sys.executable or "python3")


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
