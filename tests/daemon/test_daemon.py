"""The daemon as a person runs it: `daycare daemon run` in a subprocess on a temp home.

Every test asserts on what the daemon left behind (rows of `state.db`, task files, run
directories), not only on its output. Schedules are `every: 1s`, `at:` a second or two
ahead and `@reboot`, so that the whole file runs in well under a minute: the tests that
only watch tasks share one daemon (`steady`, one task per test) so their seconds of
waiting overlap; those that signal, kill or configure the daemon start their own.
"""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import DaemonHome

Rows = list[sqlite3.Row]

RUN_KEYS = {
    "id", "task", "trigger", "slot", "attempt", "status", "queued_at", "started_at",
    "finished_at", "duration_ms", "output", "response", "error", "skip_reason", "run_dir",
}  # fmt: skip


def utc(text: str | None) -> datetime:
    """A stored time (ISO 8601 with offset) as an aware datetime."""
    assert text is not None
    return datetime.fromisoformat(text)


def iso_in(seconds: float) -> str:
    """The instant `seconds` from now, for an `at:` trigger."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def seconds(a: str | None, b: str | None) -> float:
    """b - a in seconds, for two stored times."""
    return (utc(b) - utc(a)).total_seconds()


def task_file(triggers: str, body: str = 'print("tick")', extra: str = "") -> str:
    """A task file: `triggers` is the YAML list (one item a line), `body` one block's code."""
    items = "".join(f"  - {t}\n" for t in triggers.splitlines())
    code = "\n".join(body.splitlines())
    return (
        f"---\ntriggers:\n{items}execute: true\n{extra}---\n<run_python>\n{code}\n</run_python>\n"
    )


def every(body: str = 'print("tick")', extra: str = "") -> str:
    return task_file("every: 1s", body, extra)


def reboot(body: str = 'print("tick")', extra: str = "") -> str:
    return task_file('cron: "@reboot"', body, extra)


def succeeded(home: DaemonHome, task: str, n: int, timeout: float = 8.0) -> Rows:
    """Wait until `task` has at least `n` succeeded runs; return them."""
    return list(
        home.wait_for(
            lambda: (rows := home.runs(task, status="succeeded")) and len(rows) >= n and rows,
            timeout,
            f"{n} succeeded runs of {task}",
        )
    )


def run_log(run_dir: Path, wait: float = 5.0) -> list[str]:
    """The events of a finished run's log.jsonl, once it ends with run.end (or `wait` s)."""
    deadline = time.monotonic() + wait
    while True:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
        events = [json.loads(x)["event"] for x in lines]
        if (events and events[-1] == "run.end") or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def queued_after(home: DaemonHome, task: str, when: datetime) -> Rows:
    return [r for r in home.runs(task) if utc(r["queued_at"]) > when]


def contiguous(slots: list[datetime]) -> bool:
    """True when the slots, sorted, are exactly one second apart: no gap, no repeat."""
    ordered = sorted(slots)
    return all(abs((b - a).total_seconds() - 1.0) < 0.01 for a, b in itertools.pairwise(ordered))


# --- one daemon, one task per test --------------------------------------------------------


@pytest.fixture(scope="module")
def steady(module_homes: Callable[[], DaemonHome]) -> DaemonHome:
    """A daemon started once with every task the watching tests need, by id."""
    home = module_homes()
    # Room for all of them at once, so that no task waits for another's slot in the cap.
    home.config.write_text("max_concurrent_runs = 8\n" + home.CONFIG)
    home.write("tick", every())
    home.write("edit", every())
    home.write("broken", every())
    home.write("gone", every())
    home.write("hello", "---\nexecute: true\n---\n<run_python>\nprint('hello')\n</run_python>\n")
    home.write("slow", every("import time\ntime.sleep(1.5)"))
    home.write("flaky", reboot('raise RuntimeError("boom")', extra="retries: 2\nretry_delay: 1s\n"))
    home.write("boot", reboot('print("booted")'))
    # The webhook listener runs only while some task has a webhook trigger.
    home.write("hook", "---\ntriggers:\n  - webhook: true\n---\nx\n")
    home.start()
    return home


