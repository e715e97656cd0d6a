"""The stored plan: each trigger's next slot as the last start computed it.

At a restart with unchanged files most triggers missed nothing, and each one's next fire
is the first slot after its last one (daemon/plan.py). Computing it is most of what a
restart of 10,000 tasks does besides reading the parse cache, so the start keeps each
answer here, and the next start takes it instead of computing it again.

It is only a cache: an entry is used when everything it was computed from is the same:
the task file's content (its digest), the zone the trigger is evaluated in and that
zone's data on disk (a new tzdata release changes the slots), the trigger's last slot in
state.db, and daycare's reader and schedule code (the parse cache's header). Whether the
slot is still to come is the caller's check: a clock that moved past it means slots were
missed, and catch-up runs as without the cache. A missing, foreign or corrupt file is
ignored and written anew.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import zoneinfo
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daycare_cli.core.schedule import next_fires
from daycare_cli.core.task import CronTrigger, EveryTrigger, Trigger
from daycare_cli.store.paths import atomic_write
from daycare_cli.store.taskcache import TaskCache

FORMAT = 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def micros(when: datetime) -> int:
    """An aware instant as whole microseconds since the epoch (exact, unlike a float)."""
    return (when - EPOCH) // _US


def zone_stamp(zone: str) -> tuple[str, int, int] | str:
    """What identifies the data of a zone: its file's path, size and mtime; else the
    version of the `tzdata` package zoneinfo falls back to."""
    if not zone or os.path.isabs(zone) or ".." in zone:
        return f"?{zone}"
    for base in zoneinfo.TZPATH:
        path = os.path.join(base, zone)
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if os.path.isfile(path):
                return (path, st.st_size, st.st_mtime_ns)
    try:
        from importlib.metadata import version

        return f"tzdata {version('tzdata')}"
    except Exception:  # no tzdata package either: the zone is unknown, never stored
        return f"?{zone}"


class PlanCache:
    """The stored next slots of one home's triggers, under `<home>/cache/`.

    Rows are kept in the order a start plans its tasks (file names sorted), and read back
    by walking them in that order: no object per row is made on either side (what a start
    makes and frees among the plan's own objects stays as scattered, unused memory).
    """

    def __init__(self, home: Path, tasks_dir: Path) -> None:
        parse_cache = TaskCache(home, tasks_dir)
        self.path = parse_cache.path.with_name(
            parse_cache.path.name.replace("tasks-", "plan-").replace(".pickle", ".marshal")
        )
        self.parse_cache = parse_cache
        self.stamps: dict[str, tuple[str, int, int] | str] = {}  # zone -> its stamp now
        self.used = 0
        # The stored rows: names (task ids joined by newlines, and where each starts),
        # raw digests (32 bytes a row), trigger ids and zones (indices into short lists),
        # last and next slots in µs; and the row the walk is at.
        self.names = b""
        self.starts = array("L")
        self.digests = b""
        self.trigger_ids: list[str] = []
        self.triggers = array("H")
        self.zones: list[str | None] = []
        self.zone_of = array("H")
        self.lasts = array("q")
        self.nexts = array("q")
        self.at = 0
        # What this start computed or confirmed, as references to the plan's own strings.
        self.rows: list[tuple[str, str, str, str]] = []
        self.slots = array("q")

    def header(self) -> dict[str, Any]:
        """What must match for the stored plan to apply: the parse cache's header (the
        versions, the reader's and the schedule's code, the tasks dir) and this format."""
        return {**self.parse_cache.header(), "format": ("plan", FORMAT)}

    def stamp(self, zone: str) -> tuple[str, int, int] | str:
        stamp = self.stamps.get(zone)
        if stamp is None:
            stamp = self.stamps[zone] = zone_stamp(zone)
        return stamp

    def load(self) -> None:
        """Read the stored plan; anything unexpected leaves it empty."""
        try:
            header, stamps, names, digests, trigger_ids, zones, columns = marshal.loads(
                self.path.read_bytes()
            )
            if header != self.header():
                return
            starts, triggers, zone_of, lasts, nexts = (
                array(code) for code in ("L", "H", "H", "q", "q")
            )
            for column, raw in zip((starts, triggers, zone_of, lasts, nexts), columns, strict=True):
                column.frombytes(raw)
            n = len(lasts)
            if not (len(starts) == n + 1 and len(digests) == 32 * n):
                return
            if not (len(triggers) == len(zone_of) == len(nexts) == n):
                return
            # A zone whose data changed since: its triggers' slots are computed again.
            self.zones = [
                z if self.stamp(z) == stamp else None
                for z, stamp in zip(zones, stamps, strict=True)
            ]
            self.names, self.starts, self.digests = names, starts, digests
            self.trigger_ids, self.triggers, self.zone_of = trigger_ids, triggers, zone_of
            self.lasts, self.nexts = lasts, nexts
        except Exception:  # missing, truncated, from another version: start empty
            self.lasts = array("q")

    def _name(self, i: int) -> str:
        return self.names[self.starts[i] : self.starts[i + 1] - 1].decode()

    def next_after(
        self, task_id: str, trigger_id: str, digest: str, zone: str, last: datetime
    ) -> datetime | None:
        """The stored first slot after `last`, if it was computed from the same things.

        Asked in the order the rows were written, give or take files added or removed.
        """
        n = len(self.lasts)
        want = task_id + ".md"  # the order is the file names'
        while self.at < n:
            name = self._name(self.at)
            if name + ".md" < want:
                self.at += 1
                continue
            if name != task_id:
                return None
            i = self.at
            while i < n and (i == self.at or self._name(i) == task_id):
                if self.trigger_ids[self.triggers[i]] == trigger_id:
                    if (
                        self.digests[32 * i : 32 * i + 32] == bytes.fromhex(digest)
                        and self.zones[self.zone_of[i]] == zone
                        and self.lasts[i] == micros(last)
                    ):
                        self.used += 1
                        return EPOCH + self.nexts[i] * _US
                    return None
                i += 1
            return None
        return None

    def first_after(
        self, task_id: str, digest: str, trigger: Trigger, tz: str, last: datetime
    ) -> list[datetime]:
        """The first slot of a trigger after its last one (`next_fires`), the stored one
        when it was computed from the same file, zone and last slot; kept for the next
        start either way."""
        slot = self.next_after(task_id, trigger.id, digest, tz, last)
        after = [slot] if slot is not None else next_fires(trigger, last, tz=tz, anchor=last)
        if after:
            self.record(task_id, trigger.id, digest, tz, last, after[0])
        return after

    def keep_first(
        self,
        task_id: str,
        digest: str,
        trigger: Trigger,
        tz: str,
        first: datetime,
        now: datetime,
        slot: datetime,
    ) -> None:
        """Keep what the next start's `first_after` asks of a trigger first planned now,
        from `first` (its last slot in state.db from now on), whose next slot is `slot`."""
        if isinstance(trigger, CronTrigger) and first is now:
            # A cron's next fire depends on now alone: `slot` is the first after `first`.
            self.record(task_id, trigger.id, digest, tz, first, slot)
        elif isinstance(trigger, EveryTrigger):
            self.first_after(task_id, digest, trigger, tz, first)  # arithmetic: cheap

    def record(
        self, task_id: str, trigger_id: str, digest: str, zone: str, last: datetime, nxt: datetime
    ) -> None:
        """Keep the first slot after `last` that this start computed or confirmed."""
        if len(digest) != 64:
            return  # not a file's sha256 (never the case for a parsed file)
        self.rows.append((task_id, trigger_id, digest, zone))
        self.slots.append(micros(last))
        self.slots.append(micros(nxt))

    def save(self) -> None:
        """Write what this start recorded (atomically); a failure to write is not an error."""
        with contextlib.suppress(Exception):  # only a slower next start
            self._save()
        self.rows, self.slots = [], array("q")

    def _save(self) -> None:
        trigger_ids = sorted({row[1] for row in self.rows})
        zones = sorted({row[3] for row in self.rows})
        names = "".join(f"{row[0]}\n" for row in self.rows).encode()
        starts = array("L", [0])
        for row in self.rows:
            starts.append(starts[-1] + len(row[0].encode()) + 1)
        digests = b"".join(bytes.fromhex(row[2]) for row in self.rows)
        tix = {t: k for k, t in enumerate(trigger_ids)}
        zix = {z: k for k, z in enumerate(zones)}
        triggers = array("H", [tix[row[1]] for row in self.rows])
        zone_of = array("H", [zix[row[3]] for row in self.rows])
        columns = [
            starts.tobytes(),
            triggers.tobytes(),
            zone_of.tobytes(),
            self.slots[0::2].tobytes(),
            self.slots[1::2].tobytes(),
        ]
        stamps = [self.stamp(z) for z in zones]
        data = marshal.dumps((self.header(), stamps, names, digests, trigger_ids, zones, columns))
        atomic_write(self.path, data, mode=0o600)
