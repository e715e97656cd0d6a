"""`daycare task run --file TASK.md`: the one-shot mode, printing the run as JSON lines.

Each event of the run is one JSON object a line on stdout (a cluster's or journald's log
is then the run log), the last one `{"event": "run.result", "result": RUN, "artifacts":
DIR}` with RUN in the shape of `task run --json`. The exit code follows the run's status
(`run/oneshot.py`: 0 succeeded or skipped, 1 otherwise; 3 no such file, 4 invalid file).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from daycare_cli.cli.context import CliContext


def print_line(record: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed at once so that a log collector sees it live."""
    sys.stdout.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def run_oneshot(
    cli: CliContext,
    task_id: str | None,
    file: Path | None,
    artifacts: Path | None,
    payload: bytes | None,
) -> int:
    """Run one task file with no daemon or home; returns the exit code of its status."""
    from daycare_cli.core.errors import UsageError
    from daycare_cli.run.oneshot import run_file

    if file is None:
        raise UsageError("--artifacts goes with --file", hint="daycare task run --file T.md ...")
    if task_id is not None:
        raise UsageError(
            "give a task ID or --file, not both",
            hint=f"daycare task run --file {file}",
        )
    result = asyncio.run(
        run_file(
            file.absolute(),
            artifacts=artifacts.absolute() if artifacts else None,
            config=cli.config,
            on_event=print_line,
            payload=payload,
        )
    )
    print_line(
        {
            "event": "run.result",
            "result": result.run,
            "artifacts": str(result.artifacts) if result.artifacts else None,
        }
    )
    return result.exit_code