def test_every_second_fires_repeatedly_one_run_per_slot(steady: DaemonHome) -> None:
    succeeded(steady, "tick", 3)
    rows = [r for r in steady.runs("tick") if r["finished_at"]]

    assert {r["status"] for r in rows} == {"succeeded"}
    assert {(r["trigger"], r["trigger_id"], r["attempt"]) for r in rows} == {
        ("schedule", "every", 1)
    }
    assert {r["pid"] for r in rows} == {steady.pid}
    slots = [utc(r["slot"]) for r in rows]
    assert len(set(slots)) == len(slots) and slots == sorted(slots)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]
    assert all(abs(g - 1.0) < 0.01 for g in gaps), gaps
    for r in rows:
        lateness = seconds(r["slot"], r["started_at"])
        assert 0 <= lateness < 0.5, lateness
        assert r["output"] == "tick\n"
        run_dir = Path(r["run_dir"])
        assert (run_dir / "prompt.md").read_text().strip() == "tick"
        # The log is written out just after the end is committed (its run.end follows
        # the row, as a follower's does): a moment later, it is whole.
        log = run_log(run_dir)
        assert log[0] == "run.start" and log[-1] == "run.end"
    fired = steady.events("run.fired", "tick")
    assert {e["run"] for e in fired} >= {r["id"] for r in rows}
    assert steady.duplicate_slots() == []


def test_at_fires_exactly_once_and_is_archived(steady: DaemonHome) -> None:
    at = iso_in(1.2)
    path = steady.write("remind", task_file(f'at: "{at}"', 'print("now")'))
    archived = steady.tasks / ".archive" / "remind.md"
    steady.wait_for(archived.exists, 6, "the one-off task to be archived")

    assert not path.exists()
    (row,) = steady.runs("remind")
    assert (row["trigger"], row["trigger_id"], row["status"]) == ("schedule", "at", "succeeded")
    assert utc(row["slot"]) == datetime.fromisoformat(at)
    assert 0 <= seconds(row["slot"], row["started_at"]) < 0.5
    assert row["output"] == "now\n"
    assert "at:" in archived.read_text()
    assert len(steady.events("task.archived", "remind")) == 1
    steady.holds_for(lambda: len(steady.runs("remind")) == 1, 0.6, "a single run of the at task")


def test_edit_reschedules_within_a_second_without_restart(steady: DaemonHome) -> None:
    succeeded(steady, "edit", 1)
    path = steady.tasks / "edit.md"

    edited = datetime.now(UTC)
    path.write_text(every('print("tock")'))
    (changed,) = steady.wait_for(lambda: steady.events("task.changed", "edit"), 3, "the change")
    assert (utc(changed["at"]) - edited).total_seconds() < 1.0
    tock = steady.wait_for(
        lambda: [r for r in steady.runs("edit", status="succeeded") if r["output"] == "tock\n"],
        4,
        "a run of the edited block",
    )
    assert (utc(tock[0]["started_at"]) - edited).total_seconds() < 2.5
    # Every run queued after the change runs the new version.
    after = [r for r in queued_after(steady, "edit", utc(changed["at"])) if r["finished_at"]]
    assert after and {r["output"] for r in after} == {"tock\n"}

    disabling = datetime.now(UTC)
    path.write_text(every('print("tock")', extra="enabled: false\n"))
    disabled = steady.wait_for(
        lambda: (ev := steady.events("task.changed", "edit")) and len(ev) == 2 and ev[1],
        3,
        "the disabling edit",
    )
    assert (utc(disabled["at"]) - disabling).total_seconds() < 1.0
    steady.holds_for(
        lambda: not queued_after(steady, "edit", utc(disabled["at"])), 1.2, "no run once disabled"
    )
    status = steady.cli_json("daemon", "status")
    assert [n for n in status["next"] if n["task"] == "edit"] == []
    assert status["pid"] == steady.pid  # the same process all along


