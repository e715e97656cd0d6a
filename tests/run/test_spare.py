"""Sandboxes started ahead of their block (run/sandbox.py `start_spare`, run/blocks.py).

A spare is a block's sandbox and interpreter started before its code is known: while
the block before it runs, or before a scheduled slot. The block it is handed to must see
exactly what a block started afresh sees; a spare that does not fit its block is ended,
never used; and a spare that runs no block leaves no process behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest
from blockspec import block_spec
from runhome import Home, log_events

from daycare_cli.run.process import LIVE
from daycare_cli.run.sandbox import BlockSpec, end_spare, run_block, start_spare

# What a block sees of its run: env, cwd, predefined names, identity.
SEEN = """
import json, os
print(json.dumps({
    "env": {k: v for k, v in os.environ.items()},
    "cwd": os.getcwd(),
    "task": dict(task), "run": dict(run), "payload": payload,
    "uid": os.getuid(),
    "home_listing": sorted(os.listdir("/home")) if os.path.isdir("/home") else None,
}))
"""


def _spec(base: Path, code: str = SEEN, **kw: Any) -> BlockSpec:
    """A block with an env and a webhook payload: all a run gives a block."""
    payload = base / "ws" / "runs" / "r1" / "payload.json"
    payload.parent.mkdir(parents=True, exist_ok=True)
    payload.write_text('{"n": 1}')
    fields: dict[str, Any] = {"env": {"GREETING": "hello"}, "payload_file": payload, **kw}
    return block_spec(base, code, **fields)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _tree(pid: int) -> list[int]:
    try:
        proc = psutil.Process(pid)
        return [pid, *(p.pid for p in proc.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def test_a_block_on_a_spare_sees_what_a_fresh_one_sees(isolation: str, base: Path) -> None:
    """Same environment, cwd, task/run/payload names, uid and view, started ahead or not."""

    async def both() -> tuple[Any, Any, list[int]]:
        spec = _spec(base)
        fresh = await run_block(spec)
        spare = await start_spare(spec)
        assert spare is not None
        tree = _tree(spare.spawned.proc.pid)
        await asyncio.sleep(0.3)  # waiting costs the block nothing
        ahead = await run_block(replace(spec, code=SEEN), spare)
        return fresh, ahead, tree

    fresh, ahead, tree = asyncio.run(both())
    assert fresh.error is None and ahead.error is None, (fresh.error, ahead.error)
    assert json.loads(ahead.output) == json.loads(fresh.output)
    assert json.loads(ahead.output)["env"]["DAYCARE_RUN_ID"].startswith("run-")
    assert ahead.isolation == fresh.isolation == isolation
    assert tree and all(_gone(pid) for pid in tree)


def test_a_spare_planned_for_another_spec_is_ended_and_not_used(isolation: str, base: Path) -> None:
    """A spare that does not fit (the task's env changed since it was started) runs
    nothing: the block starts afresh with its own spec, and the spare is gone."""

    async def go() -> tuple[Any, list[int]]:
        spare = await start_spare(_spec(base, env={"GREETING": "old"}))
        assert spare is not None
        tree = _tree(spare.spawned.proc.pid)
        out = await run_block(_spec(base, env={"GREETING": "new"}), spare)
        return out, tree

    out, tree = asyncio.run(go())
    assert out.error is None, out.error
    assert json.loads(out.output)["env"]["GREETING"] == "new"
    assert tree and all(_gone(pid) for pid in tree)


def test_an_unused_spare_ends_with_nothing_left(isolation: str, base: Path) -> None:
    async def go() -> list[int]:
        spare = await start_spare(_spec(base))
        assert spare is not None
        tree = _tree(spare.spawned.proc.pid)
        assert spare.spawned.proc.pid in LIVE
        await end_spare(spare)
        return tree

    tree = asyncio.run(go())
    assert tree and all(_gone(pid) for pid in tree)
    assert not set(tree) & LIVE


def test_a_spare_that_cannot_start_is_none_and_the_block_says_why(
    require_bwrap: None, base: Path, tmp_path: Path
) -> None:
    """A sandbox.read entry that is a symlink: no spare, and the block run without one
    fails with the same clear error as always."""
    from daycare_cli.core.task import SandboxSpec

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    spec = _spec(base, sandbox=SandboxSpec(read=(str(tmp_path / "link"),)))

    async def go() -> Any:
        assert await start_spare(spec) is None
        return await run_block(spec)

    out = asyncio.run(go())
    assert out.error is not None and out.error.startswith("SandboxError:")
    assert "symlink" in out.error


# -- in a run: the next block's sandbox starts while a block runs ----------------------

AGE = """
import os
# How long this interpreter has been alive: started while the block before slept, or
# just now.
with open("/proc/self/stat") as f:
    start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
with open("/proc/uptime") as f:
    uptime = float(f.read().split()[0])
print(round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2))
"""


def _task(home: Home, body: str) -> Any:
    return home.task(f"---\nname: Spares\nexecute: true\n---\n{body}", "spares")


def test_the_next_blocks_sandbox_starts_while_a_block_runs(isolation: str, home: Home) -> None:
    """Block 2's interpreter was started during block 1's second of sleep, and block 3's
    during block 2; each still ran its own code in its own process."""
    body = (
        "<run_python>\nimport time, os\ntime.sleep(1.0)\nprint(os.getpid())\n</run_python>\n"
        f"<run_python>\n{AGE}\n</run_python>\n"
        f"<run_python>\n{AGE}\n</run_python>\n"
    )
    run = home.run(_task(home, body))
    assert run.status == "succeeded", run.error
    lines = (run.output or "").split("\n")
    ages = [float(x) for x in lines[1:3]]
    assert ages[0] >= 0.8, ages  # alive through block 1's sleep
    assert ages[1] < 0.8, ages  # block 2 was quick: block 3's sandbox was not old
    ends = [e for e in log_events(run) if e["event"] == "block.end"]
    assert [e["error"] for e in ends] == [None, None, None]


def test_a_skip_ends_the_sandbox_started_for_the_next_block(
    isolation: str, home: Home, alive_with: Any
) -> None:
    """Block 1 skips the run: block 2, whose sandbox was started meanwhile, never runs,
    and nothing of the run is left alive."""
    marker = f"SPARE_MARK_{uuid.uuid4().hex}"
    body = (
        "<run_python>\nimport time\ntime.sleep(0.5)\nskip('nothing to do')\n</run_python>\n"
        "<run_python>\nopen('ran-2', 'w').write('x')\n</run_python>\n"
    )
    task = replace(_task(home, body), env={"MARK": marker})
    run = home.run(task)
    assert run.status == "skipped" and run.skip_reason == "nothing to do"
    assert not (home.paths.workspace("spares") / "files" / "ran-2").exists()
    assert alive_with(marker) == []
    assert not LIVE


def test_a_cancelled_run_leaves_no_spare_behind(
    isolation: str, home: Home, alive_with: Any
) -> None:
    marker = f"SPARE_MARK_{uuid.uuid4().hex}"
    body = (
        "<run_python>\nimport time\ntime.sleep(30)\n</run_python>\n"
        "<run_python>\nprint('never')\n</run_python>\n"
    )
    task = replace(_task(home, body), env={"MARK": marker})

    async def go() -> None:
        from daycare_cli.config import load_config
        from daycare_cli.run.runner import Runner, RunRequest

        runner = Runner(home.paths, load_config(home.paths.config_file), home.state)
        running = asyncio.ensure_future(runner.run(RunRequest(task=task)))
        for _ in range(200):  # both blocks' processes: the running one and the spare
            await asyncio.sleep(0.05)
            if len(alive_with(marker)) >= 2:
                break
        assert len(alive_with(marker)) >= 2
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(go())
    assert alive_with(marker) == []
    assert not LIVE


def test_a_spare_moves_into_the_runs_cgroup_whole_at_the_hand_over(
    isolation: str, base: Path
) -> None:
    """A fire's sandbox is started before its run has a cgroup: at the hand-over each of
    its processes (bubblewrap, its init, the waiting interpreter) is written to the run
    cgroup's `cgroup.procs`, here a pipe standing in for it (the kernel's side is
    tests/run/test_run_threats.py::test_memory_totals_across_children, where a delegated
    cgroup v2 exists)."""
    read_end, write_end = os.pipe()

    async def go() -> tuple[Any, list[int]]:
        spec = _spec(base, code="print('in')")
        spare = await start_spare(spec)
        assert spare is not None
        # Let the sandbox finish forming: bubblewrap, its init, then the interpreter.
        want = 3 if isolation == "bubblewrap" else 1
        for _ in range(200):
            tree = _tree(spare.spawned.proc.pid)
            if len(tree) >= want:
                break
            await asyncio.sleep(0.01)
        out = await run_block(replace(spec, cgroup_fd=write_end), spare)
        return out, tree

    try:
        out, tree = asyncio.run(go())
        os.close(write_end)
        written = os.read(read_end, 4096).decode()
    finally:
        os.close(read_end)
    assert out.error is None and out.output == "in", out
    assert written == "".join(str(pid) for pid in tree)
    assert len(tree) == (3 if isolation == "bubblewrap" else 1)
