"""The watcher's notifier (`daemon/watcher.py`, DirWatch): watchfiles' Rust backend in a
thread of its own, as `awatch` reports changes, without anyio's asyncio backend."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import daycare_cli
from daycare_cli.daemon.watcher import DirWatch

REPO = Path(daycare_cli.__file__).resolve().parent.parent


def test_changes_after_it_is_made_are_seen_and_stop_ends_it(tmp_path: Path) -> None:
    async def scenario() -> tuple[set[str], float, object]:
        stop = asyncio.Event()
        notes = DirWatch(tmp_path, stop)
        try:
            # Written before the first `changes()`: the watch is registered already.
            (tmp_path / "a.md").write_text("x")
            seen: set[str] = set()
            while "a.md" not in seen:
                batch = await asyncio.wait_for(notes.changes(), 10)
                assert batch is not None
                seen |= {Path(p).name for _, p in batch}
            (tmp_path / "sub").mkdir()
            (tmp_path / "sub" / "deep.md").write_text("x")  # not recursive
            stop.set()
            t = time.monotonic()
            end = await asyncio.wait_for(notes.changes(), 10)
            return seen, time.monotonic() - t, end
        finally:
            notes.close()

    seen, took, end = asyncio.run(scenario())
    assert "a.md" in seen and "deep.md" not in seen
    assert end is None and took < 1.0  # stopped at the next step, not after the timeout


def test_a_cancelled_wait_stops_the_thread(tmp_path: Path) -> None:
    async def scenario() -> None:
        notes = DirWatch(tmp_path, asyncio.Event())
        waiting = asyncio.ensure_future(notes.changes())
        await asyncio.sleep(0.1)
        waiting.cancel()
        notes.close()
        await asyncio.sleep(0)

    before = {t for t in os.listdir("/proc/self/task")}
    asyncio.run(scenario())
    deadline = time.monotonic() + 2  # within a step or so; the timeout is 5 s
    while time.monotonic() < deadline:
        names = [
            Path(f"/proc/self/task/{t}/comm").read_text().strip()
            for t in set(os.listdir("/proc/self/task")) - before
            if os.path.exists(f"/proc/self/task/{t}/comm")
        ]
        if not any(n.startswith("daycare-watch") for n in names):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the watch thread is still running: {names}")


def test_watching_does_not_load_anyio_backends(tmp_path: Path) -> None:
    probe = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from daycare_cli.daemon.watcher import DirWatch\n"
        "async def main():\n"
        "    stop = asyncio.Event()\n"
        "    notes = DirWatch(Path(sys.argv[1]), stop)\n"
        "    Path(sys.argv[1], 'b.md').write_text('x')\n"
        "    assert await notes.changes()\n"
        "    notes.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('anyio._backends')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