def test_broken_edit_keeps_the_old_schedule_and_is_reported(steady: DaemonHome) -> None:
    succeeded(steady, "broken", 1)
    path = steady.tasks / "broken.md"

    path.write_text(every().replace("every: 1s", "every: soon"))
    (invalid,) = steady.wait_for(lambda: steady.events("task.invalid", "broken"), 3, "the event")
    assert "broken.md" in json.loads(invalid["detail"])["error"]
    since = utc(invalid["at"])

    (listed,) = [t for t in steady.cli_json("task", "ls") if t["id"] == "broken"]
    assert listed["error"] and "broken.md" in listed["error"]
    status = steady.cli_json("daemon", "status")
    (error,) = [e for e in status["errors"] if e["task"] == "broken"]
    assert error["stale"] is True and "broken.md" in error["error"]

    steady.wait_for(
        lambda: len([r for r in queued_after(steady, "broken", since) if r["finished_at"]]) >= 2,
        4,
        "two runs of the last good version after the broken edit",
    )
    after = [r for r in queued_after(steady, "broken", since) if r["finished_at"]]
    assert {(r["status"], r["output"]) for r in after} == {("succeeded", "tick\n")}

    path.write_text(every('print("fixed")'))
    steady.wait_for(
        lambda: [r for r in steady.runs("broken") if r["output"] == "fixed\n"], 3, "the fix"
    )
    errors = steady.cli_json("daemon", "status")["errors"]
    assert [e for e in errors if e["task"] == "broken"] == []
    assert len(steady.events("task.invalid", "broken")) == 1


def test_deleting_the_file_stops_the_task(steady: DaemonHome) -> None:
    succeeded(steady, "gone", 1)
    before = len(steady.runs("gone"))

    (steady.tasks / "gone.md").unlink()
    (removed,) = steady.wait_for(lambda: steady.events("task.removed", "gone"), 3, "the removal")
    gone = utc(removed["at"])
    steady.holds_for(lambda: not queued_after(steady, "gone", gone), 1.2, "no run after deletion")
    assert len(steady.runs("gone")) >= before  # its history stays
    status = steady.cli_json("daemon", "status")
    assert [n for n in status["next"] if n["task"] == "gone"] == []


def test_cli_goes_through_the_running_daemon(steady: DaemonHome) -> None:
    local = steady.cli_json("task", "run", "hello", "--local")  # in the CLI's own process
    via = steady.cli_json("task", "run", "hello")

    assert set(via) == set(local) and set(via) >= RUN_KEYS
    assert (via["task"], via["trigger"], via["status"]) == ("hello", "manual", "succeeded")
    assert via["output"] == local["output"] == "hello\n" and via["id"] != local["id"]
    (row,) = steady.runs("hello", id=via["id"])
    assert row["pid"] == steady.pid
    (local_row,) = steady.runs("hello", id=local["id"])
    assert local_row["pid"] != steady.pid
    assert Path(via["run_dir"], "prompt.md").read_text().strip() == "hello"
    assert {e["actor"] for e in steady.events("run.fired", "hello")} == {"cli"}

    status = steady.cli_json("daemon", "status")
    assert status["running"] is True and status["pid"] == steady.pid
    assert status["tasks"] == len(list(steady.tasks.glob("*.md")))
    assert any(n["task"] == "tick" for n in status["next"])
    # The configured port 0 means an ephemeral port, reported where clients look for it.
    url = (steady.home / "run" / "webhook.url").read_text().strip()
    assert status["webhook_url"] == url and not url.endswith(":8765")

    upcoming = steady.cli_json("next")
    ticks = [f for f in upcoming if f["task"] == "tick"]
    assert ticks and ticks[0]["trigger"] == "every"
    ahead = datetime.fromisoformat(ticks[0]["slot"]) - datetime.now(UTC)
    assert timedelta(seconds=-1) <= ahead < timedelta(seconds=2)


