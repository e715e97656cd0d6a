"""Read the expected-value tables of robfig/cron's spec_test.go and parser_test.go.

Go table rows are literals, so a regular expression reads them: TestActivation
`{time, spec, bool}` (whether Next(time - 1s) is time), TestNext and TestNextWithTz
`{time, spec, expected}`, TestErrors, TestSlash0NoHang, TestParseScheduleErrors and
TestStandardSpecSchedule's errors (specs that must be refused) and its accepted specs.

Times follow the tests' getTime: `Mon Jul 9 15:00 2012` is wall time in the machine's
zone (recorded naive: no zone), `2012-03-11T00:00:00-0500` an instant, a `TZ=Zone `
prefix on the time or the spec names the zone. Prints the same raw JSON as record.py.

    python robfig.py PATH/TO/robfig/cron > robfig_raw.json
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

_ROW = re.compile(r'\{\s*"([^"]*)",\s*"([^"]*)",\s*(true|false|"[^"]*")\s*\}')
_ERR = re.compile(r'\{\s*"([^"]*)",\s*"([^"]*)"\s*\}')


def _section(text: str, func: str) -> str:
    start = text.index(f"func {func}(")
    end = text.find("\nfunc ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _time(value: str) -> tuple[dict[str, Any], str | None]:
    """A getTime value as {datetime, zone?} and the zone a `TZ=` prefix names."""
    zone = None
    if value.startswith("TZ="):
        prefix, value = value.split(None, 1)
        zone = prefix[3:]
    for layout in ("%a %b %d %H:%M %Y", "%a %b %d %H:%M:%S %Y"):
        try:
            return {"datetime": datetime.strptime(value, layout).isoformat(), "zone": zone}, zone
        except ValueError:
            pass
    parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    return {"datetime": parsed.isoformat(), "zone": zone}, zone


def _spec(spec: str) -> tuple[str, str | None]:
    match = re.match(r"(?:CRON_)?TZ=(\S+)\s+(.*)", spec)
    return (match.group(2), match.group(1)) if match else (spec, None)


def main() -> None:
    root = Path(sys.argv[1])
    spec_test = (root / "spec_test.go").read_text()
    parser_test = (root / "parser_test.go").read_text()
    cases: list[dict[str, Any]] = []

    for time, spec, expected in _ROW.findall(_section(spec_test, "TestActivation")):
        at, _ = _time(time)
        cases.append(
            {
                "test": "spec_test.go::TestActivation",
                "kind": "match",
                "expr": spec,
                "at": at,
                "options": {},
                "checks": [{"at": ["match"], "op": "truth", "value": expected == "true"}],
            }
        )
    for func in ("TestNext", "TestNextWithTz"):
        for time, spec, expected in _ROW.findall(_section(spec_test, func)):
            start, time_zone = _time(time)
            expr, spec_zone = _spec(spec)
            zone = spec_zone or time_zone
            start["zone"] = zone
            if expected == '""':
                check = {"at": [0], "op": "exhausted", "value": True}
            else:
                fire, _ = _time(expected.strip('"'))
                fire["zone"] = zone
                check = {"at": [0], "op": "==", "value": fire}
            cases.append(
                {
                    "test": f"spec_test.go::{func}",
                    "kind": "iterate",
                    "expr": expr,
                    "start": start,
                    "options": {"seconds_first": True} if func == "TestNext" else {},
                    "checks": [check],
                }
            )
    errors = re.findall(r'"([^"]*)"', _section(spec_test, "TestErrors"))
    errors = [e for e in errors if "expected an error" not in e]
    for spec in errors:
        cases.append(
            {
                "test": "spec_test.go::TestErrors",
                "kind": "iterate",
                "expr": spec,
                "start": None,
                "options": {},
                "checks": [],
                "error": True,
            }
        )
    cases.append(
        {
            "test": "spec_test.go::TestSlash0NoHang",
            "kind": "iterate",
            "expr": "15/0 * * * *",
            "start": None,
            "options": {},
            "checks": [],
            "error": True,
        }
    )
    for spec, _ in _ERR.findall(_section(parser_test, "TestParseScheduleErrors")):
        cases.append(
            {
                "test": "parser_test.go::TestParseScheduleErrors",
                "kind": "iterate",
                "expr": spec,
                "start": None,
                "options": {"seconds_first": True},
                "checks": [],
                "error": True,
            }
        )
    standard = _section(parser_test, "TestStandardSpecSchedule")
    for block in re.findall(r"\{\s*expr:\s*\"([^\"]*)\",(.*?)\n\t\t\}", standard, re.S):
        spec, rest = block
        cases.append(
            {
                "test": "parser_test.go::TestStandardSpecSchedule",
                "kind": "valid",
                "expr": spec,
                "options": {},
                "checks": [{"at": ["valid"], "op": "truth", "value": "err:" not in rest}],
            }
        )
    json.dump({"cases": cases, "skipped": []}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
