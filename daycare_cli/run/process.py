"""A block's process: spawn it, read its capped pipes, stop it and what it left behind.

The process is spawned off the event loop, from a thread of its own, in a new session
with the launch plan's argv and clean environment; its script goes on stdin, stdout and
stderr are read with caps and a deadline, and results come back on a private pipe (the
"channel"). On cap or deadline the process group gets SIGTERM, 0.5 s of grace, then
SIGKILL; after a normal exit it gets SIGKILL too. The block's process tree is frozen and
killed as well, even what left the group: under bubblewrap that includes its
pid-namespace init (its own session, immune to SIGTERM as an init, killed with SIGKILL from
outside), and with it everything in the namespace.

Spawning is on the path of every block, so it is lean (bench/bench_sandbox.py): the
spawn itself is `launch.py` (under bubblewrap with no Python between fork and exec), the
pipes and the exit are watched by `pipes.py` without asyncio's subprocess transport.

Without a pid namespace (`orphans_of`: the uid blocks run as), the spawning process is a
child subreaper, so what a block leaves behind when it dies by os._exit or a signal
(double-forked, in a session of its own) is re-parented here instead of to init, and is
killed and reaped after the block.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psutil

from daycare_cli.run.launch import Launch, spawn
from daycare_cli.run.pipes import BlockPipes

GRACE = 0.5  # seconds between SIGTERM and SIGKILL
DRAIN = 1.0  # seconds to wait for pipes to close once the process is gone
KILL_WAIT = 10.0  # seconds to wait for SIGKILLed processes to be gone
PR_SET_CHILD_SUBREAPER = 36

# Pids of blocks running now (the orphan sweep leaves them alone), and spawns under way
# (whose pid is not known yet: a sweep waits for them, or it could take a block being
# born for an orphan).
LIVE: set[int] = set()
SPAWNING: set[int] = set()
# The thread blocks are spawned from: one, living as long as the process (see run_process).
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="daycare-spawn")


@dataclass(frozen=True)
class Finished:
    """What the process left: capped output, the channel's messages, how it ended."""

    stdout: bytes
    truncated: bool
    stderr: bytes
    stderr_truncated: bool
    messages: list[dict[str, Any]]
    returncode: int | None
    timed_out: bool


@dataclass(frozen=True)
class Spawned:
    """A block's process, spawned and waiting for its script on stdin: `channel_fd` is
    the number the process has the result channel's write end under (ours is closed),
    `channel_r` our read end, `info_fd` bubblewrap's `--info-fd` when gated."""

    launch: Launch
    proc: subprocess.Popen[bytes]
    channel_r: int
    channel_fd: int
    info_fd: int | None


async def start_process(launch: Launch) -> Spawned:
    """Spawn `launch` off the loop; its interpreter waits for its script on stdin.

    Raises SpawnError when the process cannot start. Cancelled during the spawn, the
    process is made whole, stopped, then the cancellation is raised (never swallowed).
    """
    loop = asyncio.get_running_loop()
    if launch.orphans_of is not None:
        _become_subreaper()
    read_fd, write_fd = os.pipe()
    # A sweep waits while a spawn is under way (SPAWNING), or it could take a block being
    # born for an orphan. The spawn (a fork and an exec: milliseconds each, and 20 runs
    # due at once held the loop for 130 ms) is off the loop, in one lasting thread: a
    # block's parent-death signal follows the thread that forked it. A cancellation does
    # not cut it in half: the process is made whole, stopped below, then it is raised.
    token = read_fd
    SPAWNING.add(token)
    cancelled: asyncio.CancelledError | None = None
    try:
        spawning = loop.run_in_executor(_SPAWNER, spawn, launch, (write_fd,))
        while not spawning.done():
            try:
                await asyncio.shield(spawning)
            except asyncio.CancelledError as exc:
                cancelled = exc
            except BaseException:
                break  # the spawn failed: result() below raises it
        proc, info_fd = spawning.result()
        LIVE.add(proc.pid)
    except BaseException:
        os.close(read_fd)
        if cancelled is not None:
            raise cancelled from None
        raise
    finally:
        SPAWNING.discard(token)
        os.close(write_fd)
    spawned = Spawned(launch, proc, read_fd, write_fd, info_fd)
    if cancelled is not None:
        await _uncancelled(end_unused(spawned))
        raise cancelled
    return spawned


async def end_unused(spawned: Spawned) -> None:
    """End a process that was started ahead and will not run a block: given no code,
    its interpreter exits, and what is left of it is killed as after any block."""
    with contextlib.suppress(OSError):
        await run_process(spawned.launch, lambda fd: b"", spawned=spawned, timeout=1.0)


