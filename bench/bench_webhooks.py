"""Webhook throughput: accepted requests/s and latency under load on loopback (DESIGN.md §10).

A temporary home with one task (`triggers: [{webhook: true}]`, `overlap: allow`,
`execute: false`, `model: none`, so a run is only its bookkeeping), `daycare daemon run`
as a subprocess, and a load generator in a second process on loopback:

- `wrk` (when installed): one thread, 32 connections, for a fixed time (10 s); a Lua
  script posts a small JSON body, counts statuses and collects the run id of every 202.
  wrk stops at its deadline with up to 32 requests in flight, whose runs exist but whose
  202s it never reads.
- an aiohttp client: 32 concurrent requests, 5,000 in all, every response read, so the
  match of 202s to runs is exact.

Each against two daemon configurations:
- default: `webhook.queue_size` 16, `max_concurrent_runs` 4: a flood is answered with
  429 once 16 runs of the task wait, so the 202 rate is the rate the daemon runs them;
- `webhook.queue_size` 1,000,000: every request is accepted and the runs drain later.

After the load, the benchmark waits until no run is queued or running, then checks that
every run id answered with 202 has its run: retention keeps only the newest 100 rows of
a task (older rows of the flood are pruned as it goes), so the check uses the ledger,
which is never pruned: the `run.fired` event written with each run row, and the
`run.finished` event with the run's final status.

Run: `.venv/bin/python bench/bench_webhooks.py [--seconds 10] [--requests 5000]
[--connections 32]`; prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from daemon_proc import DAYCARE, start_daemon

BODY = '{"ref": "refs/heads/main", "commits": [{"id": "0123456789abcdef", "message": "x"}]}'

TASK = """---
name: Webhook bench
triggers:
  - webhook: true
overlap: allow
execute: false
model: none
---
Push received.
"""

WRK_LUA = r"""
wrk.method = "POST"
wrk.body = BODY_HERE
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  counts = {}
  ids = {}
  out = io.open(OUT_DIR .. "/ids-" .. id .. ".txt", "w")
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if status == 202 then
    local run = body:match('"run": *"([^"]+)"')
    if run then out:write(run, "\n") end
  end
end
function done(summary, latency, requests)
  local agg = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do agg[tostring(k)] = (agg[tostring(k)] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(agg) do table.insert(parts, string.format('"%s": %d', k, v)) end
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
    .. '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, table.concat(parts, ", ")))
end
"""

# A count-bounded load generator (also the fallback without wrk): a separate Python
# process with aiohttp, `conns` workers sharing `total` requests. Every response is read,
# so every 202's run id is known; wrk stops at its deadline with requests in flight.
AIOHTTP_CHILD = r"""
import asyncio, json, sys, time
import aiohttp

url, total, conns, body, out_dir = sys.argv[1:6]
total, conns = int(total), int(conns)
lat, statuses, ids = [], {}, []
left = total

async def worker(session):
    global left
    while left > 0:
        left -= 1
        t = time.perf_counter()
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            data = await r.read()
        lat.append(time.perf_counter() - t)
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
        if r.status == 202:
            ids.append(json.loads(data)["run"])

async def main():
    conn = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=conn) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(conns)))
        dur = time.perf_counter() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e6
    open(out_dir + "/ids-0.txt", "w").write("\n".join(ids) + "\n")
    print("RESULT " + json.dumps({"requests": len(lat), "duration_us": int(dur * 1e6),
        "connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": 0,
        "p50_us": q(50), "p90_us": q(90), "p99_us": q(99), "max_us": lat[-1] * 1e6,
        "statuses": statuses}))

