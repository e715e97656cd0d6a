"""Scheduling policies (core/policy.py): tables of cases, no loop, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from daycare_cli.core.policy import (
    CatchUpPlan,
    ConcurrencyQueue,
    apply_jitter,
    decide_overlap,
    default_catch_up_window,
    detect_clock_jump,
    plan_catch_up,
    plan_retry,
    queue_full,
    restored_retry,
    retry_delay,
)
from daycare_cli.core.task import AtTrigger, CronTrigger, EveryTrigger, Trigger, WebhookTrigger

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0
DAY = 86400.0


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


# --- default_catch_up_window -----------------------------------------------------------

WINDOW_CASES: list[tuple[str, Trigger, str, datetime, float]] = [
    ("every minute", EveryTrigger(60), "UTC", NOW, 60),
    ("every 25h is capped", EveryTrigger(90000), "UTC", NOW, DAY),
    ("every 15 min cron", CronTrigger("*/15 * * * *"), "UTC", NOW, 900),
    ("hourly", CronTrigger("0 * * * *"), "UTC", NOW, HOUR),
    ("every 6 h", CronTrigger("0 */6 * * *"), "UTC", NOW, 6 * HOUR),
    ("daily", CronTrigger("0 9 * * *"), "Europe/Berlin", NOW, DAY),
    ("weekly is capped", CronTrigger("0 0 * * 0"), "UTC", NOW, DAY),
    ("weekdays on Tue: Wed->Thu", CronTrigger("0 9 * * 1-5"), "UTC", NOW, DAY),
    ("weekdays on Thu: Fri->Mon capped", CronTrigger("0 9 * * 1-5"), "UTC",
     datetime(2026, 3, 12, 12, 0, tzinfo=UTC), DAY),
    ("every 5 min weekdays, Fri night", CronTrigger("*/5 * * * 1-5"), "UTC",
     datetime(2026, 3, 13, 23, 57, tzinfo=UTC), 5 * 60),
    ("at 9 and 17", CronTrigger("0 9,17 * * *"), "UTC", NOW, 16 * HOUR),
    ("daily across spring-forward", CronTrigger("0 9 * * *"), "Europe/Berlin",
     datetime(2026, 3, 28, 8, 0, tzinfo=BERLIN), 23 * HOUR),
    ("trigger zone wins over task zone", CronTrigger("0 9 * * *", timezone="Europe/Berlin"),
     "UTC", datetime(2026, 3, 28, 8, 0, tzinfo=BERLIN), 23 * HOUR),
    ("at: no period", AtTrigger(NOW + timedelta(days=1)), "UTC", NOW, DAY),
    ("@reboot: no period", CronTrigger("@reboot"), "UTC", NOW, DAY),
    ("webhook: no period", WebhookTrigger(), "UTC", NOW, DAY),
]  # fmt: skip


@pytest.mark.parametrize(
    ("trigger", "tz", "now", "expected"),
    [c[1:] for c in WINDOW_CASES],
    ids=[c[0] for c in WINDOW_CASES],
)
def test_default_catch_up_window(trigger: Trigger, tz: str, now: datetime, expected: float) -> None:
    assert default_catch_up_window(trigger, tz=tz, now=now) == expected


# --- plan_catch_up ---------------------------------------------------------------------

# (policy, ages of missed slots in seconds, window, limit, ages run, ages recorded missed)
CATCH_UP_CASES: list[tuple[str, list[float], float, int, list[float], list[float]]] = [
    ("skip", [], HOUR, 100, [], []),
    ("latest", [], HOUR, 100, [], []),
    ("all", [], HOUR, 100, [], []),
    ("skip", [1800, 1200, 600], HOUR, 100, [], [1800, 1200, 600]),
    ("latest", [1800, 1200, 600], HOUR, 100, [600], [1800, 1200]),
    ("all", [1800, 1200, 600], HOUR, 100, [1800, 1200, 600], []),
    ("latest", [600], HOUR, 100, [600], []),
    ("all", [600, 1800, 1200], HOUR, 100, [1800, 1200, 600], []),
    ("all", [600, 600, 1200], HOUR, 100, [1200, 600], []),
    ("skip", [7200, 600], HOUR, 100, [], [7200, 600]),
    ("latest", [7200, 5400, 600], HOUR, 100, [600], [7200, 5400]),
    ("all", [7200, 5400, 600], HOUR, 100, [600], [7200, 5400]),
    ("latest", [7200, 5400], HOUR, 100, [], [7200, 5400]),
    ("all", [7200, 5400], HOUR, 100, [], [7200, 5400]),
    ("latest", [3600], HOUR, 100, [3600], []),
    ("all", [3601, 3600], HOUR, 100, [3600], [3601]),
    ("latest", [3600.001], HOUR, 100, [], [3600.001]),
    ("all", [60, 0], 0, 100, [0], [60]),
    ("all", [300, 200, 100], HOUR, 2, [200, 100], [300]),
    ("all", [300, 200, 100], HOUR, 0, [], [300, 200, 100]),
    ("latest", [300, 200, 100], HOUR, 0, [100], [300, 200]),
]


@pytest.mark.parametrize(("policy", "missed", "window", "limit", "run", "dropped"), CATCH_UP_CASES)
def test_plan_catch_up(
    policy: str,
    missed: list[float],
    window: float,
    limit: int,
    run: list[float],
    dropped: list[float],
) -> None:
    plan = plan_catch_up(policy, [ago(a) for a in missed], now=NOW, window=window, limit=limit)
    assert [slot for slot, _ in plan.run] == [ago(a) for a in run]
    assert plan.missed == [ago(a) for a in dropped]
    # Every slot is either run or recorded missed, never both, never lost.
    assert sorted([s for s, _ in plan.run] + plan.missed) == sorted({ago(a) for a in missed})


def test_plan_catch_up_limit_of_100_keeps_the_newest() -> None:
    missed = [ago(60 * m) for m in range(150, 0, -1)]  # 150 slots a minute apart, oldest first
    plan = plan_catch_up("all", missed, now=NOW, window=DAY)
    assert [s for s, _ in plan.run] == missed[50:]
    assert plan.missed == missed[:50]
    assert plan.run[-1][1] == later(99)


# (policy, ages, stagger, start offsets after now in seconds)
STAGGER_CASES: list[tuple[str, list[float], float, list[float]]] = [
    ("all", [300, 200, 100], 1.0, [0, 1, 2]),
    ("all", [300, 200, 100], 2.5, [0, 2.5, 5]),
    ("all", [300, 200, 100], 0.0, [0, 0, 0]),
    ("latest", [300, 200, 100], 5.0, [0]),
    ("skip", [300, 200, 100], 5.0, []),
]


@pytest.mark.parametrize(("policy", "missed", "stagger", "starts"), STAGGER_CASES)
def test_plan_catch_up_stagger(
    policy: str, missed: list[float], stagger: float, starts: list[float]
) -> None:
    plan = plan_catch_up(policy, [ago(a) for a in missed], now=NOW, window=HOUR, stagger=stagger)
    assert [start for _, start in plan.run] == [later(s) for s in starts]


def test_plan_catch_up_staggers_real_seconds_across_fall_back() -> None:
    # 02:59:59 CEST, one second before the clocks go back: +1 s is 02:00:00 CET, not 03:00.
    now = datetime(2026, 10, 25, 2, 59, 59, tzinfo=BERLIN)
    slots = [now - timedelta(seconds=20), now - timedelta(seconds=10)]
    plan = plan_catch_up("all", slots, now=now, window=HOUR, stagger=1.0)
    assert [start for _, start in plan.run] == [
        datetime(2026, 10, 25, 0, 59, 59, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 0, 0, tzinfo=UTC),
    ]
    assert all(s.tzinfo is UTC for pair in plan.run for s in pair)


def test_plan_catch_up_is_a_value() -> None:
    assert plan_catch_up("skip", [], now=NOW, window=HOUR) == CatchUpPlan(run=[], missed=[])


@pytest.mark.parametrize(
    ("policy", "missed", "now", "window"),
    [
        ("everything", [], NOW, HOUR),
        ("all", [], NOW, -1.0),
        ("all", [], NOW.replace(tzinfo=None), HOUR),
        ("all", [ago(10).replace(tzinfo=None)], NOW, HOUR),
    ],
)
def test_plan_catch_up_rejects(
    policy: str, missed: list[datetime], now: datetime, window: float
) -> None:
    with pytest.raises(ValueError):
        plan_catch_up(policy, missed, now=now, window=window)


# --- decide_overlap --------------------------------------------------------------------

OVERLAP_CASES: list[tuple[str, int, int, str]] = [
    ("skip", 0, 0, "start"),
    ("skip", 1, 0, "skip"),
    ("skip", 2, 0, "skip"),
    ("skip", 0, 1, "start"),
    ("skip", 1, 1, "skip"),
    ("queue", 0, 0, "start"),
    ("queue", 1, 0, "queue"),
    ("queue", 2, 0, "queue"),
    ("queue", 1, 1, "skip"),
    ("queue", 0, 1, "skip"),
    ("queue", 1, 2, "skip"),
    ("allow", 0, 0, "start"),
    ("allow", 1, 0, "start"),
    ("allow", 5, 0, "start"),
    ("allow", 1, 1, "start"),
    ("replace", 0, 0, "start"),
    ("replace", 1, 0, "cancel_and_start"),
    ("replace", 2, 0, "cancel_and_start"),
    ("replace", 0, 1, "start"),
    ("replace", 1, 1, "cancel_and_start"),
]


@pytest.mark.parametrize(("policy", "active", "queued", "expected"), OVERLAP_CASES)
def test_decide_overlap(policy: str, active: int, queued: int, expected: str) -> None:
    assert decide_overlap(policy, active, queued) == expected


def test_queue_buffers_one_fire_while_a_run_is_active() -> None:
    active, queued, decisions = 0, 0, []
    for _ in range(4):  # four fires in a row while the first run is still going
        decision = decide_overlap("queue", active, queued)
        decisions.append(decision)
        active += decision == "start"
        queued += decision == "queue"
    assert decisions == ["start", "queue", "skip", "skip"]
    assert (active, queued) == (1, 1)


@pytest.mark.parametrize(
    ("policy", "active", "queued"), [("sometimes", 0, 0), ("skip", -1, 0), ("queue", 0, -1)]
)
def test_decide_overlap_rejects(policy: str, active: int, queued: int) -> None:
    with pytest.raises(ValueError):
        decide_overlap(policy, active, queued)


@pytest.mark.parametrize(
    ("queued", "limit", "full"),
    [(0, 1, False), (1, 1, True), (2, 1, True), (9, 10, False), (10, 10, True), (0, 0, True)],
)
def test_queue_full(queued: int, limit: int, full: bool) -> None:
    assert queue_full(queued, limit) is full


# --- retries ---------------------------------------------------------------------------

# (attempt, base, rand, expected seconds): ±25 % jitter around base * 2**(attempt-1)
RETRY_DELAY_CASES: list[tuple[int, float, float, float]] = [
    (1, 30, 0.0, 22.5), (1, 30, 0.5, 30), (1, 30, 1.0, 37.5),
    (2, 30, 0.0, 45), (2, 30, 0.5, 60), (2, 30, 1.0, 75),
    (3, 30, 0.0, 90), (3, 30, 0.5, 120), (3, 30, 1.0, 150),
    (4, 30, 0.0, 180), (4, 30, 0.5, 240), (4, 30, 1.0, 300),
    (5, 30, 0.0, 360), (5, 30, 0.5, 480), (5, 30, 1.0, 600),
    (6, 30, 0.0, 720), (6, 30, 0.5, 960), (6, 30, 1.0, 1200),
    (7, 30, 0.5, 1920),
    (8, 30, 0.0, 2880),
    (8, 30, 0.5, 3600),
    (8, 30, 1.0, 3600),
    (1, 3000, 1.0, 3600),
    (1, 5000, 0.0, 3600),
    (1000, 30, 0.0, 3600),
    (100000, 30, 1.0, 3600),
    (1, 0, 1.0, 0),
]  # fmt: skip


@pytest.mark.parametrize(("attempt", "base", "rand", "expected"), RETRY_DELAY_CASES)
def test_retry_delay(attempt: int, base: float, rand: float, expected: float) -> None:
    assert retry_delay(attempt, base, rand=rand) == pytest.approx(expected)


@pytest.mark.parametrize(("attempt", "cap", "expected"), [(3, 100, 100), (1, 100, 30), (1, 0, 0)])
def test_retry_delay_custom_cap(attempt: int, cap: float, expected: float) -> None:
    assert retry_delay(attempt, 30, rand=0.5, cap=cap) == expected


@pytest.mark.parametrize(
    ("attempt", "base", "rand"), [(0, 30, 0.5), (1, -1, 0.5), (1, 30, -0.1), (1, 30, 1.1)]
)
def test_retry_delay_rejects(attempt: int, base: float, rand: float) -> None:
    with pytest.raises(ValueError):
        retry_delay(attempt, base, rand=rand)


# (attempt, retries, base, rand, next slot in s after now or None, retry in s after now or None)
PLAN_RETRY_CASES: list[tuple[int, int, float, float, float | None, float | None]] = [
    (1, 3, 30, 0.5, None, 30),
    (2, 3, 30, 0.5, None, 60),
    (3, 3, 30, 0.5, None, 120),
    (4, 3, 30, 0.5, None, None),
    (1, 0, 30, 0.5, None, None),
    (10, 20, 30, 0.5, None, 3600),
    (2, 3, 30, 0.5, DAY, 60),
    (1, 3, 30, 0.5, 31, 30),
    (1, 3, 30, 0.5, 30, None),
    (1, 3, 30, 0.5, 29, None),
    (1, 3, 30, 1.0, 35, None),
    (1, 3, 30, 0.0, 35, 22.5),
    (4, 3, 30, 0.0, DAY, None),
]


@pytest.mark.parametrize(
    ("attempt", "retries", "base", "rand", "next_slot", "expected"), PLAN_RETRY_CASES
)
def test_plan_retry(
    attempt: int,
    retries: int,
    base: float,
    rand: float,
    next_slot: float | None,
    expected: float | None,
) -> None:
    slot = None if next_slot is None else later(next_slot)
    result = plan_retry(attempt, retries, base, now=NOW, next_slot=slot, rand=rand)
    assert result == (None if expected is None else later(expected))


def test_plan_retry_counts_real_seconds_across_fall_back() -> None:
    # 02:59:30 CEST; the next slot is 02:30 CET (fold=1), i.e. 30 real minutes later.
    now = datetime(2026, 10, 25, 2, 59, 30, tzinfo=BERLIN)
    next_slot = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=1)
    result = plan_retry(1, 3, 60, now=now, next_slot=next_slot, rand=0.5)
    assert result == datetime(2026, 10, 25, 1, 0, 30, tzinfo=UTC)
    assert result is not None and result.tzinfo is UTC


# A retry planned by a daemon that stopped: (planned in s after now, next slot in s after
# now or None, start in s after now or None).
RESTORED_RETRY_CASES: list[tuple[float, float | None, float | None]] = [
    (30, None, 30),  # still ahead: at its time
    (-30, None, 0),  # passed while the daemon was down: now
    (-30, 60, 0),
    (30, 60, 30),
    (30, 30, None),  # the next slot comes with it: that slot runs instead
    (-30, 0, None),  # the next slot is now
    (-30, -10, None),  # the next slot passed too: it was caught up (or missed) instead
]


@pytest.mark.parametrize(("planned", "next_slot", "expected"), RESTORED_RETRY_CASES)
def test_restored_retry(planned: float, next_slot: float | None, expected: float | None) -> None:
    slot = None if next_slot is None else later(next_slot)
    result = restored_retry(later(planned), now=NOW, next_slot=slot)
    assert result == (None if expected is None else later(expected))


def test_restored_retry_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="naive"):
        restored_retry(datetime(2026, 3, 10, 12, 0), now=NOW, next_slot=None)


# --- jitter ----------------------------------------------------------------------------

JITTER_CASES: list[tuple[float, float, float]] = [
    (0, 0.7, 0),
    (60, 0.0, 0),
    (60, 0.5, 30),
    (60, 1.0, 60),
    (1.5, 0.5, 0.75),
]


@pytest.mark.parametrize(("jitter", "rand", "offset"), JITTER_CASES)
def test_apply_jitter(jitter: float, rand: float, offset: float) -> None:
    assert apply_jitter(NOW, jitter, rand) == later(offset)


@pytest.mark.parametrize("rand", [i / 10 for i in range(11)])
def test_apply_jitter_stays_within_bounds(rand: float) -> None:
    slot = datetime(2026, 10, 25, 2, 59, 30, tzinfo=BERLIN)
    start = apply_jitter(slot, 300, rand)
    assert slot.timestamp() <= start.timestamp() <= slot.timestamp() + 300
    assert start.tzinfo is UTC


@pytest.mark.parametrize(
    ("slot", "jitter", "rand"),
    [(NOW, -1, 0.5), (NOW, 60, 1.5), (NOW, 60, -0.5), (NOW.replace(tzinfo=None), 60, 0.5)],
)
def test_apply_jitter_rejects(slot: datetime, jitter: float, rand: float) -> None:
    with pytest.raises(ValueError):
        apply_jitter(slot, jitter, rand)


# --- clock jumps -----------------------------------------------------------------------

W = 1_770_000_000.0  # a wall-clock reading, epoch seconds

# (wall at the previous check, wall now, monotonic elapsed, tolerance, jump or None)
CLOCK_JUMP_CASES: list[tuple[str, float, float, float, float, float | None]] = [
    ("steady", W, W + 30, 30, 5, None),
    ("suspend 2 h, monotonic saw 30 s", W, W + 7230, 30, 5, 7200),
    ("small forward drift", W, W + 33, 30, 5, None),
    ("small backward drift", W, W + 28, 30, 5, None),
    ("exactly the tolerance", W, W + 35, 30, 5, None),
    ("just past the tolerance", W, W + 35.5, 30, 5, 5.5),
    ("NTP steps back a minute", W, W - 30, 30, 5, -60),
    ("NTP steps forward an hour", W, W + 3630, 30, 5, 3600),
    ("tighter tolerance", W, W + 32, 30, 1, 2),
]


@pytest.mark.parametrize(
    ("before", "after", "elapsed", "tolerance", "expected"),
    [c[1:] for c in CLOCK_JUMP_CASES],
    ids=[c[0] for c in CLOCK_JUMP_CASES],
)
def test_detect_clock_jump(
    before: float, after: float, elapsed: float, tolerance: float, expected: float | None
) -> None:
    assert detect_clock_jump(before, after, elapsed, tolerance) == expected


# --- ConcurrencyQueue ------------------------------------------------------------------

# Steps on a queue of limit 2: (op, item, result, active after, pending after)
QUEUE_STEPS: list[tuple[str, str, bool | list[str], tuple[str, ...], tuple[str, ...]]] = [
    ("offer", "a", True, ("a",), ()),
    ("offer", "b", True, ("a", "b"), ()),
    ("offer", "c", False, ("a", "b"), ("c",)),
    ("offer", "d", False, ("a", "b"), ("c", "d")),
    ("offer", "e", False, ("a", "b"), ("c", "d", "e")),
    ("done", "b", ["c"], ("a", "c"), ("d", "e")),
    ("done", "d", [], ("a", "c"), ("e",)),  # cancelled while waiting
    ("offer", "f", False, ("a", "c"), ("e", "f")),
    ("done", "a", ["e"], ("c", "e"), ("f",)),
    ("done", "c", ["f"], ("e", "f"), ()),
    ("done", "f", [], ("e",), ()),
    ("offer", "g", True, ("e", "g"), ()),
    ("done", "e", [], ("g",), ()),
    ("done", "g", [], (), ()),
]


def test_concurrency_queue_fifo_and_cap() -> None:
    queue: ConcurrencyQueue[str] = ConcurrencyQueue(2)
    for op, item, result, active, pending in QUEUE_STEPS:
        got = queue.offer(item) if op == "offer" else queue.done(item)
        assert (op, item, got, queue.active, queue.pending) == (op, item, result, active, pending)
        assert len(queue.active) <= queue.limit


def test_concurrency_queue_starts_in_offer_order() -> None:
    queue: ConcurrencyQueue[int] = ConcurrencyQueue(1)
    assert [queue.offer(i) for i in range(6)] == [True] + [False] * 5
    started = [queue.done(i) for i in range(5)]
    assert started == [[1], [2], [3], [4], [5]]


@pytest.mark.parametrize(
    ("new_limit", "started", "active"),
    [
        (4, ["c", "d"], ("a", "b", "c", "d")),
        (3, ["c"], ("a", "b", "c")),
        (2, [], ("a", "b")),
        (1, [], ("a", "b")),  # lowering the cap stops nobody
    ],
)
def test_concurrency_queue_resize(
    new_limit: int, started: list[str], active: tuple[str, ...]
) -> None:
    queue: ConcurrencyQueue[str] = ConcurrencyQueue(2)
    for item in "abcd":
        queue.offer(item)
    assert queue.resize(new_limit) == started
    assert queue.active == active


def test_concurrency_queue_after_lowering_the_cap_starts_fewer() -> None:
    queue: ConcurrencyQueue[str] = ConcurrencyQueue(3)
    for item in "abcde":
        queue.offer(item)
    queue.resize(1)
    assert queue.done("a") == []
    assert queue.done("b") == []
    assert queue.done("c") == ["d"]


def test_concurrency_queue_rejects() -> None:
    with pytest.raises(ValueError):
        ConcurrencyQueue(0)
    queue: ConcurrencyQueue[str] = ConcurrencyQueue(1)
    queue.offer("a")
    queue.offer("b")
    for duplicate in ("a", "b"):
        with pytest.raises(ValueError):
            queue.offer(duplicate)
    with pytest.raises(ValueError):
        queue.done("zzz")
    with pytest.raises(ValueError):
        queue.resize(0)