def test_overlap_skip_records_skipped_fires(steady: DaemonHome) -> None:
    steady.wait_for(
        lambda: steady.runs("slow", status="skipped") and steady.runs("slow", status="succeeded"),
        8,
        "a skipped fire and a finished run",
    )
    rows = steady.runs("slow")
    ran = [r for r in rows if r["status"] in ("running", "succeeded")]
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert {r["status"] for r in rows} <= {"queued", "running", "succeeded", "skipped"}
    assert all("overlap" in r["skip_reason"] for r in skipped)
    assert all(r["started_at"] is None for r in skipped)
    for r in skipped:  # each skipped fire came while a run was active
        assert any(
            utc(a["started_at"]) <= utc(r["queued_at"])
            and (a["finished_at"] is None or utc(r["queued_at"]) <= utc(a["finished_at"]))
            for a in ran
        )
    done = sorted((utc(r["started_at"]), utc(r["finished_at"])) for r in ran if r["finished_at"])
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(done))
    assert contiguous([utc(r["slot"]) for r in rows])


def test_retries_a_failing_run_with_backoff(steady: DaemonHome) -> None:
    steady.wait_for(lambda: steady.runs("flaky", attempt=3, status="failed"), 8, "attempt 3")
    steady.holds_for(lambda: not steady.runs("flaky", attempt=4), 0.5, "no fourth attempt")

    rows = sorted(steady.runs("flaky"), key=lambda r: r["attempt"])
    assert [(r["attempt"], r["trigger"], r["status"]) for r in rows] == [
        (1, "schedule", "failed"),
        (2, "retry", "failed"),
        (3, "retry", "failed"),
    ]
    assert len({(r["trigger_id"], r["slot"]) for r in rows}) == 1
    assert all("RuntimeError: boom" in r["error"] for r in rows)
    # retry_delay 1s, doubling, with ±25 % jitter (plus a little time to start).
    first = seconds(rows[0]["finished_at"], rows[1]["started_at"])
    second = seconds(rows[1]["finished_at"], rows[2]["started_at"])
    assert 0.75 <= first < 1.25 + 0.3, first
    assert 1.5 <= second < 2.5 + 0.3, second


def test_reboot_fires_once_at_start(steady: DaemonHome) -> None:
    (row,) = succeeded(steady, "boot", 1)
    steady.holds_for(lambda: len(steady.runs("boot")) == 1, 0.5, "a single @reboot run")
    assert (row["trigger"], row["trigger_id"], row["pid"]) == ("schedule", "cron", steady.pid)
    (started,) = steady.events("daemon.started")
    assert abs(seconds(started["at"], row["slot"])) < 1.0
    assert row["output"] == "booted\n"


# --- crashes: SIGKILL mid-run, 3 s down, restart -----------------------------------------


@dataclass
class Crash:
    home: DaemonHome
    first_pid: int
    killed_at: datetime
    restarted_at: datetime


POLICIES = ("skip", "latest", "all")


@pytest.fixture(scope="module")
def crash(module_homes: Callable[[], DaemonHome]) -> Crash:
    """One daemon with a task per catch_up policy and a long run; SIGKILL, 3 s down, restart."""
    home = module_homes()
    for policy in POLICIES:
        # A window of a minute so that all missed slots are inside it; `allow` so that a
        # staggered catch-up run never meets a scheduled one as an overlap.
        extra = f"catch_up: {policy}\ncatch_up_window: 1m\noverlap: allow\n"
        home.write(f"cu-{policy}", every(extra=extra))
    home.write("long", task_file(f'at: "{iso_in(0.5)}"', "import time\ntime.sleep(30)"))
    home.start()
    first_pid = home.pid
    home.wait_for(lambda: home.runs("long", status="running"), 8, "the long run to start")
    for policy in POLICIES:
        succeeded(home, f"cu-{policy}", 1)
    killed_at = datetime.now(UTC)
    home.kill()
    time.sleep(3.0)  # the downtime is the scenario, not a synchronisation
    restarted_at = datetime.now(UTC)
    home.start()

    def settled(task: str) -> bool:
        rows = home.runs(task)
        resumed = [
            r
            for r in rows
            if r["trigger"] == "schedule"
            and r["status"] != "missed"
            and utc(r["slot"]) > restarted_at
        ]
        busy = [r for r in rows if r["trigger"] == "catch-up" and not r["finished_at"]]
        return bool(resumed) and not busy and contiguous([utc(r["slot"]) for r in rows])

    for policy in POLICIES:
        home.wait_for(lambda p=policy: settled(f"cu-{p}"), 10, f"cu-{policy} to settle")
    return Crash(home, first_pid, killed_at, restarted_at)


