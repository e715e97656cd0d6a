"""What the plan holds of each task, kept small for 10,000 tasks: its head
(`core/taskhead.py`: its settings to plan with, its own values in one bytes object) and,
until it runs, shared empty run containers. A run is still given the whole task, of the
version the plan holds, from a cold start, a restart off the parse cache and an edit
alike, and an edit hands the runs of the old version on to the new one."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daycare_cli.config import load_config
from daycare_cli.core.task import Task
from daycare_cli.core.taskfile import parse_task
from daycare_cli.core.taskhead import TaskHead
from daycare_cli.daemon.planned import NO_QUEUE, NO_RUNS, NextFires
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State
from daycare_cli.store.taskcache import TaskCache
from daycare_cli.store.tasks import read_entry

TEXT = (
    '---\nname: Morning {n}\ndescription: says hello\nschedule: "0 9 * * *"\n'
    "timezone: Europe/Berlin\nmodel: none\nenv:\n  GREETING: hi\n---\nBody of version {n}.\n"
)


def home(tmp_path: Path) -> Paths:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "hello.md").write_text(TEXT.format(n=1))
    (tmp_path / "config.toml").write_text("")
    return Paths.resolve(home=tmp_path)


def parsed(paths: Paths) -> Task:
    path = paths.tasks_dir / "hello.md"
    return parse_task(path.read_bytes(), path=str(path), task_id="hello")


def run_once(paths: Paths, *, edit: str | None = None) -> tuple[TaskHead, Task, str]:
    """Load the plan as a start does (optionally apply an edit as the watcher does), run
    the task once: the task the plan holds, the task the run was given, the run's status."""

    async def main() -> tuple[TaskHead, Task, str]:
        with State.open(paths.state_db) as state:
            scheduler = Scheduler(paths, load_config(paths.config_file), state)
            scheduler.plan.load_all(starting=True)
            scheduler.plan.store.save_cache(max_wait=0.0)  # as after the ready line
            if edit is not None:
                (paths.tasks_dir / "hello.md").write_text(edit)
                scheduler.plan.apply_entry(read_entry(paths.tasks_dir / "hello.md"))
            held = scheduler.plan.tasks["hello"].task
            req = scheduler.enqueue("hello", kind="manual")
            assert req is not None and req.run_id is not None
            await asyncio.wait_for(scheduler.runs[req.run_id], timeout=30)
            run = state.get_run(req.run_id)
            assert run is not None
            return held, req.task, run.status

    return asyncio.run(main())


def test_a_run_gets_the_whole_task_at_a_cold_start_and_off_the_parse_cache(
    tmp_path: Path,
) -> None:
    paths = home(tmp_path)
    held, given, status = run_once(paths)  # cold: parsed, no cache
    assert held == TaskHead.of(parsed(paths))
    assert given == parsed(paths) and given.body == "Body of version 1.\n"
    assert given.env == {"GREETING": "hi"} and status == "succeeded"
    # The cache is written now; a restart takes the task from it, packed as stored.
    cache = TaskCache(paths.home, paths.tasks_dir)
    assert cache.path.exists()
    held, given, status = run_once(paths)
    assert held == TaskHead.of(parsed(paths)) and given == parsed(paths) and status == "succeeded"
    cache.load()  # the cache holds the whole task, not a packed one
    entry = cache.entries["hello.md"]
    assert isinstance(entry.task, Task) and entry.task == parsed(paths)


def test_an_edit_runs_the_new_version(tmp_path: Path) -> None:
    paths = home(tmp_path)
    run_once(paths)
    held, given, status = run_once(paths, edit=TEXT.format(n=2).replace("hi", "hey"))
    assert held == TaskHead.of(parsed(paths)) and status == "succeeded"
    assert given == parsed(paths) and given.body == "Body of version 2.\n"
    assert given.env == {"GREETING": "hey"} and given.name == "Morning 2"


def test_a_task_that_never_ran_shares_empty_run_containers_an_edit_hands_them_on(
    tmp_path: Path,
) -> None:
    paths = home(tmp_path)

    async def main() -> None:
        with State.open(paths.state_db) as state:
            scheduler = Scheduler(paths, load_config(paths.config_file), state)
            plan = scheduler.plan
            plan.load_all(starting=True)
            old = plan.tasks["hello"]
            assert old.active is NO_RUNS and old.queued is NO_QUEUE
            with pytest.raises(TypeError):  # read-only: a run must take its own first
                old.active["x"] = None  # type: ignore[index]
            req = scheduler.enqueue("hello", kind="manual")
            assert req is not None and req.run_id is not None
            assert list(old.active) == [req.run_id] and old.active is not NO_RUNS
            # An edit while it runs: the new version counts the old version's run.
            (paths.tasks_dir / "hello.md").write_text(TEXT.format(n=2))
            plan.apply_entry(read_entry(paths.tasks_dir / "hello.md"))
            new = plan.tasks["hello"]
            assert new is not old and new.generation == 2
            assert new.active is old.active and new.queued is old.queued
            assert list(new.active) == [req.run_id]
            await asyncio.wait_for(scheduler.runs[req.run_id], timeout=30)
            assert not new.active and not old.active

    asyncio.run(main())


def test_next_fires_behave_as_a_dict_in_64_bytes() -> None:
    # Random sets, deletes, pops and clears on a dict and on NextFires: the same contents
    # in the same order after every step, and the same KeyErrors.
    rng = random.Random(12)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(200):
        mine, theirs = NextFires(), dict[str, datetime]()
        for _ in range(30):
            key = rng.choice(["cron", "every", "at", "cron-2"])
            op = rng.random()
            if op < 0.5:
                slot = start + timedelta(minutes=rng.randrange(1000))
                mine[key] = theirs[key] = slot
            elif op < 0.75:
                missing = key not in theirs
                with pytest.raises(KeyError) if missing else contextlib.nullcontext():
                    del mine[key]
                theirs.pop(key, None)
            elif op < 0.95:
                assert mine.pop(key, None) == theirs.pop(key, None)
            else:
                mine.clear()
                theirs.clear()
            assert list(mine.items()) == list(theirs.items())
            assert mine.pairs() == tuple(theirs.items())
            assert dict(mine) == theirs and len(mine) == len(theirs)
            assert mine.get("nope") is None and ("nope" in mine) is False
            if theirs:
                assert min(mine.values()) == min(theirs.values())
    one = NextFires()
    one["every"] = start
    assert sys.getsizeof(one) <= 64 < sys.getsizeof({"every": start})
