"""Scheduling policies as pure functions: catch-up, overlap, retry, jitter, clock jumps.

The daemon's loop (`daemon/scheduler.py`) asks these what to do and does it; nothing
here reads a clock, sleeps or draws random numbers: `now` and `rand` are arguments, so
every rule of docs/operations.md is tested with plain values.

Datetimes must be aware. Arithmetic is done in UTC because adding a timedelta to a
datetime in a DST zone moves the wall clock, not the instant.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, Literal, TypeVar

from daycare_cli.core.schedule import next_fires
from daycare_cli.core.task import (
    CATCH_UP_POLICIES,
    OVERLAP_POLICIES,
    CronTrigger,
    EveryTrigger,
    Trigger,
)

DAY = 86400.0
RETRY_CAP = 3600.0  # docs/task-file.md: backoff capped at 1 h
CATCH_UP_LIMIT = 100  # at most this many missed slots are run
RETRY_JITTER = 0.25  # retry delays vary by ±25 % around the exponential value

OverlapDecision = Literal["start", "skip", "queue", "cancel_and_start"]

T = TypeVar("T", bound=Hashable)


def _utc(dt: datetime, what: str) -> datetime:
    """`dt` as a UTC datetime; a naive one is a bug (its instant depends on the host zone)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got naive {dt.isoformat()}")
    return dt.astimezone(UTC)


def _check_rand(rand: float) -> None:
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand must be in [0, 1], got {rand}")


# --- catch-up ---------------------------------------------------------------------------


def default_catch_up_window(trigger: Trigger, *, tz: str, now: datetime) -> float:
    """Seconds of the default `catch_up_window`: one period of the trigger, capped at 24 h.

    The period of a cron trigger is the gap between its next two fires after `now`
    (a weekday job's Friday-to-Monday gap is capped to 24 h); of an `every` trigger its
    interval. Triggers without a period (`at`, `@reboot`, webhook) get the cap, so a
    one-off reminder missed during a short outage still runs.
    """
    if isinstance(trigger, CronTrigger) and not trigger.reboot:
        fires = next_fires(trigger, _utc(now, "now"), 2, tz=tz)
        if len(fires) < 2:
            return DAY
        period = fires[1].timestamp() - fires[0].timestamp()
        return min(period, DAY)
    if isinstance(trigger, EveryTrigger):
        return min(trigger.seconds, DAY)
    return DAY


@dataclass(frozen=True)
class CatchUpPlan:
    """What to do with missed slots.

    `run` holds (slot, start_at) pairs, oldest slot first; `missed` holds every other
    slot (oldest first), to be recorded with status `missed`.
    """

    run: list[tuple[datetime, datetime]] = field(default_factory=list)
    missed: list[datetime] = field(default_factory=list)


def plan_catch_up(
    policy: str,
    missed: list[datetime],
    *,
    now: datetime,
    window: float,
    limit: int = CATCH_UP_LIMIT,
    stagger: float = 1.0,
) -> CatchUpPlan:
    """Decide which missed slots run now and which are recorded `missed`.

    `missed` are the slots that passed unrun, oldest first. A slot older than `window`
    seconds before `now` is missed whatever the policy (a slot exactly `window` old is
    still inside). Within the window: `skip` runs none, `latest` runs the newest, `all`
    runs the newest `limit` of them in slot order, the k-th (from 0) starting at
    `now + k * stagger` so they do not all start at once.
    """
    if policy not in CATCH_UP_POLICIES:
        raise ValueError(f"unknown catch_up policy {policy!r}; use one of {CATCH_UP_POLICIES}")
    if window < 0 or limit < 0 or stagger < 0:
        raise ValueError("window, limit and stagger must not be negative")
    now_utc = _utc(now, "now")
    oldest_allowed = now_utc.timestamp() - window
    # A set: a slot listed twice is still one slot, run or missed once.
    slots = sorted({_utc(s, "slot") for s in missed}, key=lambda s: s.timestamp())
    inside = [s for s in slots if s.timestamp() >= oldest_allowed]
    if policy == "skip":
        chosen: list[datetime] = []
    elif policy == "latest":
        chosen = inside[-1:]
    else:
        # The newest slots matter most; older ones beyond the limit are dropped.
        chosen = inside[-limit:] if limit else []
    chosen_set = set(chosen)
    run = [(s, now_utc + timedelta(seconds=k * stagger)) for k, s in enumerate(chosen)]
    return CatchUpPlan(run=run, missed=[s for s in slots if s not in chosen_set])


# --- overlap ----------------------------------------------------------------------------


def decide_overlap(policy: str, active: int, queued: int) -> OverlapDecision:
    """What a new fire of a task does, given its `active` runs and `queued` buffered fires.

    `skip`: start when idle, else skip (the daemon records a skipped run). `queue`: start
    when idle and nothing is buffered, buffer one fire while a run is active, skip any
    further fire while one is buffered. `allow`: always start. `replace`: cancel the
    active run(s) and start.
    """
    if policy not in OVERLAP_POLICIES:
        raise ValueError(f"unknown overlap policy {policy!r}; use one of {OVERLAP_POLICIES}")
    if active < 0 or queued < 0:
        raise ValueError(f"active and queued must not be negative, got {active}, {queued}")
    if policy == "allow":
        return "start"
    if policy == "replace":
        return "cancel_and_start" if active else "start"
    if policy == "skip":
        return "skip" if active else "start"
    # queue: exactly one buffered fire; it goes before any later one (FIFO).
    if queued:
        return "skip"
    return "queue" if active else "start"


