"""Event-loop lag: how late a periodic timer fires, a figure the daemon is held to
(bench/README.md, "The figures").

A timer wakes late by as long as the loop was busy with something else (a blocking
call, a long stretch of work between two awaits). The supervisor's periodic timer (once
a second) adds how late it woke. Once a second is too coarse to see the lag of a busy
second (a 5 s webhook burst would give five samples), so while the daemon is busy (it
used more than `BUSY_CPU` of a CPU over the last second) a second timer samples every
`CLOSE_INTERVAL` for the next second; an idle daemon still wakes once a second only.

The last `KEEP` samples (20 minutes when idle, at least `KEEP` / 20 s of busy time) give
the p50 and p99 shown by `daemon status --json` as `loop_lag_ms`; the control API's
`GET /status?lag_window=S` gives them over the last S seconds only (what a benchmark
reads after a phase of load).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

KEEP = 4000
BUSY_CPU = 0.05  # share of one CPU over the last second above which the daemon is busy
CLOSE_INTERVAL = 0.05  # seconds between samples while busy


class LoopLag:
    """Samples of the event loop's lateness: (when, seconds late), monotonic time."""

    def __init__(self, keep: int = KEEP) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=keep)
        self._close: asyncio.TimerHandle | None = None
        self._close_until = 0.0
        self._cpu = (time.monotonic(), time.process_time())

    def add(self, when: float, late: float) -> None:
        """One sample: a timer due at `when - late` ran at `when`."""
        self.samples.append((when, late))

    def busy(self) -> bool:
        """Whether the process used more than `BUSY_CPU` of a CPU since the last call."""
        wall, cpu = time.monotonic(), time.process_time()
        last_wall, last_cpu = self._cpu
        self._cpu = (wall, cpu)
        return cpu - last_cpu > BUSY_CPU * max(wall - last_wall, 1e-3)

    def sample_closely(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        """Sample every `CLOSE_INTERVAL` for the next `seconds` (extends a running span)."""
        self._close_until = loop.time() + seconds
        if self._close is None:
            self._close = loop.call_at(loop.time() + CLOSE_INTERVAL, self._close_sample)

    def stop(self) -> None:
        """Stop close sampling (the daemon is stopping)."""
        if self._close is not None:
            self._close.cancel()
            self._close = None

    def _close_sample(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        assert self._close is not None
        self.add(now, max(0.0, now - self._close.when()))
        if now >= self._close_until:
            self._close = None
            return
        self._close = loop.call_at(now + CLOSE_INTERVAL, self._close_sample)

    def summary(self, window: float | None = None) -> dict[str, float | int]:
        """p50, p99 and max in milliseconds over the kept samples (those of the last
        `window` seconds), and how many there are."""
        since = time.monotonic() - window if window is not None else float("-inf")
        values = sorted(lag for when, lag in self.samples if when >= since)
        if not values:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0, "samples": 0}

        def pct(p: float) -> float:
            k = min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))  # nearest rank
            return round(values[k] * 1000, 2)

        return {
            "p50": pct(50),
            "p99": pct(99),
            "max": round(values[-1] * 1000, 2),
            "samples": len(values),
        }
