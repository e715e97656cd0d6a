"""How a runner writes its runs down, besides what their steps produce: each event (a
line of the run's log.jsonl, then the runner's listener), with the run's secrets redacted,
and the end of a run cancelled or crashed before it could record one.

Apart from runner.py, which holds the run's life (the order of its steps), because every
step records through these: the recording is one job, the steps another.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from daycare_cli.config import Config
from daycare_cli.core.task import Task
from daycare_cli.run.rundir import RunContext
from daycare_cli.store import writes
from daycare_cli.store.database import describe
from daycare_cli.store.rows import Run
from daycare_cli.store.writing import StateWriter

# The runner's logger: a crash is logged as the runner's, wherever it is recorded.
log = logging.getLogger("daycare.runner")

# log.jsonl is written out after these (and when the run ends): what a block or the model
# did is on disk before the next step; one write, not one a line, for a run without blocks.
FLUSH_AFTER = frozenset({"block.end", "model.end"})
EventSink = Callable[[dict[str, Any]], None]
# The message a stopping daemon cancels its runs with: they end `interrupted`, with it.
STOPPED = "daemon stopped before the run finished"


@dataclass
class Recorder:
    """Records the runs of one runner: through its `writer`, as its `actor`; the secrets
    of `config` are never recorded, and each event goes to `on_event` too."""

    writer: StateWriter
    config: Config
    actor: str
    on_event: EventSink | None = None

    @staticmethod
    def crashed(task: Task, run_id: str, exc: Exception) -> str:
        """Log a failure of daycare itself (not of a block or the model); its error text.

        An expected fault (a full disk, no file descriptors left) is one line; anything
        else, a bug, gets its traceback.
        """
        if isinstance(exc, OSError):
            log.error("run %s of %s failed: %s", run_id, task.id, describe(exc))
        else:
            log.error("run %s of %s crashed", run_id, task.id, exc_info=exc)
        return f"internal error: {type(exc).__name__}: {describe(exc)}"

    async def settle_crash(self, task: Task, run_id: str, exc: Exception) -> Run:
        """End a run whose bookkeeping failed before it could record an outcome."""
        error = self.crashed(task, run_id, exc)
        return await self.writer.commit(
            writes.finish_run(
                run_id,
                status="failed",
                error=error,
                only_active=True,
                event=(self.actor, "run.finished", {"status": "failed", "error": error}),
            )
        )

    def record_cancelled(
        self,
        run_id: str,
        error: str,
        ctx: RunContext | None = None,
        exc: asyncio.CancelledError | None = None,
    ) -> None:
        """Record a cancelled run; never raises or waits, so the cancellation itself goes on.

        A run cancelled by a stopping daemon (`Task.cancel(STOPPED)`) is `interrupted`.
        `run.end` is emitted once the row says so (a follower that reads the row on that
        event finds the end there), or at once when it cannot be recorded.
        """
        status = "cancelled"
        if exc is not None and exc.args == (STOPPED,):
            status, error = "interrupted", STOPPED
        try:
            done = self.writer.submit(
                writes.finish_run(run_id, status=status, error=error, now=datetime.now(UTC))
            )
        except Exception:
            log.exception("could not record run %s as %s", run_id, status)
            if ctx is not None:
                self.emit(ctx, "run.end", status=status)
            return

        def recorded(fut: asyncio.Future[Run]) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                log.error("could not record run %s as %s: %s", run_id, status, fut.exception())
            if ctx is not None:
                self.emit(ctx, "run.end", status=status)

        done.add_done_callback(recorded)

    def secrets(self, ctx: RunContext) -> list[str]:
        """Values never recorded: config secrets and those the task's env took from them."""
        return ctx.secrets + [str(v) for v in self.config.secrets.values()]

    def redact(self, text: str, ctx: RunContext) -> str:
        """`text` without the run's secrets, as it may be recorded."""
        from daycare_cli.run.notify import redact

        return redact(text, self.secrets(ctx))

    def emit(self, ctx: RunContext, event: str, **fields: Any) -> None:
        """Record an event of the run: a line of its log.jsonl, then the listener."""
        from daycare_cli.run.notify import redact_values

        record = {
            "at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "event": event,
            "run": ctx.run_id,
            **redact_values(fields, self.secrets(ctx)),
        }
        ctx.log_line(
            json.dumps(record, ensure_ascii=False, default=str), flush=event in FLUSH_AFTER
        )
        if self.on_event is not None:
            try:
                self.on_event(record)
            except Exception:  # a broken listener must not break the run
                log.exception("event listener failed")
