"""A block's process: spawn it, read its capped pipes, stop it and what it left behind.

The process is spawned from the event-loop thread in a new session with the launch
plan's argv, clean environment and `preexec`; its script goes on stdin, stdout and stderr
are read with caps and a deadline, and results come back on a private pipe (the
"channel"). On cap or deadline the process group gets SIGTERM, 0.5 s of grace, then
SIGKILL; after a normal exit it gets SIGKILL too. The block's process tree is frozen
and killed as well, even what left the group: under bubblewrap that includes its
pid-namespace init (its own session, immune to SIGTERM as an init, killed with SIGKILL
from outside), and with it everything in the namespace.

Without a pid namespace (`orphans_of`: the uid blocks run as), the spawning process is a
child subreaper, so what a block leaves behind when it dies by os._exit or a signal
(double-forked, in a session of its own) is re-parented here instead of to init, and is
killed and reaped after the block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from daycare_cli.core.task import MIB

STDERR_CAP = 64 * 1024
CHANNEL_CAP = 8 * MIB
GRACE = 0.5  # seconds between SIGTERM and SIGKILL
DRAIN = 1.0  # seconds to wait for pipes to close once the process is gone
PR_SET_CHILD_SUBREAPER = 36

# Pids of blocks running now (the orphan sweep leaves them alone), and spawns under way
# (whose pid is not known yet: a sweep waits for them, or it could take a block being
# born for an orphan).
LIVE: set[int] = set()
SPAWNING: set[int] = set()


@dataclass(frozen=True)
class Launch:
    """How to spawn one block (or the probe's `true`): built by sandbox's launch plan."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    preexec: Callable[[], None]
    tree_kill: bool  # sweep the process tree on stop
    pass_fds: tuple[int, ...] = ()  # open descriptors the child keeps (bind-fd, seccomp)
    # No pid namespace: the block's uid for the orphan sweep, and (when that uid is also
    # ours) a line its environment starts with, so our own other children are spared.
    orphans_of: int | None = None
    orphan_env: bytes | None = None
    # Sweep after a normal exit too (no pid namespace: a block that dies by os._exit
    # leaves its children to us). Under bubblewrap, a normal exit ends the namespace
    # and all in it; only a block we stopped can leave its init behind.
    sweep_after_exit: bool = True


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


class SpawnError(Exception):
    """The process could not be started; `cause` is the OSError or SubprocessError."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def run_process(
    launch: Launch,
    script: Callable[[int], bytes],
    *,
    timeout: float,
    stdout_cap: int,
    on_output: Callable[[bytes], None] | None = None,
    on_spawn: Callable[[], None] | None = None,
) -> Finished:
    """Spawn `launch`, feed it `script(channel fd)` on stdin, and wait (at most `timeout`
    seconds, or until stdout passes `stdout_cap`) for it to end; then kill what is left.

    Raises SpawnError when the process cannot start. When cancelled, the process and its
    tree are killed and the pipes closed before the cancellation propagates.
    """
    loop = asyncio.get_running_loop()
    if launch.orphans_of is not None:
        _become_subreaper()
    read_fd, write_fd = os.pipe()
    channel = _ChannelProtocol()
    stdin_data = script(write_fd)

    async def spawn() -> tuple[asyncio.BaseTransport, asyncio.SubprocessTransport, Any]:
        ch, _ = await loop.connect_read_pipe(lambda: channel, os.fdopen(read_fd, "rb", buffering=0))
        try:
            made = await loop.subprocess_exec(
                lambda: _BlockProtocol(stdout_cap, on_output),
                *launch.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=launch.env,
                cwd=launch.cwd,
                pass_fds=(write_fd, *launch.pass_fds),
                start_new_session=True,
                preexec_fn=launch.preexec,
            )
        except BaseException:
            ch.close()
            raise
        return ch, *made

    # A cancellation does not interrupt the spawn: asyncio's clean-up of a half-made
    # subprocess kills the direct child only, and bubblewrap's pid-namespace init (a
    # session of its own) outlived it, re-parented to pid 1. The process is made whole,
    # then stopped as a tree below, and the cancellation raised after that.
    cancelled: asyncio.CancelledError | None = None
    token = id(channel)
    SPAWNING.add(token)
    try:
        spawning = asyncio.ensure_future(spawn())
        while not spawning.done():
            try:
                await asyncio.shield(spawning)
            except asyncio.CancelledError as exc:
                cancelled = exc
            except BaseException:
                break  # the spawn failed: its result() below raises it
        os.close(write_fd)
        try:
            ch_transport, transport, proto = spawning.result()
        except (OSError, subprocess.SubprocessError) as exc:
            raise SpawnError(exc) from exc
        pid = transport.get_pid()
        proto.pid = pid
        if on_spawn is not None:
            on_spawn()  # issue 12: the run's `block_started_at`
        if transport.get_returncode() is None:
            LIVE.add(pid)
    finally:
        SPAWNING.discard(token)

    # Compared with psutil's creation times of what the block left: the same clock
    # (boot time plus ticks), which can differ from time.time() by a good part of a second.
    try:
        since = psutil.Process(pid).create_time()
    except psutil.Error:
        since = time.time() - 1.0
    timed_out = False
    stopped = cancelled is not None
    try:
        if cancelled is not None:
            raise cancelled
        stdin = transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.write(stdin_data)  # type: ignore[attr-defined]
            stdin.close()
        ended = await _first(proto.exited, proto.overflow, timeout=timeout)
        timed_out = not ended
        if not proto.exited.is_set():
            stopped = True
            await _stop(pid, proto, launch.tree_kill)
        # After an exit, what outlived the block is no longer below it: the orphan
        # sweep (we are the subreaper it was re-parented to) finds it.
        _kill_group(pid, signal.SIGKILL)
        await _first(proto.pipes_closed, timeout=DRAIN)
        await _first(channel.closed, timeout=DRAIN)
    finally:
        try:
            if transport.get_returncode() is None:
                # Cancelled (the run was cancelled or the daemon is stopping): kill now,
                # and give the kernel a moment to tear the namespace down. The tree goes
                # first: once the block is dead, its children are no longer below it.
                stopped = True
                if launch.tree_kill:
                    _freeze_and_kill(pid)
                _kill_group(pid, signal.SIGKILL)
                await _settle(proto)
        finally:
            transport.close()
            ch_transport.close()
            again: asyncio.CancelledError | None = None
            if launch.orphans_of is not None and (stopped or launch.sweep_after_exit):
                try:
                    await _uncancelled(_spawns_settled())
                except asyncio.CancelledError as exc:
                    again = exc  # raised after the sweep
                # The block's own process stays in LIVE until asyncio has reaped it.
                sweep_orphans(launch.orphans_of, since, launch.orphan_env)
            if transport.get_returncode() is not None:
                LIVE.discard(pid)
            if again is not None:
                raise again
    return Finished(
        stdout=bytes(proto.stdout),
        truncated=proto.truncated,
        stderr=bytes(proto.stderr),
        stderr_truncated=proto.stderr_truncated,
        messages=channel.messages(),
        returncode=transport.get_returncode(),
        timed_out=timed_out,
    )


class _BlockProtocol(asyncio.SubprocessProtocol):
    """Collects capped stdout/stderr and notices exit and stdout overflow."""

    def __init__(self, stdout_cap: int, on_output: Callable[[bytes], None] | None = None) -> None:
        self.stdout_cap = stdout_cap
        self.on_output = on_output  # live lines for `task run` and followers
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.truncated = False
        self.stderr_truncated = False
        self.exited = asyncio.Event()
        self.overflow = asyncio.Event()
        self.pipes_closed = asyncio.Event()
        self._open = {1, 2}
        self.pid = 0  # set once spawned

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            if self.truncated:
                return
            room = self.stdout_cap - len(self.stdout)
            self.stdout += data[:room]
            if self.on_output is not None and room > 0:
                with contextlib.suppress(Exception):  # a listener must not break the block
                    self.on_output(data[:room])
            if len(data) > room:
                self.truncated = True
                self.overflow.set()
        elif fd == 2:
            room = STDERR_CAP - len(self.stderr)
            self.stderr += data[: max(room, 0)]
            if len(data) > room:
                self.stderr_truncated = True

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open:
            self.pipes_closed.set()

    def process_exited(self) -> None:
        self.exited.set()
        LIVE.discard(self.pid)


class _ChannelProtocol(asyncio.Protocol):
    """The private result pipe: JSON lines from the prelude."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        if len(self.data) < CHANNEL_CAP:
            self.data += data[: CHANNEL_CAP - len(self.data)]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def messages(self) -> list[dict[str, Any]]:
        out = []
        for line in bytes(self.data).splitlines():
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict):
                    out.append(msg)
        return out


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