def gap_rows(c: Crash, task: str) -> Rows:
    """The rows of the slots that passed while the daemon was down (and starting)."""
    rows = c.home.runs(task)
    before = max(utc(r["slot"]) for r in rows if utc(r["queued_at"]) < c.killed_at)
    resumed = min(
        utc(r["slot"])
        for r in rows
        if r["trigger"] == "schedule"
        and r["status"] != "missed"
        and utc(r["slot"]) > c.restarted_at
    )
    gap = [r for r in rows if before < utc(r["slot"]) < resumed]
    # Down for 3 s plus a start: at least three slots passed.
    assert len(gap) >= 3, [dict(r) for r in rows]
    assert contiguous([before, *(utc(r["slot"]) for r in gap), resumed])
    return sorted(gap, key=lambda r: utc(r["slot"]))


def test_crash_marks_the_killed_run_interrupted(crash: Crash) -> None:
    (row,) = crash.home.runs("long")  # its slot had a run: not fired again after the restart
    assert row["status"] == "interrupted"
    assert row["pid"] == crash.first_pid
    assert utc(row["started_at"]) < crash.killed_at < utc(row["finished_at"])
    assert "ended before the run finished" in row["error"]
    assert any(row["id"] in line and "interrupted" in line for line in crash.home.lines)


def test_crash_never_runs_a_slot_twice(crash: Crash) -> None:
    rows = crash.home.query(
        "SELECT task, trigger_id, slot, COUNT(*) AS n FROM runs WHERE slot IS NOT NULL "
        "GROUP BY task, trigger_id, slot HAVING n > 1"
    )
    assert [tuple(r) for r in rows] == []
    assert crash.home.duplicate_slots() == []
    assert len(crash.home.runs()) > 15


@pytest.mark.parametrize(
    ("policy", "runs"),
    [("skip", "none"), ("latest", "the newest"), ("all", "every one")],
)
def test_crash_missed_slots_follow_catch_up(crash: Crash, policy: str, runs: str) -> None:
    gap = gap_rows(crash, f"cu-{policy}")
    ran = [r for r in gap if r["trigger"] == "catch-up"]
    lost = [r for r in gap if r["status"] == "missed"]
    assert len(ran) + len(lost) == len(gap)
    assert {r["status"] for r in ran} <= {"succeeded"}
    assert all(r["skip_reason"] for r in lost)
    if runs == "none":
        assert ran == [] and len(lost) == len(gap)
    elif runs == "the newest":
        assert [r["slot"] for r in ran] == [gap[-1]["slot"]] and len(lost) == len(gap) - 1
    else:
        assert lost == [] and len(ran) == len(gap)
        # The rows are written queued at once, when the catch-up is decided (so none can
        # be lost); the runs start staggered a second apart, not all at once (with room
        # for a loaded machine).
        fired = sorted(utc(r["started_at"]) for r in ran)
        assert all((b - a).total_seconds() > 0.5 for a, b in itertools.pairwise(fired))


# --- signals ------------------------------------------------------------------------------


def test_sigterm_lets_a_run_finish_within_the_grace_period(daemon: DaemonHome) -> None:
    daemon.write("slow", reboot('import time\ntime.sleep(1.5)\nprint("done")'))
    daemon.start()
    daemon.wait_for(lambda: daemon.runs("slow", status="running"), 5, "the run to start")
    termed = datetime.now(UTC)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0

    (row,) = daemon.runs("slow")
    assert row["status"] == "succeeded" and row["output"] == "done\n"
    assert utc(row["finished_at"]) > termed
    assert daemon.events("daemon.stopped")
    assert not (daemon.home / "run" / "daycare.pid").exists()


def test_sigterm_interrupts_a_run_longer_than_the_grace_period(daemon: DaemonHome) -> None:
    daemon.config.write_text(daemon.CONFIG.replace("grace_period = 5", "grace_period = 1"))
    daemon.write("slow", reboot("import time\ntime.sleep(30)"))
    daemon.start()
    daemon.wait_for(lambda: daemon.runs("slow", status="running"), 5, "the run to start")
    termed = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
    took = time.monotonic() - termed
    assert 1.0 <= took < 5.0, took

    (row,) = daemon.runs("slow")
    assert row["status"] == "interrupted"
    assert "daemon stopped" in row["error"]
    assert 1000 <= row["duration_ms"] < 5000


