"""The scheduler's clock: wall time, monotonic time, and waiting for a wake-up or a deadline.

The scheduler reads time only through a `Clock` (STYLE.md: a clock is an argument of the
daemon too). The daemon uses `SystemClock`; tests use `VirtualClock`, whose time moves
only when every party waiting on it has had its turn, so a loop that sleeps for minutes
runs in milliseconds and always the same way. A suspend or a clock step is a move of
wall time alone (`VirtualClock.jump`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol

EARLY_WAKE = 0.002  # wake this much before a deadline and sleep the rest precisely


class Clock(Protocol):
    """What the scheduler needs to know about time."""

    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds of a clock that never jumps (and does not count a suspend)."""
        ...

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until `event` is set (True) or `timeout` seconds have passed (False)."""
        ...


class SystemClock:
    """The machine's clocks; `wait` returns no earlier than its timeout, to the microsecond."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(max(0.0, timeout - EARLY_WAKE)):
                await event.wait()
            return True
        except TimeoutError:
            pass
        # The event loop's timer rounds up to whole milliseconds; the last stretch (at most
        # EARLY_WAKE, once per wake-up) is a precise sleep instead, so fires start on time.
        rest = deadline - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        return False


class VirtualClock:
    """Virtual time for tests: it moves only once its waiters have let everything else run.

    A party waits (`wait`, `sleep`) with a deadline; once all of them have let the event
    loop run `settle` times without any waking, time jumps to the earliest deadline. Each
    reading moves time on by `tick` seconds, as real code takes time to run.
    """

    def __init__(
        self, start: datetime | None = None, *, tick: float = 0.0, settle: int = 50
    ) -> None:
        self.wall = (start or datetime.now(UTC)).timestamp()
        self.mono = 0.0
        self.tick = tick
        self.settle = settle
        self._deadlines: dict[int, float] = {}  # waiting party -> its monotonic deadline
        self._ids = itertools.count()

    def now(self) -> datetime:
        self._advance(self.tick)
        return datetime.fromtimestamp(self.wall, UTC)

    def monotonic(self) -> float:
        self._advance(self.tick)
        return self.mono

    def jump(self, seconds: float) -> None:
        """Move wall time alone, as a suspend/resume or a clock step does."""
        self.wall += seconds

    async def sleep(self, seconds: float) -> None:
        """Let `seconds` of virtual time pass (the test's side of the loop's waits)."""
        await self._until(self.mono + seconds, None)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        return await self._until(self.mono + timeout, event)

    def _advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    async def _until(self, deadline: float, event: asyncio.Event | None) -> bool:
        me = next(self._ids)
        self._deadlines[me] = deadline
        try:
            if event is not None and event.is_set():
                return True
            while True:
                for _ in range(self.settle):
                    await asyncio.sleep(0)
                    if event is not None and event.is_set():
                        return True
                    if self.mono >= deadline:
                        return False
                # Everyone had its turn and nothing woke: on to the earliest deadline.
                earliest = min(self._deadlines.values())
                if earliest > self.mono:
                    self._advance(earliest - self.mono)
        finally:
            del self._deadlines[me]
