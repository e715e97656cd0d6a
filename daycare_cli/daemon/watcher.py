"""Watch the tasks directory and re-parse only the files that changed (docs/operations.md).

A changed file is read once its writes have settled (`store.tasks.read_settled`) and
parsed in a worker thread, so neither a half-written file nor a big one reaches the
plan or stalls the event loop. The watcher never dies of a failure: one that breaks
watching, a rescan or one file's planning is logged with its cause, recorded as a
`watcher.failed` event, and watching goes on (a failed rescan is retried with backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daycare_cli.core.errors import NotFoundError
from daycare_cli.daemon.plan import Plan
from daycare_cli.daemon.planned import PlanningFailed
from daycare_cli.store import writes
from daycare_cli.store.tasks import (
    SettledRead,
    TaskEntry,
    is_task_file,
    read_entry,
    read_settled,
)

if TYPE_CHECKING:  # multiprocessing is imported only when a big file needs the worker
    from concurrent.futures import ProcessPoolExecutor

    from inotify_simple import INotify

log = logging.getLogger("daycare.watcher")

# Editor temp files: vim swap and backup files, emacs lock files, vim's write test file.
IGNORED_PATTERNS = ("*.swp", "*.swx", "*.swo", "*~", ".#*", "#*#", "4913", "*.tmp")
DEBOUNCE_MS = 50
# watchfiles' notifier reports changes by polling: a step is a wake-up of its thread
# (~75 us of CPU here). While the doorbell (below) is quiet, nobody polls; after it rang,
# short steps collect the changes. Without a doorbell, watchfiles' default step: a 20 ms
# one made idle CPU 2.5x higher.
STEP_MS = 20
STEP_POLLING_MS = 50
RUST_TIMEOUT_MS = 5000  # a watch returns after this long without changes
RANG_TIMEOUT_MS = 1000  # after the doorbell, a watch that collects nothing gives up
# A file is read once it has not been written for this long: a writer that pauses less
# between two chunks is waited for. Near twice the debounce, and under 100 ms so that an
# edit is rescheduled within the 100 ms goal of bench/README.md (the doorbell's watch
# reports a write 20 to 40 ms after it, so part of the wait overlaps that).
SETTLE_S = 0.09
SETTLE_LIMIT_S = 1.0  # a file still being written after this waits for its next change
RESCAN_BACKOFF_S = (1.0, 60.0)  # first retry of a failed rescan, and the longest wait
# Files up to this size are parsed in a thread: a few ms of work at most, so the loop waits
# no longer than that for the GIL. Bigger ones go to a worker process: libyaml and `re`
# hold the GIL through a long scalar or body, and a big file stalled the loop 10-20 ms
# from a thread (bench/bench_taskfiles.py). A worker costs 0.45 ms a file against 0.14 ms
# in a thread; task files are rarely over a few KiB.
THREAD_PARSE_MAX = 8 * 1024
WORKER_IDLE_S = 60.0  # the worker process exits after this long unused
# Files of one batch read at once: a big one in the worker process leaves a lane for the
# small ones. More would only make more threads compete with the loop for the GIL.
READ_LANES = 2


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


class ParseWorker:
    """Reads task files: small ones in the calling thread, big ones in a worker process.

    The process is started when a big file first needs it and stopped when idle, so a
    daemon whose files are all small never has one. Called from worker threads.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pool: ProcessPoolExecutor | None = None
        self.last_use = 0.0

    def read(self, path: Path) -> TaskEntry:
        """`read_entry(path)`, in the worker process when the file is big."""
        try:
            size = os.stat(path).st_size
        except OSError:
            size = 0  # read_entry reports it
        if size <= THREAD_PARSE_MAX:
            return read_entry(path)
        with self.lock:
            if self.pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                # spawn, not fork: the daemon has threads (SQLite, watchfiles, executors).
                self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            pool = self.pool
            self.last_use = time.monotonic()
        try:
            return pool.submit(_read_without_text, path).result()
        except NotFoundError:
            raise
        except Exception as exc:  # the worker died (killed, out of memory): read it here
            why = f"{type(exc).__name__}: {exc}"
            log.warning("parse worker failed (%s); reading %s here", why, path.name)
            with self.lock:
                if self.pool is pool:
                    self.pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return read_entry(path)

    def stop_if_idle(self, idle: float = WORKER_IDLE_S) -> None:
        """Stop the worker process when unused for `idle` seconds."""
        with self.lock:
            pool = self.pool
            if pool is None or time.monotonic() - self.last_use < idle:
                return
            self.pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the worker process, if any."""
        self.stop_if_idle(idle=0.0)


def _read_without_text(path: Path) -> TaskEntry:
    """`read_entry` in the worker process: the daemon has no use for the text, which
    would double what is sent back."""
    entry = read_entry(path)
    entry.text = None
    return entry


def report(plan: Plan, during: str, cause: BaseException | str, task: str | None = None) -> None:
    """Log a watcher failure with its cause and record a `watcher.failed` event; never
    raises itself (a failing ledger must not stop the watcher either)."""
    text = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
    # A traceback for what may be a bug; a missing directory or a full queue needs none.
    trace = cause if isinstance(cause, Exception) and not isinstance(cause, OSError) else None
    log.error("watcher: %s failed (%s); watching goes on", during, text, exc_info=trace)
    try:
        event = writes.add_event(
            "daemon", "watcher.failed", task=task, detail={"during": during, "error": text}
        )
        plan.writer.post(event, "a watcher.failed event")
    except Exception as exc:
        log.error("watcher: could not record the failure: %s", exc)


async def apply_changes(
    plan: Plan,
    paths: Iterable[Path],
    worker: ParseWorker | None = None,
    retry: Callable[[], None] | None = None,
) -> None:
    """Read the changed files once settled, off the loop, and update the plan.

    Files are read two at a time and each is applied as soon as it is read, so one big
    file does not hold back the others of a batch. A file gone is unscheduled; a file
    still being written is left for its next change event; one file whose planning
    fails does not keep the others from being applied, and `retry()` asks for a rescan
    (with backoff) so that it is planned once whatever failed works again.
    """
    read = worker.read if worker is not None else read_entry
    lanes = asyncio.Semaphore(READ_LANES)

    async def settled(path: Path) -> SettledRead:
        async with lanes:
            return await asyncio.to_thread(
                read_settled, [path], SETTLE_S, limit=SETTLE_LIMIT_S, read=read
            )

    for next_read in asyncio.as_completed([settled(p) for p in sorted(paths)]):
        found = await next_read
        for path in found.unsettled:
            log.info("%s is still being written; it is read after its next change", path.name)
        changes: list[tuple[str, TaskEntry | None]] = [(p.name[:-3], None) for p in found.gone]
        changes += [(entry.id, entry) for entry in found.entries.values()]
        for task_id, entry in changes:
            try:
                if entry is None:
                    plan.remove(task_id, actor="file")
                else:
                    plan.apply_entry(entry, actor="file")
            except Exception as exc:
                report(plan, f"planning {task_id}", exc, task=task_id)
                if retry is not None:
                    retry()


async def rescan(plan: Plan) -> bool:
    """Re-read the whole directory (parsed off the loop) and re-plan; False if it failed
    or some task could not be planned (the caller retries with backoff)."""
    try:
        entries = await asyncio.to_thread(plan.store.list)
        plan.load_all(starting=False, actor="file", entries=entries)
    except PlanningFailed as exc:
        # The other tasks are loaded; these are tried again at the next rescan.
        for task_id, cause in exc.failures:
            report(plan, f"planning {task_id}", cause, task=task_id)
        return False
    except Exception as exc:
        report(plan, "rescan", exc)
        return False
    return True


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory at `path`; None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class _Rescans:
    """Rescans and their retries: after a failure, again in 1 s, doubling up to 60 s."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.backoff = RESCAN_BACKOFF_S[0]
        self.due: float | None = None  # monotonic time of the next rescan, if one is due

    async def run(self, *, follow_up: bool = False) -> None:
        """Rescan now; with `follow_up`, once more at the watch's first report, for a
        file written between this rescan and the start of the watch."""
        if await rescan(self.plan):
            self.backoff = RESCAN_BACKOFF_S[0]
            self.due = time.monotonic() if follow_up else None
        else:
            self.due = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, RESCAN_BACKOFF_S[1])

    def retry_soon(self) -> None:
        """A task could not be planned: rescan after the backoff (unless one is due)."""
        if self.due is None:
            self.due = time.monotonic() + self.backoff

    async def run_if_due(self) -> None:
        if self.due is not None and time.monotonic() >= self.due:
            await self.run()


