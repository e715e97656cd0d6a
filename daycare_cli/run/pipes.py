"""A spawned block's pipes and exit, watched from the event loop (run/process.py).

stdout and stderr are read with caps, the prelude's channel up to `CHANNEL_CAP`, the
script goes to stdin (under bubblewrap only once bubblewrap reported, by closing its
`--info-fd`, that it dies with us), and the exit is seen through a pidfd. All of it is
`add_reader`/`add_writer` on the descriptors themselves, set up without awaiting:
asyncio's subprocess transport and the thread that waits for each child cost a
millisecond more per block (bench/bench_sandbox.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Callable
from typing import IO, Any

from daycare_cli.core.task import MIB

STDERR_CAP = 64 * 1024
CHANNEL_CAP = 8 * MIB
INFO_CAP = 64 * 1024


class BlockPipes:
    """A spawned block's pipes and exit, watched from the event loop.

    Collects capped stdout/stderr and the channel, notices exit and stdout overflow,
    and writes the script to stdin (under bubblewrap once its `--info-fd` closed, that
    is once it has made itself die with us).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        proc: subprocess.Popen[bytes],
        channel_fd: int,
        info_fd: int | None,
        stdin_data: bytes,
        stdout_cap: int,
        on_output: Callable[[bytes], None] | None,
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        self.loop = loop
        self.proc = proc
        self.stdout_cap = stdout_cap
        self.on_output = on_output  # live lines for `task run` and followers
        self.on_exit = on_exit
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.channel = bytearray()
        self.info = bytearray()
        self.truncated = False
        self.stderr_truncated = False
        self.exited = asyncio.Event()
        self.overflow = asyncio.Event()
        self.pipes_closed = asyncio.Event()
        self.channel_closed = asyncio.Event()
        self._stdin_data = memoryview(stdin_data)
        self._readers: dict[int, Callable[[bytes], None]] = {}
        self._files: list[IO[bytes]] = [p for p in (proc.stdin, proc.stdout, proc.stderr) if p]
        self._fds: list[int] = [channel_fd] + ([info_fd] if info_fd is not None else [])
        self._channel_fd = channel_fd
        self._writing = False
        self._pidfd = -1
        assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
        self._stdin_fd = proc.stdin.fileno()
        self._open = {proc.stdout.fileno(), proc.stderr.fileno()}
        self._read(proc.stdout.fileno(), self._on_stdout)
        self._read(proc.stderr.fileno(), self._on_stderr)
        self._read(channel_fd, self._on_channel)
        if info_fd is not None:
            self._read(info_fd, self._on_info)
        else:
            self._write_stdin()
        self._watch_exit()

    # -- reading

    def _read(self, fd: int, sink: Callable[[bytes], None]) -> None:
        os.set_blocking(fd, False)
        self._readers[fd] = sink
        self.loop.add_reader(fd, self._readable, fd)

    def _readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        sink = self._readers.get(fd)
        if data and sink is not None:
            sink(data)
            return
        self.loop.remove_reader(fd)
        self._readers.pop(fd, None)
        self._eof(fd)

    def _eof(self, fd: int) -> None:
        if fd in self._open:
            self._open.discard(fd)
            if not self._open:
                self.pipes_closed.set()
        elif fd == self._channel_fd:
            self.channel_closed.set()
        elif self.info:
            # bubblewrap wrote where its sandbox is and closed the pipe: it dies with us
            # from now on, so the block's code may go.
            self._write_stdin()
        else:
            self._close_stdin()  # bubblewrap died before: nothing must run

    def _on_stdout(self, data: bytes) -> None:
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

    def _on_stderr(self, data: bytes) -> None:
        room = STDERR_CAP - len(self.stderr)
        self.stderr += data[: max(room, 0)]
        if len(data) > room:
            self.stderr_truncated = True

    def _on_info(self, data: bytes) -> None:
        if len(self.info) < INFO_CAP:
            self.info += data

    def _on_channel(self, data: bytes) -> None:
        if len(self.channel) < CHANNEL_CAP:
            self.channel += data[: CHANNEL_CAP - len(self.channel)]

    def messages(self) -> list[dict[str, Any]]:
        """The channel's JSON lines (the prelude's messages), malformed ones left out."""
        out = []
        for line in bytes(self.channel).splitlines():
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict):
                    out.append(msg)
        return out

    # -- stdin

    def _write_stdin(self) -> None:
        if self._stdin_fd < 0:
            return
        os.set_blocking(self._stdin_fd, False)
        self._writing = True
        self._writable()
        if self._writing:
            self.loop.add_writer(self._stdin_fd, self._writable)

    def _writable(self) -> None:
        try:
            while self._stdin_data:
                n = os.write(self._stdin_fd, self._stdin_data)
                self._stdin_data = self._stdin_data[n:]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass  # the block is gone or closed its stdin: what it read is what it runs
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self._stdin_fd < 0:
            return
        if self._writing:
            self.loop.remove_writer(self._stdin_fd)
            self._writing = False
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self._stdin_fd = -1

    # -- exit

    def _watch_exit(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            # No pidfd (not Linux, or before 5.3): a thread waits instead.
            threading.Thread(target=self._wait_in_thread, daemon=True).start()
            return
        self.loop.add_reader(self._pidfd, self._reap)

    def _wait_in_thread(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self.loop.call_soon_threadsafe(self._reap)

    def _reap(self) -> None:
        if self.proc.poll() is None:
            return
        if self._pidfd >= 0:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        self.on_exit()
        self.exited.set()

    def close(self) -> None:
        """Stop watching and close every descriptor (idempotent)."""
        self._close_stdin()
        for fd in list(self._readers):
            self.loop.remove_reader(fd)
        self._readers.clear()
        if self._pidfd >= 0:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        for f in self._files:
            f.close()
        self._files = []
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
