"""Watch the tasks directory and re-parse only the files that changed (DESIGN.md §6)."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable
from pathlib import Path

from daycare_cli.daemon.plan import Plan
from daycare_cli.store.tasks import is_task_file, read_entry

log = logging.getLogger("daycare.watcher")

# Editor temp files: vim swap and backup files, emacs lock files, vim's write test file.
IGNORED_PATTERNS = ("*.swp", "*.swx", "*.swo", "*~", ".#*", "#*#", "4913", "*.tmp")
DEBOUNCE_MS = 50


def watch_filter(tasks_dir: Path) -> Callable[[object, str], bool]:
    """A watchfiles filter: task files directly in the tasks dir, no dotfiles or temp files."""

    def accept(_change: object, path: str) -> bool:
        p = Path(path)
        if p.parent != tasks_dir:
            return False  # .archive/ and any subdirectory
        name = p.name
        if any(fnmatch.fnmatch(name, pat) for pat in IGNORED_PATTERNS):
            return False
        return is_task_file(name)

    return accept


def apply_change(plan: Plan, path: Path) -> None:
    """Re-read one task file (or unschedule it when gone) and update the plan."""
    task_id = path.name[:-3]
    if not path.exists():
        plan.remove(task_id, actor="file")
        return
    try:
        entry = read_entry(path)
    except Exception as exc:  # vanished between exists() and read: treat as deleted
        log.debug("could not read %s: %s", path, exc)
        plan.remove(task_id, actor="file")
        return
    plan.apply_entry(entry, actor="file")


async def watch(plan: Plan, stop: asyncio.Event) -> None:
    """Apply changes of the tasks directory until `stop` is set.

    When the watcher itself fails (the directory is removed and re-created, an inotify
    queue overflow), the whole directory is rescanned and watching resumes.
    """
    import watchfiles

    tasks_dir = plan.paths.tasks_dir
    tasks_dir.mkdir(parents=True, exist_ok=True)
    accept = watch_filter(tasks_dir.resolve())
    while not stop.is_set():
        try:
            async for changes in watchfiles.awatch(
                tasks_dir,
                watch_filter=None,
                debounce=DEBOUNCE_MS,
                step=50,  # watchfiles' default: a 20 ms step made idle CPU 2.5x higher
                stop_event=stop,
                recursive=False,
                rust_timeout=5000,
                yield_on_timeout=False,
            ):
                paths = {Path(p).resolve() for _, p in changes}
                for path in sorted(paths):
                    if accept(None, str(path)):
                        apply_change(plan, path)
        except Exception as exc:
            log.warning("watcher failed (%s); rescanning %s", exc, tasks_dir)
            await asyncio.sleep(1.0)
            tasks_dir.mkdir(parents=True, exist_ok=True)
        if not stop.is_set():
            plan.load_all(starting=False, actor="file")
