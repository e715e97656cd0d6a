"""Event-loop lag: how late a periodic timer fires, a figure the daemon is held to
(bench/README.md, "The figures").

A timer wakes late by as long as the loop was busy with something else (a blocking
call, a long stretch of work between two awaits). The supervisor's periodic timer (once
a second) adds how late it woke; the last `KEEP` samples (20 minutes) give the p50 and
p99 shown by `daemon status --json` as `loop_lag_ms`; the control API's
`GET /status?lag_window=S` gives them over the last S seconds only (what a benchmark
reads after a phase of load).
"""

from __future__ import annotations

import math
import time
from collections import deque

KEEP = 1200


class LoopLag:
    """Samples of the event loop's lateness: (when, seconds late), monotonic time."""

    def __init__(self, keep: int = KEEP) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=keep)

    def add(self, when: float, late: float) -> None:
        """One sample: a timer due at `when - late` ran at `when`."""
        self.samples.append((when, late))

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
