"""How state is written: the interface every writer of state.db has (`StateWriter`), and
`InlineWriter`, which commits each transaction at once in the caller's thread.

The CLI's runner, and the scheduler in virtual-time tests, use `InlineWriter`; the daemon
uses its writer thread (`writer.py`, `ThreadWriter`), which has the same interface. Apart
from that thread so that what writes state (the runner, the scheduler, the plan) depends
on the interface, not on the thread's machinery.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Protocol, TypeVar

from daycare_cli.store.state import State
from daycare_cli.store.writes import Transaction

T = TypeVar("T")


class StateWriter(Protocol):
    """How the daemon writes state: submit a transaction and await it, or post it."""

    @property
    def healthy(self) -> bool:
        """False while writes fail (and after the writer gave up)."""
        ...

    @property
    def last_error(self) -> str | None:
        """Why the last attempt failed, while writes fail; else None."""
        ...

    retry_limit: float  # seconds of failing writes before the writer gives up

    @property
    def pending(self) -> int:
        """Transactions queued and not yet committed."""
        ...

    def health(self) -> dict[str, Any]:
        """`{"healthy": bool, "error": str | None}`: the `state` part of the daemon's status."""
        ...

    def submit(self, transaction: Transaction[T]) -> asyncio.Future[T]:
        """Queue a transaction; the future has its result once it is committed."""
        ...

    def post(self, transaction: Transaction[Any], what: str, *, wake_later: bool = False) -> None:
        """Queue a transaction nobody waits for; a failure is logged, naming `what`.

        `wake_later`: wake a writer thread only once the loop turns (its place in the
        queue is taken now), so the caller's next steps keep the GIL."""
        ...

    async def commit(self, transaction: Transaction[T]) -> T:
        """Queue a transaction and wait until it is committed; its result."""
        ...

    def submit_now(self, transaction: Transaction[T]) -> asyncio.Future[T]:
        """Commit a transaction in the caller's thread if that can be done without waiting,
        else queue it (`submit`); the future has its result either way."""
        ...


class InlineWriter:
    """Commits each transaction at once through a `State`, in the caller's thread.

    For a short-lived process (the CLI) and for the scheduler in virtual-time tests,
    where waiting on the disk is fine and a failure should surface at once.
    """

    def __init__(self, state: State) -> None:
        self.state = state

    healthy = True  # a failure raises at once instead
    last_error: str | None = None
    failing_since: datetime | None = None
    fatal: str | None = None
    retry_limit = 0.0
    pending = 0

    def health(self) -> dict[str, Any]:
        return {"healthy": True, "error": None}

    def submit(self, transaction: Transaction[T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self.state._write(transaction))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def post(self, transaction: Transaction[Any], what: str, *, wake_later: bool = False) -> None:
        self.state._write(transaction)

    async def commit(self, transaction: Transaction[T]) -> T:
        return self.state._write(transaction)

    submit_now = submit