asyncio.run(main())
"""


def load(
    url: str, args: argparse.Namespace, out_dir: Path, count: int | None
) -> tuple[str, dict[str, Any]]:
    """Run a load generator in its own process; returns its name and its result.

    `count` None: wrk for `args.seconds`; a number: the aiohttp client for that many
    requests (also used when wrk is missing, then for `args.requests`).
    """
    conns = args.connections
    if count is None and shutil.which("wrk"):
        script = out_dir / "post.lua"
        script.write_text(
            WRK_LUA.replace("BODY_HERE", json.dumps(BODY)).replace(
                "OUT_DIR", json.dumps(str(out_dir))
            )
        )
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{args.seconds:g}s", "-s", str(script), url]
        name = f"wrk 4.1, 1 thread, {conns} connections, {args.seconds:g} s"
    else:
        total = count or args.requests
        cmd = [sys.executable, "-c", AIOHTTP_CHILD, url, str(total), str(conns), BODY]
        cmd.append(str(out_dir))
        name = f"aiohttp client, {conns} concurrent, {total} requests"
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return name, json.loads(line[len("RESULT ") :])


def one_config(
    label: str, config: str, args: argparse.Namespace, tmp: Path, count: int | None
) -> str:
    """Start a daemon with `config`, load it, wait for the runs, check them; a Markdown row."""
    home = tmp / "home"
    (home / "tasks").mkdir(parents=True)
    (home / "config.toml").write_text(config)
    (home / "tasks" / "hook.md").write_text(TASK)
    proc, lines, ready = start_daemon(home)
    if not ready.wait(60) or proc.poll() is not None:
        sys.exit("daemon did not start:\n" + "\n".join(lines[-20:]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAYCARE_")}
    env["DAYCARE_HOME"] = str(home)
    url = subprocess.run(
        [str(DAYCARE), "webhook", "url", "hook"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    out_dir = home / "load"
    out_dir.mkdir()
    t0 = time.perf_counter()
    gen, res = load(url, args, out_dir, count)
    load_s = time.perf_counter() - t0
    # Wait until every accepted run has finished (queued and running rows are never pruned).
    db = sqlite3.connect(home / "state.db", timeout=30)
    deadline = time.time() + 600
    while time.time() < deadline:
        active = db.execute(
            "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')"
        ).fetchone()[0]
        if active == 0:
            break
        time.sleep(0.1)
    drained = time.perf_counter() - t0
    answered: list[str] = []  # run ids of the 202s, in no particular order
    for f in out_dir.glob("ids-*.txt"):
        answered += [ln for ln in f.read_text().split() if ln]
    ids = set(answered)
    # Retention keeps the newest 100 runs of a task, so older rows of this flood are
    # pruned while it runs; the ledger (never pruned) has a `run.fired` event for every
    # run row created and a `run.finished` event with its final status.
    fired_events = [
        r[0]
        for r in db.execute(
            "SELECT run FROM events WHERE kind = 'run.fired' AND actor = 'webhook'"
        ).fetchall()
    ]
    fired = set(fired_events)
    finished: dict[str, int] = {}
    for (detail,) in db.execute(
        "SELECT detail FROM events WHERE kind = 'run.finished' AND actor = 'webhook'"
    ).fetchall():
        st = json.loads(detail)["status"]
        finished[st] = finished.get(st, 0) + 1
    rows_left = db.execute("SELECT count(*) FROM runs WHERE trigger = 'webhook'").fetchone()[0]
    db.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)

    statuses = {str(k): int(v) for k, v in res["statuses"].items()}
    accepted = statuses.get("202", 0)
    seconds = int(res["duration_us"]) / 1e6
    missing = ids - fired
    extra = fired - ids
    reused = len(fired_events) - len(fired)  # one run id given to two runs
    ok = (
        not missing
        and not reused
        and len(answered) == accepted
        and len(ids) == accepted
        and (count is not None or len(extra) <= args.connections)
    )
    if count is not None:
        ok = ok and not extra
    match = ("yes" if ok else "**no**") + (
        f": {accepted} × 202, {len(ids)} distinct run ids, {len(fired_events)} runs created "
        f"({len(missing)} ids without a run"
    )
    if extra:
        match += f"; {len(extra)} runs whose 202 the generator did not read: in flight at its stop"
    if reused:
        match += f"; **{reused} run id(s) given to two runs**"
    match += ")"
    errors = sum(int(res[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    st_text = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    fin_text = ", ".join(f"{k} {v}" for k, v in sorted(finished.items()))
    daemon_errors = [ln for ln in lines if " ERROR " in ln or "Traceback" in ln]
    row = (
        f"| {label} | {gen} | {res['requests']} in {seconds:.1f} s "
        f"| {int(res['requests']) / seconds:.0f} | {accepted / seconds:.0f} "
        f"| {float(res['p50_us']) / 1000:.1f} | {float(res['p99_us']) / 1000:.1f} "
        f"| {float(res['max_us']) / 1000:.0f} | {st_text}; socket errors {errors} "
        f"| {match}; finished: {fin_text}; the last {drained - load_s:.1f} s after the load; "
        f"{rows_left} rows left after retention |"
    )
    if daemon_errors:
        row += "\n\ndaemon errors:\n" + "\n".join(daemon_errors[:10]) + "\n"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration")
    parser.add_argument("--requests", type=int, default=5000, help="aiohttp client count")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    base = "[webhook]\nport = 0\n"  # an ephemeral port
    unbounded = base + "queue_size = 1000000\n"
    have_wrk = shutil.which("wrk") is not None
    configs: list[tuple[str, str, int | None]] = []
    if have_wrk:
        configs += [
            ("default (queue_size 16, max_concurrent_runs 4)", base, None),
            ("queue_size 1,000,000", unbounded, None),
        ]
    configs += [
        ("default (queue_size 16, max_concurrent_runs 4)", base, args.requests),
        ("queue_size 1,000,000", unbounded, args.requests),
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="daycare-bench-hooks-") as tmp:
        for n, (label, config, count) in enumerate(configs):
            sub = Path(tmp) / str(n)
            sub.mkdir()
            rows.append(one_config(label, config, args, sub, count))
    la = os.getloadavg()
    print(
        f"Webhooks: POST /hooks/<token> with a {len(BODY)}-byte JSON body, one task with "
        f"`overlap: allow` (load average after: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f})\n"
    )
    print(
        "| daemon config | load generator | requests | req/s | accepted (202)/s | p50 ms "
        "| p99 ms | max ms | statuses | every 202 has its run |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
