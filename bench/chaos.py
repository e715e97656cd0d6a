"""Chaos: the reliability figures of bench/README.md, "The figures", checked against the real CLI
and daemon.

Not part of the test run (pytest collects `tests/` only): it takes minutes and fills a
machine. Parts, each with its own report:

1. fuzz: N fuzzed task files (1,000 by default), mutations of `tasks.example/` and of the
   malformed-file table in `tests/core/test_taskfile_errors.py` (byte flips,
   truncations, deep nesting, huge values, random Unicode, tag floods, spliced and
   shuffled lines). Each goes through `daycare task lint --json` (in batches) and
   through a live `daycare daemon run` (in waves of 20 files). Held to: 0 tracebacks,
   0 hangs over 2 s (a file read in-process, and the daemon's reaction to a file beyond
   its settle time), every error names file:line, and two `every: 1s` canary tasks in
   the daemon's home miss no slot meanwhile.
2. kill: 50 `kill -9` of the daemon mid-run, by `chaos_kill.py` (see its docstring): 0
   duplicate slots, 0 lost under `catch_up: all`, 0 runs left running, every webhook 202
   run once, integrity ok.

Run: `.venv/bin/python bench/chaos.py [--part fuzz|kill|all] [--files 1000] [--seed 6]
[--kills 50]`.
Exit status 1 when a figure is missed. Everything happens in a temporary home.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from daemon_proc import DAYCARE, start_daemon  # noqa: E402

from daycare_cli.daemon.watcher import SETTLE_S  # noqa: E402
from daycare_cli.store.tasks import read_entry  # noqa: E402

HANG_S = 2.0
WAVE = 20
LINT_BATCH = 25
CONFIG = "max_concurrent_runs = 2\n\n[webhook]\nport = 0\n\n[daemon]\ngrace_period = 5\n"
CANARY = "---\ntriggers:\n  - every: 1s\nmodel: none\n---\ncanary {n}\n"


@dataclass
class Report:
    """What a part found: its figures and the problems that miss them."""

    name: str
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text, flush=True)

    def fail(self, text: str) -> None:
        self.problems.append(text)
        print(f"PROBLEM: {text}", flush=True)


# -- part 1: fuzzed task files --------------------------------------------------------------


def seeds() -> list[bytes]:
    """The files mutations start from: the examples and the malformed-file table."""
    out = [p.read_bytes() for p in sorted((ROOT / "tasks.example").glob("*.md"))]
    spec = importlib.util.spec_from_file_location(
        "taskfile_error_cases", ROOT / "tests" / "core" / "test_taskfile_errors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for case in module.CASES:
        text = case[0]
        out.append(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return out


WEIRD = [
    "\x00", "\t", "\r", "\u2028", "\u202e", "\ufeff", "\u0301", "é", "🙂", "\ud800", "\x85",
    "---", "...", ":", "- ", "[", "{", "&a", "*a", "!!python/object:os.system", "<<: *a",
    "'", '"', "#", "%YAML 1.1", "? ", "|", ">", "\\", "`", "@", "~", "null", "yes", "0o17",
]  # fmt: skip
HUGE_VALUES = [
    "9" * 5000, "1e999", "-1e999", ".nan", "1e300", "99999999999999999999d", "a" * 300_000,
    "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-12:00", "1" + "0" * 400 + "G",
    '"' + "\\u00e9" * 50_000 + '"', "[" + "1, " * 50_000 + "1]",
]  # fmt: skip
KEYS = ["timeout", "every", "retries", "at", "memory", "jitter", "name", "schedule", "tags", "cpu"]


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """One random mutation of a file's bytes."""
    kind = rng.randrange(10)
    lines = data.split(b"\n")
    if kind == 0:  # byte flips
        buf = bytearray(data or b"-")
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= rng.randint(1, 255)
        return bytes(buf)
    if kind == 1:  # truncation
        return data[: rng.randint(0, len(data))]
    if kind == 2:  # deep nesting, in the frontmatter or as a new key
        depth = rng.choice([33, 200, 999, 1001, 5000, 20_000, 200_000])
        style = rng.randrange(3)
        if style == 0:
            deep = "tags: " + "[" * depth + "]" * depth
        elif style == 1:
            deep = "tags:\n  " + "- " * depth + "x"
        else:
            deep = "env:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(min(depth, 2000)))
        at = rng.randint(1, max(1, min(len(lines) - 1, 6)))
        return b"\n".join([*lines[:at], deep.encode(), *lines[at:]])
    if kind == 3:  # a huge value for a key
        line = f"{rng.choice(KEYS)}: {rng.choice(HUGE_VALUES)}"
        at = rng.randint(1, max(1, min(len(lines) - 1, 6)))
        return b"\n".join([*lines[:at], line.encode("utf-8", "surrogatepass"), *lines[at:]])
    if kind == 4:  # random Unicode (and the odd invalid byte) anywhere
        buf = data.decode("utf-8", "replace")
        for _ in range(rng.randint(1, 10)):
            at = rng.randint(0, len(buf))
            if rng.random() < 0.5:
                piece = rng.choice(WEIRD)
            else:
                piece = "".join(chr(rng.randint(1, 0x10FFFF)) for _ in range(rng.randint(1, 5)))
            buf = buf[:at] + piece + buf[at:]
        return buf.encode("utf-8", "surrogatepass")
    if kind == 5:  # tag floods
        tag = rng.choice(["<run_python>\n", "<run_python ", "<run_python x='", "</run_python>",
                          "<RUN_PYTHON\t", "<run_python>a</run_python>"])  # fmt: skip
        return data + (tag * rng.choice([100, 5000, 20_000, 80_000])).encode()
    if kind == 6:  # lines shuffled, repeated or dropped
        if len(lines) > 1:
            i, j = sorted(rng.sample(range(len(lines)), 2))
            choice = rng.randrange(3)
            if choice == 0:
                lines[i], lines[j] = lines[j], lines[i]
            elif choice == 1:
                lines[i:i] = lines[i:j] * rng.randint(1, 50)
            else:
                del lines[i:j]
        return b"\n".join(lines)
    if kind == 7:  # spliced with another seed
        other = rng.choice(pool)
        return data[: rng.randint(0, len(data))] + other[rng.randint(0, len(other)) :]
    if kind == 8:  # indentation and delimiters broken
        if lines:
            at = rng.randrange(len(lines))
            lines[at] = rng.choice([b"\t", b"   ", b"---", b"...", b"", b"- "]) + lines[at]
        return b"\n".join(lines)
    # many triggers, named and not
    items = "".join(
        "  - every: 1m\n" if rng.random() < 0.7 else f"  - cron: '* * * * *'\n    id: t{i % 7}\n"
        for i in range(rng.choice([10, 999, 1001, 30_000]))
    )
    return b"---\ntriggers:\n" + items.encode() + b"---\nbody\n"


