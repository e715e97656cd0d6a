"""The scheduler loop in-process: one wake-up per burst, no false clock jumps.

The loop runs on a `VirtualClock`: its sleeps take no real time, a suspend is wall time
moving without monotonic time, and every run of a test sees the same instants.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daycare_cli.config import load_config
from daycare_cli.daemon.clock import VirtualClock
from daycare_cli.daemon.planned import Fire
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State


def make_home(tmp_path: Path, tasks: dict[str, str], config: str = "") -> Paths:
    (tmp_path / "tasks").mkdir()
    for task_id, text in tasks.items():
        (tmp_path / "tasks" / f"{task_id}.md").write_text(text)
    (tmp_path / "config.toml").write_text(config)
    return Paths.resolve(home=tmp_path)


async def run_loop(paths: Paths, seconds: float, clock: VirtualClock | None = None) -> State:
    """Run the loop for `seconds` of virtual time, then stop it and let its runs end."""
    clock = clock or VirtualClock()
    state = State.open(paths.state_db)
    scheduler = Scheduler(paths, load_config(paths.config_file), state, clock=clock)
    scheduler.plan.load_all(starting=True)
    loop_task = asyncio.get_running_loop().create_task(scheduler.run_forever())
    await clock.sleep(seconds)
    scheduler.stopping = True
    scheduler.wake.set()
    await loop_task
    await asyncio.gather(*scheduler.runs.values(), return_exceptions=True)
    return state


def test_a_long_sleep_between_fires_is_not_a_clock_jump(tmp_path: Path) -> None:
    # The loop sleeps ~6 s: more than the jump tolerance (5 s) of monotonic vs wall time.
    paths = make_home(tmp_path, {"slow": "---\ntriggers:\n  - every: 6s\n---\nhi\n"})
    state = asyncio.run(run_loop(paths, 6.5))
    assert [e.kind for e in state.list_events(limit=None) if e.kind == "clock.jump"] == []
    assert [r.status for r in state.list_runs(task="slow")] == ["succeeded"]


def test_a_suspend_is_a_clock_jump_and_its_slots_are_caught_up(tmp_path: Path) -> None:
    # Wall time moves 5 minutes while monotonic time stands still, as over a suspend; the
    # loop notices at its next wake-up (at most 30 s on) and catch-up (latest) runs once.
    text = "---\ntriggers:\n  - every: 60s\ncatch_up_window: 1h\n---\nhi\n"
    paths = make_home(tmp_path, {"tick": text})
    clock = VirtualClock()

    async def main() -> State:
        async def suspend() -> None:
            await clock.sleep(10)
            clock.jump(300)

        suspended = asyncio.get_running_loop().create_task(suspend())
        state = await run_loop(paths, 40, clock)
        await suspended
        return state

    state = asyncio.run(main())
    [jump] = [e for e in state.list_events(limit=None) if e.kind == "clock.jump"]
    assert jump.detail is not None and round(jump.detail["seconds"]) == 300
    rows = sorted(state.list_runs(limit=None), key=lambda r: r.slot.timestamp() if r.slot else 0)
    # Slots at 60 s .. 300 s passed during the suspend (the wake-up is at 330 s wall time).
    assert [(r.trigger, r.status) for r in rows] == [("schedule", "missed")] * 4 + [
        ("catch-up", "succeeded")
    ]


def test_intervals_of_one_daemon_start_fire_in_the_same_wake_up(tmp_path: Path) -> None:
    # `every` counts from the daemon's start: tasks loaded one after another share slots.
    # Each reading of the clock moves it on (tick), so loading takes time, as it does.
    tasks = {f"t{i}": "---\ntriggers:\n  - every: 1s\n---\nhi\n" for i in range(10)}
    paths = make_home(tmp_path, tasks, "max_concurrent_runs = 10\n")
    state = asyncio.run(run_loop(paths, 1.5, VirtualClock(tick=0.001)))
    slots = {r.slot for r in state.list_runs(limit=None)}
    assert len(state.list_runs(limit=None)) == 10
    assert len(slots) == 1


def late_fire_rows(tmp_path: Path, policy: str) -> list[tuple[str, str]]:
    """A task `every: 60s` whose fire comes due 5 minutes late, as after a suspend."""
    text = f"---\ntriggers:\n  - every: 60s\ncatch_up: {policy}\ncatch_up_window: 1h\n---\nhi\n"
    paths = make_home(tmp_path, {"tick": text})

    async def main() -> State:
        state = State.open(paths.state_db)
        scheduler = Scheduler(paths, load_config(paths.config_file), state)
        scheduler.plan.load_all(starting=True)
        sched = scheduler.plan.tasks["tick"]
        slot = datetime.now(UTC) - timedelta(minutes=5, seconds=30)
        # The loop slept through five slots: the first due one pops now.
        scheduler.handle(
            Fire(slot.timestamp(), 0, "tick", "every", slot, "schedule", 1, sched.generation)
        )
        while scheduler.plan.heap and scheduler.plan.heap[0].kind == "catch-up":
            import heapq

            fire = heapq.heappop(scheduler.plan.heap)
            scheduler.handle(fire)
        while scheduler.runs or any(s.queued for s in scheduler.plan.tasks.values()):
            await asyncio.gather(*scheduler.runs.values(), return_exceptions=True)
            await asyncio.sleep(0.01)
        return state

    state = asyncio.run(main())
    rows = sorted(state.list_runs(limit=None), key=lambda r: r.slot.timestamp() if r.slot else 0)
    return [(r.trigger, r.status) for r in rows]


def test_a_late_fire_after_a_suspend_follows_catch_up_latest(tmp_path: Path) -> None:
    rows = late_fire_rows(tmp_path, "latest")
    assert rows == [("schedule", "missed")] * 5 + [("catch-up", "succeeded")]


def test_a_late_fire_after_a_suspend_follows_catch_up_all(tmp_path: Path) -> None:
    rows = late_fire_rows(tmp_path, "all")
    assert rows == [("catch-up", "succeeded")] * 6


def test_a_late_fire_after_a_suspend_follows_catch_up_skip(tmp_path: Path) -> None:
    rows = late_fire_rows(tmp_path, "skip")
    assert rows == [("schedule", "missed")] * 6


def test_a_one_off_missed_beyond_its_window_is_recorded_and_archived(tmp_path: Path) -> None:
    when = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f'---\ntriggers:\n  - at: "{when}"\n---\nCall the dentist.\n'
    paths = make_home(tmp_path, {"dentist": text})
    state = asyncio.run(run_loop(paths, 0.2))
    assert [(r.status, r.trigger) for r in state.list_runs(limit=None)] == [("missed", "schedule")]
    assert not (paths.tasks_dir / "dentist.md").exists()
    assert (paths.archive_dir / "dentist.md").exists()
    [archived] = [e for e in state.list_events(limit=None) if e.kind == "task.archived"]
    assert archived.detail == {"path": str(paths.archive_dir / "dentist.md"), "reason": "missed"}


def test_slots_of_a_trigger_that_never_fired_are_missed_after_downtime(tmp_path: Path) -> None:
    """A daemon stopped before a new task's first slot still sees that slot at restart."""
    text = "---\nschedule: '* * * * *'\ncatch_up_window: 1h\n---\nhi\n"
    paths = make_home(tmp_path, {"minute": text})
    # 20 s past a minute: the 3.5 minutes of downtime below hold 4 minute boundaries.
    clock = VirtualClock(datetime.now(UTC).replace(second=20, microsecond=0))

    async def first_start() -> None:
        state = State.open(paths.state_db)
        config = load_config(paths.config_file)
        Scheduler(paths, config, state, clock=clock).plan.load_all(starting=True)
        planned = state.get_trigger_state("minute", "cron").last_slot
        assert planned == clock.now()
        # Pretend that start was 3.5 minutes ago and the daemon has been down since.
        state.set_trigger_state("minute", "cron", last_slot=planned - timedelta(minutes=3.5))
        state.close()

    asyncio.run(first_start())
    state = asyncio.run(run_loop(paths, 0.5, clock))
    rows = sorted(state.list_runs(limit=None), key=lambda r: r.slot.timestamp() if r.slot else 0)
    assert [r.status for r in rows] == ["missed"] * 3 + ["succeeded"]
    assert rows[-1].trigger == "catch-up"