def queue_full(queued: int, limit: int) -> bool:
    """True when a task already holds `limit` queued fires (a webhook then answers 429)."""
    return queued >= limit


# --- retries ----------------------------------------------------------------------------


def retry_delay(attempt: int, base: float, *, rand: float, cap: float = RETRY_CAP) -> float:
    """Seconds before retry number `attempt` (1 = the first retry).

    Exponential backoff `base * 2**(attempt-1)`, with ±25 % jitter (`rand` 0 gives
    0.75x, 0.5 gives 1x, 1 gives 1.25x), then capped at `cap`. Proportional jitter
    rather than full jitter keeps the first retry near the configured `retry_delay`.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must not be negative")
    _check_rand(rand)
    # Bounding the exponent keeps 2.0**n finite; any such value is far above the cap.
    nominal = base * 2.0 ** min(attempt - 1, 512)
    return min(cap, nominal * (1 - RETRY_JITTER + 2 * RETRY_JITTER * rand))


def plan_retry(
    attempt: int,
    retries: int,
    base: float,
    *,
    now: datetime,
    next_slot: datetime | None,
    rand: float,
    cap: float = RETRY_CAP,
) -> datetime | None:
    """When retry number `attempt` (1 = first) starts, in UTC, or None for no retry.

    None when `attempt > retries`, or when the retry would not start strictly before
    the task's `next_slot`: a retry never crosses the next slot, which runs instead.
    """
    if attempt > retries:
        return None
    start = _utc(now, "now") + timedelta(seconds=retry_delay(attempt, base, rand=rand, cap=cap))
    if next_slot is not None and start.timestamp() >= _utc(next_slot, "next_slot").timestamp():
        return None
    return start


def restored_retry(
    planned: datetime, *, now: datetime, next_slot: datetime | None
) -> datetime | None:
    """When a retry planned by a daemon that stopped before it ran starts after a restart:
    at its planned time, or now if that passed; None when that is not strictly before
    `next_slot`, the slot after the failed one (which runs, or was caught up, instead).
    """
    start = max(_utc(planned, "planned"), _utc(now, "now"))
    if next_slot is not None and start.timestamp() >= _utc(next_slot, "next_slot").timestamp():
        return None
    return start


# --- jitter and clock jumps -------------------------------------------------------------


def apply_jitter(slot: datetime, jitter: float, rand: float) -> datetime:
    """The instant a fire of `slot` starts: `slot + jitter * rand` seconds, in UTC.

    The slot itself (the run's key) is unchanged; only the start moves.
    """
    if jitter < 0:
        raise ValueError(f"jitter must not be negative, got {jitter}")
    _check_rand(rand)
    return _utc(slot, "slot") + timedelta(seconds=jitter * rand)


def detect_clock_jump(
    expected_wall: float,
    actual_wall: float,
    monotonic_elapsed: float,
    tolerance: float = 5.0,
) -> float | None:
    """Seconds the wall clock moved beyond monotonic time, or None within `tolerance`.

    `expected_wall` is the wall clock (epoch seconds) read at the previous check,
    `actual_wall` the wall clock now, `monotonic_elapsed` the monotonic time between the
    two reads. Monotonic time does not advance during suspend and ignores NTP steps, so a
    positive result is a resume or a forward step, a negative one a backward step.
    """
    jump = (actual_wall - expected_wall) - monotonic_elapsed
    return jump if abs(jump) > tolerance else None


# --- global concurrency -----------------------------------------------------------------


class ConcurrencyQueue(Generic[T]):
    """At most `limit` items (hashable, e.g. run ids) active at once; the rest wait in FIFO order.

    The daemon offers each run; `offer` says whether it starts now. When a run ends,
    `done` frees its place and returns the waiting items that start in its stead.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrent_runs must be at least 1, got {limit}")
        self._limit = limit
        # dicts keep insertion order and remove in O(1): FIFO without a scan per run.
        self._active: dict[T, None] = {}
        self._pending: dict[T, None] = {}

    @property
    def limit(self) -> int:
        """The most items active at once."""
        return self._limit

    @property
    def active(self) -> tuple[T, ...]:
        """Items running now, in the order they started."""
        return tuple(self._active)

    @property
    def pending(self) -> tuple[T, ...]:
        """Items waiting for a place, first to start first."""
        return tuple(self._pending)

    def offer(self, item: T) -> bool:
        """Add `item`: True when it starts now, False when it waits its turn."""
        if item in self._active or item in self._pending:
            raise ValueError(f"{item!r} is already in the queue")
        if len(self._active) < self._limit:
            self._active[item] = None
            return True
        self._pending[item] = None
        return False

    def done(self, item: T) -> list[T]:
        """Remove `item` (ended, or cancelled while waiting); return the items that start now."""
        if item in self._active:
            del self._active[item]
        elif item in self._pending:
            del self._pending[item]
        else:
            raise ValueError(f"{item!r} is not in the queue")
        return self._fill()

    def resize(self, limit: int) -> list[T]:
        """Change the limit (config reload); return the items that start now.

        Lowering it stops nobody: active items finish, and fewer start afterwards.
        """
        if limit < 1:
            raise ValueError(f"max_concurrent_runs must be at least 1, got {limit}")
        self._limit = limit
        return self._fill()

    def _fill(self) -> list[T]:
        started: list[T] = []
        while self._pending and len(self._active) < self._limit:
            item = next(iter(self._pending))
            del self._pending[item]
            self._active[item] = None
            started.append(item)
        return started
