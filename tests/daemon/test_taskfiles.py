"""Task files read safely by the running daemon (docs/operations.md, "Faults").

`daycare daemon run` as a subprocess on a temp home. A file is read once its writes have
settled, parsed off the event loop, refused clearly when it is too big or too deep, and
the watcher outlives failures of its own: every test asserts on `state.db` rows.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from daycare_cli.daemon.watcher import DEBOUNCE_MS, SETTLE_S

if TYPE_CHECKING:
    from conftest import DaemonHome

Rows = list[sqlite3.Row]


def every(word: str, interval: str = "1s") -> str:
    """A task that prints `word` every `interval`."""
    return (
        f"---\ntriggers:\n  - every: {interval}\nexecute: true\n---\n"
        f'<run_python>\nprint("{word}")\n</run_python>\n'
    )


def after(home: DaemonHome, task: str, when: datetime) -> Rows:
    """Runs of `task` queued after `when`."""
    return [r for r in home.runs(task) if home.utc(r["queued_at"]) > when]


def invalid_error(home: DaemonHome, task: str) -> str:
    """The error of the `task.invalid` event of `task` (waits for it)."""
    (event, *_) = home.wait_for(lambda: home.events("task.invalid", task), 10, f"{task} invalid")
    return str(json.loads(event["detail"])["error"])


# -- a file written in two chunks ---------------------------------------------------------

# Runs without blocks or model are quick, so the webhook runs sample the task every few
# ms; a run's output is then the task's body: which version of the file it ran.
HOOK_V1 = "---\ntriggers:\n  - webhook: true\n---\nversion one\n"
# The new version; its first half alone is a valid task too.
HALF = "---\ntriggers:\n  - webhook: true\n---\nfirst half\n"
FULL = HALF + "second half\n"


def two_chunk_write(path: Path, text: str, pause: float) -> tuple[float, float, float]:
    """Write `text` as a slow writer would: its first half, fsync, a pause, the rest.

    Returns (start, end) on the wall clock and the gap between the two writes' mtimes.
    """
    start = time.time()
    with path.open("w") as f:
        f.write(text[: len(HALF)])
        f.flush()
        os.fsync(f.fileno())
        first = os.stat(path).st_mtime_ns
        time.sleep(pause)
        f.write(text[len(HALF) :])
        f.flush()
        os.fsync(f.fileno())
        second = os.stat(path).st_mtime_ns
    return start, time.time(), (second - first) / 1e9


def longest_uncut(lo: float, hi: float, cuts: list[tuple[float, float]]) -> float:
    """The longest part of [lo, hi] outside every interval of `cuts`, in seconds."""
    pieces = [(lo, hi)]
    for c0, c1 in cuts:
        pieces = [
            part
            for p0, p1 in pieces
            for part in (((p0, p1),) if c1 <= p0 or c0 >= p1 else ((p0, c0), (c1, p1)))
            if part[1] > part[0]
        ]
    return max((p1 - p0 for p0, p1 in pieces), default=0.0)


def test_a_two_chunk_write_never_runs_the_half_file(daemon: DaemonHome) -> None:
    path = daemon.write("hook", HOOK_V1)
    # Every row kept: ~100 webhooks a second for 11 s, and the default retention (100 runs)
    # would leave only the last second's rows, all of the last version, to judge by.
    daemon.config.write_text(daemon.CONFIG + "\n[retention]\nkeep_runs = 100000\n")
    daemon.start()
    url = daemon.cli("webhook", "url", "hook").stdout.strip()
    assert url.startswith("http")

    stop = threading.Event()
    accepted: list[int] = []

    def fire() -> None:  # webhooks all along, before, between and after the two chunks
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                accepted.append(client.post(url, content=b"{}").status_code)
                time.sleep(0.01)

    poster = threading.Thread(target=fire, daemon=True)
    poster.start()
    writes = []
    try:
        # 16 edits, each written in two chunks, each version current for ~0.6 s: long
        # enough that a slow write before it (on a loaded machine) leaves it clean time.
        for text in [FULL, HOOK_V1] * 8:
            time.sleep(0.6)
            writes.append(two_chunk_write(path, text, pause=1.2 * DEBOUNCE_MS / 1000))
        time.sleep(0.6)
    finally:
        stop.set()
        poster.join(10)
    assert accepted and set(accepted) == {202}

    runs = daemon.wait_for(
        lambda: (rows := daemon.runs("hook")) and all(r["finished_at"] for r in rows) and rows,
        60,
        "every webhook run to finish",
    )
    # Webhooks that came while a run was active are recorded skipped (overlap: skip).
    assert {r["status"] for r in runs} <= {"succeeded", "skipped"}
    # A writer paused longer than the settle time (a loaded machine) leaves a half file
    # that no reader can tell from a whole one: runs queued around such a write don't count.
    slow = [(a, b) for a, b, gap in writes if gap >= SETTLE_S - 0.01]
    assert len(slow) <= len(writes) // 2, f"the machine is too loaded: {writes}"

    def near_slow_write(run: sqlite3.Row) -> bool:
        queued = daemon.utc(run["queued_at"]).timestamp()
        return any(a - 0.1 <= queued <= b + SETTLE_S + 0.5 for a, b in slow)

    outputs = {r["output"] for r in runs if r["status"] == "succeeded" and not near_slow_write(r)}
    assert "first half\n" not in outputs, "a run used the half-written file"
    assert outputs <= {"version one\n", "first half\nsecond half\n"}, outputs
    # The complete new version did run: in the time it was current, read, and not near a
    # slow write (webhooks come every ~10 ms, so a run samples any such 0.2 s).
    cuts = [(a - 0.1, b + SETTLE_S + 0.5) for a, b in slow]
    clean = [
        longest_uncut(b + SETTLE_S + 0.2, nxt[0] - 0.1, cuts)
        for (a, b, gap), nxt in zip(writes[::2], writes[1::2], strict=True)
        if gap < SETTLE_S - 0.01
    ]
    assert max(clean, default=0) >= 0.2, f"the machine is too loaded: {writes}"
    assert "first half\nsecond half\n" in outputs, (outputs, writes)
    assert daemon.events("task.invalid", "hook") == []


# -- big, deep and flooded files beside a task every second -------------------------------

TAG_FLOOD = "---\nname: Tag flood\n---\n" + "<run_python>\n" * 20_000
DEEP = "---\ntriggers:\n  - every: 1s\nexecute: true\ntags:\n  " + "- " * 5000 + "x\n---\nbody\n"
HUGE = "---\nname: Huge\n---\n" + ("y" * 99 + "\n") * 11_000


def test_bad_files_never_stall_the_loop_or_unschedule_the_good_version(
    daemon: DaemonHome,
) -> None:
    daemon.write("tick", every("tick"))
    daemon.write("good", every("good"))
    daemon.start()
    daemon.wait_for(lambda: len(daemon.runs("good", status="succeeded")) >= 1, 8, "good runs")

    since = datetime.now(UTC)
    daemon.write("flood", TAG_FLOOD)  # parsing used to block the loop for 21 s
    (daemon.tasks / "good.md").write_text(DEEP)  # used to unschedule `good` (RecursionError)
    daemon.write("huge", HUGE)
    flood = invalid_error(daemon, "flood")
    deep = invalid_error(daemon, "good")
    huge = invalid_error(daemon, "huge")
    time.sleep(4.5)  # a window of at least 3.5 s of `tick` slots
    until = datetime.now(UTC) - timedelta(seconds=1)

    assert flood.startswith(f"{daemon.tasks / 'flood.md'}:4:1: unclosed <run_python> block")
    assert deep.startswith(f"{daemon.tasks / 'good.md'}:6:65: lists and mappings are nested")
    assert huge.startswith(f"{daemon.tasks / 'huge.md'}:10489: the file is over 1 MiB")

    # `tick` missed no slot while the files were read, and none started late.
    ticks = [r for r in daemon.runs("tick") if since <= daemon.utc(r["slot"]) <= until]
    slots = sorted(daemon.utc(r["slot"]) for r in ticks)
    assert len(slots) >= 3
    assert len(slots) == round((slots[-1] - slots[0]).total_seconds()) + 1, slots
    assert len(set(slots)) == len(slots)
    late = [(daemon.utc(r["started_at"]) - daemon.utc(r["slot"])).total_seconds() for r in ticks]
    assert max(late) < 0.5, late
    assert daemon.query("SELECT COUNT(*) FROM runs WHERE status = 'missed'")[0][0] == 0

    # The last good version of `good` kept firing, and the bad files never ran.
    kept = [r for r in after(daemon, "good", since) if r["finished_at"]]
    assert len(kept) >= 3 and {r["output"] for r in kept} == {"good\n"}
    assert daemon.runs("flood") == [] and daemon.runs("huge") == []
    assert daemon.events("task.removed") == []
    status = daemon.cli_json("daemon", "status")
    assert {e["task"] for e in status["errors"]} == {"flood", "good", "huge"}


# -- the watcher outlives failures ---------------------------------------------------------


def test_the_watcher_survives_a_planning_error_during_a_rescan(daemon: DaemonHome) -> None:
    daemon.write("alpha", every("alpha"))
    daemon.write("beta", every("beta"))
    daemon.write("echo", every("echo", "1h"))
    daemon.start()
    daemon.wait_for(lambda: daemon.runs("beta", status="succeeded"), 8, "beta runs")
    # A corrupt row of state.db: planning `echo` again raises (ValueError) from now on.
    db = sqlite3.connect(daemon.home / "state.db", timeout=10)
    with db:
        changed = db.execute("UPDATE trigger_state SET last_slot = 'garbage' WHERE task = 'echo'")
    db.close()
    assert changed.rowcount == 1

    # The directory is replaced at once (a deploy, a checkout): watching must follow it,
    # and the rescan meets the planning error half-way through the files.
    new = daemon.home / "tasks.new"
    new.mkdir()
    (new / "alpha.md").write_text(every("alpha"))
    (new / "echo.md").write_text(every("echo", "2h"))  # changed: planned again, which fails
    (new / "zulu.md").write_text(every("zulu"))  # new, after `echo` in the rescan's order
    swapped = datetime.now(UTC)
    daemon.tasks.rename(daemon.home / "tasks.old")
    new.rename(daemon.tasks)

    failed = daemon.wait_for(lambda: daemon.events("watcher.failed", "echo"), 10, "the report")
    detail = json.loads(failed[0]["detail"])
    assert detail["during"] == "planning echo" and detail["error"].startswith("ValueError")
    assert "watcher: planning echo failed (ValueError" in daemon.output()
    daemon.wait_for(lambda: daemon.runs("zulu", status="succeeded"), 8, "the new file's runs")
    (removed,) = daemon.wait_for(lambda: daemon.events("task.removed", "beta"), 8, "beta removed")
    daemon.holds_for(
        lambda: not after(daemon, "beta", daemon.utc(removed["at"])), 1.5, "no beta run"
    )
    assert after(daemon, "alpha", swapped)  # untouched, still firing

    # Watching goes on in the new directory: a new file is scheduled, a deleted one stops.
    daemon.write("delta", every("delta"))
    daemon.wait_for(lambda: daemon.runs("delta", status="succeeded"), 8, "delta runs")
    (daemon.tasks / "alpha.md").unlink()
    (gone,) = daemon.wait_for(lambda: daemon.events("task.removed", "alpha"), 8, "alpha removed")
    daemon.holds_for(lambda: not after(daemon, "alpha", daemon.utc(gone["at"])), 1.5, "no alpha")
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_a_removed_tasks_directory_is_reported_and_waited_for(daemon: DaemonHome) -> None:
    daemon.write("alpha", every("alpha"))
    daemon.start()
    daemon.wait_for(lambda: daemon.runs("alpha", status="succeeded"), 8, "alpha runs")

    away = daemon.home / "tasks.away"
    daemon.tasks.rename(away)
    (event,) = daemon.wait_for(lambda: daemon.events("watcher.failed"), 10, "the report")
    assert json.loads(event["detail"])["error"] == f"{daemon.tasks} is missing"
    (removed,) = daemon.wait_for(lambda: daemon.events("task.removed", "alpha"), 8, "unscheduled")
    daemon.holds_for(lambda: not daemon.tasks.exists(), 1.5, "the daemon not re-creating it")
    assert not after(daemon, "alpha", daemon.utc(removed["at"]))

    (away / "beta.md").write_text(every("beta"))
    away.rename(daemon.tasks)  # restored, with one more task
    daemon.wait_for(lambda: daemon.runs("beta", status="succeeded"), 10, "beta runs")
    daemon.wait_for(
        lambda: after(daemon, "alpha", daemon.utc(removed["at"])), 8, "alpha back on schedule"
    )
    daemon.write("gamma", every("gamma"))  # and watched again
    daemon.wait_for(lambda: daemon.runs("gamma", status="succeeded"), 8, "gamma runs")
