"""The transactions the daemon added for durability: settling a dead daemon's runs, a
catch-up in one commit, a webhook run queued with its payload, a last slot that never
moves back, a crash clean-up that never overwrites a recorded end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daycare_cli.store.runs import new_run_id
from daycare_cli.store.state import State

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
DEAD, ALIVE = 111, 222


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    with State.open(tmp_path / "state.db") as st:
        yield st


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_settle_interrupts_running_runs_and_resumes_the_queued_ones_it_may(
    state: State,
) -> None:
    running = state.create_run(
        "t", "schedule", "cron", at(0), status="running", pid=DEAD, now=at(0)
    )
    hook = state.create_run("t", "webhook", "hook", pid=DEAD, payload=b"{}", now=at(1))
    manual = state.create_run("t", "manual", status="queued", pid=DEAD, now=at(2))
    other = state.create_run("t", "webhook", "hook", status="queued", pid=ALIVE, now=at(3))
    assert running and hook and manual and other

    interrupted, adopted = state.settle_stale(
        lambda pid: pid == ALIVE, adopt=lambda run: run.trigger == "webhook", pid=333, now=at(5)
    )
    assert [r.id for r in interrupted] == [running.id, manual.id]
    assert {r.status for r in interrupted} == {"interrupted"}
    assert "(pid 111) ended before the run finished" in (interrupted[0].error or "")
    # The queued webhook run is this daemon's now, with its payload, still queued.
    [kept] = adopted
    assert (kept.id, kept.status, kept.pid, kept.payload) == (hook.id, "queued", 333, b"{}")
    # A live process's run is not touched.
    again = state.get_run(other.id)
    assert again is not None and (again.status, again.pid) == ("queued", ALIVE)


def test_a_catch_up_is_one_commit_of_queued_runs_missed_rows_and_the_last_slot(
    state: State,
) -> None:
    state.create_run("t", "schedule", "every", at(1), status="succeeded")  # recorded before
    ids = [new_run_id(at(10)) for _ in range(3)]
    created = state.record_catch_up(
        "t",
        "every",
        run=[(at(2), ids[0]), (at(3), ids[1]), (at(1), ids[2])],
        missed=[at(0)],
        last_slot=at(3),
        dropped=7,
        dropped_before=at(0),
        now=at(10),
    )
    # The slot that had a row keeps it; the others are queued catch-up runs, ids as given.
    assert [(r.id, r.trigger, r.status) for r in created] == [
        (ids[0], "catch-up", "queued"),
        (ids[1], "catch-up", "queued"),
    ]
    missed = state.list_runs(status="missed")
    assert [(r.slot, r.skip_reason) for r in missed] == [
        (at(0), "the daemon was not running at this time")
    ]
    assert state.get_trigger_state("t", "every").last_slot == at(3)
    [event] = [e for e in state.list_events(limit=None) if e.kind == "catch_up.dropped"]
    assert event.detail == {"trigger": "every", "slots": 7, "before": at(0).isoformat()}


def test_the_last_slot_never_moves_back(state: State) -> None:
    state.create_run("t", "schedule", "every", at(5), remember_slot=True)
    state.create_run("t", "retry", "every", at(2), attempt=2, remember_slot=True)
    assert state.get_trigger_state("t", "every").last_slot == at(5)
    state.create_run("t", "schedule", "every", at(6), remember_slot=True)
    assert state.get_trigger_state("t", "every").last_slot == at(6)


def test_a_webhook_run_keeps_its_payload_until_it_starts(state: State) -> None:
    body = json.dumps({"n": 1}).encode()
    run = state.create_run(
        "t", "webhook", "hook", status="queued", payload=body, delivery_id="d-1", now=at(0)
    )
    assert run is not None and run.payload == body
    assert "payload" not in run.to_json()  # not part of the JSON shape
    # The delivery was remembered in the same commit: a repeat finds the run.
    assert state.delivery_run("t", "d-1") == run.id
    assert state.create_run("t", "webhook", "hook", delivery_id="d-1") is None
    assert state.start_run(run.id, now=at(1))
    started = state.get_run(run.id)
    assert started is not None and started.payload is None


def test_a_run_id_drawn_ahead_is_used_and_never_drawn_twice(state: State) -> None:
    ids = {new_run_id(T0) for _ in range(5000)}
    assert len(ids) == 5000  # one process never repeats an id within a second
    run_id = new_run_id(T0)
    run = state.create_run("t", "manual", run_id=run_id, now=T0)
    assert run is not None and run.id == run_id


def test_a_crash_clean_up_never_overwrites_a_recorded_end(state: State) -> None:
    run = state.create_run("t", "manual", status="running", now=at(0))
    assert run is not None
    state.finish_run(run.id, status="succeeded", now=at(1))
    kept = state.finish_run(run.id, status="failed", error="internal", only_active=True)
    assert (kept.status, kept.error) == ("succeeded", None)
    other = state.create_run("t", "manual", status="running", now=at(0))
    assert other is not None
    ended = state.finish_run(other.id, status="failed", error="internal", only_active=True)
    assert (ended.status, ended.error) == ("failed", "internal")


def test_a_skipped_fire_is_one_row(state: State) -> None:
    run = state.create_run(
        "t", "schedule", "cron", at(0), status="skipped", skip_reason="overlap: skip"
    )
    assert run is not None
    assert (run.status, run.skip_reason, run.started_at, run.finished_at) == (
        "skipped",
        "overlap: skip",
        None,
        run.queued_at,
    )
