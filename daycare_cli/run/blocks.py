"""The blocks of one run: one launch plan for every way a block runs (docs/security.md).

`task run` (here or through the daemon), scheduled fires, webhooks, retries, catch-up
and `task expand` all build their blocks' specs here, and nowhere else: the same
isolation policy, the same masked places (daycare's home, config, tasks, runtime
directory), the same forbidden targets for `sandbox.read`/`sandbox.write`, the same
secrets resolution, and the same run totals:

- fail closed: when the configured isolation cannot be had, no block runs and the run
  fails with the reason and the fix (`sandbox.refusal`);
- one cgroup per run where a delegated cgroup v2 exists (`cgroup.py`);
- sandboxes started ahead: while a block runs, the next block's sandbox is started
  (`sandbox.start_spare`), so its interpreter is waiting when its turn comes; the
  daemon may hand in one for the first block, started before a scheduled slot;
- disk: what the run adds to `files/` and `artifacts/` is measured after each block and
  held against `sandbox.disk`; past it, no further block runs and the run fails with
  the figure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import secrets as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daycare_cli.config import Config
from daycare_cli.core.prompt import (
    Block,
    BlockResult,
    Expansion,
    block_timeout,
    expand_prompt,
    find_blocks,
)
from daycare_cli.core.task import MIB, SECRET_REF_RE, Task
from daycare_cli.run.blockoutput import OutputStream
from daycare_cli.run.cgroup import RunCgroup, Totals, cgroup_parent, create_run_cgroup, may_make
from daycare_cli.run.identity import PROCESS_BUDGET
from daycare_cli.run.rundir import disk_usage
from daycare_cli.run.sandbox import (
    BlockOutcome,
    BlockSpec,
    Spare,
    end_spare,
    isolation_level,
    refusal,
    run_block,
    start_spare,
)
from daycare_cli.store.database import describe
from daycare_cli.store.paths import Paths

if TYPE_CHECKING:
    from daycare_cli.run.envs import Env

log = logging.getLogger("daycare.run")

Emit = Callable[..., None]  # emit(event, **fields)


class RunRefused(Exception):
    """The run's blocks may not run: the configured isolation is not available.

    `str()` is the whole error with its fix; `reason` why bubblewrap cannot run.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(refusal(reason))
        self.reason = reason