def test_overlap_replace_cancels_the_old_run_and_its_task(tmp_path: Path) -> None:
    """The replaced run is recorded cancelled, and its asyncio task ends cancelled too."""
    block = (
        "import os, time\nopen('started', 'w').close()\n"
        "while not os.path.exists('stop'):\n    time.sleep(0.02)\n"
    )
    text = f"---\noverlap: replace\nexecute: true\n---\n<run_python>\n{block}</run_python>\n"
    paths = make_home(tmp_path, {"long": text})

    async def main() -> tuple[State, str, str, asyncio.Task[object]]:
        state = State.open(paths.state_db)
        scheduler = Scheduler(paths, load_config(paths.config_file), state)
        scheduler.plan.load_all(starting=True)
        first = scheduler.submit("long", kind="manual")
        assert first is not None
        old = scheduler.runs[first]
        files = paths.workspace("long") / "files"
        for _ in range(500):  # until the block's process runs
            if (files / "started").exists():
                break
            await asyncio.sleep(0.02)
        second = scheduler.submit("long", kind="manual")
        assert second is not None
        await asyncio.wait([old], timeout=10)
        (files / "stop").touch()
        await asyncio.wait_for(asyncio.gather(*scheduler.runs.values()), 30)
        return state, first, second, old

    state, first, second, old = asyncio.run(main())
    assert old.cancelled()
    first_run, second_run = state.get_run(first), state.get_run(second)
    assert first_run is not None and second_run is not None
    assert (first_run.status, first_run.error) == ("cancelled", "run cancelled")
    assert second_run.status == "succeeded"


