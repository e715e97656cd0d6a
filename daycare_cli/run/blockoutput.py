"""What a block prints, as it prints it: `block.output` events for the live view.

The sandbox hands over stdout in pieces as the pipe delivers them; `OutputStream` turns
them into events a person can read and a daemon can fan out without being flooded:

- text is decoded incrementally (a character split across two reads stays whole);
- events carry whole lines, so a secret is never split across two events before it is
  redacted; a line still unfinished is sent after `IDLE` seconds of quiet (a progress
  bar, a prompt without newline) or when the block ends;
- at most one event every `INTERVAL` seconds (lines in between are sent together) and
  at most `CHUNK` characters an event; the sandbox's 64 KiB stdout cap bounds the total.
"""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import Callable

INTERVAL = 0.05  # seconds between two events of one block
IDLE = 0.25  # seconds before an unfinished line is sent anyway
CHUNK = 4096  # characters an event carries at most


class OutputStream:
    """Collects one block's stdout pieces and sends them as `emit(text)` calls.

    Runs on the event loop (the sandbox calls `feed` from its pipe protocol); `close`
    sends what is left when the block ends.
    """

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""
        self.last_sent = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def feed(self, data: bytes) -> None:
        """A piece of stdout as read from the pipe."""
        if self.closed:
            return
        self.pending += self.decoder.decode(data)
        self._schedule()

    def close(self) -> None:
        """The block ended: send everything, finished lines or not."""
        if self.closed:
            return
        self.pending += self.decoder.decode(b"", final=True)
        self._cancel()
        self._send(everything=True)
        self.closed = True

    def _schedule(self) -> None:
        if len(self.pending) >= CHUNK:  # a long line without newline: do not hoard it
            self._cancel()
            self._send(everything=True)
            return
        wait = self.last_sent + INTERVAL - time.monotonic()
        if "\n" in self.pending and wait <= 0:
            self._cancel()
            self._send(everything=False)
            if self.pending:
                self._later(IDLE)
            return
        self._later(max(wait, 0.0) if "\n" in self.pending else IDLE)

    def _later(self, delay: float) -> None:
        self._cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # fed outside a loop (tests): send at once
            self._send(everything=True)
            return
        self.timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        # Whole lines when there are some; an unfinished line only after IDLE of quiet.
        everything = "\n" not in self.pending
        self._send(everything=everything)
        if self.pending:
            self._later(IDLE)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _send(self, *, everything: bool) -> None:
        if everything:
            text, self.pending = self.pending, ""
        else:
            cut = self.pending.rfind("\n") + 1
            text, self.pending = self.pending[:cut], self.pending[cut:]
        for start in range(0, len(text), CHUNK):
            self.emit(text[start : start + CHUNK])
        if text:
            self.last_sent = time.monotonic()
