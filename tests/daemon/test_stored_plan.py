"""The stored plan (store/plancache.py): a restart takes each trigger's next slot from the
last start only when it was computed from the same file, zone data and last slot.

To see whether the stored slot is used at all, the tests plant a wrong one (a slot the
schedule never gives) under the right key: a restart that uses it shows it, and a
restart whose key changed must not.
"""

from __future__ import annotations

import asyncio
import marshal
import sqlite3
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daycare_cli.config import load_config
from daycare_cli.core.schedule import upcoming
from daycare_cli.daemon.clock import VirtualClock
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.store.paths import Paths
from daycare_cli.store.plancache import PlanCache, micros
from daycare_cli.store.state import State

START = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)
DAILY = '---\nschedule: "30 9 * * *"\ntimezone: Europe/Berlin\n---\nx\n'
POLL = "---\ntriggers:\n  - every: 5h\n---\nx\n"
WRONG = datetime(2031, 1, 1, 0, 7, tzinfo=UTC)  # never a slot of either task


def home(tmp_path: Path) -> Paths:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "daily.md").write_text(DAILY)
    (tmp_path / "tasks" / "poll.md").write_text(POLL)
    (tmp_path / "config.toml").write_text("")
    return Paths.resolve(home=tmp_path)


def start(paths: Paths, now: datetime) -> tuple[dict[str, datetime], dict[str, datetime], int]:
    """A daemon start at `now`: each task's next fire, what upcoming() says from state.db,
    and how many stored slots were used."""

    async def main() -> tuple[dict[str, datetime], dict[str, datetime], int]:
        with State.open(paths.state_db) as state:
            scheduler = Scheduler(
                paths, load_config(paths.config_file), state, clock=VirtualClock(now)
            )
            plan = scheduler.plan
            used: list[int] = []
            save = PlanCache.save

            def counting_save(cache: PlanCache) -> None:
                used.append(cache.used)
                save(cache)

            PlanCache.save = counting_save  # type: ignore[method-assign]
            try:
                plan.load_all(starting=True)
            finally:
                PlanCache.save = save  # type: ignore[method-assign]
            await asyncio.sleep(0)
            nexts, expected = {}, {}
            for task_id, sched in plan.tasks.items():
                (trigger,) = sched.task.triggers
                last = state.get_trigger_state(task_id, trigger.id).last_slot
                tz = plan.zone(sched.task, trigger)
                expected[task_id] = upcoming(trigger, now=now, last_slot=last, tz=tz)[0].at
                nexts[task_id] = sched.next_fire[trigger.id]
            return nexts, expected, used[0]

    return asyncio.run(main())


def plant(paths: Paths, slot: datetime, **change: object) -> None:
    """Put `slot` as every stored next slot (and `change` into the stored columns)."""
    path = PlanCache(paths.home, paths.tasks_dir).path
    header, stamps, names, digests, trigger_ids, zones, columns = marshal.loads(path.read_bytes())
    n = len(digests) // 32
    columns[4] = array("q", [micros(slot)] * n).tobytes()
    if "last" in change:
        columns[3] = array("q", [micros(change["last"])] * n).tobytes()  # type: ignore[arg-type]
    if "stamps" in change:
        stamps = change["stamps"]
    path.write_bytes(marshal.dumps((header, stamps, names, digests, trigger_ids, zones, columns)))


def test_a_restart_takes_the_stored_slot_when_nothing_changed(tmp_path: Path) -> None:
    paths = home(tmp_path)
    first, expected, used = start(paths, START)
    assert first == expected and used == 0  # nothing stored yet
    # A restart an hour later, nothing changed: the stored slots are used, and are right.
    nexts, expected, used = start(paths, START + timedelta(hours=1))
    assert nexts == expected == first and used == 2
    # The proof that they are used: a planted wrong slot under the same key is taken.
    plant(paths, WRONG)
    nexts, _, used = start(paths, START + timedelta(hours=1))
    assert nexts == {"daily": WRONG, "poll": WRONG} and used == 2


def test_a_file_changed_while_down_is_planned_afresh(tmp_path: Path) -> None:
    paths = home(tmp_path)
    start(paths, START)
    plant(paths, WRONG)
    (paths.tasks_dir / "daily.md").write_text(DAILY.replace("30 9", "45 9"))
    nexts, expected, used = start(paths, START + timedelta(hours=1))
    assert nexts["daily"] == expected["daily"] == datetime(2026, 3, 10, 8, 45, tzinfo=UTC)
    assert nexts["poll"] == WRONG and used == 1  # the unchanged file still takes its own


def test_a_stored_slot_the_clock_has_passed_means_missed_slots(tmp_path: Path) -> None:
    paths = home(tmp_path)
    start(paths, START)
    # Stored: the next slots as of the first start (08:30 UTC daily, 11:00 poll). Two days
    # later both have passed: catch-up runs, and the next fires are after now.
    later = START + timedelta(days=2)
    nexts, expected, _ = start(paths, later)
    assert nexts == expected
    assert all(slot > later for slot in nexts.values())
    with sqlite3.connect(paths.state_db) as db:
        queued = sorted(r[0] for r in db.execute("SELECT task FROM runs WHERE status='queued'"))
    assert queued == ["daily", "poll"]  # catch_up: latest, one run each


def test_a_moved_last_slot_is_planned_afresh(tmp_path: Path) -> None:
    paths = home(tmp_path)
    start(paths, START)
    # The stored rows say they were computed from another last slot (a fire since).
    plant(paths, WRONG, last=START - timedelta(days=3))
    nexts, expected, used = start(paths, START + timedelta(hours=1))
    assert nexts == expected and used == 0
    assert WRONG not in nexts.values()


def test_changed_zone_data_is_planned_afresh(tmp_path: Path) -> None:
    paths = home(tmp_path)
    start(paths, START)
    # The zone files the slots were computed with are not the ones on disk now (a tzdata
    # update): every row of those zones is computed again.
    cache = PlanCache(paths.home, paths.tasks_dir)
    _, _, _, _, _, zones, _ = marshal.loads(cache.path.read_bytes())
    plant(paths, WRONG, stamps=[("/old/zoneinfo/" + z, 1, 1) for z in zones])
    nexts, expected, used = start(paths, START + timedelta(hours=1))
    assert nexts == expected and used == 0


def test_a_corrupt_or_foreign_stored_plan_is_ignored(tmp_path: Path) -> None:
    paths = home(tmp_path)
    first, _, _ = start(paths, START)
    path = PlanCache(paths.home, paths.tasks_dir).path
    for junk in (
        b"",
        b"\x00garbage",
        marshal.dumps(({"format": "other"}, [], b"", b"", [], [], [])),
    ):
        path.write_bytes(junk)
        nexts, expected, used = start(paths, START + timedelta(hours=1))
        assert nexts == expected == first and used == 0