def test_a_planned_retry_survives_a_replan_of_its_task(tmp_path: Path) -> None:
    # A failed run's retry waits in the loop's heap. Re-planning the task (a reload that
    # changes the default zone, an edit) must not drop it: the slot is still owed a retry.
    text = (
        "---\ntriggers:\n  - every: 1h\nmodel: no-such-model\nretries: 1\n"
        "retry_delay: 60s\n---\nhi\n"
    )
    paths = make_home(tmp_path, {"flaky": text})
    clock = VirtualClock()

    async def main() -> State:
        async def replan_after_the_failure() -> None:
            await clock.sleep(3600)
            while not scheduler.plan.heap or scheduler.plan.heap[0].kind != "retry":
                await clock.sleep(0.01)  # the run ends in real time, in small steps
            scheduler.replan_all()
            await clock.sleep(20)  # the retry is 45-75 s after the failure
            (paths.tasks_dir / "flaky.md").write_text(text.replace("hi", "hi again"))
            scheduler.plan.load_all(starting=False)

        state = State.open(paths.state_db)
        scheduler = Scheduler(paths, load_config(paths.config_file), state, clock=clock)
        scheduler.plan.load_all(starting=True)
        loop_task = asyncio.get_running_loop().create_task(scheduler.run_forever())
        replanning = asyncio.get_running_loop().create_task(replan_after_the_failure())
        await replanning
        await clock.sleep(120)
        scheduler.stopping = True
        scheduler.wake.set()
        await loop_task
        await asyncio.gather(*scheduler.runs.values(), return_exceptions=True)
        return state

    state = asyncio.run(main())
    rows = sorted(state.list_runs(task="flaky", limit=None), key=lambda r: r.attempt)
    assert [(r.trigger, r.attempt, r.status) for r in rows] == [
        ("schedule", 1, "failed"),
        ("retry", 2, "failed"),
    ]
    assert rows[0].slot == rows[1].slot
