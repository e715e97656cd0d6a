"""Starting a block's process: the launch plan's shape and the spawn itself.

`blockplan.launch_plan` builds a `Launch`; `spawn` starts it with a plain
`subprocess.Popen` in a session of its own. Under bubblewrap there is no Python between
fork and exec (a `Gate`), so the spawn is a vfork (as root, a fork whose child runs no
Python): every block pays for the spawn (bench/bench_sandbox.py), and a fork of the
daemon with Python in the child cost about 3 ms more. bubblewrap starts held at
`--args`, reading its options from a pipe; the block's limits (`prlimit`) and the run's
cgroup are given to it there, and only then its options, so it makes no namespace and
starts no process before they bind. If we die first, it reads no options and, in its
empty root, finds no program to run; the block's code goes on stdin only once
bubblewrap has made itself die with us (pipes.py). Without bubblewrap, or when the
identity needs mounts made as root first, the launch plan's `preexec` does this between
fork and exec instead; so it does where limits cannot be set on a process of another
uid (root without CAP_SYS_RESOURCE, in a container; a setuid bubblewrap): the probe
tries the gate first (bwrap.probe).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daycare_cli.run.identity import Limits


@dataclass(frozen=True)
class Gate:
    """What bubblewrap gets while it waits at `--args`, before it makes anything.

    `at` is where bubblewrap's options end in the argv (the `--` before the command);
    `rlimits` are set on it (`prlimit`) and `cgroup_fd` (the run cgroup's
    `cgroup.procs`) receives its pid, so that every process of the sandbox is born
    limited and counted. Its options must fit in PIPE_BUF (`gate_options`).
    """

    at: int
    rlimits: Limits
    cgroup_fd: int | None = None


@dataclass(frozen=True)
class Launch:
    """How to spawn one block (or the probe's `true`): built by sandbox's launch plan."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    preexec: Callable[[], None] | None
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
    # Without a preexec: (uid, gid) to run as (root's blocks; no supplementary groups),
    # the umask, and bubblewrap's gate.
    user: tuple[int, int] | None = None
    umask: int = -1
    gate: Gate | None = None


class SpawnError(Exception):
    """The process could not be started; `cause` is the OSError or SubprocessError."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def run_to_end(launch: Launch, timeout: float) -> tuple[int, bytes]:
    """Run `launch` with nothing on stdin and wait for it (the bubblewrap probe);
    (exit status, stderr). Raises SpawnError, or subprocess.TimeoutExpired after killing it."""
    proc, info_fd = spawn(launch)
    try:
        try:
            _, err = proc.communicate(b"", timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.kill()
            proc.communicate()
            raise
    finally:
        if info_fd is not None:
            os.close(info_fd)
    return proc.returncode, err


def spawn(launch: Launch, keep: tuple[int, ...] = ()) -> tuple[subprocess.Popen[bytes], int | None]:
    """Start the process with stdin, stdout and stderr piped, in a session of its own,
    keeping the descriptors `keep` and the launch's own (and, with a gate, let
    bubblewrap go once its limits are set). Returns the process and, with a gate, the
    read end of bubblewrap's `--info-fd`. Raises SpawnError."""
    gate = launch.gate
    argv = launch.argv
    fds = (*keep, *launch.pass_fds)
    args_r = args_w = info_r = info_w = -1
    extra: dict[str, Any] = {}
    if launch.user is not None:
        extra = {"user": launch.user[0], "group": launch.user[1], "extra_groups": []}
    try:
        if gate is not None:
            args_r, args_w = os.pipe()
            info_r, info_w = os.pipe()
            # The command stays here: with no options (we died before writing them)
            # bubblewrap finds no program in its empty root and runs nothing.
            argv = [argv[0], "--args", str(args_r), *argv[gate.at :]]
            fds = (*fds, args_r, info_w)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=launch.env,
            cwd=launch.cwd,
            pass_fds=fds,
            start_new_session=True,
            preexec_fn=launch.preexec,
            umask=launch.umask,
            **extra,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        for fd in (args_r, args_w, info_r, info_w):
            if fd >= 0:
                os.close(fd)
        raise SpawnError(exc) from exc
    if gate is None:
        return proc, None
    os.close(args_r)
    os.close(info_w)
    try:
        # bubblewrap is blocked reading its options: nothing of the sandbox exists yet.
        for res, soft, hard in gate.rlimits:
            resource.prlimit(proc.pid, res, (soft, hard))
        if gate.cgroup_fd is not None:
            os.write(gate.cgroup_fd, str(proc.pid).encode())
        # One write of at most PIPE_BUF bytes: all of it arrives, or none (gate_options).
        os.write(args_w, gate_options(launch.argv[1 : gate.at], info_w))
    except (OSError, ValueError) as exc:
        _discard(proc)
        os.close(info_r)
        raise SpawnError(exc) from exc
    finally:
        os.close(args_w)
    return proc, info_r


def gate_options(options: list[str], info_fd: int = 2**31 - 1) -> bytes:
    """bubblewrap's options as its `--args` reads them (NUL after each), with the
    `--info-fd`. A gated launch needs them within PIPE_BUF, so that they reach
    bubblewrap whole, in one write, or not at all."""
    return b"".join(a.encode("utf-8", "surrogateescape") + b"\0" for a in options) + (
        b"--info-fd\0%d\0" % info_fd
    )


def _discard(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap a process that must not go on, and close its pipes."""
    with contextlib.suppress(OSError):
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