async def watch(plan: Plan, stop: asyncio.Event) -> None:
    """Apply changes of the tasks directory until `stop` is set.

    When watching fails (an inotify queue overflow, too many watches) or the directory is
    removed or replaced, the failure is reported, the whole directory is rescanned and
    watching resumes; a directory that is gone is waited for (not re-created, which
    would race a person restoring it), its tasks unscheduled meanwhile. A rescan that
    fails is retried with backoff while watching goes on.
    """
    worker = ParseWorker()
    rescans = _Rescans(plan)
    tasks_dir = plan.paths.tasks_dir
    with contextlib.suppress(OSError):
        tasks_dir.mkdir(parents=True, exist_ok=True)  # the start: a new home has none
    pause = RESCAN_BACKOFF_S[0]  # after watching failed; doubles while it keeps failing
    sessions = 0
    missing = False
    try:
        while not stop.is_set():
            if _identity(tasks_dir) is None:
                if not missing:
                    missing = True
                    what = "is missing" if not tasks_dir.exists() else "is not a directory"
                    report(plan, "watching", f"{tasks_dir} {what}")
                    await rescans.run()  # its files are gone with it: unschedule them
                await _pause(stop, RESCAN_BACKOFF_S[0])
                continue
            if sessions or missing:
                await rescans.run(follow_up=True)
            missing = False
            sessions += 1
            try:
                await _watch_session(plan, stop, worker, rescans)
                pause = RESCAN_BACKOFF_S[0]
            except Exception as exc:
                report(plan, f"watching {tasks_dir}", exc)
                await _pause(stop, pause)
                pause = min(pause * 2, RESCAN_BACKOFF_S[1])
    finally:
        worker.close()


