"""Record the expected values of a peer's test suite by running it against a recording double.

The peer's own test methods run unchanged, but the class they test is replaced by a
double whose results are tokens: when a test compares a token with a value
(`assertEqual(next(it).isoformat(), "2020-01-31T01:01:00")`, `self.assertEqual(n1.day, 25)`,
`assertRaises(ValueError, croniter, "* * * *")`), the token records the value the test
expects and lets the comparison pass. So the facts are the literals the suite asserts,
never the peer's own output. A test that does anything the double cannot follow (date
arithmetic, reverse iteration, internals) fails under the double and is listed as skipped.

Used once to make the files in tests/core/vectors/ (their header says how); not a test.

    python record.py cronsim  PATH/TO/cronsim/tests/test_cronsim.py  > cronsim.json
    python record.py croniter PATH/TO/croniter/src/croniter/tests/test_croniter.py ...

croniter's suite needs pytz and python-dateutil importable, and croniter itself on sys.path
(its exception classes and helpers stay real; only the `croniter` class is replaced).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import inspect
import json
import sys
import types
import unittest
from pathlib import Path
from typing import Any

CASES: list[dict[str, Any]] = []
SKIPPED: list[dict[str, str]] = []
_CURRENT: dict[str, Any] = {"test": "", "cases": [], "errors": None}


def _zone_name(tz: Any) -> str | None:
    if tz is None:
        return None
    for attr in ("key", "zone"):
        name = getattr(tz, attr, None)
        if isinstance(name, str):
            return name
    if tz is dt.UTC or repr(tz) in ("tzutc()", "<UTC>"):
        return "UTC"
    filename = getattr(tz, "_filename", None)  # dateutil.tz.gettz
    if isinstance(filename, str):
        return filename.split("zoneinfo/")[-1]
    raise ValueError(f"unknown time zone object {tz!r}")


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        text = value.isoformat()
        if value.tzinfo is not None:
            return {"datetime": text, "zone": _zone_name(value.tzinfo), "fold": value.fold}
        return {"datetime": text}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_encode(v) for v in value), key=repr)
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    raise ValueError(f"cannot record {value!r}")


def _encode_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: _encode(v) for k, v in kwargs.items()}


class Token:
    """Something the double returned; comparing it records what the test expects."""

    def __init__(self, case: dict[str, Any], path: list[Any]) -> None:
        self._case, self._path = case, path

    def _record(self, op: str, value: Any) -> None:
        self._case["checks"].append({"at": self._path, "op": op, "value": _encode(value)})

    def __eq__(self, other: object) -> bool:
        self._record("==", other)
        return True

    def __ne__(self, other: object) -> bool:
        self._record("!=", other)
        return False

    def __hash__(self) -> int:
        return id(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Token(self._case, [*self._path, name])

    def __call__(self, *args: Any, **kwargs: Any) -> Token:
        # `fire.isoformat()`, `fire.replace(tzinfo=None)`: a method call on the fire.
        *head, name = self._path
        call = {"call": name, "args": _encode(list(args)), "kwargs": _encode_kwargs(kwargs)}
        return Token(self._case, [*head, call])

    def __bool__(self) -> bool:
        raise TypeError("a token is not a boolean; use assertTrue/assertFalse")

    def truth(self, expected: bool) -> None:
        self._record("truth", expected)


class _Raises:
    """assertRaises/assertRaisesRegex: constructions inside are expected to fail."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __enter__(self) -> _Raises:
        self.before = len(_CURRENT["cases"])
        _CURRENT["errors"] = self
        return self

    def __exit__(self, *exc: Any) -> bool:
        for case in _CURRENT["cases"][self.before :]:
            # Made inside: refused, unless the test asked it for a fire there (then the
            # iterator ran out: `exhausted`) or it is a range (refused for its arguments).
            if not case.get("exhausted") and case["kind"] != "range":
                case["error"] = True
        _CURRENT["errors"] = None
        return True  # whatever the double raised (or not), the test goes on


def _assert_raises(self: unittest.TestCase, exc: Any, *args: Any, **kwargs: Any) -> Any:
    if not args:
        return _Raises(exc)
    call, *rest = args
    with _Raises(exc):
        call(*rest, **kwargs)
    return None


