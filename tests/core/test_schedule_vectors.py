"""Other projects' test vectors run against our schedule core (bench/README.md, "The figures").

tests/core/vectors/*.json hold the expected values of cronsim's, croniter's,
robfig/cron's and APScheduler's test suites (each file says where from and how read).
Each case is run against core/schedule.py twice over:

- syntax: do we accept the expression the peer accepts (or refuses)?
- semantics: do our fires pass the checks the peer's test makes? When we refuse the
  peer's spelling on purpose, the same schedule is compared in our spelling: a seconds
  field of 0 dropped, `?` read as `*`, or the case's own `as` (APScheduler's keywords).

Every case that differs is listed in vectors/differences.json with its class, and every
class is explained in docs/task-file.md; the tests fail on a difference not listed, on a
listed case that no longer differs, and on a class the docs do not explain.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from daycare_cli.core.errors import ScheduleError
from daycare_cli.core.schedule import next_fires, normalize_cron, slots_between
from daycare_cli.core.task import CronTrigger

VECTORS = Path(__file__).parent / "vectors"
DOCS = Path(__file__).parents[2] / "docs" / "task-file.md"
PEERS = ("cronsim", "croniter", "robfig_cron", "apscheduler")
HORIZON = 60  # years: "no further fire" means none within this


def load(peer: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{peer}.json").read_text())


def differences_table() -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads((VECTORS / "differences.json").read_text())
    return data


# --- reading the facts -------------------------------------------------------------


def decode(value: Any) -> Any:
    """A recorded value back into Python (datetimes in their zone, with their fold)."""
    if isinstance(value, dict) and "datetime" in value:
        moment = datetime.fromisoformat(value["datetime"])
        zone = value.get("zone")
        if zone and moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(zone), fold=value.get("fold", 0))
        elif zone:
            moment = moment.astimezone(ZoneInfo(zone))
        return moment
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


@dataclass
class Setting:
    """Where and from when a case is evaluated."""

    zone: str  # the zone the schedule runs in
    naive: bool  # the peer works on naive times: compare wall times, read as UTC
    after: datetime  # aware: fires strictly after this


def setting(case: dict[str, Any]) -> Setting | None:
    start = case.get("start")
    if start is None or not isinstance(start, dict | float | int):
        return None
    if isinstance(start, float | int):
        return Setting("UTC", True, datetime.fromtimestamp(start, UTC))
    moment = decode(start)
    zone = case.get("evaluate_in") or start.get("zone")
    naive = moment.tzinfo is None
    if naive:
        moment = moment.replace(tzinfo=UTC)
        zone = zone or "UTC"
    elif zone is None:
        zone = FIXED_OFFSET_ZONES[moment.utcoffset()]
    if case.get("options", {}).get("inclusive"):
        moment -= timedelta(microseconds=1)
    return Setting(zone, naive, moment)


# robfig's TestNextWithTz uses a fixed +05:30 offset: the same as Asia/Kolkata (no DST
# since 1945).
FIXED_OFFSET_ZONES = {timedelta(hours=5, minutes=30): "Asia/Kolkata"}


def spelling(peer: str, case: dict[str, Any], *, ours: bool) -> str | None:
    """The expression to evaluate: the peer's, or (ours=True) the same schedule in our
    spelling when we refuse the peer's on purpose; None when there is none."""
    if "as" in case:
        return case["as"] if ours else None
    expr = str(case["expr"])
    if not ours:
        return expr
    fields = expr.split()
    if len(fields) == 6:
        options = case.get("options", {})
        first = (
            load_source(peer)["six_fields"] == "seconds first"
            or options.get("seconds_first")
            or options.get("second_at_beginning")
        )
        seconds, rest = (fields[0], fields[1:]) if first else (fields[5], fields[:5])
        if seconds != "0":
            return None  # below a minute: no cron line says it
        fields = rest
    if len(fields) != 5:
        return None
    return " ".join("*" if f == "?" else f for f in fields)


