"""The daemon's lifecycle: start, supervision, sd_notify, signals, graceful stop
(docs/operations.md).

Every part (the scheduler loop, the watcher, the webhook and control servers) runs under
the `Supervisor`, which restarts a part that dies and tells `daemon status` about it;
the watchdog ping is sent only while the loop is healthy, and a loop that cannot recover
stops the daemon with exit code 1, so that systemd restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import resource
import signal
import socket
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daycare_cli.config import Config, load_config
from daycare_cli.core.errors import UserError
from daycare_cli.daemon.daemonlog import DaemonLog, setup_logging
from daycare_cli.daemon.events import EventBus
from daycare_cli.daemon.looplag import LoopLag
from daycare_cli.daemon.planned import PlanningFailed
from daycare_cli.daemon.queued import RESUMED
from daycare_cli.daemon.reload import config_change
from daycare_cli.daemon.sandboxprobe import SandboxProbe
from daycare_cli.daemon.sandboxprobe import describe as describe_sandbox
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.daemon.supervisor import Supervisor
from daycare_cli.run.recorder import STOPPED
from daycare_cli.store import writes
from daycare_cli.store.database import describe, is_fault
from daycare_cli.store.paths import Paths, pid_alive
from daycare_cli.store.state import State
from daycare_cli.store.tasks import TaskStore
from daycare_cli.store.writer import ThreadWriter

if TYPE_CHECKING:  # aiohttp is imported only when the daemon serves
    from daycare_cli.daemon.control import ControlServer
    from daycare_cli.daemon.server import WebhookServer

log = logging.getLogger("daycare.daemon")

READY_LINE = "daycare daemon ready"
CACHE_DELAY = 2.0  # seconds from the ready line to writing the parse cache
# The parts `daemon status` shows; it exits non-zero while one of them is unhealthy.
PARTS = ["scheduler", "watcher", "webhooks", "control", "state"]
FULL_COLLECTION_EVERY = 100  # middle-generation collections per full one (Python: 10)

__all__ = ["READY_LINE", "Daemon", "run_daemon", "sd_notify", "setup_logging"]


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


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; (before, after).

    systemd and most shells start a service with a soft limit of 1,024 open files, which
    a burst of webhook connections exhausts; the hard limit is the ceiling the
    administrator chose. Blocks get their own, lower limit (`run/identity.py`).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class AlreadyRunning(UserError):
    """Another daemon holds this home's daemon lock."""


