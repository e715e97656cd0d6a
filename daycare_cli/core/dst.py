"""DST transitions of a zone, and how other schedulers treat a cron slot inside one.

daycare follows cronie (docs/task-file.md, "schedule"): when clocks go forward, a fixed-time slot
in the
skipped hour runs at the jump; when they go back, a fixed-time slot runs once and a
wildcard job (minute or hour starting with `*`) runs in both passes. Engines that walk
the wall clock do otherwise, and an export says where. Each engine is modelled by how it
resolves the local times a cron expression names:

- `systemd`: a local time that does not exist is skipped; a repeated one elapses once,
  in its first pass (proven against `systemd-analyze calendar` in the tests).
- `kubernetes`: the CronJob controller computes slots with robfig/cron v3
  (`SpecSchedule.Next`), which steps hours and minutes in real time: a local time that
  does not exist is never reached, and a repeated one is reached in both passes, by
  fixed-time and wildcard jobs alike (read from its source; no cluster in the tests).

`engine_differences` compares daycare's slots with an engine's around every transition
of the coming years, so a task whose slots never touch a transition gets no warning.
Pure: "now" is an argument; the only I/O is zoneinfo.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from cronsim import CronSim

from daycare_cli.core.schedule import normalize_cron, slots_between
from daycare_cli.core.task import CronTrigger

Engine = Literal["systemd", "kubernetes"]
ENGINE_NAMES: dict[str, str] = {"systemd": "systemd", "kubernetes": "Kubernetes"}

# Around a transition, slots this far either side are compared (shifts are at most 2 h).
_MARGIN = timedelta(hours=3)


@dataclass(frozen=True)
class Transition:
    """A change of a zone's UTC offset at instant `at` (UTC)."""

    at: datetime
    before: timedelta
    after: timedelta

    @property
    def forward(self) -> bool:
        """True when clocks go forward (a gap of local times that never happen)."""
        return self.after > self.before


def transitions(zone: str, start: datetime, end: datetime) -> list[Transition]:
    """Offset changes of `zone` in (start, end], to the second, oldest first."""
    tz = ZoneInfo(zone)
    found: list[Transition] = []
    step = timedelta(days=1)
    t = start.astimezone(UTC)
    offset = t.astimezone(tz).utcoffset()
    while t < end:
        nxt = min(t + step, end.astimezone(UTC))
        new = nxt.astimezone(tz).utcoffset()
        if new != offset:
            lo, hi = t, nxt  # the change lies in (lo, hi]: bisect to the second
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(tz).utcoffset() == offset:
                    lo = mid
                else:
                    hi = mid
            assert offset is not None and new is not None
            found.append(Transition(hi.replace(microsecond=0), offset, new))
            offset = new
        t = nxt
    return found


def _engine_slots(
    expr: str, tz: ZoneInfo, start: datetime, end: datetime, engine: Engine
) -> set[float]:
    """Instants (timestamps) in (start, end] at which `engine` fires a cron expression."""
    out: set[float] = set()
    first = start.astimezone(tz).replace(tzinfo=None) - _MARGIN
    last = end.astimezone(tz).replace(tzinfo=None) + _MARGIN
    for wall in CronSim(expr, first):
        if wall > last:
            break
        passes = []
        for fold in (0, 1):
            aware = wall.replace(tzinfo=tz, fold=fold)
            if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
                passes.append(aware.timestamp())  # this local time happens in this pass
        chosen = sorted(set(passes))
        if engine == "systemd":
            chosen = chosen[:1]
        out.update(s for s in chosen if start.timestamp() < s <= end.timestamp())
    return out


@dataclass(frozen=True)
class Difference:
    """Around one transition: slots only daycare fires, and slots only the engine fires."""

    transition: Transition
    only_daycare: tuple[datetime, ...]
    only_engine: tuple[datetime, ...]


def engine_differences(
    trigger: CronTrigger, zone: str, engine: Engine, *, now: datetime, years: int = 2
) -> list[Difference]:
    """Where `engine` fires `trigger` differently from daycare, over the coming `years`."""
    expr = normalize_cron(trigger.expr)
    tz = ZoneInfo(zone)
    found: list[Difference] = []
    for tr in transitions(zone, now, now + timedelta(days=366 * years)):
        start, end = tr.at - _MARGIN, tr.at + _MARGIN
        ours = {s.timestamp() for s in slots_between(trigger, start, end, tz=zone, limit=2000)}
        theirs = _engine_slots(expr, tz, start, end, engine)
        if ours != theirs:
            found.append(
                Difference(
                    tr,
                    tuple(datetime.fromtimestamp(s, UTC) for s in sorted(ours - theirs)),
                    tuple(datetime.fromtimestamp(s, UTC) for s in sorted(theirs - ours)),
                )
            )
    return found


def describe_differences(diffs: list[Difference], zone: str, engine: Engine) -> str | None:
    """One sentence on how `engine` differs from daycare on DST days, with the first example."""
    if not diffs:
        return None
    name = ENGINE_NAMES[engine]
    tz = ZoneInfo(zone)

    def local(instants: tuple[datetime, ...]) -> str:
        shown = ", ".join(i.astimezone(tz).strftime("%H:%M%z") for i in instants[:4])
        return shown + (", …" if len(instants) > 4 else "")

    sentences: list[str] = []
    for forward, words in ((True, "go forward"), (False, "go back")):
        group = [d for d in diffs if d.transition.forward == forward]
        if not group:
            continue
        d = group[0]
        day = d.transition.at.astimezone(tz).date().isoformat()
        parts = []
        if d.only_daycare:
            parts.append(f"daycare fires at {local(d.only_daycare)} and {name} does not")
        if d.only_engine:
            parts.append(f"{name} fires at {local(d.only_engine)} and daycare does not")
        sentences.append(f"when clocks {words} (next on {day}) " + " and ".join(parts))
    return f"DST in {zone}: " + "; ".join(sentences) + "."
