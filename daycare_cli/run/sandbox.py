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
- `blockplan.py`: the `BlockSpec` and the one function (`plan_block`) that turns it into
  a launch plan;
- `process.py`: spawning (under bubblewrap without Python between fork and exec:
  bubblewrap waits at `--args` until the limits and the cgroup bind it), capped pipes,
  the deadline, and the kill of the block's whole process tree (the pid-namespace init
  of bubblewrap included);
- `outcome.py`: what a failure says beyond the interpreter's words (signals, limits, a
  path outside the view).

A block's sandbox can be started ahead of its code (`start_spare`): while the block
before it runs, or before a scheduled fire's slot (the daemon). Its interpreter waits
for its code on stdin; `run_block` hands it the code when it was planned from the same
spec, and otherwise ends it and starts afresh. Each block still gets a sandbox and an
interpreter of its own; only the time they are started moves.

Fail closed: without a working bubblewrap, blocks do not run unless the config allows
reduced isolation (`sandbox.isolation = "reduced"`); `DAYCARE_SANDBOX=reduced` in the
environment forces it (benchmarks, tests). Reduced isolation is the process limits, the
uid change as root, the seccomp filter, and the prelude acting as child subreaper with a
sweep of the block's process tree, so a daemonising grandchild does not outlive its
block; it hides no file (docs/security.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from daycare_cli.core.text import TEXT_CAP, cap
from daycare_cli.run.blockplan import (
    KIB,
    BlockPlan,
    close_plan,
    launch_plan,
    one_line,
    plan_block,
    prepare_dirs,
)
from daycare_cli.run.blockplan import BlockSpec as BlockSpec  # callers build specs here
from daycare_cli.run.bwrap import Bwrap, probe
from daycare_cli.run.identity import SAFE_PATH, sandbox_identity
from daycare_cli.run.launch import SpawnError, run_to_end
from daycare_cli.run.outcome import exit_error, view_hint
from daycare_cli.run.pipes import STDERR_CAP
from daycare_cli.run.prelude import stdin_head
from daycare_cli.run.process import Finished, Spawned, end_unused, run_process, start_process
from daycare_cli.run.seccomp import seccomp_filter

MIB = 1024 * KIB

ISOLATION_POLICIES = ("bubblewrap", "reduced")
REFUSED_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt install bubblewrap), or accept reduced "
    "isolation with `daycare config set sandbox.isolation reduced` (docs/security.md "
    "says what it does not hide)"
)


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


async def run_block(spec: BlockSpec, spare: Spare | None = None) -> BlockOutcome:
    """Run one block in a fresh sandboxed interpreter and report what it did.

    `spare`, a sandbox started ahead (`start_spare`), is used when it was planned from
    this spec (all but the code) at this isolation; otherwise it is ended here. Never
    raises for what the block does; a sandbox that cannot start (or may not: no
    bubblewrap and reduced isolation not allowed) gives an outcome whose error starts
    with `SandboxError:`.
    """
    started = time.monotonic()
    level, reason = isolation_level(spec.isolation, spec.bwrap)
    if spare is not None and not (spare.fits(spec, level) and _join(spare, spec.cgroup_fd)):
        await end_spare(spare)
        spare = None
    if level == "refused":
        return BlockOutcome(
            error=f"SandboxError: {refusal(reason)}",
            isolation="none",
            duration_ms=_ms_since(started),
        )
    if spare is not None:
        plan, spawned = spare.plan, spare.spawned
    else:
        made = await _planned(spec, level)
        if isinstance(made, str):
            return BlockOutcome(error=made, isolation=level, duration_ms=_ms_since(started))
        plan, spawned = made, None
    try:
        out = await _execute(spec, plan, level, started, spawned)
    finally:
        plan.close()
    if level == "bubblewrap" and out.error:
        out.error = view_hint(out.error, plan.paths, spec.hide)
    return out


@dataclass(eq=False)
class Spare:
    """A block's sandbox started ahead of its code (`start_spare`): its interpreter waits
    on stdin. Give it to `run_block`, or end it with `end_spare`; never both."""

    key: BlockSpec
    level: str
    plan: BlockPlan
    spawned: Spawned

    def fits(self, spec: BlockSpec, level: str) -> bool:
        """Whether it was planned from `spec` (all but the code) at `level`."""
        return level == self.level and _key(spec) == self.key


