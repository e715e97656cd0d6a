"""The sandbox probe of the daemon's start (`run/blocks.describe_sandbox`), in a forked child.

The ready line and `daemon status` say what isolation blocks get, so the start probes
the sandbox (a bubblewrap start, the seccomp filter, the cgroup). Its modules (the block
machinery: ~30 modules, psutil, libseccomp) weigh 2.5-2.8 MB and ~35 ms of CPU that a
daemon whose tasks run no block would keep for nothing; a child forked before the start
has any thread does the probe and hands back its answer as JSON, and the daemon imports
the block machinery only when a run first needs it (`run/runner.py`). Without fork, or
when the child fails, the daemon probes in a thread itself, as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from typing import Any

from daycare_cli.config import Config

MAX_ANSWER = 1 << 20  # bytes of JSON read back at most (the answer is a few hundred)


class SandboxProbe:
    """A child probing the sandbox; `answer` waits for what it found."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    @classmethod
    def start(cls, config: Config) -> SandboxProbe | None:
        """Fork the child; None when it cannot (threads, no fork, no pipe)."""
        if threading.active_count() != 1 or not hasattr(os, "fork"):
            return None  # a fork with threads may copy a lock some thread holds
        try:
            read_fd, write_fd = os.pipe()
        except OSError:
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            return None
        if pid == 0:  # the child
            os.close(read_fd)
            _child(config, write_fd)
        os.close(write_fd)
        return cls(pid, read_fd)

    def answer(self) -> dict[str, Any] | None:
        """What the child found, or None when it failed (blocking: run it off the loop)."""
        try:
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_ANSWER:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            _, status = os.waitpid(self.pid, 0)
            if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                return None
            found = json.loads(b"".join(chunks))
            return found if isinstance(found, dict) else None
        except (OSError, ValueError):
            self.discard()
            return None
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def discard(self) -> None:
        """Stop the child (a start that failed first, or an unreadable answer)."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(self.pid, 0)


def _child(config: Config, fd: int) -> None:
    """The child's work: probe, write the answer as JSON to `fd`, exit."""
    code = 1
    try:
        from daycare_cli.run.blocks import describe_sandbox

        data = json.dumps(describe_sandbox(config)).encode()
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        code = 0
    finally:
        os._exit(code)


def describe(config: Config, child: SandboxProbe | None) -> dict[str, Any]:
    """The sandbox's description: the child's answer, else probed here (in a thread)."""
    if child is not None:
        found = child.answer()
        if found is not None:
            return found
    from daycare_cli.run.blocks import describe_sandbox

    return describe_sandbox(config)