@dataclass
class RunBlocks:
    """Everything the blocks of one run share; `spec(block)` is a block's launch spec.

    `run` is {id, trigger, slot}; `env` is the task's env with secrets resolved
    (`resolve_env`). `emit(event, **fields)` receives block.start/block.end and the
    run's isolation; `redact` cleans error text before it is emitted.
    """

    paths: Paths
    config: Config
    task: Task
    run: dict[str, Any]
    files_dir: Path
    artifacts_dir: Path
    payload_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    emit: Emit = field(default=lambda event, **fields: None)
    redact: Callable[[str], str] = field(default=lambda text: text)
    isolation: str | None = None
    cgroup: RunCgroup | None = None
    cgroup_why: str = ""
    disk_error: str | None = None
    errors: list[str] = field(default_factory=list)
    # Block index -> its Python environment (run/envs.py), prepared before any block runs.
    envs: dict[int, Env] = field(default_factory=dict)
    # Bytes under files/ and artifacts/ before the first block (measured off the loop
    # with the run's set-up, `RunContext.lock_and_prepare`); None: measured here.
    disk_before: int | None = None
    # When the first block's process was spawned (its interpreter started): the run's
    # `block_started_at`, the third instant its lateness is measured at.
    first_spawn: datetime | None = None
    on_first_spawn: Callable[[datetime], None] | None = None
    # daycare's own places (realpaths: system calls), found once per run off the loop.
    places: list[Path] | None = None
    # The sandbox of the next block, started while the one before it runs (or, for the
    # first block, handed in: started before a scheduled slot). A spare that does not
    # fit its block (the task changed) is ended and the block starts afresh.
    spare: Spare | None = None
    starting: asyncio.Future[Spare | None] | None = None  # a spare on its way
    _blocks: list[Block] = field(default_factory=list)

    def spec(self, block: Block) -> BlockSpec:
        """The launch spec of one block of this run."""
        env = self.envs.get(block.index)
        places = self.places if self.places is not None else daycare_places(self.paths)
        return BlockSpec(
            code=block.code,
            files_dir=self.files_dir,
            artifacts_dir=self.artifacts_dir,
            workspace=self.paths.workspace(self.task.id),
            timeout=block_timeout(block, self.task.timeout),
            sandbox=self.task.sandbox,
            env=self.env,
            task={"id": self.task.id, "name": self.task.name},
            run=self.run,
            payload_file=self.payload_file,
            hide=list(places),
            isolation=self.config.sandbox_isolation,
            bwrap=self.config.sandbox_bwrap,
            forbidden=list(places),  # entries may not point inside them either
            where=self.task.path or str(self.paths.task_file(self.task.id)),
            cgroup_fd=self.cgroup.procs_fd if self.cgroup is not None else None,
            python=env.python if env is not None else None,
            env_dirs=env.binds if env is not None else (),
        )

    async def expand(self) -> Expansion:
        """Run the task's blocks in order and splice their outputs (core/prompt.py).

        Raises RunRefused before any block runs when the isolation is refused.
        """
        level, reason = isolation_level(self.config.sandbox_isolation, self.config.sandbox_bwrap)
        if level == "refused":
            self.isolation = "none"
            self.emit("isolation", level="none", reason=reason)
            raise RunRefused(reason)
        self.isolation = level
        if (
            self.places is not None
            and self.disk_before is not None
            and not may_make(self.config.sandbox_cgroup)
        ):
            # Found with the run's set-up, and no cgroup to make: what is left reads one
            # file of /proc, no thread needed (a hand-off costs a busy run milliseconds).
            before = self._set_up()
        else:
            # Off the loop (issue 12): the cgroup's set-up reads /proc and makes a
            # directory, the disk count walks the workspace. Cancelled, it is undone once done.
            setting_up = asyncio.ensure_future(asyncio.to_thread(self._set_up))
            try:
                before = await asyncio.shield(setting_up)
            except asyncio.CancelledError:
                setting_up.add_done_callback(lambda _: self._close_cgroup())
                raise
        self._blocks = find_blocks(self.task.body)
        try:
            expansion = await expand_prompt(
                self.task.body, lambda b: self._run_one(b, before), execute=True
            )
        finally:
            try:
                await self._end_spares()
            finally:
                self._close_cgroup()
        self.emit("isolation", level=level, reason=reason, totals=self.cgroup_why)
        return expansion

    async def _run_one(self, block: Block, before: int) -> BlockResult:
        if self.disk_error is not None:
            return BlockResult(error=f"SandboxError: not run: {self.disk_error}")
        # The line in the file, where the author looks for it.
        self.emit("block.start", block=block.index, line=block.line + self.task.body_line - 1)
        stream = OutputStream(
            lambda text: self.emit("block.output", block=block.index, text=self.redact(text))
        )
        spec = dataclasses.replace(self.spec(block), on_output=stream.feed, on_spawn=self._spawned)
        spare = await self._take_spare()
        self._start_next(block)
        try:
            res: BlockOutcome = await run_block(spec, spare)
        finally:
            stream.close()
        roots = [self.files_dir, self.artifacts_dir]
        written = await asyncio.to_thread(disk_usage, roots) - before
        limit = self.task.sandbox.disk
        if written > limit:
            self.disk_error = (
                f"the run wrote {_mib(written)} to files/ and artifacts/, over its "
                f"sandbox.disk of {_mib(limit)}"
            )
            self.errors.append(self.disk_error)
        error = self.redact(res.error) if res.error else None
        if error:
            self.errors.append(f"block {block.index + 1}: {error}")
        self.emit(
            "block.end",
            block=block.index,
            exit_code=res.exit_code,
            duration_ms=res.duration_ms,
            error=error,
            skipped=res.skipped,
            truncated=res.truncated,
            isolation=res.isolation,
            stderr=self.redact(res.stderr)[-4000:] if res.stderr else "",
            # What a failing block printed before its error (its last 4 KB).
            stdout=self.redact(res.output)[-4000:] if res.error else "",
            disk_written=written,
        )
        return BlockResult(
            output=res.output,
            error=res.error,
            truncated=res.truncated,
            skipped=res.skipped,
            skip_reason=res.skip_reason,
        )

    async def _take_spare(self) -> Spare | None:
        """The sandbox started ahead for this block, once started (it may still be on its
        way: the block before it was quick)."""
        if self.starting is not None:
            starting, self.starting = self.starting, None
            if not starting.done():
                await asyncio.wait([starting])
            self.spare = _started(starting)
        spare, self.spare = self.spare, None
        return spare

    def _start_next(self, block: Block) -> None:
        """Start the sandbox of the block after `block` while `block` runs."""
        following = block.index + 1
        if following < len(self._blocks) and self.disk_error is None:
            spec = self.spec(self._blocks[following])
            self.starting = asyncio.ensure_future(start_spare(spec))

    async def _end_spares(self) -> None:
        """End what was started ahead and will run no block (a block skipped the rest,
        the run was cancelled or failed)."""
        starting, self.starting = self.starting, None
        spare, self.spare = self.spare, None
        if starting is not None:
            await end_started(starting)
        if spare is not None:
            await end_spare(spare)

    def _spawned(self) -> None:
        if self.first_spawn is None:
            self.first_spawn = datetime.now(UTC)
            if self.on_first_spawn is not None:
                self.on_first_spawn(self.first_spawn)

    def _set_up(self) -> int:
        """Open the run's cgroup, find daycare's places and return the bytes its blocks
        start from (blocking)."""
        if self.places is None:
            self.places = daycare_places(self.paths)
        self._open_cgroup()
        try:
            if self.disk_before is not None:
                return self.disk_before
            return disk_usage([self.files_dir, self.artifacts_dir])
        except BaseException:
            self._close_cgroup()
            raise

    def _close_cgroup(self) -> None:
        if self.cgroup is not None:
            self.cgroup.close()

    def _open_cgroup(self) -> None:
        parent, self.cgroup_why = cgroup_parent(self.config.sandbox_cgroup)
        if parent is None:
            return
        totals = Totals(memory=self.task.sandbox.memory, pids=PROCESS_BUDGET)
        name = f"run-{self.run.get('id') or 'x'}-{_random.token_hex(3)}"
        try:
            self.cgroup = create_run_cgroup(parent, name, totals)
            self.cgroup_why = f"cgroup {self.cgroup.path}"
        except OSError as exc:
            self.cgroup_why = f"no run cgroup: {exc.strerror or exc} (per-process limits only)"


