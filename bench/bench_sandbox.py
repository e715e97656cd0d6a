"""Sandbox latency: what running a block costs beyond starting an interpreter (DESIGN.md §10).

Measures the median wall time of N runs (30 by default) of:

  a. a plain `python3 -I -c pass` (the interpreter blocks use),
  b. `run_block("pass")` with isolation forced off (`DAYCARE_SANDBOX=reduced`),
     with and without the seccomp filter,
  c. `run_block("pass")` under bubblewrap (when this machine has it), with and without
     the seccomp filter, and in a run cgroup (where a delegated cgroup v2 exists),

and prints them as Markdown table rows, with b − a and c − b, the cost of daycare's
own machinery (prelude, limits, pipes, clean-up) and of bubblewrap, and c / a, the
ratio DESIGN.md §10 holds to (< 1.5×).

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

import daycare_cli.run.sandbox as sandbox_module
from daycare_cli.run.cgroup import Totals, cgroup_parent, create_run_cgroup
from daycare_cli.run.identity import PROCESS_BUDGET, sandbox_identity, sandbox_python
from daycare_cli.run.sandbox import BlockSpec, isolation_level, run_block


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="runs per case (default 30)")
    parser.add_argument("--cgroup", help="a delegated cgroup v2 directory for case d")
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

    with_seccomp = sandbox_module.seccomp_filter

    def seccomp(on: bool) -> None:
        sandbox_module.seccomp_filter = with_seccomp if on else lambda: (None, "off")  # type: ignore[assignment]

    def plain() -> None:
        kwargs = {}
        if ident is not None:  # the same user the blocks run as
            kwargs = {"user": ident.uid, "group": ident.gid, "extra_groups": []}
        subprocess.run([python, "-I", "-c", "pass"], check=True, cwd="/", **kwargs)

    rows: list[tuple[str, float, float]] = []
    extra: list[tuple[str, float, float]] = []
    try:
        rows.append(("a. plain `python3 -I -c pass`", *median_ms(plain, args.n)))
        os.environ["DAYCARE_SANDBOX"] = "reduced"
        rows.append(("b. run_block, reduced (limits, seccomp)", *blocks_ms(spec, args.n)))
        seccomp(False)
        extra.append(("b'. run_block, reduced, no seccomp", *blocks_ms(spec, args.n)))
        seccomp(True)
        del os.environ["DAYCARE_SANDBOX"]
        level, reason = isolation_level()
        if level == "bubblewrap":
            rows.append(("c. run_block, bubblewrap (seccomp)", *blocks_ms(spec, args.n)))
            seccomp(False)
            extra.append(("c'. run_block, bubblewrap, no seccomp", *blocks_ms(spec, args.n)))
            seccomp(True)
            parent, why = cgroup_parent(args.cgroup)
            if parent is not None:
                cg = create_run_cgroup(parent, "bench", Totals(512 * 2**20, PROCESS_BUDGET))
                try:
                    in_cg = replace(spec, cgroup_fd=cg.procs_fd)
                    extra.append(
                        ("d. run_block, bubblewrap, run cgroup", *blocks_ms(in_cg, args.n))
                    )
                finally:
                    cg.close()
            else:
                print(f"(no run cgroup: {why})", file=sys.stderr)
        else:
            print(f"(bubblewrap unavailable: {reason})", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    who = f"as {ident.name} (daemon is root)" if ident else "as the daemon's user"
    print(f"Sandbox latency, {platform.node()}, {platform.platform()}, {os.cpu_count()} CPUs,")
    print(f"interpreter {python} {who}, {args.n} runs, {time.strftime('%Y-%m-%d')}\n")
    print("| case | median ms | p90 ms |")
    print("|---|---:|---:|")
    for name, med, p90 in rows + extra:
        print(f"| {name} | {med:.1f} | {p90:.1f} |")
    if len(rows) >= 2:
        print(f"| b − a: daycare's machinery | {rows[1][1] - rows[0][1]:.1f} | |")
    if len(rows) == 3:
        print(f"| c − b: bubblewrap added | {rows[2][1] - rows[1][1]:.1f} | |")
        print(f"| c − a: block vs plain start | {rows[2][1] - rows[0][1]:.1f} | |")
        print(f"| c / a: ratio (goal < 1.5×) | {rows[2][1] / rows[0][1]:.2f}× | |")
    for name, med, _ in extra:
        base_row = rows[1] if name.startswith("b'") else rows[2] if len(rows) == 3 else None
        if base_row is not None:
            print(f"| {base_row[0][:2]} − {name[:3].strip('.')}: | {base_row[1] - med:+.1f} | |")


if __name__ == "__main__":
    main()
