"""CLI start-up: `daycare --version` and `daycare task ls` over 100 tasks (bench/README.md).

Makes 100 task files (cron in several zones, `every`, webhook, a few with two triggers)
in a temporary DAYCARE_HOME with 5 runs of each in its state database (so every row has
a LAST RUN), then times the installed console script `.venv/bin/daycare`
as a subprocess: a warm-up call, then the median (and min, max) of N runs (10 by default)
of `--version`, `task ls` and `task ls --json`, each with and without a bytecode cache,
then `task ls` once more with a daemon running on that home (it then asks the daemon for
its plan). It also splits one `task ls` process into imports and work, and, when
`task ls` is above the goal (150 ms), lists the costliest imports (`-X importtime`).

Run: `.venv/bin/python bench/bench_cli.py [-n 10]`; prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from daemon_proc import user_env

ROOT = Path(__file__).resolve().parent.parent
DAYCARE = ROOT / ".venv" / "bin" / "daycare"
GOAL_MS = 150.0

CRONS = [
    "*/15 * * * *",
    "0 9 * * 1-5",
    "30 2 * * *",
    "0 0 * * 0",
    "0 17 * * mon-fri",
    "15 */2 * * *",
    "0 12 1 * *",
    "0 8 L * *",
    "@daily",
    "5 4 * * sun",
]
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Tokyo", "UTC"]
EVERIES = ["30s", "5m", "15m", "1h", "90s", "2h"]


def task_text(i: int) -> str:
    """The i-th benchmark task: a mix of cron (several zones), every and webhook triggers."""
    kind = i % 10
    head = f"name: Bench task {i}\ndescription: generated for bench_cli\nmodel: none\n"
    if kind < 5:
        trig = f'schedule: "{CRONS[i % len(CRONS)]}"\ntimezone: {ZONES[i % len(ZONES)]}\n'
    elif kind < 7:
        trig = f"triggers:\n  - every: {EVERIES[i % len(EVERIES)]}\n"
    elif kind < 9:
        trig = "triggers:\n  - webhook: true\n"
    else:
        trig = (
            f'triggers:\n  - cron: "{CRONS[i % len(CRONS)]}"\n'
            f"    timezone: {ZONES[(i + 1) % len(ZONES)]}\n  - webhook: true\n"
        )
    body = f"Reminder number {i}: check the thing.\n"
    return f"---\n{head}{trig}---\n{body}"


def make_home(root: Path, n: int) -> Path:
    """A DAYCARE_HOME with n task files and a config that points nowhere else."""
    tasks = root / "tasks"
    tasks.mkdir(parents=True)
    (root / "config.toml").write_text("[webhook]\nport = 0\n")
    for i in range(n):
        (tasks / f"bench-{i:03d}.md").write_text(task_text(i))
    return root


def add_history(home: Path, n: int, per_task: int = 5) -> None:
    """`per_task` finished runs of each task in state.db, so `task ls` has a LAST RUN to
    look up for every row (the column issue 8 added)."""
    from datetime import UTC, datetime, timedelta

    from daycare_cli.store.state import State

    start = datetime.now(UTC) - timedelta(days=1)
    statuses = ["succeeded", "failed", "skipped", "succeeded"]
    with State.open(home / "state.db") as state:
        for i in range(n):
            for k in range(per_task):
                at = start + timedelta(minutes=10 * k + i % 7)
                run = state.create_run(
                    f"bench-{i:03d}", "manual", None, None, status="queued", now=at
                )
                assert run is not None
                state.start_run(run.id, pid=1, now=at)
                state.finish_run(run.id, status=statuses[(i + k) % 4], now=at)


def time_cmd(args: list[str], env: dict[str, str], n: int) -> list[float]:
    """Wall times (ms) of n runs of a subprocess, after one warm-up run."""
    subprocess.run(args, env=env, check=True, capture_output=True)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(args, env=env, check=True, capture_output=True)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def importtime(args: list[str], env: dict[str, str], top: int = 12) -> list[tuple[str, int, int]]:
    """(module, self µs, cumulative µs) of the top imports of one run, by cumulative time.

    Only imports at nesting level 0 and 1 are listed, so a package and its heavy
    children show without every leaf.
    """
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        head, cum, name = line.split("|", 2)
        self_us = int(head.split(":", 1)[1])
        cum_us = int(cum)
        name = name[1:]  # one space after the bar; the rest is the nesting indent
        depth = (len(name) - len(name.lstrip(" "))) // 2
        if depth <= 1:
            rows.append((("  " * depth) + name.strip(), self_us, cum_us))
    rows.sort(key=lambda r: -r[2])
    return rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="runs per command (default 10)")
    parser.add_argument("--tasks", type=int, default=100, help="task files (default 100)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="daycare-bench-cli-") as tmp:
        home = make_home(Path(tmp), args.tasks)
        add_history(home, args.tasks)
        env = user_env(home)
        env.update(NO_COLOR="1", COLUMNS="200", TERM="dumb")
        # A sanity check: every file is valid and listed.
        out = subprocess.run(
            [str(DAYCARE), "task", "ls", "--json"], env=env, check=True, capture_output=True
        )
        listed = json.loads(out.stdout)
        bad = [t["id"] for t in listed if t.get("error")]
        assert len(listed) == args.tasks and not bad, (len(listed), bad)

        cases = [
            ("daycare --version", [str(DAYCARE), "--version"]),
            (f"daycare task ls ({args.tasks} tasks)", [str(DAYCARE), "task", "ls"]),
            (
                f"daycare task ls --json ({args.tasks} tasks)",
                [str(DAYCARE), "task", "ls", "--json"],
            ),
            ("python -c pass (floor)", [sys.executable, "-c", "pass"]),
        ]
        # Two settings of the bytecode cache: this sandbox exports PYTHONDONTWRITEBYTECODE=1,
        # so an editable install recompiles every daycare module on every start; a normal
        # install (pip writes .pyc files) or a user shell reuses cached bytecode. The cache
        # goes to a temporary PYTHONPYCACHEPREFIX so the repository is not touched.
        cached = dict(env, PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"))
        cached.pop("PYTHONDONTWRITEBYTECODE", None)
        uncached = dict(env, PYTHONDONTWRITEBYTECODE="1")
        print(f"CLI wall time, {args.n} runs each after a warm-up (goal < {GOAL_MS:.0f} ms)\n")
        print("| command | bytecode cache | median ms | min ms | max ms | goal met |")
        print("|---|---|---:|---:|---:|---|")
        medians = {}
        for label, cmd in cases:
            for mode, menv in (("yes", cached), ("no", uncached)):
                times = time_cmd(cmd, menv, args.n)
                med = statistics.median(times)
                medians[label, mode] = med
                ok = "yes" if med < GOAL_MS else f"no (+{med - GOAL_MS:.0f} ms)"
                if label.startswith("python"):
                    ok = ""
                print(
                    f"| `{label}` | {mode} | {med:.0f} | {min(times):.0f} | {max(times):.0f} "
                    f"| {ok} |"
                )

        # With a daemon running, `task ls` also asks it for its plan over the control socket.
        daemon = subprocess.Popen(
            [str(DAYCARE), "daemon", "run"],
            env=cached,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert daemon.stderr is not None
            for line in daemon.stderr:
                if line.startswith("daycare daemon ready"):
                    break
            else:
                sys.exit("the daemon did not start")
            threading.Thread(target=daemon.stderr.read, daemon=True).start()
            label = f"daycare task ls ({args.tasks} tasks), daemon running"
            times = time_cmd([str(DAYCARE), "task", "ls"], cached, args.n)
            med = statistics.median(times)
            ok = "yes" if med < GOAL_MS else f"no (+{med - GOAL_MS:.0f} ms)"
            print(f"| `{label}` | yes | {med:.0f} | {min(times):.0f} | {max(times):.0f} | {ok} |")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)

        # Where the time of `task ls` goes: two calls in one process; the first pays the
        # imports, the second only reads, plans and renders.
        phases = [json.loads(x) for x in (phase_run(cached) for _ in range(args.n))]
        med = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
        print(
            f"\nInside one `task ls` process (bytecode cached, median of {args.n}): "
            f"interpreter start-up {medians[cases[3][0], 'yes']:.0f} ms, "
            f"first call {med['first']:.0f} ms, second call in the same process "
            f"{med['second']:.0f} ms, so imports ≈ {med['first'] - med['second']:.0f} ms "
            f"and reading {args.tasks} files + next fires + rendering ≈ {med['second']:.0f} ms."
        )

        ls_label = cases[1][0]
        if medians[ls_label, "yes"] > GOAL_MS or os.environ.get("BENCH_IMPORTTIME"):
            print(
                "\n`python -X importtime daycare task ls` (bytecode cached): "
                "top imports by cumulative time\n"
            )
            print("| module (indented: imported by the one above) | self ms | cumulative ms |")
            print("|---|---:|---:|")
            for name, self_us, cum_us in importtime([str(DAYCARE), "task", "ls"], cached):
                print(f"| `{name}` | {self_us / 1000:.1f} | {cum_us / 1000:.1f} |")


PHASES = r"""
import io, json, sys, time
from contextlib import redirect_stdout
from daycare_cli.cli.entry import main
out = {}
for name in ("first", "second"):
    t = time.perf_counter()
    with redirect_stdout(io.StringIO()):
        try:
            main(["task", "ls"])
        except SystemExit:
            pass
    out[name] = (time.perf_counter() - t) * 1000
print(json.dumps(out))
"""


def phase_run(env: dict[str, str]) -> str:
    """One child process timing two `task ls` calls (see PHASES)."""
    return subprocess.run(
        [sys.executable, "-c", PHASES], env=env, check=True, capture_output=True, text=True
    ).stdout


if __name__ == "__main__":
    main()
