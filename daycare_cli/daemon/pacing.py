"""The pacing of webhook runs: while a burst of requests arrives, the runs the global
cap lets through start at most BURST_RATE a second, so the daemon answers the burst first
and its runs drain mostly after it (docs/operations.md, "Webhooks").

Apart from the scheduler's loop and dispatch: it holds its own state (the runs waiting to
be launched, when the burst began, the next launch) and its own timer, and only decides
when a run the gate let through is launched.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from daycare_cli.daemon.clock import Clock

# While webhook requests arrive (one within BURST_QUIET s), their runs start at most
# BURST_RATE a second: the loop answers the burst first, the queue drains after it. A
# run's bookkeeping costs ~2 ms of CPU (bench_webhooks): at 200 a second the drain took
# half of what a 2-CPU machine had while answering 2,000 requests a second, and at 50 the
# answers' p99 was still 16.5-19 ms against 14 ms at 10 (three runs each). Only for the
# first BURST_WINDOW s of a burst: a steady stream faster than BURST_RATE would otherwise
# fill the queue (and get 429s) however fast the runs could drain.
BURST_QUIET = 0.05
BURST_RATE = 10.0
BURST_WINDOW = 10.0


class Pacer:
    """Launches the webhook runs the gate let through (`launch(run_id)`), paced while a
    burst of requests arrives; none once `stopping()` says the daemon stops."""

    def __init__(
        self, clock: Clock, launch: Callable[[str], None], stopping: Callable[[], bool]
    ) -> None:
        self.clock = clock
        self._launch = launch
        self._stopping = stopping
        self.paced: collections.deque[str] = collections.deque()
        self.webhook_seen = -BURST_QUIET  # monotonic time of the last webhook request
        self.burst_since = 0.0  # monotonic time the current burst of requests began
        self.next_paced = 0.0
        self._pace_timer: asyncio.TimerHandle | None = None

    def request_seen(self) -> None:
        """A webhook request arrived: the first after a quiet spell begins a burst."""
        now = self.clock.monotonic()
        if now - self.webhook_seen >= BURST_QUIET:
            self.burst_since = now
        self.webhook_seen = now

    def launch(self, run_id: str) -> None:
        """Launch a webhook run the gate let through: at once, or in its turn."""
        self.paced.append(run_id)
        self._launch_paced()

    def _launch_paced(self) -> None:
        """Launch the paced webhook runs: at once when no burst is arriving, else one each
        1/BURST_RATE s for the burst's first BURST_WINDOW s, so answering a burst of
        webhooks keeps most of the loop and its runs drain mostly after it (within the
        global cap either way)."""
        self._pace_timer = None
        while self.paced and not self._stopping():
            now = self.clock.monotonic()
            bursting = now - self.webhook_seen < BURST_QUIET
            if bursting and now - self.burst_since < BURST_WINDOW and now < self.next_paced:
                delay = self.next_paced - now
                self._pace_timer = asyncio.get_running_loop().call_later(delay, self._launch_paced)
                return
            self.next_paced = now + 1 / BURST_RATE
            self._launch(self.paced.popleft())
