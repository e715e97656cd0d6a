"""Publish/subscribe of run events inside the daemon.

The scheduler publishes; the control API's streaming handlers subscribe. A subscriber
is a bounded queue: a slow client loses events rather than holding the daemon's memory.
`close()` ends every stream, so a shutdown never waits on a follower that is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

Record = dict[str, Any]

# Put into a subscriber's queue when the bus closes: the stream ends there.
_END: Record = {"event": "stream.end"}


class Subscription:
    """One subscriber's queue; iterate it to receive records until the bus closes."""

    def __init__(self, bus: EventBus, run_id: str | None, maxsize: int) -> None:
        self.bus = bus
        self.run_id = run_id
        self.queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=maxsize)

    async def get(self, timeout: float | None = None) -> Record | None:
        """The next record; None when the bus closed. Raises TimeoutError after `timeout`."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        async with asyncio.timeout(timeout):
            record = await self.queue.get()
        return None if record is _END else record

    async def __aiter__(self) -> AsyncIterator[Record]:
        while (record := await self.get()) is not None:
            yield record

    def close(self) -> None:
        """Stop receiving records."""
        self.bus.unsubscribe(self)


class EventBus:
    """Fan records out to the subscribers of one run or of every run."""

    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self.closed = False
        self._by_run: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()

    def subscribe(self, run_id: str | None = None) -> Subscription:
        """Receive the records of one run (or all runs when `run_id` is None)."""
        sub = Subscription(self, run_id, self.maxsize)
        if self.closed:
            sub.queue.put_nowait(_END)
        elif run_id is None:
            self._all.add(sub)
        else:
            self._by_run.setdefault(run_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscriber (idempotent)."""
        if sub.run_id is None:
            self._all.discard(sub)
            return
        subs = self._by_run.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_run[sub.run_id]

    def publish(self, record: Record) -> None:
        """Deliver a record to the subscribers of its run and of every run; never blocks."""
        for sub in [*self._by_run.get(str(record.get("run")), ()), *self._all]:
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(record)

    def close(self) -> None:
        """End every stream: each subscriber gets end-of-stream after what it has queued."""
        self.closed = True
        subs = [*self._all, *(s for group in self._by_run.values() for s in group)]
        for sub in subs:
            # A full queue still has to end: drop its oldest record to make room.
            if sub.queue.full():
                sub.queue.get_nowait()
            sub.queue.put_nowait(_END)
        self._all.clear()
        self._by_run.clear()
