"""One answer to "when does it fire next" (docs/task-file.md, "schedule"), across every view.

`next`, `task show`, `task ls` and `daemon status` compare equal to the second for `every`,
cron and `at` triggers, jitter included: with a daemon running, without one across two
invocations a minute apart (`DAYCARE_NOW`), with a daemon started after the CLI answered,
and while a fire a jitter delays has not started yet.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from typer.testing import CliRunner

from daycare_cli.cli.app import build_app
from daycare_cli.config import load_config
from daycare_cli.daemon.clock import VirtualClock
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State

if TYPE_CHECKING:
    from conftest import DaemonHome

IDS = ("poll", "nightly", "once")


def task_files(now: datetime) -> dict[str, str]:
    """An `every` task with jitter, a cron task with jitter in a half-hour zone, an `at` task.

    No slot falls within the next hour of `now`, so views asked seconds apart must agree.
    """
    zone = "Asia/Kolkata"
    later = (now + timedelta(hours=12)).astimezone(ZoneInfo(zone))
    at = (now + timedelta(hours=1, minutes=30)).isoformat(timespec="seconds")
    return {
        "poll": "---\ntriggers:\n  - every: 2h\njitter: 30m\n---\nx\n",
        "nightly": (
            f'---\nschedule: "{later.minute} {later.hour} * * *"\ntimezone: {zone}\n'
            "jitter: 2h\n---\nx\n"
        ),
        "once": f'---\ntriggers:\n  - at: "{at}"\n---\nx\n',
    }


def second(value: str) -> int:
    """An ISO time to the whole second (the CLI shows seconds; the daemon keeps more)."""
    return int(datetime.fromisoformat(value).timestamp())


def cli_json(home: DaemonHome, *args: str, now: datetime | None = None) -> Any:
    """`daycare ARGS --json` in its own process, its clock at `now` (else the real one)."""
    env = dict(home.env)
    if now is not None:
        env["DAYCARE_NOW"] = now.isoformat()
    res = subprocess.run(
        [sys.executable, "-m", "daycare_cli", *args, "--json"],
        env=env,
        cwd=home.home,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, f"daycare {' '.join(args)}: {res.returncode}\n{res.stderr}"
    return json.loads(res.stdout)


def views(home: DaemonHome, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """The next fire of each task by view: {view: {task: epoch second}}."""
    out: dict[str, dict[str, int]] = {"next": {}, "show": {}, "show.fires": {}, "ls": {}}
    for fire in cli_json(home, "next", "-n", "20", now=now):
        out["next"].setdefault(fire["task"], second(fire["slot"]))
    for task_id in IDS:
        record = cli_json(home, "task", "show", task_id, now=now)
        out["show"][task_id] = second(record["next_fire"])
        out["show.fires"][task_id] = second(record["fires"][0])
    for record in cli_json(home, "task", "ls", now=now):
        out["ls"][record["id"]] = second(record["next_fire"])
        if record.get("daemon", {}).get("scheduled"):
            out.setdefault("ls.daemon", {})[record["id"]] = second(record["daemon"]["next_fire"])
    if now is None:
        status = cli_json(home, "daemon", "status")
        if status["running"]:
            out["status"] = {}
            for row in sorted(status["next"], key=lambda r: second(r["at"])):
                out["status"].setdefault(row["task"], second(row["at"]))
    return out


def anchor(home: DaemonHome, task: str) -> datetime:
    (row,) = home.query(
        "SELECT last_slot FROM trigger_state WHERE task = ? AND trigger_id = 'every'", (task,)
    )
    return datetime.fromisoformat(row["last_slot"])


def expected(home: DaemonHome, now: datetime) -> dict[str, int]:
    """What every view must say: the stored anchor + 2h, the cron slot, the `at` time."""
    files = task_files(now)
    at = datetime.fromisoformat(files["once"].split('"')[1])
    return {
        "poll": int((anchor(home, "poll") + timedelta(hours=2)).timestamp()),
        "once": int(at.timestamp()),
    }


def test_every_view_gives_the_same_next_fire_with_the_daemon_running(daemon: DaemonHome) -> None:
    now = datetime.now(UTC)
    for task_id, text in task_files(now).items():
        daemon.write(task_id, text)
    daemon.start()
    seen = views(daemon)
    assert set(seen) == {"next", "show", "show.fires", "ls", "ls.daemon", "status"}
    for view, fires in seen.items():
        assert fires == seen["status"], f"{view} disagrees with daemon status"
    # The slot, never the jittered start: the stored anchor (the daemon's start) + 2h.
    want = expected(daemon, now)
    assert seen["status"]["poll"] == want["poll"] and seen["status"]["once"] == want["once"]
    assert now < anchor(daemon, "poll") < datetime.now(UTC)

    # A valid edit: until the daemon has reloaded it, task ls calls its version stale;
    # once it has, its next fire is the file's again. The anchor stays with the trigger id.
    daemon.write("poll", "---\ntriggers:\n  - every: 3h\njitter: 30m\n---\nx\n")

    def reloaded() -> bool:
        (record,) = [r for r in cli_json(daemon, "task", "ls") if r["id"] == "poll"]
        if record["daemon"]["stale"]:
            return False
        assert record["daemon"]["next_fire"] == record["next_fire"]
        return True

    daemon.wait_for(reloaded, 15, "the daemon to reload poll.md")
    seen = views(daemon)
    for view, fires in seen.items():
        assert fires == seen["status"], f"{view} disagrees with daemon status after an edit"
    assert seen["status"]["poll"] == int((anchor(daemon, "poll") + timedelta(hours=3)).timestamp())


def test_without_a_daemon_the_next_fire_stays_put_and_a_later_daemon_keeps_it(
    daemon: DaemonHome,
) -> None:
    first = datetime.now(UTC).replace(microsecond=0)
    for task_id, text in task_files(first).items():
        daemon.write(task_id, text)
    asked = views(daemon, first)
    # Asked a minute later (by the CLI's clock): the same answer, not one a minute later.
    again = views(daemon, first + timedelta(minutes=1))
    assert asked == again
    for view, fires in asked.items():
        assert fires == asked["next"], f"{view} disagrees with next"
    # The CLI recorded the instant it first planned the `every` trigger: its anchor.
    assert anchor(daemon, "poll") == first
    assert asked["next"]["poll"] == int((first + timedelta(hours=2)).timestamp())
    assert asked["next"]["once"] == expected(daemon, first)["once"]

    # A daemon started afterwards plans from the same stored state: no view moves.
    daemon.start()
    seen = views(daemon)
    assert seen["status"] == asked["next"]
    for view, fires in seen.items():
        assert fires == asked["next"], f"{view} moved once the daemon started"


def test_a_fire_that_jitter_delays_shows_as_the_cli_computes_it(tmp_path: Path) -> None:
    # In the daemon's process on a virtual clock: the slot of `every: 10m` has passed but
    # its jittered start has not come (the loop is not running), as in the jitter window.
    start = datetime(2026, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)
    (tmp_path / "tasks").mkdir()
    tasks = {
        "poll": "---\ntriggers:\n  - every: 10m\njitter: 5m\n---\nx\n",
        "tick": '---\nschedule: "*/10 * * * *"\ntimezone: UTC\njitter: 5m\n---\nx\n',
        "once": '---\ntriggers:\n  - at: "2026-03-01T10:05:00Z"\njitter: 5m\n---\nx\n',
    }
    for task_id, text in tasks.items():
        (tmp_path / "tasks" / f"{task_id}.md").write_text(text)
    (tmp_path / "config.toml").write_text("")
    paths = Paths.resolve(home=tmp_path)
    clock = VirtualClock(start)

    async def daemon_views() -> tuple[dict[str, datetime | None], datetime, datetime]:
        with State.open(paths.state_db) as state:
            scheduler = Scheduler(paths, load_config(paths.config_file), state, clock=clock)
            plan = scheduler.plan
            plan.load_all(starting=True)
            planned = plan.tasks["poll"].next_fire["every"]
            # The slots at 10:05 and 10:10 pass; the loop (not running) has not handled
            # their fires, as in the window a jitter opens before a fire starts.
            clock.jump(10 * 60 + 30)
            now = clock.now()
            nexts = {
                tid: min(plan.next_slots(s, now).values(), default=None)
                for tid, s in plan.tasks.items()
            }
            return nexts, now, planned

    nexts, now, planned = asyncio.run(daemon_views())
    assert planned == start + timedelta(minutes=10) and planned < now
    env = {
        "DAYCARE_HOME": str(tmp_path),
        "DAYCARE_CONFIG": str(tmp_path / "config.toml"),
        "DAYCARE_TASKS_DIR": None,
        "DAYCARE_NOW": now.isoformat(),
        "TZ": "UTC",
    }
    result = CliRunner().invoke(build_app(), ["task", "ls", "--json"], env=env)
    assert result.exit_code == 0, result.output
    shown = {r["id"]: r["next_fire"] for r in json.loads(result.stdout)}
    assert shown == {
        "poll": (start + timedelta(minutes=20)).isoformat(timespec="seconds"),
        "tick": "2026-03-01T10:20:00+00:00",
        "once": None,  # its slot passed: nothing is next, though its start may be to come
    }
    assert {t: w.isoformat(timespec="seconds") if w else None for t, w in nexts.items()} == shown