def _assert_raises_regex(
    self: unittest.TestCase, exc: Any, regex: Any, *args: Any, **kw: Any
) -> Any:
    return _assert_raises(self, exc, *args, **kw)


def _assert_truth(expected: bool) -> Any:
    def check(self: unittest.TestCase, value: Any, msg: Any = None) -> None:
        if isinstance(value, Token):
            value.truth(expected)
        elif bool(value) != expected:
            raise AssertionError(f"{value!r} is not {expected}")

    return check


def _new_case(kind: str, **fields: Any) -> dict[str, Any]:
    case = {"test": _CURRENT["test"], "kind": kind, **fields, "checks": []}
    _CURRENT["cases"].append(case)
    return case


def _start(value: Any) -> Any:
    if isinstance(value, dt.datetime | float | int) or value is None:
        return _encode(value)
    raise TypeError(f"start {value!r}")


# --- cronsim ------------------------------------------------------------------------


class FakeCronSim:
    LAST = -1000
    LAST_WEEKDAY = -1001

    def __init__(self, expr: str, dt_: dt.datetime, reverse: bool = False) -> None:
        if reverse:
            raise TypeError("reverse iteration is not recorded")
        self._case = _new_case("iterate", expr=expr, start=_start(dt_), options={})
        self._index = 0

    def __iter__(self) -> FakeCronSim:
        return self

    def __next__(self) -> Token:
        if _CURRENT["errors"] is not None:
            self._case["exhausted"] = True  # `with assertRaises(StopIteration): next(it)`
        token = Token(self._case, [self._index])
        self._index += 1
        return token

    def __getattr__(self, name: str) -> Any:
        if name in ("minutes", "hours", "days", "months", "weekdays", "seconds", "day_and"):
            return Token(self._case, [name])
        raise TypeError(f"cronsim internals ({name}) are not recorded")


# --- croniter -----------------------------------------------------------------------


class FakeCroniter:
    def __init__(
        self,
        expr_format: str,
        start_time: Any = None,
        ret_type: Any = float,
        day_or: bool = True,
        max_years_between_matches: Any = None,
        is_prev: bool = False,
        hash_id: Any = None,
        implement_cron_bug: bool = False,
        second_at_beginning: bool = False,
        expand_from_start_time: bool = False,
    ) -> None:
        options = {
            "day_or": day_or,
            "hash_id": hash_id,
            "implement_cron_bug": implement_cron_bug,
            "second_at_beginning": second_at_beginning,
            "expand_from_start_time": expand_from_start_time,
            "is_prev": is_prev,
            "max_years_between_matches": max_years_between_matches,
        }
        defaults = {
            "day_or": True,
            "hash_id": None,
            "implement_cron_bug": False,
            "second_at_beginning": False,
            "expand_from_start_time": False,
            "is_prev": False,
            "max_years_between_matches": None,
        }
        options = {
            k: v if not isinstance(v, bytes) else v.decode()
            for k, v in options.items()
            if defaults[k] != v
        }
        if (
            isinstance(start_time, dt.datetime)
            or start_time is None
            or isinstance(start_time, float | int)
        ):
            start = _start(start_time)
        else:
            raise TypeError(f"start {start_time!r}")
        self._case = _new_case("iterate", expr=expr_format, start=start, options=options)
        self._index = 0
        self._ret = ret_type

    def get_next(
        self, ret_type: Any = None, start_time: Any = None, update_current: Any = None
    ) -> Token:
        if start_time is not None:
            raise TypeError("a new start time is not recorded")
        if _CURRENT["errors"] is not None:
            self._case["exhausted"] = True  # `assertRaises(CroniterBadDateError, it.get_next)`
        token = Token(self._case, [self._index])
        self._index += 1
        return token

    def get_current(self, ret_type: Any = None) -> Token:
        return Token(self._case, [self._index - 1])

    def all_next(
        self, ret_type: Any = None, start_time: Any = None, update_current: Any = None
    ) -> Any:
        while True:
            yield self.get_next(ret_type)

    def __iter__(self) -> Any:
        return self.all_next()

    def __next__(self) -> Token:
        return self.get_next()

    def get_prev(self, *args: Any, **kwargs: Any) -> Token:
        raise TypeError("reverse iteration is not recorded")

    all_prev = get_prev

    @staticmethod
    def is_valid(
        expression: str,
        hash_id: Any = None,
        encoding: Any = None,
        second_at_beginning: bool = False,
    ) -> Token:
        case = _new_case(
            "valid", expr=expression, options={} if hash_id is None else {"hash_id": str(hash_id)}
        )
        return Token(case, ["valid"])

    @staticmethod
    def match(
        cron_expression: str, testdate: Any, day_or: bool = True, second_at_beginning: bool = False
    ) -> Token:
        options = {} if day_or else {"day_or": False}
        case = _new_case("match", expr=cron_expression, at=_start(testdate), options=options)
        return Token(case, ["match"])

    @staticmethod
    def _timedelta_to_seconds(value: Any) -> Any:
        if isinstance(value, Token):
            return value.total_seconds()
        return value.total_seconds()

    def __getattr__(self, name: str) -> Any:
        raise TypeError(f"croniter internals ({name}) are not recorded")