async def start_spare(spec: BlockSpec) -> Spare | None:
    """Start the sandbox `spec`'s block will run in, before its code is handed over;
    None when it cannot start (the block, run without it, reports why)."""
    level, _ = isolation_level(spec.isolation, spec.bwrap)
    if level == "refused":
        return None
    plan = await _planned(spec, level)
    if isinstance(plan, str):
        return None
    try:
        spawned = await start_process(plan.launch)
    except (SpawnError, OSError):  # OSError: no descriptor left for its pipes
        plan.close()
        return None
    except BaseException:
        plan.close()
        raise
    return Spare(_key(spec), level, plan, spawned)


async def end_spare(spare: Spare) -> None:
    """End a spare that will run no block, and close what its plan holds."""
    try:
        await end_unused(spare.spawned)
    finally:
        spare.plan.close()


def _key(spec: BlockSpec) -> BlockSpec:
    # The run's cgroup is joined at the hand-over (`_join`): a fire's sandbox is started
    # before its run has one.
    return dataclasses.replace(spec, code="", cgroup_fd=None)


def _join(spare: Spare, cgroup_fd: int | None) -> bool:
    """Move the spare's processes (bubblewrap, its init, the waiting interpreter) into the
    run's cgroup, so that the block and all it starts are counted there; False when one
    could not be moved (the block then starts afresh, born in the cgroup)."""
    if cgroup_fd is None:
        return True
    moved: set[int] = set()
    try:
        root = psutil.Process(spare.spawned.proc.pid)
        # Again until no new process shows: one forked by a process not yet moved was
        # born outside; what a moved one forks is born inside.
        for _ in range(10):
            new = [p.pid for p in (root, *root.children(recursive=True)) if p.pid not in moved]
            if not new:
                return True
            for pid in new:
                os.write(cgroup_fd, str(pid).encode())
            moved.update(new)
    except (OSError, psutil.Error):
        return False
    return False


async def _planned(spec: BlockSpec, level: str) -> BlockPlan | str:
    """The block's plan, made off the loop: identity, directories, /proc read for the
    process limit and bubblewrap's argv take milliseconds of system calls, and every
    block due at once would hold up the others' starts (issue 12). Cancelled, the plan
    is closed once made."""
    bwrap = _probe(spec.bwrap)[0] if level == "bubblewrap" else None
    planning = asyncio.ensure_future(asyncio.to_thread(plan_block, spec, bwrap))
    try:
        return await asyncio.shield(planning)
    except asyncio.CancelledError:
        planning.add_done_callback(_drop_plan)
        raise


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


def _drop_plan(planning: asyncio.Future[BlockPlan | str]) -> None:
    """Close what a plan holds when its block will not run (cancelled meanwhile)."""
    if planning.cancelled() or planning.exception() is not None:
        return
    plan = planning.result()
    if isinstance(plan, BlockPlan):
        plan.close()


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
            paths = prepare_dirs(spec, ident, (), true, True)
            seccomp_fd = flt.memfd() if flt is not None else None
            launch = launch_plan(spec, paths, bwrap, ident, [true], flt, seccomp_fd)
            returncode, stderr = run_to_end(launch, timeout=20)
        except (OSError, SpawnError, subprocess.SubprocessError) as exc:
            return False, one_line(exc)
        finally:
            close_plan(None, seccomp_fd)
    if returncode != 0:
        text = stderr.decode("utf-8", "replace")
        return False, (text.strip().splitlines() or [f"exit {returncode}"])[-1]
    return True, ""


# ------------------------------------------------------------------------- execute


async def _execute(
    spec: BlockSpec, plan: BlockPlan, level: str, started: float, spawned: Spawned | None
) -> BlockOutcome:
    launch = plan.launch
    # The prelude reaps the block's descendants itself only without a pid namespace:
    # under bubblewrap the namespace ends with the block, and all in it (its ctypes
    # import alone cost 2 ms a block there).
    reap = launch.tree_kill and level == "reduced"

    def script(fd: int) -> bytes:
        return _script(spec, fd, plan.payload_text, reap=reap, python=plan.python)

    try:
        done = await run_process(
            launch,
            script,
            timeout=spec.timeout,
            stdout_cap=spec.stdout_cap,
            on_output=spec.on_output,
            on_spawn=spec.on_spawn,
            spawned=spawned,
        )
    except SpawnError as exc:
        return BlockOutcome(
            error=f"SandboxError: could not start the block: {one_line(exc.cause)}",
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


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _size(n: int) -> str:
    if n % MIB == 0:
        return f"{n // MIB} MiB"
    if n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} bytes"
