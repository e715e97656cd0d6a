"""A restart plans from the stored state: with nothing missed, each trigger's next fire is
what `upcoming()` (the CLI's answer) gives; with a slot missed, catch-up still runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daycare_cli.config import load_config
from daycare_cli.core.schedule import upcoming
from daycare_cli.daemon.clock import VirtualClock
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State

TASKS = {
    # Around the end of summer time in Berlin (2026-10-25, 03:00 CEST -> 02:00 CET).
    "night": '---\nschedule: "30 2 * * *"\ntimezone: Europe/Berlin\n---\nx\n',
    "poll": "---\ntriggers:\n  - every: 5h\n---\nx\n",
    "both": (
        '---\ntriggers:\n  - cron: "15 */6 * * *"\n    timezone: Asia/Kolkata\n'
        "  - webhook: true\n---\nx\n"
    ),
}
START = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)


def plan_at(
    paths: Paths, now: datetime
) -> tuple[dict[str, dict[str, datetime]], dict[str, dict[str, datetime]], list[str]]:
    """Start a plan at `now`; each task's next fires, what upcoming() says, queued runs."""

    async def main() -> tuple[
        dict[str, dict[str, datetime]], dict[str, dict[str, datetime]], list[str]
    ]:
        with State.open(paths.state_db) as state:
            scheduler = Scheduler(
                paths, load_config(paths.config_file), state, clock=VirtualClock(now)
            )
            plan = scheduler.plan
            plan.load_all(starting=True)
            expected: dict[str, dict[str, datetime]] = {}
            for task_id, sched in plan.tasks.items():
                for trigger in sched.task.triggers:
                    if trigger.type == "webhook":
                        continue
                    last = state.get_trigger_state(task_id, trigger.id).last_slot
                    tz = plan.zone(sched.task, trigger)
                    fires = upcoming(trigger, now=now, last_slot=last, tz=tz)
                    expected.setdefault(task_id, {})[trigger.id] = fires[0].at
            nexts = {tid: dict(s.next_fire) for tid, s in plan.tasks.items()}
            queued = sorted(r.task for r in state.list_runs(limit=None) if r.status == "queued")
            return nexts, expected, queued

    return asyncio.run(main())


def test_a_restart_with_nothing_missed_plans_what_upcoming_gives(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    for task_id, text in TASKS.items():
        (tmp_path / "tasks" / f"{task_id}.md").write_text(text)
    (tmp_path / "config.toml").write_text("")
    paths = Paths.resolve(home=tmp_path)
    first, _, _ = plan_at(paths, START)
    # An hour later (the clock change in between): no slot came, so nothing is missed.
    nexts, expected, queued = plan_at(paths, START + timedelta(hours=1))
    assert nexts == expected == first
    assert queued == []
    assert nexts["poll"]["every"] == START + timedelta(hours=5)  # from the stored anchor
    # Four hours later: Berlin's 02:30 CEST (00:30 UTC) and Kolkata's 06:15 (00:45 UTC)
    # passed unrun and are caught up; the `every` slot has not come.
    nexts, expected, queued = plan_at(paths, START + timedelta(hours=4))
    assert queued == ["both", "night"]
    assert nexts["night"]["cron"] == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
    assert nexts["poll"] == expected["poll"] == {"every": START + timedelta(hours=5)}