async def run_process(
    launch: Launch,
    script: Callable[[int], bytes],
    *,
    timeout: float,
    stdout_cap: int = 0,
    on_output: Callable[[bytes], None] | None = None,
    on_spawn: Callable[[], None] | None = None,
    spawned: Spawned | None = None,
) -> Finished:
    """Spawn `launch` (or take `spawned`, started ahead for it by `start_process`), feed
    it `script(channel fd)` on stdin, and wait (at most `timeout` seconds, or until
    stdout passes `stdout_cap`) for it to end; then kill what is left.

    Raises SpawnError when the process cannot start. When cancelled, the process and its
    tree are killed and the pipes closed before the cancellation propagates. `on_spawn`
    is called once the process has its script: just spawned (its program exec'd), or
    started ahead and handed the script now.
    """
    loop = asyncio.get_running_loop()
    if spawned is None:
        spawned = await start_process(launch)
    proc, read_fd, info_fd = spawned.proc, spawned.channel_r, spawned.info_fd
    launch = spawned.launch
    stdin_data = script(spawned.channel_fd)
    pid = proc.pid
    if on_spawn is not None:
        on_spawn()  # the run's `block_started_at` (issue 12)
    block = BlockPipes(
        loop, proc, read_fd, info_fd, stdin_data, stdout_cap, on_output, lambda: LIVE.discard(pid)
    )

    # Only what a sweep needs (under bubblewrap, only after a stop): the block's creation
    # time, read while it exists.
    since = _created(pid) if launch.sweep_after_exit else None
    killed: list[psutil.Process] = []  # what we SIGKILLed: gone before we return
    timed_out = False
    stopped = False
    try:
        ended = await _first(block.exited, block.overflow, timeout=timeout)
        timed_out = not ended
        if not block.exited.is_set():
            stopped = True
            since = since or _created(pid)
            killed += await _stop(pid, block, launch.tree_kill)
        # After an exit, what outlived the block is no longer below it: the orphan
        # sweep (we are the subreaper it was re-parented to) finds it.
        _kill_group(pid, signal.SIGKILL)
        await _first(block.pipes_closed, timeout=DRAIN)
        await _first(block.channel_closed, timeout=DRAIN)
    finally:
        try:
            if proc.returncode is None:
                # Cancelled (the run was cancelled or the daemon is stopping): kill now,
                # and wait for the kernel to tear it down. The tree goes first: once the
                # block is dead, its children are no longer below it.
                stopped = True
                since = since or _created(pid)
                if launch.tree_kill:
                    killed += _freeze_and_kill(pid)
                _kill_group(pid, signal.SIGKILL)
                await _settle(block)
        finally:
            block.close()
            again: asyncio.CancelledError | None = None
            try:
                if launch.orphans_of is not None and (stopped or launch.sweep_after_exit):
                    await _uncancelled(_spawns_settled())
                    # The block's own process stays in LIVE until it is reaped.
                    killed += sweep_orphans(launch.orphans_of, since or 0.0, launch.orphan_env)
                # "It leaves no process behind" holds when this returns, however loaded
                # the machine: what was killed has exited (and what is ours, reaped).
                await _uncancelled(_gone(killed))
            except asyncio.CancelledError as exc:
                again = exc  # raised once the clean-up is over
            if proc.returncode is not None:
                LIVE.discard(pid)
            if again is not None:
                raise again
    return Finished(
        stdout=bytes(block.stdout),
        truncated=block.truncated,
        stderr=bytes(block.stderr),
        stderr_truncated=block.stderr_truncated,
        messages=block.messages(),
        returncode=proc.returncode,
        timed_out=timed_out,
    )