async def _watch_session(
    plan: Plan, stop: asyncio.Event, worker: ParseWorker, rescans: _Rescans
) -> None:
    """Watch the directory now at the tasks path until `stop`, or until it is removed or
    replaced (inotify keeps watching the old one, which sees nothing new)."""
    tasks_dir = plan.paths.tasks_dir
    accept = watch_filter(tasks_dir.resolve())
    watched = _identity(tasks_dir)
    notes = DirWatch(tasks_dir, stop)
    try:
        while (changes := await notes.changes()) is not None:
            if _identity(tasks_dir) != watched:
                log.warning("%s was removed or replaced; rescanning it", tasks_dir)
                return
            paths = {Path(p).resolve() for _, p in changes}
            accepted = [p for p in paths if accept(None, str(p))]
            if accepted:
                await apply_changes(plan, accepted, worker, retry=rescans.retry_soon)
            worker.stop_if_idle()
            await rescans.run_if_due()
    finally:
        notes.close()


class DirWatch:
    """The changes of one directory (not its subdirectories), as `watchfiles.awatch`
    gives them, without awatch's anyio: its asyncio backend cost every start 1.4 MB and
    ~16 ms, for one blocking call in a thread.

    The notifier (watchfiles' Rust backend: an inotify watch) is made with this object,
    on the loop's thread, as awatch made it at its first step: a change after that is
    seen. Each `changes()` runs one `RustNotify.watch` in a thread of its own.

    The notifier collects changes at once but reports them only by polling (a thread
    waking every step: 20 a second were most of an idle daemon's CPU). So a second
    inotify watch on the directory is a doorbell on the event loop: while it is quiet
    nothing polls; once it rings, a watch with short steps collects what the notifier
    has (its events are the notifier's own too: nothing is read from the doorbell but
    that it rang). Where watchfiles polls the filesystem (WSL, WATCHFILES_FORCE_POLLING)
    or inotify cannot give a second watch, there is no doorbell and the watch polls.
    """

    def __init__(self, path: Path, stop: asyncio.Event) -> None:
        from watchfiles._rust_notify import RustNotify  # documented: "Rust backend"

        self.stop = stop
        self.closed = threading.Event()
        # watchfiles' environment settings, as `watch` and `awatch` read them.
        polling = os.environ.get("WATCHFILES_FORCE_POLLING")
        delay = os.environ.get("WATCHFILES_POLL_DELAY_MS", "")
        force_polling = (
            polling.lower() not in {"false", "disable", "disabled"} if polling else _on_wsl()
        )
        self.notify = RustNotify(
            [str(path)],
            bool(os.environ.get("WATCHFILES_DEBUG")),
            force_polling,
            int(delay) if delay.isdecimal() else 300,
            False,  # not recursive
            bool(os.environ.get("WATCHFILES_IGNORE_PERMISSION_DENIED")),
        )
        self.bell = None if force_polling else _doorbell(path)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="daycare-watch")

    def is_set(self) -> bool:
        """What the notifier asks at every step: stop watching?"""
        return self.closed.is_set() or self.stop.is_set()

    async def changes(self) -> set[tuple[int, str]] | None:
        """The next changes, (kind, path) each; an empty set after RUST_TIMEOUT_MS with
        none (a moment for due rescans); None once `stop` is set."""
        loop = asyncio.get_running_loop()
        if self.bell is None:
            step, timeout = STEP_POLLING_MS, RUST_TIMEOUT_MS
        else:
            if not await self._rung():
                return None if self.is_set() else set()
            step, timeout = STEP_MS, RANG_TIMEOUT_MS
        raw = await loop.run_in_executor(
            self.pool, self.notify.watch, DEBOUNCE_MS, step, timeout, self
        )
        if raw == "timeout":
            return set()
        if raw == "stop":
            return None
        if raw == "signal":  # signals go to the main thread: never seen here
            raise RuntimeError("the watch thread unexpectedly received a signal")
        return raw

    async def _rung(self) -> bool:
        """Wait for the doorbell, `stop` or RUST_TIMEOUT_MS; True when it rang."""
        assert self.bell is not None
        bell, loop = self.bell, asyncio.get_running_loop()
        rang: asyncio.Future[bool] = loop.create_future()

        def ring() -> None:
            with contextlib.suppress(OSError):  # BlockingIOError: drained already
                bell.read()
            if not rang.done():
                rang.set_result(True)

        loop.add_reader(bell.fileno(), ring)
        stopping = asyncio.ensure_future(self.stop.wait())
        either: list[asyncio.Future[Any]] = [rang, stopping]
        try:
            await asyncio.wait(
                either,
                timeout=RUST_TIMEOUT_MS / 1000,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            loop.remove_reader(bell.fileno())
            stopping.cancel()
        return rang.done() and not self.is_set()

    def close(self) -> None:
        """Stop watching: a `watch` still running ends at its next step; never waits."""
        self.closed.set()
        if self.bell is not None:
            self.bell.close()
        self.pool.submit(self.notify.close)
        self.pool.shutdown(wait=False)


def _doorbell(path: Path) -> INotify | None:
    """A non-blocking inotify watch on `path` for any change of its entries; None where
    inotify cannot give one (its limit of watches or instances reached)."""
    from inotify_simple import INotify, flags

    mask = (
        flags.CREATE
        | flags.DELETE
        | flags.MODIFY
        | flags.CLOSE_WRITE
        | flags.MOVED_FROM
        | flags.MOVED_TO
        | flags.ATTRIB
        | flags.DELETE_SELF
        | flags.MOVE_SELF
    )
    try:
        bell = INotify(nonblocking=True)
    except OSError as exc:
        log.info("no inotify doorbell for %s (%s): watching by polling", path, exc)
        return None
    try:
        bell.add_watch(str(path), mask)
    except OSError as exc:
        bell.close()
        log.info("no inotify doorbell for %s (%s): watching by polling", path, exc)
        return None
    return bell


def _on_wsl() -> bool:
    """WSL 2, where watchfiles polls by default (inotify misses Windows' changes)."""
    import platform

    uname = platform.uname()
    return "microsoft-standard" in uname.release.lower() and uname.system.lower() == "linux"
