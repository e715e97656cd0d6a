"""The daemon's lifecycle: start, sd_notify, signals, graceful stop (DESIGN.md §6)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daycare_cli.config import Config, load_config
from daycare_cli.core.errors import UserError
from daycare_cli.daemon.events import EventBus
from daycare_cli.daemon.queued import RESUMED
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.store import writes
from daycare_cli.store.database import describe, is_fault
from daycare_cli.store.paths import Paths, pid_alive
from daycare_cli.store.state import State
from daycare_cli.store.writer import ThreadWriter

if TYPE_CHECKING:  # aiohttp is imported only when the daemon serves
    from daycare_cli.daemon.server import ControlServer, WebhookServer

log = logging.getLogger("daycare.daemon")

READY_LINE = "daycare daemon ready"


def sd_notify(message: str) -> bool:
    """Send a state line to systemd through $NOTIFY_SOCKET; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)
        return False


def setup_logging(level: str = "INFO") -> None:
    """One line an event to stderr (journald adds its own timestamps under systemd)."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        fmt = "%(levelname)s %(name)s: %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger("daycare")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class AlreadyRunning(UserError):
    """Another daemon holds this home's daemon lock."""


class Daemon:
    """Everything the daemon runs: scheduler loop, watcher, servers, signal handling."""

    def __init__(self, paths: Paths, config: Config) -> None:
        self.paths = paths
        self.config = config
        self.stop_event = asyncio.Event()
        self.reload_requested = False
        self.events = EventBus()
        self.state: State | None = None
        self.scheduler: Scheduler | None = None
        self.lock_fd: int | None = None
        self.started_at = datetime.now(UTC)
        self.signal_wake = asyncio.Event()
        self.writer: ThreadWriter | None = None
        self.exit_code = 0

    # -- lifecycle ------------------------------------------------------------------------

    def _take_lock(self) -> None:
        self.paths.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.paths.runtime_dir / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = None
            with contextlib.suppress(OSError, ValueError):
                pid = int(self.paths.pid_file.read_text().strip())
            raise AlreadyRunning(
                f"a daemon is already running for this home (pid {pid})",
                path=str(self.paths.home),
                hint="stop it with `daycare daemon stop`, or use another --home",
            ) from None
        self.lock_fd = fd
        self.paths.pid_file.write_text(f"{os.getpid()}\n")

    def _on_signal(self, signum: int) -> None:
        # Handlers only set flags; the main coroutine does the work.
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stop_event.set()
        self.signal_wake.set()

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code."""
        from daycare_cli.daemon.server import ControlServer, WebhookServer
        from daycare_cli.daemon.watcher import watch

        self._take_lock()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)

        self.state = state = State.open(self.paths.state_db)
        # [6] Runs a dead process left: running ones end `interrupted`, queued ones that
        # a 202 or a catch-up promised are resumed once the plan is loaded.
        me = os.getpid()
        try:
            interrupted, adopted = state.settle_stale(
                lambda pid: pid != me and pid_alive(pid), adopt=lambda run: run.trigger in RESUMED
            )
        except Exception as exc:
            if not is_fault(exc):
                raise
            # A full disk, a locked file: exit 1, and systemd starts the daemon again.
            log.error("cannot write state.db at start: %s", describe(exc))
            state.close()
            return 1
        for run in interrupted:
            log.warning(
                "run %s of %s was left %s by a dead process: marked interrupted",
                run.id,
                run.task,
                "running" if run.started_at else "queued",
            )
        # [6] Every write from here on goes through one writer thread (store/writer.py).
        self.writer = writer = ThreadWriter(
            self.paths.state_db,
            retry_limit=self.config.state_retry_limit,
            on_fatal=self._state_failed,
        )
        writer.start()
        self.scheduler = scheduler = Scheduler(
            self.paths, self.config, state, on_event=self.events.publish, writer=writer
        )
        plan = scheduler.plan
        # Watch before the first scan: a file written between the scan and the watch
        # (e.g. right after the ready line) would otherwise go unseen until a rescan.
        # One turn of the loop lets `awatch` register its inotify watch; the changes it
        # queues meanwhile are applied after the scan (same digest: no-op).
        watcher_stop = asyncio.Event()
        watcher = loop.create_task(watch(plan, watcher_stop), name="watcher")
        await asyncio.sleep(0)
        plan.load_all(starting=True)
        scheduler.adopt(adopted)
        writer.post(
            writes.add_event(
                "daemon",
                "daemon.started",
                detail={
                    "pid": os.getpid(),
                    "tasks": len(plan.tasks),
                    "invalid": sorted(plan.broken),
                },
            ),
            "the daemon.started event",
        )

        webhooks = WebhookServer(scheduler, state, self.paths)
        control = ControlServer(
            scheduler,
            state,
            self.paths,
            self.events,
            reload=self.reload,
            started_at=self.started_at,
            webhooks=webhooks,
        )
        try:
            await control.start()
            await webhooks.start()
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            watcher_stop.set()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await control.stop()
            await webhooks.stop()
            await writer.close()
            state.close()
            return 1

        from daycare_cli.run.sandbox import isolation_level

        # Probe once now, off the loop, so the first block does not stall the scheduler.
        isolation, reason = await asyncio.to_thread(isolation_level)
        if isolation != "bubblewrap":
            log.warning("sandbox isolation: %s (%s)", isolation, reason)
        n_triggers = sum(len(s.task.triggers) for s in plan.tasks.values())
        status = (
            f"{len(plan.tasks)} tasks, {n_triggers} triggers, "
            f"{len(plan.broken)} invalid, isolation {isolation}"
        )
        print(
            f"{READY_LINE}: {status}; webhooks on {webhooks.url}; control on {self.paths.socket}",
            file=sys.stderr,
            flush=True,
        )
        sd_notify(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")

        background = [
            loop.create_task(scheduler.run_forever(), name="scheduler"),
            watcher,
            loop.create_task(self._watchdog(), name="watchdog"),
        ]
        try:
            while not self.stop_event.is_set():
                await self.signal_wake.wait()
                self.signal_wake.clear()
                if self.reload_requested:
                    self.reload_requested = False
                    self.reload()
        finally:
            await self._shutdown(scheduler, webhooks, control, watcher_stop, background)
        return self.exit_code

    def _state_failed(self, reason: str) -> None:
        """[6] The writer gave up on state.db: stop, and exit non-zero to be restarted."""
        log.critical("stopping: %s", reason)
        self.exit_code = 1
        self.stop_event.set()
        self.signal_wake.set()

    def reload(self) -> None:
        """Re-read config and every task file (SIGHUP or the control API)."""
        assert self.scheduler is not None
        sd_notify("RELOADING=1")
        try:
            self.config = load_config(self.paths.config_file)
        except UserError as exc:
            # A broken config keeps the running one, like a broken task file does.
            log.error("config not reloaded, keeping the running one: %s", exc)
            if self.writer is not None:
                self.writer.post(
                    writes.add_event("daemon", "config.invalid", detail={"error": str(exc)}),
                    "a config.invalid event",
                )

        self.scheduler.reconfigure(self.config)
        self.scheduler.plan.load_all(starting=False, actor="daemon")
        log.info("reloaded config and %d tasks", len(self.scheduler.plan.tasks))
        sd_notify("READY=1")

    async def _watchdog(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC")
        if not usec:
            return
        # Half the watchdog period, as systemd asks; a floor above that (a short
        # WatchdogSec) would let systemd kill a healthy daemon.
        interval = max(int(usec) / 2e6, 0.05)
        while True:
            sd_notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def _shutdown(
        self,
        scheduler: Scheduler,
        webhooks: WebhookServer,
        control: ControlServer,
        watcher_stop: asyncio.Event,
        background: list[asyncio.Task[Any]],
    ) -> None:
        assert self.state is not None and self.writer is not None
        log.info("stopping: no new runs; waiting for %d active run(s)", len(scheduler.runs))
        sd_notify("STOPPING=1")
        scheduler.stopping = True
        webhooks.stopping = True
        scheduler.wake.set()
        watcher_stop.set()
        grace = float(self.config.get("daemon.grace_period"))
        if self.writer.fatal is not None:
            grace = 0.0  # [6] runs cannot record anything any more: no use waiting for them
        active = list(scheduler.runs.items())
        if active:
            _done, still = await asyncio.wait([t for _, t in active], timeout=grace)
            for t in still:
                t.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
            for run_id, t in active:
                if t in still:
                    error = "daemon stopped before the run finished"
                    self.writer.post(
                        writes.finish_run(
                            run_id,
                            status="interrupted",
                            error=error,
                            event=("daemon", "run.finished", {"status": "interrupted"}),
                        ),
                        f"the interruption of run {run_id}",
                    )
                    log.warning("run %s interrupted by shutdown", run_id)
        # [6] Queued webhook, catch-up and scheduled runs stay queued: the next start runs them.
        scheduler.settle_on_stop()
        for t in background:
            t.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        # End every stream (logs -f, run-now followers) so the servers stop at once.
        self.events.close()
        await webhooks.stop()
        await control.stop()
        self.writer.post(
            writes.add_event("daemon", "daemon.stopped", detail={"pid": os.getpid()}),
            "the daemon.stopped event",
        )
        if await self.writer.close(timeout=10.0):
            self.exit_code = 1  # changes were lost (logged); the next start settles their runs
        self.state.close()
        with contextlib.suppress(OSError):
            self.paths.pid_file.unlink()
        log.info("stopped")


def run_daemon(paths: Paths, config: Config, log_level: str = "INFO") -> int:
    """`daycare daemon run`: the foreground service systemd starts."""
    setup_logging(log_level)
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.tasks_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> int:
        return await Daemon(paths, config).serve()

    return asyncio.run(main())
