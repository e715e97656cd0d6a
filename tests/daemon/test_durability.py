"""What a run row promises survives the daemon's death (docs/operations.md, "Runs" and "Faults").

- `catch_up: all`: every slot of a long catch-up ends as one run (or a `missed` row),
  also when the daemon is killed in the middle of the catch-up, twice.
- A webhook's 202: the run is in state.db as `queued` with its payload; a daemon killed
  with -9 (or stopped) while runs wait leaves them queued, and the next start runs each
  of them once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from conftest import DaemonHome


def utc(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


def active(home: DaemonHome, task: str) -> int:
    rows = home.query(
        "SELECT count(*) FROM runs WHERE task = ? AND status IN ('queued', 'running')", (task,)
    )
    return int(rows[0][0]) if rows else 0


def finished(home: DaemonHome, task: str) -> int:
    rows = home.query(
        "SELECT count(*) FROM runs WHERE task = ? AND status NOT IN ('queued', 'running')",
        (task,),
    )
    return int(rows[0][0]) if rows else 0


CATCH_UP = (
    "---\ntriggers:\n  - every: 1s\ncatch_up: all\ncatch_up_window: 1h\nexecute: true\n---\n"
    "<run_python>\nimport time\ntime.sleep(0.2)\nprint(run['slot'])\n</run_python>\n"
)


def test_kill_9_during_a_catch_up_of_catch_up_all_loses_no_slot(daemon: DaemonHome) -> None:
    daemon.write("all", CATCH_UP)
    daemon.start()
    daemon.wait_for(lambda: len(daemon.runs("all", status="succeeded")) >= 2, 10, "two runs")
    daemon.kill()
    time.sleep(8)  # eight slots pass while it is down
    daemon.start()
    # The catch-up runs one slot a second; kill it again in the middle.
    daemon.wait_for(
        lambda: len(daemon.runs("all", trigger="catch-up", status="succeeded")) >= 3,
        15,
        "three catch-up runs",
    )
    queued = daemon.runs("all", trigger="catch-up", status="queued")
    assert queued, "nothing was left to catch up when killed: the test proves nothing"
    daemon.kill()
    assert daemon.runs("all", trigger="catch-up", status="queued"), "the queued rows are gone"
    time.sleep(2)
    daemon.start()
    daemon.wait_for(lambda: active(daemon, "all") == 0 or None, 30, "the catch-up to finish")
    daemon.stop()

    rows = daemon.runs("all")
    slots = sorted(utc(r["slot"]) for r in rows)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]
    assert all(abs(g - 1.0) < 0.01 for g in gaps), gaps  # each slot once, none lost
    assert daemon.duplicate_slots() == []
    # Ran, or cut short by a kill; the kill -9s left nothing queued or running. A slot
    # that came due while a catch-up run was active is skipped by `overlap: skip`.
    assert {r["status"] for r in rows} <= {"succeeded", "interrupted", "skipped"}
    assert len([r for r in rows if r["status"] == "interrupted"]) <= 2
    for r in rows:
        if r["status"] == "skipped":
            assert r["trigger"] == "schedule" and "overlap: skip" in r["skip_reason"]
    assert len([r for r in rows if r["trigger"] == "catch-up"]) >= 10
    for r in rows:
        if r["status"] == "succeeded":
            assert r["slot"] in r["output"]  # each run saw its own slot


HOOK = (
    "---\ntriggers:\n  - webhook: true\noverlap: allow\nexecute: true\n---\n"
    "<run_python>\nimport time\ntime.sleep(0.2)\nprint('n=%d' % payload['n'])\n</run_python>\n"
)


async def post_all(url: str, count: int) -> list[tuple[int, dict[str, Any]]]:
    async with aiohttp.ClientSession() as session:

        async def one(n: int) -> tuple[int, dict[str, Any]]:
            async with session.post(url, data=json.dumps({"n": n})) as resp:
                return resp.status, await resp.json()

        return list(await asyncio.gather(*(one(n) for n in range(count))))


def test_accepted_webhook_runs_survive_kill_9_and_a_stop_and_run_once_each(
    daemon: DaemonHome,
) -> None:
    daemon.config.write_text("max_concurrent_runs = 2\n" + daemon.CONFIG)
    daemon.write("hook", HOOK)
    daemon.start()
    url = daemon.cli("webhook", "url", "hook").stdout.strip()
    answers = asyncio.run(post_all(url, 60))
    assert [status for status, _ in answers] == [202] * 60
    ids = {body["run"]: n for n, (_, body) in enumerate(answers)}
    assert len(ids) == 60
    # Every 202 is a committed row already, with its payload, before any has run.
    daemon.wait_for(lambda: finished(daemon, "hook") >= 4, 20, "a few runs")
    daemon.kill()
    waiting = daemon.query("SELECT id, payload FROM runs WHERE status = 'queued'")
    assert len(waiting) >= 30
    assert all(json.loads(r["payload"])["n"] == ids[r["id"]] for r in waiting)

    daemon.start()
    daemon.wait_for(lambda: finished(daemon, "hook") >= 20, 30, "more runs")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    # A stop leaves the waiting runs queued for the next start, not interrupted.
    assert daemon.runs("hook", status="queued")

    daemon.start()
    daemon.wait_for(lambda: active(daemon, "hook") == 0 or None, 60, "the queue to drain")
    daemon.stop()
    rows = daemon.runs("hook")
    assert sorted(r["id"] for r in rows) == sorted(ids)  # one row a 202, no other
    statuses = [r["status"] for r in rows]
    assert set(statuses) <= {"succeeded", "interrupted"}
    assert statuses.count("interrupted") <= 2  # running when killed: at most the cap
    for r in rows:
        if r["status"] == "succeeded":
            assert f"n={ids[r['id']]}" in r["output"]  # each ran with its own payload
        assert r["payload"] is None  # not kept once the run started
    started = [e["run"] for e in daemon.events("run.started", "hook")]
    assert len(started) == len(set(started)) == len(rows)  # each started exactly once


# Fails on its first try (it leaves a mark in its files/ directory), succeeds on its retry.
FLAKY = (
    "---\ntriggers:\n  - at: '{at}'\nretries: 1\nretry_delay: 4s\nexecute: true\n---\n"
    "<run_python>\nimport os\nif not os.path.exists('tried'):\n"
    "    open('tried', 'w').close()\n    raise RuntimeError('first try fails')\n"
    "print('second try')\n</run_python>\n"
)


def test_a_retry_planned_before_a_kill_9_runs_once_after_the_restart(daemon: DaemonHome) -> None:
    daemon.write("flaky", FLAKY.format(at=daemon.iso_in(1.5)))
    daemon.start()
    failed = daemon.wait_for(
        lambda: daemon.query(
            "SELECT * FROM runs WHERE task = 'flaky' AND status = 'failed' AND retry_at IS NOT NULL"
        ),
        15,
        "the first try to fail with its retry planned",
    )[0]
    daemon.kill()  # 3-5 s before the retry: it waited in the daemon's memory only
    assert not daemon.runs("flaky", attempt=2)
    daemon.start()
    retry = daemon.wait_for(
        lambda: daemon.runs("flaky", attempt=2, status="succeeded"), 20, "the retry to succeed"
    )[0]
    daemon.stop()

    assert retry["trigger"] == "retry" and retry["slot"] == failed["slot"]
    assert "second try" in retry["output"]
    assert utc(retry["started_at"]) >= utc(failed["retry_at"])  # at its time, not at start
    assert [r["attempt"] for r in daemon.runs("flaky")] == [1, 2]  # once, no third
    assert daemon.duplicate_slots() == []