_SOURCES: dict[str, dict[str, Any]] = {}


def load_source(peer: str) -> dict[str, Any]:
    if peer not in _SOURCES:
        _SOURCES[peer] = load(peer)["source"]
    return _SOURCES[peer]


def accepts(expr: str | None) -> bool:
    if expr is None:
        return False
    try:
        normalize_cron(expr)
    except ScheduleError:
        return False
    return True


# --- our side of each check --------------------------------------------------------


def our_fires(expr: str, where: Setting, count: int) -> list[datetime]:
    trigger = CronTrigger(normalize_cron(expr), source=expr)
    horizon = where.after.replace(year=min(9000, where.after.year + HORIZON))
    fires = [f for f in next_fires(trigger, where.after, count, tz=where.zone) if f <= horizon]
    if where.naive:
        return [f.astimezone(UTC).replace(tzinfo=None) for f in fires]
    return [f.astimezone(ZoneInfo(where.zone)) for f in fires]


def follow(value: Any, path: list[Any]) -> Any:
    """An attribute or method chain of a check, on our value."""
    for step in path:
        if isinstance(step, dict):
            value = getattr(value, step["call"])(
                *decode(step["args"]), **{k: decode(v) for k, v in step["kwargs"].items()}
            )
        else:
            value = getattr(value, step)
    return value


def same(ours: Any, expected: Any, *, naive: bool) -> bool:
    if isinstance(ours, datetime) and isinstance(expected, datetime):
        if expected.tzinfo is None or ours.tzinfo is None:
            return ours.replace(tzinfo=None) == expected.replace(tzinfo=None)
        return ours.timestamp() == expected.timestamp()
    if isinstance(ours, datetime) and isinstance(expected, float | int):
        stamp = ours.replace(tzinfo=UTC).timestamp() if naive else ours.timestamp()
        return stamp == expected
    return bool(ours == expected)


class Unsupported(Exception):
    """A check that makes no sense against our core (peer internals, cronsim's sets)."""


COMPARED: dict[str, int] = {}  # peer -> checks of fires compared (not vacuous)


def check_fires(expr: str, case: dict[str, Any]) -> Iterator[str]:
    """The checks of an `iterate` or `range` case that our fires fail."""
    where = setting(case)
    if where is None:
        return
    if case["kind"] == "range":
        stop = decode(case["stop"])
        stop = stop.replace(tzinfo=UTC) if stop.tzinfo is None else stop
        trigger = CronTrigger(normalize_cron(expr), source=expr)
        fires = slots_between(
            trigger, where.after - timedelta(seconds=1), stop, tz=where.zone, limit=10_000
        )
        ours_all = [f.astimezone(ZoneInfo(where.zone)) for f in fires]
        if where.naive:
            ours_all = [f.replace(tzinfo=None) for f in ours_all]
        for check in case["checks"]:
            expected = decode(check["value"])
            if len(ours_all) != len(expected) or not all(
                same(o, e, naive=where.naive) for o, e in zip(ours_all, expected, strict=False)
            ):
                yield f"range: ours {[str(o) for o in ours_all][:5]}"
        return
    indexes = [c["at"][0] for c in case["checks"] if isinstance(c["at"][0], int)]
    count = max(indexes, default=-1) + 1
    if case.get("exhausted"):
        count += 1
    fires = our_fires(expr, where, count)
    for check in case["checks"]:
        head, *path = check["at"]
        if not isinstance(head, int) or head < 0:
            raise Unsupported(f"a check on the peer's {head}")  # its sets, its start time
        if check["op"] == "exhausted":
            if len(fires) > head:
                yield f"fire {head}: ours {fires[head]}, the peer has none"
            continue
        if head >= len(fires):
            yield f"fire {head}: we have none"
            continue
        try:
            ours = follow(fires[head], path)
        except (AttributeError, TypeError) as exc:
            raise Unsupported(f"{path}: {exc}") from None
        expected = decode(check["value"])
        agree = same(ours, expected, naive=where.naive)
        if agree != (check["op"] == "=="):
            yield f"fire {head} {path or ''}: ours {ours}, the peer's test {check['op']} {expected}"
    if case.get("exhausted") and len(fires) >= count:
        yield f"fire {count - 1}: ours {fires[count - 1]}, the peer's iterator is exhausted"


