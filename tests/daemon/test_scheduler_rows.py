"""The scheduler in-process: a catch-up's rows exist before its runs do, and queued runs a
dead daemon left are run once or settled with a reason."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daycare_cli.config import load_config
from daycare_cli.daemon import pacing
from daycare_cli.daemon.pacing import BURST_RATE
from daycare_cli.daemon.planned import Fire
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


def webhook_starts(
    tmp_path: Path, cap: int, batches: int, size: int
) -> tuple[list[datetime], float]:
    """`batches` of `size` webhook requests 10 ms apart to a quick task; when each run
    started (all succeeded), and how long the requests kept coming."""
    hook = "---\ntriggers:\n  - webhook: true\noverlap: allow\nexecute: false\nmodel: none\n"
    paths = make_home(tmp_path, {"hook": hook + "---\nhi\n"})
    (tmp_path / "config.toml").write_text(f"max_concurrent_runs = {cap}\n")

    async def main() -> tuple[State, float]:
        state = State.open(paths.state_db)
        scheduler = Scheduler(paths, load_config(paths.config_file), state)
        scheduler.plan.load_all(starting=True)
        start = time.monotonic()
        for _ in range(batches):
            for _ in range(size):
                scheduler.enqueue("hook", kind="webhook", trigger_id="webhook", payload=b"{}")
            await asyncio.sleep(0.01)
        arriving = time.monotonic() - start
        while scheduler.runs or scheduler.pending:
            await asyncio.gather(*scheduler.runs.values())
            await asyncio.sleep(0.01)
        return state, arriving

    state, arriving = asyncio.run(main())
    runs = state.list_runs(limit=None)
    assert len(runs) == batches * size and {r.status for r in runs} == {"succeeded"}
    return sorted(r.started_at for r in runs if r.started_at), arriving


def test_webhook_runs_start_paced_while_a_burst_arrives(tmp_path: Path) -> None:
    # A burst: 40 requests over ~90 ms, room for all in the cap.
    starts, burst = webhook_starts(tmp_path, cap=40, batches=10, size=4)
    # While requests arrived, runs started at most BURST_RATE a second (plus the first).
    during = [s for s in starts if (s - starts[0]).total_seconds() < burst]
    assert len(during) <= burst * BURST_RATE + 2, (len(during), burst)
    assert len(during) < 40  # without pacing all 40 would have started at once


def test_a_stream_longer_than_the_burst_window_drains_at_full_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Requests every 10 ms for 0.6 s: a steady stream, not a burst. Paced for the first
    # BURST_WINDOW (0.1 s here) only; after it, runs start as fast as they come, so the
    # queue does not grow toward its bound however long the stream lasts.
    monkeypatch.setattr(pacing, "BURST_WINDOW", 0.1)
    monkeypatch.setattr(pacing, "BURST_RATE", 5.0)
    starts, stream = webhook_starts(tmp_path, cap=100, batches=60, size=1)
    during = [s for s in starts if (s - starts[0]).total_seconds() < stream]
    # Paced all along, at most 5 a second (+2) would have started during the stream.
    assert len(during) > stream * 5.0 + 10, (len(during), stream)
