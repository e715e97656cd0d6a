"""Turn a raw recording (record.py, robfig.py, apscheduler.py) into a vector file.

Adds the source (repository, commit, files) and how the facts were read, and gives each
case an id: the peer's test, and `#n` when one test holds several cases.

    python build.py cronsim cronsim_raw.json > ../cronsim.json
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

SOURCES: dict[str, dict[str, Any]] = {
    "cronsim": {
        "repository": "https://github.com/cuu508/cronsim",
        "commit": "fd2e617",
        "files": ["tests/test_cronsim.py"],
        "read_by": "record.py (the suite run against a recording double)",
        "six_fields": "seconds first",
    },
    "croniter": {
        "repository": "https://github.com/kiorky/croniter",
        "commit": "d813502",
        "files": [
            "src/croniter/tests/test_croniter.py",
            "src/croniter/tests/test_croniter_dst_repetition.py",
            "src/croniter/tests/test_croniter_range.py",
            "src/croniter/tests/test_croniter_hash.py",
        ],
        "read_by": "record.py (the suite run against a recording double)",
        "six_fields": "seconds last",
    },
    "robfig_cron": {
        "repository": "https://github.com/robfig/cron",
        "commit": "bc59245",
        "files": ["spec_test.go", "parser_test.go"],
        "read_by": "robfig.py (the Go table literals)",
        "six_fields": "seconds first",
    },
    "apscheduler": {
        "repository": "https://github.com/agronholm/apscheduler",
        "commit": "f2337f7",
        "files": ["tests/triggers/test_cron.py"],
        "read_by": "apscheduler.py (read by hand: keyword triggers written as 5 fields)",
        "six_fields": None,
    },
}

FORMAT = (
    "Each case: `expr` as the peer writes it (`as`: the same schedule in 5 fields when the "
    "peer's form is not a cron line), `start` ({datetime, zone, fold}: wall time in zone, "
    "or an instant when it has an offset; no zone: naive times, read as UTC), `kind` "
    "(iterate: fires after start, inclusive when options.inclusive; match: whether it "
    "fires at `at`; valid: whether the expression is accepted; range: fires from start to "
    "stop, both included), `error` (the peer refuses it), `exhausted` (no further fire), "
    "and `checks`: what the test asserts, each {at: [fire index, attribute or method "
    "call...], op, value}."
)


def main() -> None:
    peer, raw = sys.argv[1:]
    with open(raw) as handle:
        data = json.load(handle)
    counts = Counter(case["test"] for case in data["cases"])
    seen: Counter[str] = Counter()
    cases = []
    for case in data["cases"]:
        seen[case["test"]] += 1
        suffix = f"#{seen[case['test']]}" if counts[case["test"]] > 1 else ""
        cases.append(
            {"id": case["test"] + suffix, **{k: v for k, v in case.items() if k != "test"}}
        )
    # One case a line: the files diff and grep well.
    write = sys.stdout.write
    write("{\n")
    write(f' "source": {json.dumps(SOURCES[peer])},\n')
    write(f' "format": {json.dumps(FORMAT)},\n')
    write(' "cases": [\n')
    write(",\n".join("  " + json.dumps(case, ensure_ascii=False) for case in cases))
    write('\n ],\n "not_recorded": [\n')
    write(",\n".join("  " + json.dumps(item, ensure_ascii=False) for item in data["skipped"]))
    write("\n ]\n}\n")


if __name__ == "__main__":
    main()
