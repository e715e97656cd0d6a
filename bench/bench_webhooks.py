"""Webhooks with the default config: accepted requests/s, latency, a burst of 10,000, and
every 202 matched by exactly one run that ran, also across a kill -9 during the drain
(bench/README.md, "The figures").

A temporary home with one task (`triggers: [{webhook: true}]`, `overlap: allow`,
`execute: false`, `model: none`, so a run is only its bookkeeping), the default config
(`webhook.queue_size` 10,000, `max_concurrent_runs` 4; only the port is ephemeral),
`daycare daemon run` as a subprocess, and the load from a second process on loopback,
each phase against a fresh daemon:

1. **burst at 2,000/s** (`hey`, when installed): 10,000 requests offered at 2,000 a
   second (32 workers at 63/s each); per-request times and statuses from its CSV.
2. **saturation** (`wrk`, when installed): 1 thread, 32 connections, 4 s, as fast as the
   daemon answers; a Lua script counts statuses and saves the run id of each 202.
3. **burst, every answer read** (an aiohttp client): 10,000 requests, 32 at a time, as
   fast as the daemon answers (a capacity figure: above the goal's rate, the latency is
   32 in flight over the rate, Little's law).
4. **kill -9 during the drain**: 10,000 requests offered at the goal's rate (the aiohttp
   client, 32 workers at 63/s each, every answer read), then `kill -9` once 1,000 runs
   have finished and while a run is `running`, a restart, and the wait until the queue
   is empty.

Right after the load of each phase, the daemon's event-loop lag over it (`GET
/status?lag_window=S`: sampled every 50 ms while the daemon is busy) is a column too. Then
the benchmark waits until no run is queued or running, then matches the
answers to the ledger (retention keeps only the newest 100 rows of a task; the ledger is
never pruned): every 202's run id has exactly one `run.fired` event, exactly one
`run.started` event and a final status (`run.finished`; or, after a kill -9, a row marked
`interrupted` at the restart), and no run exists without its 202 (wrk stops at its
deadline with requests in flight: their runs exist, their 202s were never read).

Run: `.venv/bin/python bench/bench_webhooks.py [--requests 10000] [--seconds 4]`; prints
Markdown.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon_proc import DAYCARE, loop_lag, start_daemon, user_env

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

CONFIG = "[webhook]\nport = 0\n"  # the defaults otherwise; an ephemeral port
GOAL_RATE = 32 * 63  # offered a second in the goal's phases (2,016: hey's 32 workers x 63)

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
    'RESULT {"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout, latency:percentile(50),
    latency:percentile(99), latency.max, table.concat(parts, ", ")))
end
"""

# The count-bounded client that reads every answer: a separate Python process with
# aiohttp, `conns` workers sharing `total` requests; it saves the run id of every 202.
# With a rate, each worker sends at most rate / conns requests a second (as hey's -q).
AIOHTTP_CHILD = r"""
import asyncio, json, sys, time
import aiohttp

url, total, conns, body, out_dir, rate = sys.argv[1:7]
total, conns, rate = int(total), int(conns), float(rate)
lat, statuses, ids, errors = [], {}, [], 0
left = total

async def worker(session):
    global left, errors
    step = conns / rate if rate else 0.0
    due = time.perf_counter()
    while left > 0:
        left -= 1
        if step:
            due += step
            await asyncio.sleep(max(0.0, due - step - time.perf_counter()))
        t = time.perf_counter()
        try:
            async with session.post(url, data=body,
                                    headers={"Content-Type": "application/json"}) as r:
                data = await r.read()
        except aiohttp.ClientError:
            errors += 1
            continue
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
    print("RESULT " + json.dumps({"requests": len(lat) + errors, "duration_us": int(dur * 1e6),
        "errors": errors, "p50_us": q(50), "p99_us": q(99), "max_us": lat[-1] * 1e6,
        "statuses": statuses}))

asyncio.run(main())
"""


