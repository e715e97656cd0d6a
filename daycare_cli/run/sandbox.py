"""Run one Python block in a sandbox: the public API, the launch plan, the outcome.

DESIGN.md §5 steps 2–5 and §8. A block's code goes with a prelude (`prelude.py`) on
stdin to `python -I -B -X utf8 -`, with a clean environment. One function,
`_launch_plan`, decides how a block is started; the parts it puts together live in:

- `identity.py`: the user a block runs as (as root, `daycare-sandbox`, else `nobody`),
  its interpreter, rlimits, the parent-death signal, and the private mounts that make a
  workspace below a 0700 directory reachable to that user;
- `bwrap.py`: bubblewrap's probe and argv, and the filesystem view (a read-only system,
  tmpfs over secrets and `BlockSpec.hide`, no network unless `sandbox.network`, a pid
  namespace that dies with the block). Probed once; `DAYCARE_SANDBOX=reduced` turns it
  off;
- `process.py`: spawning, capped pipes, the deadline, and the kill of the group (and,
  without bubblewrap, of the block's whole process tree).

Without bubblewrap ("reduced") a block gets the process limits alone, plus the prelude
acting as child subreaper and a sweep of the block's process tree, so a daemonising
grandchild does not outlive its block.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
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
from daycare_cli.run.prelude import PRELUDE
from daycare_cli.run.process import STDERR_CAP, Finished, Launch, SpawnError, run_process

KIB = 1024
MIB = 1024 * KIB

PYTHON_FLAGS = ("-I", "-B", "-X", "utf8", "-")


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
    # Issue 9: the interpreter of the block's Python environment (None: the system's,
    # `sandbox_python`) and the directories it needs, bound read-only (run/envs.py).
    python: Path | None = None
    env_dirs: tuple[Path, ...] = ()
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
        ident = sandbox_identity()
        python = _block_python(spec) or sandbox_python(ident)
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


@functools.cache
def _probe() -> tuple[Bwrap | None, str]:
    """bubblewrap, when it runs here with the launch plan blocks get; and why (not)."""
    return probe(_try_bwrap)


def _try_bwrap(bwrap: Bwrap) -> tuple[bool, str]:
    """Run `true` under `bwrap` through the launch plan, as a block would be run."""
    true = shutil.which("true", path=SAFE_PATH) or "/bin/true"
    ident = sandbox_identity()
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


# ---------------------------------------------------------------------------- plan


def _launch_plan(
    spec: BlockSpec,
    paths: BlockPaths,
    bwrap: Bwrap | None,
    ident: Identity | None,
    command: list[str],
) -> Launch:
    """Everything needed to spawn a block (or the probe's `true`)."""
    env = _block_env(spec, paths)
    stage = None
    if bwrap is not None and ident is not None:
        stage = stage_plan(
            [paths.files, paths.artifacts, *paths.read, *paths.write, *paths.env_dirs]
            + ([paths.payload] if paths.payload else []),
            ident,
        )
    child = preexec(ident, limits(spec.sandbox, spec.timeout, ident), stage)
    if bwrap is None:
        return Launch(command, env, str(paths.files), child, tree_kill=sys.platform == "linux")
    tops = stage.tops if stage else ()
    view = bwrap_argv(bwrap, paths, spec.sandbox.network, spec.hide, ident, tops)
    argv = [*view, "--", *command]
    return Launch(argv, env, "/", child, tree_kill=False)


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


def _prepare_dirs(spec: BlockSpec, ident: Identity | None) -> BlockPaths:
    """Create the block's directories, hand them to the sandbox user, resolve paths."""
    files = spec.files_dir.resolve()
    artifacts = spec.artifacts_dir.resolve()
    for d in (files, artifacts):
        d.mkdir(parents=True, exist_ok=True)
        if ident is not None and d.stat().st_uid != ident.uid:
            chown_tree(d, ident)
    payload = spec.payload_file.resolve() if spec.payload_file else None

    def extra(raw: Sequence[str]) -> tuple[Path, ...]:
        found = []
        for r in raw:
            p = Path(os.path.expanduser(r))
            p = (p if p.is_absolute() else files / p).resolve()
            if p.exists():
                found.append(p)
        return tuple(found)

    return BlockPaths(
        files=files,
        artifacts=artifacts,
        workspace=spec.workspace.resolve(),
        payload=payload if payload and payload.exists() else None,
        read=extra(spec.sandbox.read),
        write=extra(spec.sandbox.write),
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
    spec: BlockSpec, launch: Launch, payload_text: str | None, level: str, started: float
) -> BlockOutcome:
    def script(fd: int) -> bytes:
        return _script(spec, fd, payload_text, reap=launch.tree_kill)

    try:
        done = await run_process(
            launch,
            script,
            timeout=spec.timeout,
            stdout_cap=spec.stdout_cap,
            on_output=spec.on_output,
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
        out.skip_reason = str(skip["skip"])
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