async def _settle(proto: _BlockProtocol) -> None:
    """Wait (at most DRAIN each) for the killed block to be reaped and its pipes to
    close, even through another cancellation. Once it is reaped, what it left is
    re-parented to us and the orphan sweep finds it."""

    async def both() -> None:
        await _first(proto.exited, timeout=DRAIN)
        await _first(proto.pipes_closed, timeout=DRAIN)

    await _uncancelled(both())


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


async def _stop(pid: int, proto: _BlockProtocol, tree_kill: bool) -> None:
    """SIGTERM the group, 0.5 s of grace, then SIGKILL it (and, without a pid namespace,
    everything descended from the block, even what left the group)."""
    snapshot = _tree(pid) if tree_kill else []
    _kill_group(pid, signal.SIGTERM)
    await _first(proto.exited, timeout=GRACE)
    if tree_kill and not proto.exited.is_set():
        _freeze_and_kill(pid)
    _kill_group(pid, signal.SIGKILL)
    for p in snapshot:
        # psutil refuses to signal a pid that another process has taken since.
        with contextlib.suppress(psutil.Error):
            p.kill()
    await _first(proto.exited, timeout=DRAIN)


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


def _freeze_and_kill(root: int) -> None:
    """Stop the whole tree (stopped processes cannot fork), then SIGKILL all of it."""
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


def sweep_orphans(uid: int, since: float, env: bytes | None = None) -> int:
    """SIGKILL and reap what blocks left behind: our children, running as `uid`, started
    since `since`, that are not a running block, and (with `env`) whose environment holds
    that line. Returns how many were killed."""
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
    for p in found:
        stopped = [p]
        with contextlib.suppress(psutil.Error):
            stopped += p.children(recursive=True)
        for q in stopped:
            with contextlib.suppress(psutil.Error):
                q.kill()
        # Reap it (it is ours now); never block the loop on one that will not go.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                if os.waitpid(p.pid, os.WNOHANG)[0] != 0:
                    break
            except ChildProcessError:
                break
            time.sleep(0.002)
    return len(found)


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