def fuzzed_files(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    pool = seeds()
    out = []
    for _ in range(count):
        data = rng.choice(pool)
        for _ in range(rng.choice([1, 1, 2, 3])):
            data = mutate(data, rng, pool)
        out.append(data[: 2 * 1024 * 1024])
    return out


WHERE_RE = re.compile(r"^(?P<path>/[^:\n]+\.md):(?P<line>\d+)(?::\d+)?: \S")


def names_file_line(error: str, path: Path) -> bool:
    """True when the error's first line starts with `path:line` (line from 1)."""
    found = WHERE_RE.match(error)
    return bool(found and found["path"] == str(path) and int(found["line"]) >= 1)


def lint_files(report: Report, paths: list[Path], home: Path) -> None:
    """`daycare task lint --json` over every file, in batches; then each file read in-process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAYCARE_")}
    env.update(DAYCARE_HOME=str(home), NO_COLOR="1")
    results: dict[str, dict[str, object]] = {}
    tracebacks = bad_exits = 0
    started = time.perf_counter()
    for i in range(0, len(paths), LINT_BATCH):
        batch = paths[i : i + LINT_BATCH]
        try:
            res = subprocess.run(
                [str(DAYCARE), "task", "lint", "--json", *map(str, batch)],
                env=env,
                capture_output=True,
                text=True,
                timeout=10 + HANG_S * len(batch),
            )
        except subprocess.TimeoutExpired:
            report.fail(f"task lint hung on {batch[0].name}..{batch[-1].name}")
            continue
        if "Traceback" in res.stderr or "Traceback" in res.stdout:
            tracebacks += 1
            report.fail(f"task lint printed a traceback for {batch[0].name}..: {res.stderr[-500:]}")
        if res.returncode not in (0, 4):
            bad_exits += 1
            report.fail(f"task lint exited {res.returncode}: {res.stderr[-300:]}")
            continue
        for record in json.loads(res.stdout):
            results[str(record["path"])] = record
    took = time.perf_counter() - started
    invalid = [r for r in results.values() if not r["valid"]]
    unplaced = [
        r for r in invalid if not (isinstance(r["line"], int) and r["line"] >= 1)
        or not names_file_line(str(r["error"]), Path(str(r["path"])))
    ]  # fmt: skip
    for r in unplaced[:5]:
        report.fail(f"an error without file:line: {r['error']}")
    missing = len(paths) - len(results)
    if missing:
        report.fail(f"task lint reported {missing} files fewer than it was given")
    kinds = Counter(re.sub(r"`[^`]*`|'[^']*'|\d+", "…", str(r["error"]).split(": ", 1)[-1])[:50]
                    for r in invalid)  # fmt: skip
    report.say(f"- `task lint --json`, {LINT_BATCH} files a call: {len(results)} files in "
               f"{took:.1f} s; {len(results) - len(invalid)} valid, {len(invalid)} invalid; "
               f"errors without file:line: {len(unplaced)}; tracebacks: {tracebacks}; "
               f"exit codes other than 0/4: {bad_exits}")  # fmt: skip
    report.say("- most frequent errors: " + "; ".join(f"{n}× {k}" for k, n in kinds.most_common(8)))

    times = []
    for path in paths:
        t = time.perf_counter()
        read_entry(path)
        times.append((time.perf_counter() - t, path.name))
    times.sort()
    slow = [name for t, name in times if t > HANG_S]
    if slow:
        report.fail(f"{len(slow)} files took over {HANG_S:g} s to read: {slow[:5]}")
    report.say(f"- read in-process (`read_entry`): median {times[len(times) // 2][0] * 1000:.1f} "
               f"ms, max {times[-1][0] * 1000:.0f} ms ({times[-1][1]}); over {HANG_S:g} s: "
               f"{len(slow)}")  # fmt: skip


def query(home: Path, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
    db = sqlite3.connect(home / "state.db", timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def daemon_files(report: Report, files: list[bytes], root: Path) -> None:
    """Waves of fuzzed files into a live daemon's tasks directory, beside two canaries."""
    home = root / "daemon-home"
    tasks = home / "tasks"
    tasks.mkdir(parents=True)
    (home / "config.toml").write_text(CONFIG)
    for n in (1, 2):
        (tasks / f"canary-{n}.md").write_text(CANARY.format(n=n))
    proc, log, ready = start_daemon(home)
    try:
        ready.wait(60)
        if proc.poll() is not None:
            report.fail("the daemon did not start:\n" + "\n".join(log[-20:]))
            return
        began = time.time()
        reactions: list[float] = []
        unseen: list[str] = []
        unplaced: list[str] = []
        for w in range(0, len(files), WAVE):
            wave = {f"fuzz-{i:04d}": files[i] for i in range(w, min(w + WAVE, len(files)))}
            written = {}
            for task_id, data in wave.items():
                (tasks / f"{task_id}.md").write_bytes(data)
                written[task_id] = time.time()
            deadline = time.time() + 30
            seen: dict[str, sqlite3.Row] = {}
            while time.time() < deadline and len(seen) < len(wave):
                marks = ",".join("?" * len(wave))
                for row in query(
                    home,
                    f"SELECT * FROM events WHERE task IN ({marks}) AND kind IN "
                    "('task.added', 'task.invalid') ORDER BY id",
                    tuple(wave),
                ):
                    seen.setdefault(row["task"], row)
                time.sleep(0.1)
            for task_id in wave:
                row = seen.get(task_id)
                if row is None:
                    unseen.append(task_id)
                    continue
                reactions.append(at(row["at"]) - written[task_id])
                if row["kind"] == "task.invalid":
                    error = str(json.loads(row["detail"])["error"])
                    if not names_file_line(error, tasks / f"{task_id}.md"):
                        unplaced.append(error.split("\n")[0][:200])
            for task_id in wave:  # the next wave starts from a clean directory
                (tasks / f"{task_id}.md").unlink(missing_ok=True)
                (tasks / ".archive" / f"{task_id}.md").unlink(missing_ok=True)
            time.sleep(0.5)
        ended = time.time()
        time.sleep(1.5)
        alive = proc.poll() is None
        traces = [line for line in log if "Traceback" in line]
        reactions.sort()
        slow = [r for r in reactions if r > HANG_S + SETTLE_S]
        canary_gaps = 0
        canary_counts = []
        for n in (1, 2):
            slots = sorted(
                at(r["slot"])
                for r in query(home, "SELECT slot FROM runs WHERE task = ?", (f"canary-{n}",))
                if began + 1 <= at(r["slot"]) <= ended - 1
            )
            canary_counts.append(len(slots))
            canary_gaps += sum(1 for a, b in itertools.pairwise(slots) if b - a > 1.01)
        missed = query(home, "SELECT COUNT(*) FROM runs WHERE status = 'missed'")[0][0]
        if not alive:
            report.fail(f"the daemon died: exit {proc.returncode}")
        if traces:
            report.fail(f"{len(traces)} tracebacks in the daemon's log: {traces[:3]}")
        if unseen:
            report.fail(f"{len(unseen)} files never got task.added or task.invalid: {unseen[:5]}")
        if unplaced:
            report.fail(f"{len(unplaced)} daemon errors without file:line: {unplaced[:3]}")
        if slow:
            report.fail(f"{len(slow)} files took the daemon over {HANG_S:g} s: {slow[:5]}")
        if canary_gaps or missed:
            report.fail(f"canaries: {canary_gaps} gaps between slots, {missed} missed runs")
        report.say(
            f"- live daemon, waves of {WAVE}: {len(reactions)} files seen in "
            f"{ended - began:.0f} s; "
            f"write → event median {reactions[len(reactions) // 2] * 1000:.0f} ms, max "
            f"{reactions[-1] * 1000:.0f} ms (over {HANG_S:g} s: {len(slow)}); errors without "
            f"file:line: {len(unplaced)}; tracebacks: {len(traces)}; daemon alive: {alive}; "
            f"canaries `every: 1s`: {canary_counts} slots, {canary_gaps} gaps, {missed} missed"
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def fuzz_part(args: argparse.Namespace) -> Report:
    report = Report("fuzz")
    started = time.perf_counter()
    files = fuzzed_files(args.files, args.seed)
    sizes = sorted(len(f) for f in files)
    report.say(f"## Part 1: {len(files):,} fuzzed task files (seed {args.seed})\n")
    report.say(f"- sizes: median {sizes[len(sizes) // 2]:,} bytes, max {sizes[-1]:,}; "
               f"over 1 MiB: {sum(s > 1024 * 1024 for s in sizes)}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lint_home = root / "lint-home"
        corpus = root / "corpus"
        corpus.mkdir(parents=True)
        (lint_home / "tasks").mkdir(parents=True)
        paths = []
        for i, data in enumerate(files):
            path = corpus / f"fuzz-{i:04d}.md"
            path.write_bytes(data)
            paths.append(path)
        lint_files(report, paths, lint_home)
        daemon_files(report, files, root)
    report.say(f"- part 1 took {time.perf_counter() - started:.0f} s")
    return report


# -- part 2: kill -9 mid-run ----------------------------------------------------------------
# bench/README.md, "The figures": 50 kill -9 of the daemon mid-run: 0 duplicate slots, 0 lost
# slots under `catch_up: all`, 0 runs left running, integrity ok. `chaos_kill.py` does it
# (it also runs alone); here it runs as a child and its report is this part's.


def kill_part(args: argparse.Namespace) -> Report:
    report = Report("kill")
    report.say("## Part 2: kill -9 mid-run (`chaos_kill.py`)\n")
    started = time.perf_counter()
    child = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("chaos_kill.py")),
            "--kills",
            str(args.kills),
        ],
        capture_output=True,
        text=True,
    )
    report.say(child.stdout.rstrip())
    if child.returncode != 0:
        report.fail(f"chaos_kill.py exited {child.returncode}: {child.stderr.strip()[-500:]}")
    report.say(f"- part 2 took {time.perf_counter() - started:.0f} s")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["fuzz", "kill", "all"], default="all")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--kills", type=int, default=50, help="kill -9s of part 2")
    args = parser.parse_args()
    print(f"chaos, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()}\n")
    reports = []
    if args.part in ("fuzz", "all"):
        reports.append(fuzz_part(args))
    if args.part in ("kill", "all"):
        reports.append(kill_part(args))
    problems = [p for r in reports for p in r.problems]
    print(f"\n{len(problems)} problem(s); load average after {os.getloadavg()}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