class Daemon:
    """Everything the daemon runs: the supervised parts, signal handling, reload and stop."""

    def __init__(self, paths: Paths, config: Config, daemon_log: DaemonLog | None = None) -> None:
        self.paths = paths
        self.config = config
        self.log = daemon_log or DaemonLog()
        self.stop_event = asyncio.Event()
        self.reload_requested = False
        self.events = EventBus()
        self.state: State | None = None
        self.scheduler: Scheduler | None = None
        self.webhooks: WebhookServer | None = None
        self.lock_fd: int | None = None
        self.started_at = datetime.now(UTC)
        self.signal_wake = asyncio.Event()
        self.sandbox: dict[str, Any] = {}
        self.writer: ThreadWriter | None = None
        self.exit_code = 0
        self.lag = LoopLag()
        self.supervisor = Supervisor(
            on_event=self._event, on_give_up=self._give_up, on_tick=self.log.tick, lag=self.lag
        )

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

    def _give_up(self, reason: str) -> None:
        # The loop cannot recover: stop (gracefully) and exit non-zero.
        self.exit_code = 1
        self.stop_event.set()
        self.signal_wake.set()

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        # Through the writer, so the loop never waits on disk (store/writer.py).
        if self.writer is not None:
            self.writer.post(writes.add_event("daemon", kind, detail=detail), f"a {kind} event")

    def _state_failed(self, reason: str) -> None:
        """The writer gave up on state.db: stop, and exit non-zero to be restarted."""
        log.critical("stopping: %s", reason)
        self.exit_code = 1
        self.stop_event.set()
        self.signal_wake.set()

    def health(self, lag_window: float | None = None) -> dict[str, Any]:
        """The health fields of `daemon status --json`: parts and event-loop lag (over the
        last `lag_window` seconds, or every sample kept)."""
        parts = self.supervisor.view(PARTS)
        return {
            "healthy": all(p["healthy"] for p in parts.values()),
            "parts": parts,
            "loop_lag_ms": self.lag.summary(lag_window),
        }

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code (1: the loop gave up)."""
        before, after = raise_open_file_limit()
        if after != before:
            log.info("open-file limit raised from %d to %d", before, after)
        self._take_lock()
        # Before any thread starts: with many task files and no parse cache, a forked
        # child parses a share of them meanwhile (store/prefetch.py).
        store = TaskStore(self.paths)
        store.prepare(prefetch_dir=self.paths.runtime_dir)
        # The sandbox probe (a bubblewrap start) runs in a forked child meanwhile, so the
        # start does not wait for it alone and the daemon does not keep its modules
        # (daemon/sandboxprobe.py); a thread waits for its answer.
        child = SandboxProbe.start(self.config)
        probe = asyncio.ensure_future(asyncio.to_thread(describe_sandbox, self.config, child))
        # The servers' modules (aiohttp, ~0.1 s of CPU). At a restart, imported in a
        # thread while state.db opens and the plan loads: their loading of CA certificates
        # (~40 ms, aiohttp's client contexts) and file reads let the GIL go (-30 ms to
        # ready). At a cold start, here: made alongside the children's parse results,
        # their objects left 2-3 MB more of the heap in use at ready.
        servers = None
        if store.prefetch is None:
            servers = asyncio.ensure_future(asyncio.to_thread(_import_servers))
        else:
            _import_servers()
        try:
            return await self._serve(probe, store, servers)
        finally:
            if servers is not None:
                await asyncio.wait([servers])
            if store.prefetch is not None:
                store.prefetch.discard()  # the start failed before the plan took it
            await asyncio.wait([probe])
            if not probe.cancelled():
                probe.exception()  # seen: a start that failed first does not report it too

    async def _serve(
        self,
        probe: asyncio.Future[dict[str, Any]],
        store: TaskStore,
        servers: asyncio.Future[None] | None,
    ) -> int:
        from daycare_cli.daemon.parts import (
            run_control,
            run_scheduler,
            run_watchdog,
            run_watcher,
            run_webhooks,
        )

        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self.log.handle_loop_exception)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)

        self.state = state = State.open(self.paths.state_db)
        # Runs a dead process left: running ones end `interrupted`, queued ones that a 202
        # or a catch-up promised are resumed once the plan is loaded.
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
        # Every write from here on goes through one writer thread (store/writer.py); it
        # is the `state` part: unhealthy while writes fail, fatal when it gives up.
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
        plan.store = store  # with the child `prepare` started
        sup = self.supervisor
        sup.watch("state", writer)
        # Watch before the first scan: a file written between the scan and the watch
        # (e.g. right after the ready line) would otherwise go unseen until a rescan. The
        # watcher is up once its inotify watch is registered; the changes it queues
        # meanwhile are applied after the scan (same digest: no-op).
        watcher_stop = asyncio.Event()
        sup.start("watcher", lambda part: run_watcher(part, plan, watcher_stop))
        await sup.settled(["watcher"], timeout=5.0)
        # The start makes ~300,000 objects and frees few: collections meanwhile would only
        # walk them again (0.18 s of a 10,000-task cold start); gc.freeze() below follows.
        gc.disable()
        try:
            plan.load_all(starting=True)
            scheduler.adopt(adopted)
            scheduler.restore_retries(state.planned_retries())
        finally:
            gc.enable()
        # What start-up made (the plan of 10,000 tasks, the modules) lives as long as the
        # daemon: out of the collector's sight, a full collection (which any burst of
        # allocations, e.g. a `GET /tasks`, sets off) scans only what came later: ~3 ms
        # instead of ~200 ms with the loop blocked (bench/bench_daemon_scale.py).
        gc.freeze()
        # A full collection scans all that came later (a burst's queued runs, what the
        # first runs imported): 18-32 ms with the loop blocked, twice in a burst of
        # 10,000 webhooks at Python's default (one per 10 middle-generation passes,
        # ~70,000 allocations). One per 100 (~700,000) keeps them out of such bursts;
        # garbage in cycles waits longer for it, which a daemon's heap can afford.
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
        trim_heap()  # what loading freed (the parse cache's pickle, the files' list)
        self._event(
            "daemon.started",
            {"pid": os.getpid(), "tasks": len(plan.tasks), "invalid": sorted(plan.broken)},
        )

        if servers is not None:
            await servers
        from daycare_cli.daemon.control import ControlServer
        from daycare_cli.daemon.server import WebhookServer

        refused = self.log.tally("refusing webhook connections")
        self.webhooks = webhooks = WebhookServer(
            scheduler, state, self.paths, on_refused=refused.note
        )
        control = ControlServer(
            scheduler,
            state,
            self.paths,
            self.events,
            reload=self.reload,
            started_at=self.started_at,
            webhooks=webhooks,
            sandbox=self.sandbox,
            health=self.health,
        )
        try:
            await control.start()
        except OSError as exc:
            # Nothing could reach a daemon without its control socket: give up at once.
            log.error("cannot listen on the control socket %s: %s", self.paths.socket, exc)
            self.events.close()
            await sup.stop()
            await control.stop()
            await writer.close()
            state.close()
            return 1
        sup.start("control", lambda part: run_control(part, control))
        sup.start("webhooks", lambda part: run_webhooks(part, webhooks, plan))
        await sup.settled(["webhooks"], timeout=10.0)

        self.sandbox.update(await probe)
        isolation = self.sandbox["isolation"]
        if isolation != "bubblewrap":
            log.warning("sandbox isolation: %s (%s)", isolation, self.sandbox["reason"])
        n_triggers = sum(len(s.task.triggers) for s in plan.tasks.values())
        status = (
            f"{len(plan.tasks)} tasks, {n_triggers} triggers, "
            f"{len(plan.broken)} invalid, isolation {isolation}"
        )
        hooks = sup.parts["webhooks"]
        if webhooks.url:
            where = f"webhooks on {webhooks.url}"
        elif hooks.error:
            where = "webhooks not listening (see the error above)"
        else:
            where = "webhooks off (no task has a webhook trigger)"
        print(
            f"{READY_LINE}: {status}; {where}; control on {self.paths.socket}",
            file=sys.stderr,
            flush=True,
        )
        sd_notify(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")
        # The parse cache is written after the ready line, off the loop (store/tasks.py,
        # `save_cache`): a start does not wait for it.
        caches_stop = threading.Event()
        caches = asyncio.ensure_future(asyncio.to_thread(_save_caches, plan.store, caches_stop))

        sup.start(
            "scheduler", lambda part: run_scheduler(part, scheduler), critical=True, heartbeat=True
        )
        if os.environ.get("WATCHDOG_USEC"):
            sup.start("watchdog", lambda part: run_watchdog(part, sup, sd_notify))
        try:
            while not self.stop_event.is_set():
                await self.signal_wake.wait()
                self.signal_wake.clear()
                if self.reload_requested and not self.stop_event.is_set():
                    self.reload_requested = False
                    await self.reload()
        finally:
            caches_stop.set()
            await self._shutdown(scheduler, webhooks, control, watcher_stop)
            try:
                await asyncio.wait_for(caches, timeout=10.0)
            except Exception as exc:  # only a slower next start
                log.warning("the parse cache was not written: %s", exc)
        return self.exit_code

    async def reload(self) -> None:
        """Re-read config and every task file (SIGHUP or the control API); never raises."""
        try:
            await self._reload()
        except Exception as exc:
            log.exception("reload failed, the daemon goes on as it was: %s", exc)
            with contextlib.suppress(Exception):
                self._event("reload.failed", {"error": f"{type(exc).__name__}: {exc}"})
            sd_notify("READY=1")

    async def _reload(self) -> None:
        assert self.scheduler is not None
        scheduler = self.scheduler
        sd_notify("RELOADING=1")
        old = self.config
        try:
            self.config = load_config(self.paths.config_file)
        except UserError as exc:
            # A broken config keeps the running one, like a broken task file does.
            log.error("config not reloaded, keeping the running one: %s", exc)
            self._event("config.invalid", {"error": str(exc)})
        change = config_change(old.raw, self.config.raw)
        scheduler.reconfigure(self.config)  # a raised cap starts the waiting runs now
        if "timezone" in change.applied:
            scheduler.replan_all()
        if any(key.startswith("webhook.") for key in change.applied):
            scheduler.plan.webhooks_changed.set()  # the listener takes its new settings
            self.supervisor.retry("webhooks")
        # Parsed off the loop (a big file must not stall fires); one task whose planning
        # fails keeps neither the others nor the config from reloading.
        entries = await asyncio.to_thread(scheduler.plan.store.list)
        try:
            scheduler.plan.load_all(starting=False, actor="daemon", entries=entries)
        except PlanningFailed as exc:
            # Each such task keeps the version it had; the other tasks are reloaded.
            for task_id, cause in exc.failures:
                why = f"{type(cause).__name__}: {cause}"
                log.error("reload failed for %s, which goes on as it was: %s", task_id, why)
                self._event("reload.failed", {"task": task_id, "error": why})
        if change.restart:
            log.warning(
                "config keys that apply only after a restart of the daemon: %s",
                ", ".join(change.restart),
            )
        if change.applied or change.restart:
            self._event(
                "config.reloaded", {"applied": change.applied, "restart_needed": change.restart}
            )
        applied = ", ".join(change.applied) or "no changes"
        log.info("reloaded config (%s) and %d tasks", applied, len(scheduler.plan.tasks))
        sd_notify("READY=1")

    async def _shutdown(
        self,
        scheduler: Scheduler,
        webhooks: WebhookServer,
        control: ControlServer,
        watcher_stop: asyncio.Event,
    ) -> None:
        assert self.state is not None and self.writer is not None
        log.info("stopping: no new runs; waiting for %d active run(s)", len(scheduler.runs))
        sd_notify("STOPPING=1")
        self.supervisor.stopping = True  # parts that end now are not restarted
        scheduler.stopping = True
        webhooks.stopping = True
        scheduler.wake.set()
        watcher_stop.set()
        grace = float(self.config.get("daemon.grace_period"))
        if self.writer.fatal is not None:
            grace = 0.0  # runs cannot record anything any more: no use waiting for them
        active = list(scheduler.runs.items())
        if active:
            _done, still = await asyncio.wait([t for _, t in active], timeout=grace)
            for t in still:
                t.cancel(STOPPED)  # the runner records them `interrupted`
            if still:
                await asyncio.wait(still, timeout=5)
            recorded: list[asyncio.Future[Any]] = []
            for run_id, t in active:
                if t in still:
                    recorded.append(
                        self.writer.submit(
                            writes.finish_run(
                                run_id,
                                status="interrupted",
                                error=STOPPED,
                                event=("daemon", "run.finished", {"status": "interrupted"}),
                            )
                        )
                    )
                    log.warning("run %s interrupted by shutdown", run_id)
            if recorded:
                # Committed before the streams end, so a `task run` following one of them
                # reads its final status, not `running`.
                await asyncio.wait(recorded, timeout=2)
                for f in recorded:
                    if f.done() and f.exception() is not None:
                        log.error("could not record an interrupted run: %s", f.exception())
        # Queued webhook, catch-up and scheduled runs stay queued: the next start runs them.
        scheduler.settle_on_stop()
        await scheduler.ahead.close()
        # End every stream (logs -f, run-now followers) so the servers stop at once.
        self.events.close()
        await self.supervisor.stop()
        await webhooks.stop()
        await control.stop()
        self.log.tick(force=True)
        detail: dict[str, Any] = {"pid": os.getpid()}
        if self.supervisor.gave_up:
            detail["exit_code"] = self.exit_code
            detail["reason"] = self.supervisor.gave_up
        self._event("daemon.stopped", detail)
        if await self.writer.close(timeout=10.0):
            self.exit_code = 1  # changes were lost (logged); the next start settles their runs
        self.state.close()
        with contextlib.suppress(OSError):
            self.paths.pid_file.unlink()
        log.info("stopped" if not self.exit_code else f"stopped with exit code {self.exit_code}")


def _import_servers() -> None:
    import daycare_cli.daemon.control
    import daycare_cli.daemon.server  # noqa: F401


def trim_heap() -> None:
    """Give back to the system the free memory at the top and in the middle of the C heap
    (glibc's `malloc_trim`): a start frees megabytes of transients (the parse cache's
    pickle, the files' list) that glibc would otherwise keep mapped. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim  # glibc only; musl has none
    except (OSError, AttributeError):
        return
    trim(0)


def _save_caches(store: TaskStore, stop: threading.Event) -> int:
    # The parse cache a little after the ready line (the start's first fires and
    # requests go first: writing 10,000 entries takes ~0.1 s of CPU), at once at a stop;
    # its pickle's buffers are given back after it.
    try:
        stop.wait(CACHE_DELAY)
        return store.save_cache(sleep=stop.wait)
    finally:
        trim_heap()


def run_daemon(paths: Paths, config: Config, log_level: str = "INFO") -> int:
    """`daycare daemon run`: the foreground service systemd starts."""
    # Everything the daemon writes (state, runs, logs) is the user's alone: 0600 files
    # in 0700 directories, as systemd's UMask=0077 in the shipped unit says too.
    os.umask(0o077)
    daemon_log = setup_logging(log_level)
    from daycare_cli.run.cgroup import adopt_delegated

    adopt_delegated()  # under Delegate=yes: run cgroups beside the daemon's own
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.tasks_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> int:
        return await Daemon(paths, config, daemon_log).serve()

    return asyncio.run(main())