async def _first(*events: asyncio.Event, timeout: float) -> bool:
    """Wait until one of the events is set; False on timeout."""
    if any(e.is_set() for e in events):
        return True
    tasks = [asyncio.create_task(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
    return bool(done)


async def _settle(block: BlockPipes) -> None:
    """Wait for the killed block to be reaped (at most KILL_WAIT: SIGKILL only fails to
    end a process stuck in the kernel) and its pipes to close (at most DRAIN), even
    through another cancellation. Once it is reaped, what it left is re-parented to us
    and the orphan sweep finds it."""

    async def both() -> None:
        await _first(block.exited, timeout=KILL_WAIT)
        await _first(block.pipes_closed, timeout=DRAIN)

    await _uncancelled(both())


async def _gone(procs: list[psutil.Process]) -> None:
    """Wait (at most KILL_WAIT, without blocking the loop) until every process in
    `procs`, all SIGKILLed, has exited; reap those that are our children."""
    deadline = time.monotonic() + KILL_WAIT
    left = procs
    while left:
        still = []
        for p in left:
            with contextlib.suppress(psutil.Error):
                if p.status() == psutil.STATUS_ZOMBIE:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(p.pid, os.WNOHANG)  # ours: reap it; else its parent will
                elif p.is_running():
                    still.append(p)
        left = still
        if not left or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.005)


def _created(pid: int) -> float:
    """When `pid` started, on psutil's clock (boot time plus ticks), which is the one the
    sweep compares with and can differ from time.time() by a good part of a second."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return time.time() - 1.0


async def _spawns_settled() -> None:
    """Wait (at most DRAIN) until no other block is being spawned."""
    deadline = time.monotonic() + DRAIN
    while SPAWNING and time.monotonic() < deadline:
        await asyncio.sleep(0.002)


async def _uncancelled(work: Any) -> None:
    """Run `work` to its end even through a cancellation: that one is raised once the
    work is over, never swallowed."""
    wait = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while not wait.done():
        try:
            await asyncio.shield(wait)
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        raise cancelled


async def _stop(pid: int, block: BlockPipes, tree_kill: bool) -> list[psutil.Process]:
    """SIGTERM the group, 0.5 s of grace, then SIGKILL it (and everything descended
    from the block, even what left the group). Returns what was SIGKILLed by name."""
    snapshot = _tree(pid) if tree_kill else []
    _kill_group(pid, signal.SIGTERM)
    await _first(block.exited, timeout=GRACE)
    killed = _freeze_and_kill(pid) if tree_kill and not block.exited.is_set() else []
    _kill_group(pid, signal.SIGKILL)
    for p in snapshot:
        # psutil refuses to signal a pid that another process has taken since.
        with contextlib.suppress(psutil.Error):
            p.kill()
            killed.append(p)
    await _first(block.exited, timeout=DRAIN)
    return killed


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, sig)


def _tree(root: int) -> list[psutil.Process]:
    """The block's process and its descendants; empty when it is gone."""
    try:
        proc = psutil.Process(root)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def _freeze_and_kill(root: int) -> list[psutil.Process]:
    """Stop the whole tree (stopped processes cannot fork), then SIGKILL all of it;
    returns what was killed."""
    stopped: dict[int, psutil.Process] = {}
    for _ in range(200):
        new = [p for p in _tree(root) if p.pid not in stopped]
        if not new:
            break
        for p in new:
            with contextlib.suppress(psutil.Error):
                p.suspend()
        stopped.update((p.pid, p) for p in new)
    for p in stopped.values():
        with contextlib.suppress(psutil.Error):
            p.kill()
    return list(stopped.values())


_subreaper = False


def _become_subreaper() -> None:
    """Adopt orphaned descendants (once per process; Linux only)."""
    global _subreaper
    if _subreaper or sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _subreaper = True


def sweep_orphans(uid: int, since: float, env: bytes | None = None) -> list[psutil.Process]:
    """SIGKILL what blocks left behind: our children, running as `uid`, started since
    `since`, that are not a running block, and (with `env`) whose environment holds that
    line, with their descendants. Returns what was killed (`_gone` waits for it and
    reaps it)."""
    found = []
    for child in _children_of(os.getpid()):
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(child)
            try:
                if p.pid in LIVE or p.uids().real != uid:
                    continue
                if p.status() == psutil.STATUS_ZOMBIE:
                    # Dead and adopted (an init that died after an earlier sweep): reap
                    # it. With our own uid, only bubblewrap's: other zombies may be
                    # children a Popen elsewhere is about to wait for.
                    if env is None or p.name() == "bwrap":
                        found.append(p)
                    continue
                if p.create_time() < since - 0.02:
                    continue
                if env is not None and not _has_env(p.pid, env):
                    continue
            except psutil.Error:
                continue
            found.append(p)
    killed = []
    for p in found:
        tree = [p]
        with contextlib.suppress(psutil.Error):
            tree += p.children(recursive=True)
        for q in tree:
            with contextlib.suppress(psutil.Error):
                q.kill()
                killed.append(q)
        if p not in killed:
            killed.append(p)  # a zombie: nothing to kill, still to reap
    return killed


def _children_of(parent: int) -> list[int]:
    """Pids whose parent is `parent`, from one read of each /proc/PID/stat (what psutil
    does too, with more work per process; this runs after every block)."""
    out: list[int] = []
    try:
        entries = os.scandir("/proc")
    except OSError:
        return out
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
                if int(stat[stat.rfind(b")") + 2 :].split(b" ", 2)[1]) == parent:
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _has_env(pid: int, line: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return line in f.read(1 << 16).split(b"\0")
    except OSError:
        return False