async def end_started(starting: asyncio.Future[Spare | None]) -> None:
    """End what a `start_spare` under way or done made, when no block will use it."""
    # Not `await starting`: a cancellation of ours must go on, not be taken for the
    # spare's; start_spare stops what it made when cancelled.
    if not starting.done():
        starting.cancel()
    await asyncio.wait([starting])
    spare = _started(starting)
    if spare is not None:
        await end_spare(spare)


def _started(starting: asyncio.Future[Spare | None]) -> Spare | None:
    """What a finished `start_spare` made: None when it made nothing, was cancelled or
    failed (a fault of daycare's own, logged: the block then starts as usual)."""
    if starting.cancelled():
        return None
    exc = starting.exception()
    if isinstance(exc, OSError):  # a fault of the machine (no descriptor, a full disk)
        log.error("could not start a block's sandbox ahead: %s", describe(exc))
        return None
    if exc is not None:
        log.error("could not start a block's sandbox ahead", exc_info=exc)
        return None
    return starting.result()


def describe_sandbox(config: Config) -> dict[str, Any]:
    """What blocks get on this machine with this config: `{isolation, reason, seccomp,
    totals}` for `doctor`, `daemon status` and the daemon's ready line.

    `isolation` is "bubblewrap", "reduced" or "none" (blocks refused: fail closed).
    """
    from daycare_cli.run.seccomp import seccomp_filter

    level, reason = isolation_level(config.sandbox_isolation, config.sandbox_bwrap)
    flt, seccomp = seccomp_filter()
    parent, totals = cgroup_parent(config.sandbox_cgroup)
    return {
        "isolation": "none" if level == "refused" else level,
        "reason": refusal(reason) if level == "refused" else reason,
        "seccomp": seccomp if flt is not None else f"none: {seccomp}",
        "totals": totals,
        "cgroup": str(parent) if parent is not None else None,
    }


def resolve_env(task: Task, config: Config) -> tuple[dict[str, str], list[str]]:
    """The task's env with `${secret:NAME}` taken from config, and the secrets used.

    LookupError names an unknown secret and how to add it.
    """
    used: list[str] = []
    env: dict[str, str] = {}
    for key, value in task.env.items():

        def sub(m: re.Match[str], key: str = key) -> str:
            secret = config.secret(m.group(1))
            if secret is None:
                raise LookupError(
                    f"env {key}: secret {m.group(1)!r} is not in config [secrets]; "
                    f"add it with `daycare config set secrets.{m.group(1)} VALUE`"
                )
            used.append(secret)
            return secret

        env[key] = SECRET_REF_RE.sub(sub, value)
    return env, used


def daycare_places(paths: Paths) -> list[Path]:
    """What of daycare a block must never see: its home (state, logs, workspaces), the
    config, the tasks directory, the runtime directory and the control socket."""
    places = [paths.home, paths.tasks_dir, paths.runtime_dir, paths.config_file, paths.socket]
    if paths.config_file.parent.name == "daycare":
        places.append(paths.config_file.parent)
    out: list[Path] = []
    for p in places:
        for form in (Path(os.path.abspath(p)), Path(os.path.realpath(p))):
            if form not in out:
                out.append(form)
    return out


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB".replace(".0 MiB", " MiB")
