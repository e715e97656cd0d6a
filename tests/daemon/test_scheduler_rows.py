"""The scheduler in-process: a catch-up's rows exist before its runs do, and queued runs a
dead daemon left are run once or settled with a reason."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daycare_cli.config import load_config
from daycare_cli.daemon.plan import Fire
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State


def make_home(tmp_path: Path, tasks: dict[str, str]) -> Paths:
    (tmp_path / "tasks").mkdir()
    for task_id, text in tasks.items():
        (tmp_path / "tasks" / f"{task_id}.md").write_text(text)
    (tmp_path / "config.toml").write_text("")
    return Paths.resolve(home=tmp_path)


def test_a_catch_up_writes_every_slot_and_the_last_slot_before_any_runs(tmp_path: Path) -> None:
    text = "---\ntriggers:\n  - every: 60s\ncatch_up: all\ncatch_up_window: 1h\n---\nhi\n"
    paths = make_home(tmp_path, {"tick": text})

    async def main() -> tuple[list[tuple[str, str]], datetime | None, list[Fire]]:
        state = State.open(paths.state_db)
        scheduler = Scheduler(paths, load_config(paths.config_file), state)
        scheduler.plan.load_all(starting=True)
        sched = scheduler.plan.tasks["tick"]
        slot = datetime.now(UTC) - timedelta(minutes=5, seconds=30)
        scheduler.handle(
            Fire(slot.timestamp(), 0, "tick", "every", slot, "schedule", 1, sched.generation)
        )
        # Nothing has run yet: a kill now would leave six queued rows for the next start.
        rows = [(r.trigger, r.status) for r in state.list_runs(limit=None)]
        last = state.get_trigger_state("tick", "every").last_slot
        fires = [f for f in scheduler.plan.heap if f.kind == "catch-up"]
        return rows, last, fires

    rows, last, fires = asyncio.run(main())
    assert rows == [("catch-up", "queued")] * 6
    assert last is not None and last > datetime.now(UTC) - timedelta(minutes=1)
    assert len(fires) == 6 and all(f.run_id for f in fires)


def test_queued_runs_of_a_dead_daemon_run_once_or_end_with_a_reason(tmp_path: Path) -> None:
    hook = "---\ntriggers:\n  - webhook: true\nexecute: true\nmodel: none\n---\n"
    hook += "<run_python>\nprint('n=%d' % payload['n'])\n</run_python>\n"
    paths = make_home(tmp_path, {"hook": hook})

    async def main() -> State:
        state = State.open(paths.state_db)
        body = json.dumps({"n": 7}).encode()
        kept = state.create_run("hook", "webhook", "webhook", payload=body, pid=999_999)
        gone = state.create_run("removed", "webhook", "webhook", payload=b"{}", pid=999_999)
        assert kept and gone
        _, adopted = state.settle_stale(lambda pid: False, adopt=lambda run: True)
        scheduler = Scheduler(paths, load_config(paths.config_file), state)
        scheduler.plan.load_all(starting=True)
        scheduler.adopt(adopted)
        await asyncio.gather(*scheduler.runs.values())
        return state

    state = asyncio.run(main())
    runs = {r.task: r for r in state.list_runs(limit=None)}
    assert runs["hook"].status == "succeeded" and "n=7" in (runs["hook"].output or "")
    assert runs["removed"].status == "cancelled"
    assert "removed or disabled" in (runs["removed"].error or "")
