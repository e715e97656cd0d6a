"""Chaos: 50 kill -9s of the daemon mid-run (bench/README.md, "The figures").

A temporary home (retention off, so every row stays to be checked) with three tasks:
- `every-1s`: `every: 1s`, `catch_up: all` (window 1 h), a block that sleeps 0.3 s, so a
  kill often lands while a run's process runs;
- `every-2s`: `every: 2s`, `catch_up: all` (window 1 h), no block (bookkeeping only);
- `hook`: a webhook task (`overlap: allow`) that the benchmark posts to while it runs.

Fifty times: start `daycare daemon run`, let it work for a random 0.5-2.5 s (in half the
rounds, until a run is `running`), post a few webhooks, `kill -9` it, leave it down for a
random 0-1.5 s (so the next start catches up). Then one last start that is left to catch
up and drain, and a SIGTERM. Checks, on state.db:
- no slot twice: no (task, trigger, slot, attempt) with two rows;
- no slot lost under `catch_up: all`: the slots of each `every` task, from its first to
  its last, are exactly its interval apart (each slot a run, or a skipped run);
- no run left `queued` or `running`;
- every webhook 202 has its run, started at most once, ended;
- `PRAGMA integrity_check` is `ok`;
- no process of the home is left once the last daemon stopped (a block's sandbox caught
  by a kill while bubblewrap set it up can be: each is listed, then killed).

Run: `.venv/bin/python bench/chaos_kill.py [--kills 50] [--seed 1]`; prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from daemon_proc import DAYCARE, start_daemon

TASKS = {
    "every-1s": (
        "---\ntriggers:\n  - every: 1s\ncatch_up: all\ncatch_up_window: 1h\nexecute: true\n"
        "---\n<run_python>\nimport time\ntime.sleep(0.3)\nprint(run['slot'])\n</run_python>\n"
    ),
    "every-2s": (
        "---\ntriggers:\n  - every: 2s\ncatch_up: all\ncatch_up_window: 1h\nexecute: false\n"
        "---\ntick\n"
    ),
    "hook": (
        "---\ntriggers:\n  - webhook: true\noverlap: allow\nexecute: false\nmodel: none\n---\n"
        "push\n"
    ),
}
INTERVALS = {"every-1s": 1.0, "every-2s": 2.0}


def query(home: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(home / "state.db", timeout=30)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


async def post(url: str, count: int) -> list[str]:
    """POST `count` webhooks; the run ids of the 202s."""
    import aiohttp

    ids: list[str] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            try:
                async with session.post(url, data=b'{"n": 1}') as resp:
                    if resp.status == 202:
                        ids.append((await resp.json())["run"])
            except aiohttp.ClientError:
                break  # the daemon is going away
    return ids


def webhook_url(home: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAYCARE_")}
    env["DAYCARE_HOME"] = str(home)
    res = subprocess.run(
        [str(DAYCARE), "webhook", "url", "hook"], env=env, capture_output=True, text=True
    )
    return res.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    t_start = time.perf_counter()
    answered: list[str] = []
    mid_run = 0
    with tempfile.TemporaryDirectory(prefix="daycare-chaos-") as tmp:
        home = Path(tmp) / "home"
        (home / "tasks").mkdir(parents=True)
        # Retention off (it keeps the newest 100 rows by queue time, and a catch-up run is
        # queued after the slots it follows): every row stays for the checks.
        (home / "config.toml").write_text("[webhook]\nport = 0\n[retention]\nkeep_runs = 100000\n")
        for name, text in TASKS.items():
            (home / "tasks" / f"{name}.md").write_text(text)
        for _ in range(args.kills):
            proc, lines, ready = start_daemon(home)
            if not ready.wait(60) or proc.poll() is not None:
                sys.exit("daemon did not start:\n" + "\n".join(lines[-20:]))
            url = webhook_url(home)  # port 0: a new port at each start
            deadline = time.monotonic() + rng.uniform(0.5, 2.5)
            answered += asyncio.run(post(url, rng.randint(1, 5)))
            want_running = rng.random() < 0.5
            while time.monotonic() < deadline or want_running:
                if want_running and query(home, "SELECT 1 FROM runs WHERE status = 'running'"):
                    mid_run += 1
                    break
                if time.monotonic() > deadline + 5:
                    break
                time.sleep(0.01)
            proc.kill()
            proc.wait()
            time.sleep(rng.uniform(0, 1.5))
        # The last start: catch up, drain, stop.
        proc, lines, ready = start_daemon(home)
        if not ready.wait(60):
            sys.exit("daemon did not start")
        t0 = time.monotonic()
        time.sleep(1.0)
        active = "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')"
        while query(home, active)[0][0] and time.monotonic() - t0 < 120:
            time.sleep(0.1)
        proc.terminate()
        code = proc.wait(60)
        elapsed = time.perf_counter() - t_start
        leftovers = _leftovers(str(home))

        duplicates = query(
            home,
            "SELECT task, trigger_id, slot, attempt, count(*) FROM runs WHERE slot IS NOT NULL "
            "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1",
        )
        lost: dict[str, int] = {}
        slots_of: dict[str, int] = {}
        statuses: dict[str, int] = {}
        for task, interval in INTERVALS.items():
            slots = sorted(
                datetime.fromisoformat(s)
                for (s,) in query(home, f"SELECT slot FROM runs WHERE task = '{task}'")
            )
            slots_of[task] = len(slots)
            lost[task] = sum(
                round((b - a).total_seconds() / interval) - 1 for a, b in itertools.pairwise(slots)
            )
        for status, n in query(home, "SELECT status, count(*) FROM runs GROUP BY 1"):
            statuses[status] = n
        left = query(home, active)[0][0]
        integrity = query(home, "PRAGMA integrity_check")[0][0]
        fired = {r for (r,) in query(home, "SELECT run FROM events WHERE kind = 'run.fired'")}
        started = [r for (r,) in query(home, "SELECT run FROM events WHERE kind = 'run.started'")]
        ended = {r for (r,) in query(home, "SELECT run FROM events WHERE kind = 'run.finished'")}
        hooks_missing = [r for r in answered if r not in fired]
        hooks_unended = [r for r in answered if r not in ended]
        started_twice = len(started) - len(set(started))
        catch_up = query(home, "SELECT count(*) FROM runs WHERE trigger = 'catch-up'")[0][0]

    la = os.getloadavg()
    ok = (
        not duplicates
        and not any(lost.values())
        and left == 0
        and integrity == "ok"
        and not hooks_missing
        and not hooks_unended
        and not started_twice
        and not leftovers
    )
    print(
        f"Chaos: {args.kills} kill -9s (seed {args.seed}), {elapsed:.0f} s in all; "
        f"load average after: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}\n"
    )
    print("| check | result |\n|---|---|")
    print(f"| kills | {args.kills}, {mid_run} of them while a run's process ran |")
    print(f"| slots recorded | {json.dumps(slots_of)}; catch-up runs {catch_up} |")
    print(f"| run statuses | {json.dumps(statuses, sort_keys=True)} |")
    print(f"| duplicate slots | {len(duplicates)} |")
    print(f"| lost slots (`catch_up: all`) | {json.dumps(lost)} |")
    print(f"| runs left queued or running | {left} |")
    print(
        f"| webhooks | {len(answered)} × 202: {len(hooks_missing)} without a run, "
        f"{len(hooks_unended)} never ended; runs started twice {started_twice} |"
    )
    print(f"| `PRAGMA integrity_check` | {integrity} |")
    print(f"| last stop exit code | {code} |")
    print(f"| processes of the home left after the last stop | {len(leftovers)} {leftovers} |")
    print(f"| all checks | {'pass' if ok else '**FAIL**'} |")
    sys.exit(0 if ok else 1)


def _leftovers(home: str) -> list[str]:
    """Processes still naming the home in their command line (a block's bubblewrap binds
    its workspace); each is killed once listed: "name pid (parent ppid)"."""
    found = []
    for p in psutil.process_iter(["pid", "ppid", "name", "cmdline"]):
        if p.pid != os.getpid() and any(home in arg for arg in p.info["cmdline"] or ()):
            found.append(f"{p.info['name']} {p.pid} (parent {p.info['ppid']})")
            with contextlib.suppress(psutil.Error):
                p.kill()
    return found


if __name__ == "__main__":
    main()