class _RangeList(list):  # type: ignore[type-arg]
    def __init__(self, case: dict[str, Any]) -> None:
        super().__init__()
        self._case = case

    def __eq__(self, other: object) -> bool:
        self._case["checks"].append({"at": ["all"], "op": "==", "value": _encode(other)})
        return True

    __hash__ = None  # type: ignore[assignment]


def fake_croniter_range(
    start: Any,
    stop: Any,
    expr_format: str,
    ret_type: Any = None,
    day_or: bool = True,
    exclude_ends: bool = False,
    _croniter: Any = None,
    second_at_beginning: bool = False,
    expand_from_start_time: bool = False,
) -> Any:
    options = {
        k: v
        for k, v in (("day_or", day_or), ("exclude_ends", exclude_ends))
        if v != (k == "day_or")
    }
    case = _new_case(
        "range", expr=expr_format, start=_start(start), stop=_start(stop), options=options
    )
    return _RangeList(case)


# --- running a suite ----------------------------------------------------------------


def run_module(path: Path, patch: dict[str, Any]) -> None:
    spec = importlib.util.spec_from_file_location(f"peer_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, value in patch.items():
        if hasattr(module, name):
            setattr(module, name, value)
    unittest.TestCase.assertRaises = _assert_raises  # type: ignore[method-assign]
    unittest.TestCase.assertRaisesRegex = _assert_raises_regex  # type: ignore[method-assign]
    unittest.TestCase.assertTrue = _assert_truth(True)  # type: ignore[method-assign]
    unittest.TestCase.assertFalse = _assert_truth(False)  # type: ignore[method-assign]
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if not issubclass(cls, unittest.TestCase) or cls.__module__ != module.__name__:
            continue
        for name in sorted(n for n in dir(cls) if n.startswith("test")):
            test_id = f"{path.name}::{cls.__name__}.{name}"
            _CURRENT.update(test=test_id, cases=[], errors=None)
            try:
                instance = cls(name)
                instance.setUp()
                getattr(instance, name)()
            except Exception as exc:
                # The double cannot follow the rest of this test (date arithmetic, reverse
                # iteration, internals); what it asserted before that is kept.
                why = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
                SKIPPED.append({"test": test_id, "why": f"stopped: {why}"})
            kept = [
                c for c in _CURRENT["cases"] if c["checks"] or c.get("error") or c.get("exhausted")
            ]
            if not kept:
                SKIPPED.append({"test": test_id, "why": "no fact recorded"})
            CASES.extend(kept)


def main() -> None:
    peer, *files = sys.argv[1:]
    if peer == "cronsim":
        fake = types.ModuleType("cronsim")
        fake.CronSim = FakeCronSim  # type: ignore[attr-defined]
        fake.CronSimError = type("CronSimError", (Exception,), {})  # type: ignore[attr-defined]
        sys.modules["cronsim"] = fake
        patch: dict[str, Any] = {}
    else:
        patch = {"croniter": FakeCroniter, "croniter_range": fake_croniter_range}
    for file in files:
        run_module(Path(file), patch)
    json.dump({"cases": CASES, "skipped": SKIPPED}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
