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
    assert _in_a_child(probe, tmp_path) == "[]"


def _in_a_child(probe: str, tmp_path: Path, **env: str) -> str:
    """What `probe` prints, run by a fresh interpreter with `tmp_path` as its argument."""
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _watch_threads() -> list[str]:
    names = []
    for t in os.listdir("/proc/self/task"):
        try:
            name = Path(f"/proc/self/task/{t}/comm").read_text().strip()
        except OSError:
            continue
        if name.startswith("daycare-watch"):
            names.append(name)
    return names


def test_an_idle_directory_is_not_polled_and_a_change_rings_the_doorbell(
    tmp_path: Path,
) -> None:
    """While nothing changes no thread polls watchfiles' notifier (its 20 wake-ups a
    second were most of an idle daemon's CPU); a change wakes the watch and is reported."""

    async def scenario() -> tuple[list[str], set[str], bool]:
        notes = DirWatch(tmp_path, asyncio.Event())
        try:
            has_bell = notes.bell is not None
            waiting = asyncio.ensure_future(notes.changes())
            await asyncio.sleep(0.5)
            idle_threads = _watch_threads()
            assert not waiting.done()
            (tmp_path / "c.md").write_text("x")
            seen: set[str] = set()
            batch = await asyncio.wait_for(waiting, 10)
            while batch is not None and "c.md" not in seen:
                seen |= {Path(p).name for _, p in batch}
                if "c.md" not in seen:
                    batch = await asyncio.wait_for(notes.changes(), 10)
            return idle_threads, seen, has_bell
        finally:
            notes.close()

    idle_threads, seen, has_bell = asyncio.run(scenario())
    assert has_bell
    assert idle_threads == []
    assert "c.md" in seen


def test_where_watchfiles_polls_the_filesystem_there_is_no_doorbell(tmp_path: Path) -> None:
    probe = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from daycare_cli.daemon.watcher import DirWatch\n"
        "async def main():\n"
        "    notes = DirWatch(Path(sys.argv[1]), asyncio.Event())\n"
        "    Path(sys.argv[1], 'p.md').write_text('x')\n"
        "    seen = set()\n"
        "    while 'p.md' not in seen:\n"
        "        seen |= {Path(p).name for _, p in await notes.changes()}\n"
        "    print(notes.bell is None, sorted(seen))\n"
        "    notes.close()\n"
        "asyncio.run(main())\n"
    )
    assert _in_a_child(probe, tmp_path, WATCHFILES_FORCE_POLLING="1") == "True ['p.md']"