@dataclass
class Daemon:
    """A fresh home with the bench task and a running daemon."""

    home: Path
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.proc, self.lines, ready = start_daemon(self.home)
        if not ready.wait(60) or self.proc.poll() is not None:
            sys.exit("daemon did not start:\n" + "\n".join(self.lines[-20:]))

    def url(self) -> str:
        env = user_env(self.home)
        res = subprocess.run(
            [str(DAYCARE), "webhook", "url", "hook"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return res.stdout.strip()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.home / "state.db", timeout=30)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def active(self) -> int:
        return int(
            self.query("SELECT count(*) FROM runs WHERE status IN ('queued','running')")[0][0]
        )

    def finished(self) -> int:
        rows = self.query("SELECT count(*) FROM events WHERE kind = 'run.finished'")
        return int(rows[0][0])

    def drain(self, timeout: float = 900) -> float:
        """Wait until no run is queued or running; seconds it took."""
        t0 = time.perf_counter()
        while self.active() and time.perf_counter() - t0 < timeout:
            time.sleep(0.1)
        return time.perf_counter() - t0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def fresh(tmp: Path, name: str) -> Daemon:
    home = tmp / name
    (home / "tasks").mkdir(parents=True)
    (home / "config.toml").write_text(CONFIG)
    (home / "tasks" / "hook.md").write_text(TASK)
    daemon = Daemon(home)
    daemon.start()
    return daemon


def run_hey(url: str, total: int, out_dir: Path) -> dict[str, Any]:
    """10,000 requests offered at 2,000/s (32 workers x 63/s); times from hey's CSV."""
    cmd = ["hey", "-n", str(total), "-c", "32", "-q", "63", "-m", "POST"]
    cmd += ["-T", "application/json", "-d", BODY, "-o", "csv", url]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    dur = time.perf_counter() - t0
    rows = list(csv.DictReader(io.StringIO(out)))
    lat = sorted(float(r["response-time"]) for r in rows)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status-code"]] = statuses.get(r["status-code"], 0) + 1
    offsets = [float(r["offset"]) for r in rows]
    span = max(offsets) - min(offsets) if offsets else dur
    return {
        "generator": "hey, 32 workers at 63 req/s each (2,016/s offered)",
        "requests": len(rows),
        "seconds": span,
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3,
        "max_ms": lat[-1] * 1e3,
        "statuses": statuses,
        "errors": total // 32 * 32 - len(rows),
        "ids": None,  # hey does not keep bodies: matched by count
    }


def run_child(cmd: list[str], name: str, out_dir: Path) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    res = json.loads(line[len("RESULT ") :])
    ids: list[str] = []
    for f in out_dir.glob("ids-*.txt"):
        ids += [ln for ln in f.read_text().split() if ln]
    return {
        "generator": name,
        "requests": int(res["requests"]),
        "seconds": int(res["duration_us"]) / 1e6,
        "p50_ms": float(res["p50_us"]) / 1e3,
        "p99_ms": float(res["p99_us"]) / 1e3,
        "max_ms": float(res["max_us"]) / 1e3,
        "statuses": {str(k): int(v) for k, v in res["statuses"].items()},
        "errors": int(res["errors"]),
        "ids": ids,
    }


def run_wrk(url: str, seconds: float, out_dir: Path) -> dict[str, Any]:
    script = out_dir / "post.lua"
    script.write_text(
        WRK_LUA.replace("BODY_HERE", json.dumps(BODY)).replace("OUT_DIR", json.dumps(str(out_dir)))
    )
    cmd = ["wrk", "-t1", "-c32", f"-d{seconds:g}s", "-s", str(script), url]
    return run_child(cmd, f"wrk, 1 thread, 32 connections, {seconds:g} s", out_dir)


def run_aiohttp(url: str, total: int, out_dir: Path, rate: float = 0) -> dict[str, Any]:
    """`total` requests, 32 at a time, every answer read; at most `rate` a second if set."""
    cmd = [sys.executable, "-c", AIOHTTP_CHILD, url, str(total), "32", BODY, str(out_dir)]
    cmd.append(str(rate))
    paced = f", at most {rate:,.0f}/s" if rate else ""
    return run_child(cmd, f"aiohttp client, 32 at a time{paced}, {total} requests", out_dir)


def match(daemon: Daemon, res: dict[str, Any], in_flight: int = 0) -> tuple[bool, str]:
    """Every 202 matched by exactly one run that ran: the ledger against the answers."""

    def per_run(kind: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (run,) in daemon.query(f"SELECT run FROM events WHERE kind = '{kind}'"):
            counts[run] = counts.get(run, 0) + 1
        return counts

    fired, started, ended = per_run("run.fired"), per_run("run.started"), per_run("run.finished")
    interrupted = {r[0] for r in daemon.query("SELECT id FROM runs WHERE status = 'interrupted'")}
    accepted = res["statuses"].get("202", 0)
    twice = sum(1 for n in started.values() if n > 1) + sum(1 for n in fired.values() if n > 1)
    unfinished = [r for r in fired if r not in ended]
    never_started = [r for r in fired if r not in started]
    ids = res["ids"]
    if ids is None:  # counted: hey keeps no bodies
        ok = len(fired) == accepted and not twice and not unfinished and not never_started
        text = f"{accepted} × 202, {len(fired)} runs"
    else:
        answered = set(ids)
        missing = answered - set(fired)
        extra = set(fired) - answered
        ok = (
            len(ids) == accepted == len(answered)
            and not missing
            and len(extra) <= in_flight
            and not twice
            and not unfinished
            and not never_started
        )
        text = f"{accepted} × 202, {len(answered)} distinct ids, {len(fired)} runs"
        text += f", {len(missing)} ids without a run"
        if extra:
            text += f", {len(extra)} runs whose 202 was in flight at the generator's stop"
    text += f"; started twice {twice}, never started {len(never_started)}"
    text += f", unfinished {len(unfinished)}, interrupted by the kill {len(interrupted)}"
    return ok, ("yes" if ok else "**no**") + ": " + text


def row(
    phase: str,
    res: dict[str, Any],
    lag: dict[str, Any],
    matched: str,
    drained: float,
    extra: str = "",
) -> str:
    accepted = res["statuses"].get("202", 0)
    refused = res["requests"] - accepted
    st = ", ".join(f"{k}: {v}" for k, v in sorted(res["statuses"].items()))
    return (
        f"| {phase} | {res['generator']} | {res['requests']} in {res['seconds']:.2f} s "
        f"| {accepted / res['seconds']:.0f} | {res['p50_ms']:.1f} | {res['p99_ms']:.1f} "
        f"| {res['max_ms']:.0f} | {lag['p99']:.1f} ({lag['samples']}) "
        f"| {st}; refused {refused}, errors {res['errors']} "
        f"| {matched}; queue empty {drained:.1f} s after the load{extra} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000, help="requests of a burst")
    parser.add_argument("--seconds", type=float, default=4.0, help="wrk duration")
    args = parser.parse_args()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="daycare-bench-hooks-") as tmpdir:
        tmp = Path(tmpdir)
        if shutil.which("hey"):
            d = fresh(tmp, "hey")
            out = d.home / "load"
            out.mkdir()
            res = run_hey(d.url(), args.requests, out)
            lag = loop_lag(d.home, res["seconds"])
            drained = d.drain()
            rows.append(row("burst at 2,000/s", res, lag, match(d, res)[1], drained))
            d.stop()
        if shutil.which("wrk"):
            d = fresh(tmp, "wrk")
            out = d.home / "load"
            out.mkdir()
            res = run_wrk(d.url(), args.seconds, out)
            lag = loop_lag(d.home, res["seconds"])
            drained = d.drain()
            rows.append(row("saturation", res, lag, match(d, res, in_flight=32)[1], drained))
            d.stop()
        d = fresh(tmp, "aiohttp")
        out = d.home / "load"
        out.mkdir()
        res = run_aiohttp(d.url(), args.requests, out)
        lag = loop_lag(d.home, res["seconds"])
        drained = d.drain()
        rows.append(row("burst, every answer read", res, lag, match(d, res)[1], drained))
        d.stop()

        d = fresh(tmp, "kill")
        out = d.home / "load"
        out.mkdir()
        res = run_aiohttp(d.url(), args.requests, out, rate=GOAL_RATE)
        lag = loop_lag(d.home, res["seconds"])
        t0 = time.perf_counter()
        running = "SELECT count(*) FROM runs WHERE status = 'running'"
        # Past 1,000 finished runs, and at an instant when some run is running.
        while time.perf_counter() - t0 < 300 and not (
            d.finished() >= 1000 and d.query(running)[0][0]
        ):
            time.sleep(0.002)
        done_at_kill, waiting = d.finished(), d.active()
        d.kill()
        d.start()
        drained = d.drain()
        text = match(d, res)[1]
        extra = f"; killed with {done_at_kill} runs finished and {waiting} queued or running"
        rows.append(row("kill -9 during the drain", res, lag, text, drained, extra))
        d.stop()
    la = os.getloadavg()
    print(
        f"Webhooks, default config: POST /hooks/<token> with a {len(BODY)}-byte JSON body, "
        f"one task with `overlap: allow` (load average after: {la[0]:.2f} {la[1]:.2f} "
        f"{la[2]:.2f})\n"
    )
    print(
        "| phase | load generator | requests | accepted (202)/s | p50 ms | p99 ms | max ms "
        "| loop lag p99 ms (samples) | statuses | every 202 matched by exactly one run that ran |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for line in rows:
        print(line)


if __name__ == "__main__":
    main()
