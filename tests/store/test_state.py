"""Tests for store/state.py: the SQLite state database, against real files and processes."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from daycare_cli.core.errors import NotFoundError, UsageError
from daycare_cli.store.database import StateError
from daycare_cli.store.migrations import MIGRATIONS
from daycare_cli.store.runs import CUT_MARKER, TEXT_CAP, new_run_id
from daycare_cli.store.state import State

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "state.db"


@pytest.fixture
def state(db_path: Path) -> Iterator[State]:
    with State.open(db_path) as st:
        yield st


def at(minutes: float = 0, days: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, days=days)


# --- opening and migrations -------------------------------------------------------------


def test_open_creates_parent_and_records_migrations(db_path: Path) -> None:
    with State.open(db_path) as st:
        names = [name for name, _ in st.migrations()]
    assert names == [m.__name__ for m in MIGRATIONS]
    assert names[0] == "m001_initial"


def test_reopening_runs_no_migration_again_and_keeps_data(db_path: Path) -> None:
    with State.open(db_path) as st:
        first = st.migrations()
        run = st.create_run("t", "manual", now=T0)
        assert run is not None
    with State.open(db_path) as st:
        assert st.migrations() == first
        again = st.get_run(run.id)
    assert again == run


def m099_add_note(db: sqlite3.Connection) -> None:
    # ADD COLUMN fails when run twice: this migration proves it runs exactly once.
    db.execute("ALTER TABLE runs ADD COLUMN note TEXT")


def m099_broken(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE half_done (x INTEGER)")
    raise RuntimeError("migration failed")


def test_a_new_migration_runs_once_on_an_existing_database(db_path: Path) -> None:
    State.open(db_path).close()
    with State.open(db_path, migrations=(*MIGRATIONS, m099_add_note)) as st:
        assert [n for n, _ in st.migrations()] == [
            "m001_initial",
            "m002_run_payload",
            "m003_finished_runs_index",
            "m004_block_started_at",
            "m005_planned_retries",
            "m099_add_note",
        ]
    with State.open(db_path, migrations=(*MIGRATIONS, m099_add_note)) as st:
        assert len(st.migrations()) == 6
    db = sqlite3.connect(db_path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(runs)")]
    db.close()
    assert columns.count("note") == 1


def test_a_failing_migration_leaves_nothing_behind(db_path: Path) -> None:
    State.open(db_path).close()
    with pytest.raises(RuntimeError, match="migration failed"):
        State.open(db_path, migrations=(*MIGRATIONS, m099_broken))
    db = sqlite3.connect(db_path)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    applied = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    db.close()
    assert "half_done" not in tables
    assert applied == {
        "m001_initial",
        "m002_run_payload",
        "m003_finished_runs_index",
        "m004_block_started_at",
        "m005_planned_retries",
    }


def test_database_file_is_private_and_wal_is_on(db_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the file
    try:
        with State.open(db_path) as st:
            st.create_run("t", "manual", now=T0)
            mode = st._db.execute("PRAGMA journal_mode").fetchone()[0]
            wal = Path(str(db_path) + "-wal")
            assert wal.exists()
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert mode == "wal"
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_opening_tightens_a_world_readable_database(db_path: Path) -> None:
    State.open(db_path).close()
    db_path.chmod(0o644)
    State.open(db_path).close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_a_home_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("not a directory")
    with pytest.raises(StateError, match="cannot open the state database") as info:
        State.open(tmp_path / "home" / "state.db")
    assert info.value.path == str(tmp_path / "home" / "state.db")
    assert info.value.hint


def test_a_file_that_is_not_a_database_is_a_clear_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"hello, this is text and not SQLite" * 100)
    with pytest.raises(StateError, match="not a SQLite database") as info:
        State.open(db_path)
    assert "move it aside" in (info.value.hint or "")


def test_reader_is_not_blocked_by_a_writer_and_a_writer_waits(db_path: Path) -> None:
    with State.open(db_path) as st:
        before = st.create_run("t", "manual", now=T0)
        other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        other.execute(
            "INSERT INTO runs (id, task, trigger, status, queued_at) "
            "VALUES ('x', 't', 'manual', 'queued', ?)",
            (at(1).isoformat(),),
        )
        # WAL: the reader sees the last committed state while the write is open.
        assert st.list_runs() == [before]
        timer = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        timer.start()
        started = time.monotonic()
        try:
            # The write lock is held for 0.3 s: busy_timeout waits instead of failing.
            created = st.create_run("t", "manual", now=at(2))
        finally:
            timer.join()
            other.close()
        assert time.monotonic() - started >= 0.2
        assert created is not None
        assert len(st.list_runs()) == 3


CONCURRENT = """
import sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from daycare_cli.store.state import State
db, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():  # start together: open (and migrate) and write at the same time
    time.sleep(0.001)
