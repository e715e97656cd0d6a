"""Sandbox latency: what running a block costs beyond starting an interpreter (DESIGN.md §10).

Measures the median wall time of N runs (30 by default) of:

  a. a plain `python3 -I -c pass` (the interpreter blocks use),
  b. `run_block("pass")` with isolation forced off (`DAYCARE_SANDBOX=reduced`),
  c. `run_block("pass")` under bubblewrap (when this machine has it),
  d. the same block with PEP 723 metadata and a cached environment (issue 9): finding
     the environment (`prepare_envs`: parse, key, two stats) plus `run_block` on the
     environment's interpreter with the environment bound read-only; the environment
     holds one small wheel written here and is built once, offline, before timing,

and prints them as Markdown table rows, with b − a and c − b, the cost of daycare's
own machinery (prelude, limits, pipes, clean-up) and of bubblewrap, and d − c, the cost
of a cached environment (goal: < 10 ms).

Run: `PYTHONPATH=. .venv/bin/python bench/bench_sandbox.py [-n 30]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "run"))

from wheels import tiny_wheels

from daycare_cli.config import DepsConfig
from daycare_cli.core.task import Task
from daycare_cli.run.envs import EnvCache, prepare_envs
from daycare_cli.run.identity import sandbox_identity, sandbox_python
from daycare_cli.run.sandbox import BlockSpec, isolation_level, run_block

ENV_BLOCK = '# /// script\n# dependencies = ["tinypkg"]\n# ///\npass'


def summary(times: list[float]) -> tuple[float, float]:
    """Median and p90 of times in ms."""
    times = sorted(times)
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def median_ms(fn: Callable[[], None], n: int) -> tuple[float, float]:
    """Median and p90 wall time of `fn` in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return summary(times)


def blocks_ms(spec: BlockSpec, n: int) -> tuple[float, float]:
    """Median and p90 of `run_block(spec)` in ms, all in one event loop like the daemon."""

    async def go() -> list[float]:
        await run_block(spec)  # warm-up: the isolation probe, the interpreter choice
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            out = await run_block(spec)
            times.append((time.perf_counter() - t0) * 1000)
            assert out.error is None, out.error
        return times

    return summary(asyncio.run(go()))


def env_blocks_ms(spec: BlockSpec, cache: EnvCache, n: int) -> tuple[float, float]:
    """Median and p90 of finding the cached environment, then running the block in it."""
    task = Task(
        id="bench", name="bench", execute=True, body=f"<run_python>\n{ENV_BLOCK}\n</run_python>"
    )

    async def one() -> None:
        env = (await prepare_envs(cache, task))[0]
        out = await run_block(replace(spec, python=env.python, env_dirs=env.binds))
        assert out.error is None, out.error

    async def go() -> list[float]:
        await prepare_envs(cache, task)  # the build, not timed
        await one()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            await one()
            times.append((time.perf_counter() - t0) * 1000)
        return times

    return summary(asyncio.run(go()))


def lookup_ms(cache: EnvCache, n: int) -> tuple[float, float]:
    """Median and p90 of `prepare_envs` alone for a cached environment."""
    task = Task(
        id="bench", name="bench", execute=True, body=f"<run_python>\n{ENV_BLOCK}\n</run_python>"
    )
    return median_ms(lambda: asyncio.run(prepare_envs(cache, task)) and None, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="runs per case (default 30)")
    args = parser.parse_args()

    ident = sandbox_identity()
    python = sandbox_python(ident)
    base = Path(tempfile.mkdtemp(prefix="daycare-bench-", dir="/var/tmp"))
    base.chmod(0o755)
    spec = BlockSpec(
        code="pass",
        files_dir=base / "ws" / "files",
        artifacts_dir=base / "ws" / "runs" / "r" / "artifacts",
        workspace=base / "ws",
        task={"id": "bench", "name": "bench"},
        run={"id": "bench-run"},
    )

    def plain() -> None:
        kwargs = {}
        if ident is not None:  # the same user the blocks run as
            kwargs = {"user": ident.uid, "group": ident.gid, "extra_groups": []}
        subprocess.run([python, "-I", "-c", "pass"], check=True, cwd="/", **kwargs)

    rows: list[tuple[str, float, float]] = []
    try:
        rows.append(("a. plain `python3 -I -c pass`", *median_ms(plain, args.n)))
        os.environ["DAYCARE_SANDBOX"] = "reduced"
        rows.append(("b. run_block, reduced (limits only)", *blocks_ms(spec, args.n)))
        del os.environ["DAYCARE_SANDBOX"]
        level, reason = isolation_level()
        if level == "bubblewrap":
            rows.append(("c. run_block, bubblewrap", *blocks_ms(spec, args.n)))
        else:
            print(f"(bubblewrap unavailable: {reason})", file=sys.stderr)
            rows.append(("c. run_block, reduced (again)", *blocks_ms(spec, args.n)))
        deps = DepsConfig(find_links=(str(tiny_wheels(base / "wheels")),), offline=True)
        cache = EnvCache(base / "cache", deps)
        rows.append((f"d. as c, cached environment ({level})", *env_blocks_ms(spec, cache, args.n)))
        lookup = lookup_ms(cache, args.n)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    who = f"as {ident.name} (daemon is root)" if ident else "as the daemon's user"
    print(f"Sandbox latency, {platform.node()}, {platform.platform()}, {os.cpu_count()} CPUs,")
    print(f"interpreter {python} {who}, {args.n} runs, {time.strftime('%Y-%m-%d')}\n")
    print("| case | median ms | p90 ms |")
    print("|---|---:|---:|")
    for name, med, p90 in rows:
        print(f"| {name} | {med:.1f} | {p90:.1f} |")
    if len(rows) >= 2:
        print(f"| b − a: daycare's machinery | {rows[1][1] - rows[0][1]:.1f} | |")
    if len(rows) >= 3 and rows[2][0].endswith("bubblewrap"):
        print(f"| c − b: bubblewrap added | {rows[2][1] - rows[1][1]:.1f} | |")
        print(f"| c − a: block vs plain start | {rows[2][1] - rows[0][1]:.1f} | |")
    if len(rows) == 4:
        print(f"| d − c: a cached environment added | {rows[3][1] - rows[2][1]:.1f} | |")
        print(f"| of which finding it (`prepare_envs`) | {lookup[0]:.2f} | {lookup[1]:.2f} |")


if __name__ == "__main__":
    main()
