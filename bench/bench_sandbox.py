"""Sandbox latency: what running a block costs beyond starting an interpreter (bench/README.md).

Measures the median wall time of N runs (30 by default) of:

  a. a plain `python3 -I -c pass` (the interpreter blocks use),
  b. `run_block("pass")` with isolation forced off (`DAYCARE_SANDBOX=reduced`),
     with and without the seccomp filter,
  c. `run_block("pass")` under bubblewrap (when this machine has it), with and without
     the seccomp filter, and in a run cgroup (where a delegated cgroup v2 exists),
  e. the same block with PEP 723 metadata and a cached environment (issue 9): finding
     the environment (`prepare_envs`: parse, key, two stats) plus `run_block` on the
     environment's interpreter with the environment bound read-only; the environment
     holds one small wheel written here and is built once, offline, before timing,

  f. case c's block on a sandbox started ahead (`start_spare`, untimed, 50 ms before):
     what a scheduled fire's first block and every later block of a run wait for,

and prints them as Markdown table rows, with b − a and c − b, the cost of daycare's
own machinery (prelude, limits, pipes, clean-up) and of bubblewrap, c / a, the
ratio the sandbox is held to (bench/README.md) (< 1.5×), and e − c, what a cached environment adds
(goal < 10 ms).

The cases run interleaved, one of each per round, so that load coming and going on a
shared machine hits them alike.

As root it runs itself again as an ordinary user (`--user`, default `daycare-tester` when
it exists; `--user -` stays root): the main deployment is a user's daemon, whose blocks run
as that user; as root every block also gets a uid of its own, staged before exec.

Run: `PYTHONPATH=. .venv/bin/python bench/bench_sandbox.py [-n 30] [--cgroup DIR] [--user U]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "run"))

from daemon_proc import as_user_argv, ordinary_user
from wheels import tiny_wheels

import daycare_cli.run.blockplan as blockplan_module
from daycare_cli.config import DepsConfig
from daycare_cli.core.task import Task
from daycare_cli.run.cgroup import Totals, cgroup_parent, create_run_cgroup
from daycare_cli.run.envs import EnvCache, prepare_envs
from daycare_cli.run.identity import PROCESS_BUDGET, sandbox_identity, sandbox_python
from daycare_cli.run.sandbox import BlockSpec, Spare, isolation_level, run_block, start_spare

ENV_BLOCK = '# /// script\n# dependencies = ["tinypkg"]\n# ///\npass'


def summary(times: list[float]) -> tuple[float, float]:
    """Median and p90 of times in ms."""
    times = sorted(times)
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


Case = tuple[str, Callable[[], Awaitable[None]]]


async def interleaved(
    cases: list[Case], n: int, before: dict[str, Callable[[], Awaitable[None]]] | None = None
) -> dict[str, list[float]]:
    """Each case once per round, n rounds (after one warm-up round), all in one event
    loop like the daemon: load that comes and goes on a shared machine hits every case
    alike instead of whichever ran at the time. `before[name]` is awaited, untimed, before
    that case's turn (then 50 ms pass, as a sandbox started ahead waits)."""
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for round_ in range(n + 1):
        for name, run in cases:
            if before and name in before:
                await before[name]()
                await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            await run()
            if round_:
                times[name].append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="runs per case (default 30)")
    parser.add_argument("--cgroup", help="a delegated cgroup v2 directory for case d")
    parser.add_argument(
        "--user", help="as root, the user to run as (default daycare-tester; - for root)"
    )
    args = parser.parse_args()
    user = ordinary_user(args.user)
    if user is not None:
        again = [__file__, "-n", str(args.n), "--user", "-"]
        again += ["--cgroup", args.cgroup] if args.cgroup else []
        argv, env = as_user_argv(user, again)
        sys.exit(subprocess.run(argv, env=env, cwd="/").returncode)

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

    with_seccomp = blockplan_module.seccomp_filter

    def plain_run() -> None:
        kwargs = {}
        if ident is not None:  # the same user the blocks run as
            kwargs = {"user": ident.uid, "group": ident.gid, "extra_groups": []}
        subprocess.run([python, "-I", "-c", "pass"], check=True, cwd="/", **kwargs)

    async def plain() -> None:
        plain_run()

    def block(reduced: bool, seccomp: bool, in_spec: BlockSpec) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            if reduced:
                os.environ["DAYCARE_SANDBOX"] = "reduced"
            else:
                os.environ.pop("DAYCARE_SANDBOX", None)
            blockplan_module.seccomp_filter = (  # type: ignore[assignment]
                with_seccomp if seccomp else lambda: (None, "off")
            )
            out = await run_block(in_spec)
            assert out.error is None, out.error

        return go

    cases: list[Case] = [
        ("a. plain `python3 -I -c pass`", plain),
        ("b. run_block, reduced (limits, seccomp)", block(True, True, spec)),
        ("b'. run_block, reduced, no seccomp", block(True, False, spec)),
    ]
    env_task = Task(
        id="bench", name="bench", execute=True, body=f"<run_python>\n{ENV_BLOCK}\n</run_python>"
    )
    deps = DepsConfig(find_links=(str(tiny_wheels(base / "wheels")),), offline=True)
    cache = EnvCache(base / "cache", deps)
    asyncio.run(prepare_envs(cache, env_task))  # the build, not timed

    async def with_env() -> None:
        os.environ.pop("DAYCARE_SANDBOX", None)
        blockplan_module.seccomp_filter = with_seccomp  # type: ignore[assignment]
        env = (await prepare_envs(cache, env_task))[0]
        out = await run_block(replace(spec, python=env.python, env_dirs=env.binds))
        assert out.error is None, out.error

    spares: list[Spare] = []

    async def start_ahead() -> None:
        os.environ.pop("DAYCARE_SANDBOX", None)
        blockplan_module.seccomp_filter = with_seccomp  # type: ignore[assignment]
        spare = await start_spare(spec)
        assert spare is not None
        spares.append(spare)

    async def on_spare() -> None:
        out = await run_block(spec, spares.pop())
        assert out.error is None, out.error

    level, reason = isolation_level()
    cg = None
    before: dict[str, Callable[[], Awaitable[None]]] = {}
    if level == "bubblewrap":
        cases.append(("c. run_block, bubblewrap (seccomp)", block(False, True, spec)))
        ahead = "f. as c, its sandbox started ahead (a scheduled first block, any later block)"
        cases.append((ahead, on_spare))
        before[ahead] = start_ahead
        cases.append(("c'. run_block, bubblewrap, no seccomp", block(False, False, spec)))
        parent, why = cgroup_parent(args.cgroup)
        if parent is not None:
            cg = create_run_cgroup(parent, "bench", Totals(512 * 2**20, PROCESS_BUDGET))
            in_cg = replace(spec, cgroup_fd=cg.procs_fd)
            cases.append(("d. run_block, bubblewrap, run cgroup", block(False, True, in_cg)))
        else:
            print(f"(no run cgroup: {why})", file=sys.stderr)
        cases.append(("e. as c, cached environment", with_env))
    else:
        print(f"(bubblewrap unavailable: {reason})", file=sys.stderr)
    try:
        times = asyncio.run(interleaved(cases, args.n, before))
    finally:
        if cg is not None:
            cg.close()
        shutil.rmtree(base, ignore_errors=True)
    med = {name: summary(t) for name, t in times.items()}
    main_cases = [name for name, _ in cases if name[1] == "." and name[0] in "abc"]
    rows = [(name, *med[name]) for name in main_cases]
    extra = [(name, *med[name]) for name, _ in cases if name not in main_cases]

    me = pwd.getpwuid(os.getuid()).pw_name
    who = f"as {ident.name} (daemon is root)" if ident else f"as the daemon's user ({me})"
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
        if name.startswith("f.") and rows:
            print(
                f"| f / a: ratio, sandbox started ahead (goal < 1.5×) | {med / rows[0][1]:.2f}× | |"
            )
            continue
        if name.startswith("e."):
            if len(rows) == 3:
                print(f"| e − c: a cached environment added | {med - rows[2][1]:+.1f} | |")
            continue
        base_row = rows[1] if name.startswith("b'") else rows[2] if len(rows) == 3 else None
        if base_row is not None:
            print(f"| {base_row[0][:2]} − {name[:3].strip('.')}: | {base_row[1] - med:+.1f} | |")


if __name__ == "__main__":
    main()