st = State.open(db)
t0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
made = 0
for i in range(50):
    if st.create_run("t", "schedule", "cron", t0 + timedelta(minutes=i), now=t0) is not None:
        made += 1
print(made)
"""


def test_processes_racing_for_the_same_slots_create_each_once(tmp_path: Path) -> None:
    # Four processes open a fresh database at once (racing the migrations), then all try
    # to create the same 50 slots.
    db_path = tmp_path / "home" / "state.db"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ready = [tmp_path / f"ready-{i}" for i in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(db_path), str(marker), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for marker in ready
    ]
    deadline = time.monotonic() + 20
    while not all(m.exists() for m in ready) and time.monotonic() < deadline:
        time.sleep(0.005)
    go.touch()
    made = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        made.append(int(out))
    assert sum(made) == 50
    with State.open(db_path) as st:
        runs = st.list_runs(limit=None)
        assert len(runs) == 50
        assert len({r.slot for r in runs}) == 50
        assert [n for n, _ in st.migrations()] == [
            "m001_initial",
            "m002_run_payload",
            "m003_finished_runs_index",
            "m004_block_started_at",
            "m005_planned_retries",
        ]


# --- runs -------------------------------------------------------------------------------


def test_new_run_id_sorts_by_time() -> None:
    ids = [new_run_id(at(m)) for m in (0, 1, 60 * 24)]
    assert re.fullmatch(r"20261122T090000Z-[0-9a-f]{8}", ids[0])
    assert ids == sorted(ids)
    berlin = timezone(timedelta(hours=1))
    assert new_run_id(T0.astimezone(berlin)).startswith("20261122T090000Z-")


def test_run_ids_stay_unique_when_retention_deletes_rows_of_the_same_second(
    state: State,
) -> None:
    # A webhook burst: far more than `keep` runs of one task within one second.
    seen = set()
    for _ in range(1000):
        run = state.create_run("burst", "webhook", now=T0)
        assert run is not None
        state.start_run(run.id, now=T0)
        state.finish_run(run.id, status="succeeded", now=T0)
        state.prune("burst", keep=3, max_age_days=30, now=T0)
        seen.add(run.id)
    assert len(seen) == 1000


def test_events_can_share_the_run_transaction(state: State) -> None:
    run = state.create_run("t", "manual", now=T0, event=("cli", "run.fired", {"x": 1}))
    assert run is not None
    state.start_run(run.id, now=T0, event=("runner", "run.started", None), task="t")
    state.finish_run(run.id, status="succeeded", now=T0, event=("runner", "run.finished", None))
    kinds = [(e.kind, e.task, e.run) for e in state.list_events(task="t")]
    assert kinds == [
        ("run.fired", "t", run.id),
        ("run.started", "t", run.id),
        ("run.finished", "t", run.id),
    ]


def test_a_slot_fires_once(state: State) -> None:
    first = state.create_run("t", "schedule", "cron", T0, now=T0)
    assert first is not None
    assert first.slot == T0
    assert first.status == "queued"
    assert first.pid == os.getpid()
    # the same instant spelled in another zone or as text is the same slot
    berlin = T0.astimezone(timezone(timedelta(hours=1)))
    assert state.create_run("t", "schedule", "cron", berlin, now=T0) is None
    assert state.create_run("t", "catch-up", "cron", T0.isoformat(), now=T0) is None
    # a retry (next attempt), another trigger or another task is a different key
    assert state.create_run("t", "retry", "cron", T0, attempt=2, now=T0) is not None
    assert state.create_run("t", "schedule", "cron2", T0, now=T0) is not None
    assert state.create_run("u", "schedule", "cron", T0, now=T0) is not None
    # runs without a slot (manual, webhook) never collide
    assert state.create_run("t", "manual", now=T0) is not None
    assert state.create_run("t", "manual", now=T0) is not None
    assert len(state.list_runs(limit=None)) == 6


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("t", "cron"), {}, "unknown trigger"),
        (("t", "manual"), {"status": "done"}, "unknown run status"),
        (("t", "manual"), {"attempt": 0}, "attempt must be at least 1"),
        (("t", "schedule", None, T0), {}, "needs its trigger_id"),
        (("t", "schedule", "cron", datetime(2026, 1, 1)), {}, "aware"),
    ],
)
def test_create_run_rejects_bad_values(
    state: State, args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        state.create_run(*args, now=T0, **kwargs)  # type: ignore[arg-type]


def test_run_lifecycle_and_json(state: State) -> None:
    run = state.create_run("t", "schedule", "cron", T0, now=T0)
    assert run is not None
    assert state.start_run(run.id, pid=4242, now=at(1)) is True
    assert state.start_run(run.id, pid=4242, now=at(1)) is False  # already running
    state.set_run_dir(run.id, "/w/t/runs/" + run.id)
    done = state.finish_run(
        run.id,
        status="succeeded",
        now=at(1) + timedelta(milliseconds=1500),
        output="expanded",
        response="answer",
        model="echo",
        input_tokens=10,
        output_tokens=3,
        isolation="bubblewrap",
    )
    assert done.duration_ms == 1500
    assert done.pid == 4242
    doc = done.to_json()
    assert list(doc) == [
        "id",
        "task",
        "trigger",
        "slot",
        "attempt",
        "status",
        "queued_at",
        "started_at",
        "finished_at",
        "duration_ms",
        "output",
        "response",
        "error",
        "skip_reason",
        "run_dir",
        "model",
        "input_tokens",
        "output_tokens",
        "isolation",
        "block_started_at",
    ]
    assert doc["slot"] == "2026-11-22T09:00:00+00:00"
    assert doc["started_at"] == "2026-11-22T09:01:00+00:00"
    assert datetime.fromisoformat(doc["finished_at"]) == at(1) + timedelta(seconds=1.5)
    assert (doc["status"], doc["output"], doc["response"]) == ("succeeded", "expanded", "answer")
    assert doc["run_dir"] == "/w/t/runs/" + run.id
    # a later finish without those fields keeps them (None means "unchanged")
    again = state.finish_run(run.id, status="failed", now=at(2), error="boom")
    assert (again.status, again.output, again.error) == ("failed", "expanded", "boom")


def test_finish_run_of_a_queued_run_has_no_duration(state: State) -> None:
    run = state.create_run("t", "manual", now=T0)
    assert run is not None
    done = state.finish_run(run.id, status="cancelled", now=at(1))
    assert (done.status, done.duration_ms, done.started_at) == ("cancelled", None, None)
    assert done.finished_at == at(1)


def test_finish_run_rejects_unfinished_status_and_unknown_run(state: State) -> None:
    run = state.create_run("t", "manual", now=T0)
    assert run is not None
    with pytest.raises(ValueError, match="not a finished status"):
        state.finish_run(run.id, status="running", now=T0)
    with pytest.raises(NotFoundError):
        state.finish_run("nope", status="failed", now=T0)
    with pytest.raises(NotFoundError):
        state.start_run("nope", now=T0)


def test_output_is_capped_at_one_mebibyte(state: State) -> None:
    run = state.create_run("t", "manual", now=T0)
    assert run is not None
    big = "é" * TEXT_CAP  # 2 MiB of UTF-8
    done = state.finish_run(run.id, status="succeeded", now=at(1), output=big, response="ok")
    assert done.output is not None
    assert done.output.endswith(CUT_MARKER)
    kept = done.output.removesuffix(CUT_MARKER)
    assert kept == "é" * (TEXT_CAP // 2)
    assert done.response == "ok"


def test_get_run_by_unique_prefix(state: State) -> None:
    a = state.create_run("t", "manual", now=T0)
    b = state.create_run("t", "manual", now=at(1))
    assert a is not None and b is not None
    assert state.get_run(a.id) == a
    assert state.get_run("20261122T0900") == a
    assert state.get_run(b.id[:15]) == b
    assert state.get_run("2027") is None
    assert state.get_run("") is None
    with pytest.raises(UsageError, match="ambiguous") as info:
        state.get_run("20261122")
    assert a.id in str(info.value) and b.id in str(info.value)


def test_list_runs_newest_first_with_filters(state: State) -> None:
    made = []
    for minute, task in enumerate(["a", "b", "a", "a"]):
        run = state.create_run(task, "manual", now=at(minute))
        assert run is not None
        made.append(run)
    state.finish_run(made[2].id, status="failed", now=at(5))
    assert [r.id for r in state.list_runs()] == [r.id for r in reversed(made)]
    assert [r.id for r in state.list_runs("a", limit=2)] == [made[3].id, made[2].id]
    assert [r.id for r in state.list_runs(status="failed")] == [made[2].id]
    assert state.list_runs("a", status="succeeded") == []


def test_running_runs(state: State) -> None:
    queued = state.create_run("a", "manual", now=T0)
    running = state.create_run("a", "manual", now=at(1))
    other = state.create_run("b", "manual", status="running", now=at(2))
    assert queued and running and other
    state.start_run(running.id, now=at(1))
    assert [r.id for r in state.running_runs()] == [running.id, other.id]
    assert [r.id for r in state.running_runs("a")] == [running.id]
    assert [r.id for r in state.running_runs("a", include_queued=True)] == [queued.id, running.id]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_mark_interrupted_only_touches_runs_of_dead_processes(state: State) -> None:
    dead = dead_pid()
    gone = state.create_run("t", "manual", now=T0, pid=dead)
    mine = state.create_run("t", "manual", now=T0)  # this process: alive
    orphan = state.create_run("t", "manual", now=T0)
    done = state.create_run("t", "manual", now=T0, pid=dead)
    assert gone and mine and orphan and done
    state.start_run(gone.id, pid=dead, now=at(1))
    state.finish_run(done.id, status="succeeded", now=at(1))
    state._db.execute("UPDATE runs SET pid = NULL WHERE id = ?", (orphan.id,))

    marked = state.mark_interrupted(now=at(3))

    assert {r.id for r in marked} == {gone.id, orphan.id}
    by_id = {r.id: r for r in marked}
    assert by_id[gone.id].status == "interrupted"
    assert by_id[gone.id].duration_ms == 120_000
    assert f"pid {dead}" in (by_id[gone.id].error or "")
    assert by_id[orphan.id].duration_ms is None
    assert state.get_run(mine.id).status == "queued"  # type: ignore[union-attr]
    assert state.get_run(done.id).status == "succeeded"  # type: ignore[union-attr]
    assert state.mark_interrupted(now=at(4)) == []


def test_mark_interrupted_asks_the_given_liveness_check(state: State) -> None:
    a = state.create_run("t", "manual", status="running", pid=111, now=T0)
    b = state.create_run("t", "manual", status="running", pid=222, now=T0)
    assert a and b
    marked = state.mark_interrupted(lambda pid: pid == 222, now=at(1))
    assert [r.id for r in marked] == [a.id]


def test_record_missed_takes_the_slot(state: State) -> None:
    slots = [at(0), at(15), at(30)]
    state.create_run("t", "schedule", "cron", at(15), now=at(15))
    missed = state.record_missed("t", "cron", slots, now=at(40))
    assert [r.slot for r in missed] == [at(0), at(30)]
    assert all(r.status == "missed" and r.finished_at == at(40) for r in missed)
    assert all(r.pid is None and r.skip_reason for r in missed)
    assert state.create_run("t", "catch-up", "cron", at(30), now=at(41)) is None


# --- events -----------------------------------------------------------------------------


def test_events_are_a_ledger(state: State) -> None:
    ids = [
        state.add_event("cli", "task.created", task="a", detail={"path": "/t/a.md"}, now=T0),
        state.add_event("schedule", "run.fired", task="b", run="r1", now=at(1)),
        state.add_event("daemon", "daemon.started", now=at(2)),
        state.add_event("file", "task.changed", task="a", detail={"n": 1, "é": [1]}, now=at(3)),
    ]
    assert ids == sorted(ids)
    events = state.list_events()
    assert [e.id for e in events] == ids  # oldest first
    assert events[0].detail == {"path": "/t/a.md"}
    assert events[3].detail == {"n": 1, "é": [1]}
    assert events[1].to_json() == {
        "id": ids[1],
        "at": "2026-11-22T09:01:00+00:00",
        "actor": "schedule",
        "kind": "run.fired",
        "task": "b",
        "run": "r1",
        "detail": None,
    }
    assert [e.id for e in state.list_events(limit=2)] == ids[2:]  # the newest two
    assert [e.id for e in state.list_events(task="a")] == [ids[0], ids[3]]
    assert [e.id for e in state.list_events(since_id=ids[1])] == ids[2:]
    assert [e.id for e in state.list_events(since_id=ids[0], limit=1)] == [ids[1]]
    assert [e.id for e in state.list_events(run="r1")] == [ids[1]]
    with pytest.raises(ValueError, match="unknown actor"):
        state.add_event("someone", "x", now=T0)


# --- trigger and task state ---------------------------------------------------------------


def test_trigger_state_round_trip(state: State) -> None:
    fresh = state.get_trigger_state("t", "cron")
    assert (fresh.last_slot, fresh.failure_streak, fresh.flagged) == (None, 0, False)
    state.set_trigger_state("t", "cron", last_slot=at(15), last_fire_at=at(15, 0.0))
    state.set_trigger_state("t", "cron", failure_streak=2)  # others stay
    got = state.get_trigger_state("t", "cron")
    assert (got.last_slot, got.last_fire_at, got.failure_streak) == (at(15), at(15), 2)
    state.set_trigger_state("u", "hook", flagged=True)
    assert [(s.task, s.trigger_id) for s in state.trigger_states()] == [
        ("t", "cron"),
        ("u", "hook"),
    ]
    assert state.trigger_states("u")[0].flagged is True


def test_record_outcome_flags_once_and_recovers(state: State) -> None:
    events, ids = [], []
    for i, status in enumerate(["failed", "timed_out", "failed", "failed", "succeeded"]):
        run = state.create_run("t", "schedule", "cron", at(i), now=at(i))
        assert run is not None
        ids.append(run.id)
        events.append(state.record_outcome("t", status, run.id, threshold=3).event)
    assert events == [None, None, "failure-streak", None, "recovery"]
    task_state = state.get_task_state("t")
    assert (task_state.failure_streak, task_state.flagged) == (0, False)
    assert (task_state.last_success_run, task_state.last_failure_run) == (ids[4], ids[3])
    trigger_state = state.get_trigger_state("t", "cron")
    assert (trigger_state.failure_streak, trigger_state.flagged) == (0, False)


def test_record_outcome_reports_the_streak(state: State) -> None:
    run = state.create_run("t", "manual", now=T0)
    assert run is not None
    changes = [state.record_outcome("t", "failed", run.id) for _ in range(5)]
    assert [c.streak for c in changes] == [1, 2, 3, 4, 5]
    assert changes[-1].flagged and changes[-1].event == "failure-streak"
    assert state.get_task_state("t").last_failure_run == run.id
    assert state.trigger_states() == []  # a manual run has no trigger to track


# --- webhook tokens -----------------------------------------------------------------------


def test_tokens_issue_rotate_lookup(state: State) -> None:
    token = state.issue_token("git", "webhook", now=T0)
    assert len(token) == 32  # 24 random bytes, URL-safe base64
    assert state.issue_token("git", "webhook", now=at(1)) == token
    assert state.lookup_token(token) == ("git", "webhook")
    other = state.issue_token("git", "push", now=T0)
    assert other != token
    assert state.lookup_token(other) == ("git", "push")

    new = state.rotate_token("git", "webhook", now=at(2))
    assert new != token
    assert state.lookup_token(token) is None
    assert state.lookup_token(new) == ("git", "webhook")
    assert state.issue_token("git", "webhook") == new
    assert state.lookup_token("not-a-token") is None
    assert state.lookup_token("") is None

    assert state.revoke_tokens("git", now=at(3)) == 2
    assert state.lookup_token(new) is None and state.lookup_token(other) is None
    row = state._db.execute(
        "SELECT token_hash, revoked_at FROM webhook_tokens WHERE token = ?", (new,)
    ).fetchone()
    assert row["token_hash"] == hashlib.sha256(new.encode()).hexdigest()
    assert row["revoked_at"] == "2026-11-22T09:03:00.000000+00:00"  # microseconds (m004)


# --- deliveries ---------------------------------------------------------------------------


def test_a_repeated_delivery_is_recognised(state: State) -> None:
    assert state.remember_delivery("git", "d-1", "run-a", now=T0) is None
    assert state.remember_delivery("git", "d-1", "run-b", now=T0) == "run-a"
    assert state.remember_delivery("other", "d-1", "run-c", now=T0) is None
    assert state.delivery_run("git", "d-1") == "run-a"
    assert state.delivery_run("git", "d-2") is None


def test_create_run_with_a_delivery_id_is_atomic(state: State) -> None:
    first = state.create_run("git", "webhook", "hook", delivery_id="d-9", now=T0)
    assert first is not None
    assert state.create_run("git", "webhook", "hook", delivery_id="d-9", now=T0) is None
    assert state.delivery_run("git", "d-9") == first.id
    assert len(state.list_runs("git")) == 1


def test_planned_retries_are_those_whose_run_is_not_written_yet(state: State) -> None:
    first = state.create_run("t", "schedule", "cron", T0, now=T0)
    other = state.create_run("u", "schedule", "every", at(5), now=at(5))
    plain = state.create_run("v", "schedule", "cron", T0, now=T0)  # failed, no retry planned
    assert first is not None and other is not None and plain is not None
    for run in (first, other, plain):
        state.finish_run(run.id, status="failed", error="boom", now=at(1))
    state.plan_retry(first.id, at(2))
    state.plan_retry(other.id, at(7))
    assert state.planned_retries() == [
        (first.id, "t", "cron", T0, 1, at(2)),
        (other.id, "u", "every", at(5), 1, at(7)),
    ]
    # The retry of `first` is written: it is no longer owed, and its record is cleared.
    assert state.create_run("t", "retry", "cron", T0, attempt=2, now=at(2)) is not None
    assert state.planned_retries() == [(other.id, "u", "every", at(5), 1, at(7))]
    assert (
        state._db.execute("SELECT retry_at FROM runs WHERE id = ?", (first.id,)).fetchone()[0]
        is None
    )
    state.plan_retry(other.id, None)  # dropped (its next slot came): not owed either
    assert state.planned_retries() == []


def test_retention_keeps_a_failed_run_whose_retry_is_owed(state: State) -> None:
    owed = state.create_run("t", "schedule", "cron", T0, now=T0)
    assert owed is not None
    state.finish_run(owed.id, status="failed", error="boom", now=at(1))
    state.plan_retry(owed.id, at(30))
    for i in range(5):  # newer failures and successes push it beyond `keep`
        run = state.create_run("t", "manual", now=at(2 + i))
        assert run is not None
        state.finish_run(run.id, status="failed" if i % 2 else "succeeded", now=at(2 + i))
    state.prune("t", keep=2, max_age_days=30, now=at(10))
    left = {r.id for r in state.list_runs("t", limit=None)}
    assert len(left) == 3  # the newest two and the owed one: the others went
    assert owed.id in left


# --- retention ----------------------------------------------------------------------------


def make_finished(state: State, task: str, status: str, when: datetime) -> str:
    run = state.create_run(task, "manual", now=when)
    assert run is not None
    state.set_run_dir(run.id, f"/w/{task}/runs/{run.id}")
    state.finish_run(run.id, status=status, now=when + timedelta(seconds=1))
    return run.id


def test_prune_keeps_the_newest_and_the_last_success_and_failure(state: State) -> None:
    success = make_finished(state, "t", "succeeded", at(0))
    failure = make_finished(state, "t", "timed_out", at(1))
    middle = [make_finished(state, "t", "skipped", at(2 + i)) for i in range(5)]
    active = state.create_run("t", "manual", now=at(10))
    newest = [make_finished(state, "t", "skipped", at(20 + i)) for i in range(3)]
    other_task = make_finished(state, "u", "skipped", at(0))
    assert active is not None

    deleted = state.prune("t", keep=3, max_age_days=30, now=at(30))

    assert sorted(deleted) == sorted(f"/w/t/runs/{rid}" for rid in middle)
    left = {r.id for r in state.list_runs(limit=None)}
    assert left == {success, failure, active.id, *newest, other_task}
    assert state.prune("t", keep=3, max_age_days=30, now=at(30)) == []


def test_prune_drops_runs_older_than_the_age_limit(state: State) -> None:
    old_success = make_finished(state, "t", "succeeded", at(days=-40))
    old = [make_finished(state, "t", "skipped", at(days=-35 + i)) for i in range(3)]
    recent = make_finished(state, "t", "succeeded", at(days=-29))
    old_failure = make_finished(state, "t", "failed", at(days=-50))
    state.remember_delivery("t", "old", old[0], now=at(days=-31))
    state.remember_delivery("t", "new", recent, now=at(days=-1))

    deleted = state.prune("t", keep=100, max_age_days=30, now=T0)

    assert len(deleted) == 4  # the three old skips and the older success
    assert f"/w/t/runs/{old_success}" in deleted
    assert {r.id for r in state.list_runs(limit=None)} == {recent, old_failure}
    assert state.delivery_run("t", "old") is None
    assert state.delivery_run("t", "new") == recent


def test_prune_with_keep_zero_still_keeps_the_last_success_and_failure(state: State) -> None:
    ids = [make_finished(state, "t", s, at(i)) for i, s in enumerate(["failed", "succeeded"] * 3)]
    state.prune("t", keep=0, max_age_days=30, now=at(10))
    assert {r.id for r in state.list_runs(limit=None)} == {ids[-1], ids[-2]}


def test_flagged_tasks_follow_the_streak(state: State) -> None:
    for _ in range(3):
        state.record_outcome("flaky", "failed", "r", threshold=3)
    state.record_outcome("fine", "succeeded", "r", threshold=3)
    assert state.flagged_tasks() == ["flaky"]
    state.record_outcome("flaky", "succeeded", "r", threshold=3)
    assert state.flagged_tasks() == []