def test_sighup_reloads_config(daemon: DaemonHome) -> None:
    daemon.write("tick", every())
    daemon.start()
    succeeded(daemon, "tick", 2)  # the default retention keeps them all

    daemon.config.write_text(daemon.CONFIG + "\n[retention]\nkeep_runs = 1\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: any("reloaded config" in x for x in daemon.lines), 3, "the reload")
    daemon.wait_for(lambda: len(daemon.runs("tick")) == 1, 4, "runs pruned to the new keep_runs")
    assert daemon.proc is not None and daemon.proc.poll() is None  # reloaded, not restarted
    # Stopped, so that no prune is between deleting rows and removing their directories.
    assert daemon.stop() == 0
    kept = daemon.runs("tick")
    assert len(kept) == 1
    runs_dirs = {p.name for p in (daemon.home / "workspaces" / "tick" / "runs").iterdir()}
    assert runs_dirs == {r["id"] for r in kept}


def test_sighup_with_a_broken_config_keeps_the_running_one(daemon: DaemonHome) -> None:
    daemon.write("tick", every())
    daemon.start()
    daemon.config.write_text(daemon.CONFIG + "\nmax_concurrent_runs = 0\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.events("config.invalid"), 3, "the refused reload")
    assert any("config not reloaded" in x for x in daemon.lines)
    before = len(daemon.runs("tick"))
    daemon.wait_for(lambda: len(daemon.runs("tick")) > before + 1, 4, "runs going on")
    assert daemon.proc is not None and daemon.proc.poll() is None


# --- the global cap -----------------------------------------------------------------------


def test_max_concurrent_runs_one_never_overlaps(daemon: DaemonHome) -> None:
    daemon.config.write_text("max_concurrent_runs = 1\n" + daemon.CONFIG)
    daemon.write("a", every("import time\ntime.sleep(0.3)"))
    daemon.write("b", every("import time\ntime.sleep(0.3)"))
    daemon.start()
    daemon.wait_for(
        lambda: all(len(daemon.runs(t, status="succeeded")) >= 2 for t in "ab"), 10, "a and b"
    )

    rows = [r for r in daemon.runs() if r["started_at"]]
    spans = sorted((utc(r["started_at"]), utc(r["finished_at"] or r["started_at"])) for r in rows)
    assert len([r for r in rows if r["finished_at"] is None]) <= 1
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, (end, start)
    # Both fire at the same instants, so one of each pair waited for the other.
    waited = [seconds(r["queued_at"], r["started_at"]) for r in rows]
    assert max(waited) > 0.2


# --- systemd ------------------------------------------------------------------------------


def test_sd_notify_ready_watchdog_stopping(
    daemon: DaemonHome, notify_socket: tuple[Path, list[tuple[float, str]]]
) -> None:
    address, messages = notify_socket
    daemon.write("tick", every())
    daemon.start(env={"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "200000"})
    daemon.wait_for(lambda: sum(m == "WATCHDOG=1" for _, m in messages) >= 5, 5, "watchdog pings")
    daemon.signal(signal.SIGTERM)
    daemon.wait_for(lambda: any("STOPPING=1" in m for _, m in messages), 5, "STOPPING=1")
    assert daemon.wait_exit(10) == 0

    texts = [m for _, m in messages]
    ready = texts[0].split("\n")
    assert "READY=1" in ready
    assert any(line.startswith("STATUS=") and "1 tasks" in line for line in ready)
    assert f"MAINPID={daemon.pid}" in ready
    pings = [t for t, m in messages if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    # systemd wants a ping every half WATCHDOG_USEC (0.1 s here), never past 0.2 s.
    assert statistics.median(gaps) < 0.2 and max(gaps) < 0.35, gaps
    stopping = next(i for i, m in enumerate(texts) if "STOPPING=1" in m)
    assert all("READY=1" not in m for m in texts[stopping:])