def fires_at(expr: str, at: datetime, zone: str) -> bool:
    minute = at.replace(second=0, microsecond=0)
    trigger = CronTrigger(normalize_cron(expr), source=expr)
    (fire,) = next_fires(trigger, minute - timedelta(seconds=1), 1, tz=zone) or (None,)
    return fire is not None and fire.timestamp() == minute.timestamp()


# --- one case ----------------------------------------------------------------------


def differences(peer: str, case: dict[str, Any]) -> list[str]:
    """How our core differs from the peer's facts on one case ([] when it agrees)."""
    out: list[str] = []
    peer_expr = spelling(peer, case, ours=False)
    we_accept = accepts(peer_expr)
    checks = case.get("checks", [])
    truth = [c["value"] for c in checks if c["op"] == "truth"]
    if case.get("error") or (case["kind"] == "valid" and truth == [False]):
        if we_accept:
            out.append("syntax: the peer refuses it, we accept it")
        return out
    if case["kind"] == "valid" or (case["kind"] == "match" and not we_accept):
        if not we_accept:
            out.append("syntax: we refuse it")
    elif not we_accept:
        out.append("syntax: we refuse it")
    expr = peer_expr if we_accept else spelling(peer, case, ours=True)
    if expr is None or not accepts(expr):
        return out
    COMPARED[peer] = COMPARED.get(peer, 0) + max(1, len(checks))
    if case["kind"] == "match":
        at = decode(case["at"])
        zone = "UTC"
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        elif isinstance(at.tzinfo, ZoneInfo):
            zone = at.tzinfo.key
        if fires_at(expr, at, zone) != truth[0]:
            out.append(f"semantics: fires at {at}: ours {not truth[0]}, the peer's {truth[0]}")
        return out
    if case["kind"] in ("iterate", "range"):
        try:
            found = list(check_fires(expr, case))
        except Unsupported:
            return out
        out.extend(f"semantics: {d}" for d in found[:3])
    return out


def all_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    for peer in PEERS:
        for case in load(peer)["cases"]:
            yield peer, case


@pytest.mark.parametrize("peer", PEERS)
def test_peer_vectors_differ_only_where_classified(peer: str) -> None:
    listed = differences_table()[peer]
    found: dict[str, list[str]] = {}
    for case in load(peer)["cases"]:
        diff = differences(peer, case)
        if diff:
            found[case["id"]] = diff
    unexplained = {k: v for k, v in found.items() if k not in listed}
    assert unexplained == {}, "differences not in vectors/differences.json"
    stale = sorted(set(listed) - set(found))
    assert stale == [], "listed as different but now agree"
    for case_id, diff in found.items():
        aspects = {d.split(":")[0] for d in diff}
        label = listed[case_id]
        if isinstance(label, dict):  # a class for the syntax and one for the semantics
            assert set(label) == aspects, case_id
    # Enough of the peer's facts were compared with our fires to mean something.
    assert COMPARED.get(peer, 0) >= 25, COMPARED


def test_every_class_is_explained_in_the_docs() -> None:
    docs = DOCS.read_text()
    table = differences_table()
    labels = [label for peer in table.values() for label in peer.values()]
    classes = {
        c for label in labels for c in (label.values() if isinstance(label, dict) else [label])
    }
    missing = sorted(c for c in classes if f"`{c}`" not in docs)
    assert missing == []
    assert len(classes) >= 5


def test_vectors_are_many_and_cite_their_source() -> None:
    for peer in PEERS:
        data = load(peer)
        assert data["source"]["repository"].startswith("https://github.com/")
        assert re.fullmatch(r"[0-9a-f]{7,40}", data["source"]["commit"])
        assert len(data["cases"]) >= 40, peer
