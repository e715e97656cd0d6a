"""Whatever `task lint` accepts, the daemon starts with: durations and `at` times at the
largest values the reader allows are planned without an overflow."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_scheduler_loop import make_home, run_loop

from daycare_cli.core.taskfile import parse_task

AT_THE_BOUNDS = {
    "jitter": "---\nschedule: '* * * * *'\njitter: 366d\n---\nhi\n",
    "interval": "---\ntriggers:\n  - every: 366d\ncatch_up_window: 366d\n---\nhi\n",
    "window": "---\nschedule: '0 0 1 1 *'\ncatch_up: all\ncatch_up_window: 366 days\n---\nhi\n",
    "timeouts": "---\nschedule: '0 0 1 1 *'\ntimeout: 366d\nrun_timeout: 52w 2d\n"
    "retries: 3\nretry_delay: 366d\n---\nhi\n",
    "late-east": "---\ntimezone: Pacific/Kiritimati\ntriggers:\n"
    "  - at: '8999-12-31T23:59:59'\ncatch_up_window: 366d\njitter: 366d\n---\nhi\n",
    "late-west": "---\ntimezone: Pacific/Niue\ntriggers:\n"
    "  - at: '8999-12-31T23:59:59'\nretries: 100\nretry_delay: 366d\n---\nhi\n",
    "early": "---\ntriggers:\n  - at: '1970-01-01T00:00:00+14:00'\n---\nhi\n",
}


def test_the_daemon_plans_tasks_at_the_bounds(tmp_path: Path) -> None:
    for task_id, text in AT_THE_BOUNDS.items():
        parse_task(text, path=f"{task_id}.md")  # the reader (and so `task lint`) accepts it
    paths = make_home(tmp_path, AT_THE_BOUNDS)
    state = asyncio.run(run_loop(paths, 0.5))
    events = state.list_events(limit=None)
    problems = [(e.kind, e.data) for e in events if "error" in e.kind or "invalid" in e.kind]
    assert problems == []
    # The one-off task in 1970 is past: recorded missed and archived, not a crash.
    assert [r.status for r in state.list_runs(task="early")] == ["missed"]
