"""Supervision of the daemon's parts: each runs as a task that is restarted when it dies.

A part (the scheduler loop, the watcher, the webhook and control servers) is a coroutine
function given its `Part`. It says it is up with `part.up()`; a part with a heartbeat
(the scheduler loop) calls `part.beat(within)` each turn, promising the next beat within
that many seconds; a part may set `part.check`, a function the supervisor calls every
`CHECK_INTERVAL` that names what is wrong (or raises). When the coroutine raises,
returns, misses its beat by `HEARTBEAT_SLACK` (it is stuck) or fails its check, the
supervisor logs the cause, records a `part.failed` event, shows the part unhealthy in
`daemon status`, and starts it again after a backoff
(0.5 s, doubling, at most 30 s: under systemd's WatchdogSec of 60 s, so a restart in the
process comes first). A critical part (the loop) that fails `FAIL_LIMIT` times within
`FAIL_WINDOW` makes the daemon give up, so that its service manager restarts it with a
non-zero exit code (STYLE.md: parts of a daemon are supervised, never fire-and-forget).

Other objects that know their own health (the state writer) are shown as parts too:
anything with `healthy` and `last_error` attributes (`HealthSource`).

All the periodic work is one timer, once a second (not a wake-up per part and probe:
each costs ~0.13 ms of CPU on a small VM, and an idle daemon is held to < 0.2 % CPU).
How late that timer fires is the event loop's lag (`LoopLag`), sampled more closely
while the daemon is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from daycare_cli.core.errors import UserError
from daycare_cli.daemon.looplag import LoopLag

log = logging.getLogger("daycare.daemon")

FAIL_WINDOW = 60.0  # seconds over which a critical part's failures are counted
FAIL_LIMIT = 5  # failures of a critical part within FAIL_WINDOW: the daemon gives up
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
HEARTBEAT_SLACK = 10.0  # a beat this late (s) past its promise: the part is stuck
MONITOR_INTERVAL = 1.0  # the one periodic timer: a lag sample, the heartbeats
CHECK_INTERVAL = 2.0  # parts' checks, health sources, the log's counts

Run = Callable[["Part"], Coroutine[Any, Any, None]]


@runtime_checkable
class HealthSource(Protocol):
    """Anything that reports its own health, shown as a part of `daemon status`."""

    @property
    def healthy(self) -> bool:
        """False while the thing cannot do its job."""
        ...

    @property
    def last_error(self) -> str | None:
        """Why it is unhealthy (or was, last), in one sentence."""
        ...


def describe(exc: BaseException) -> str:
    """A failure in one line: a user error as its sentence and fix, a bug by its type."""
    if isinstance(exc, UserError):
        text = f"{exc.where}: {exc.message}" if exc.path else exc.message
        return f"{text}; fix: {exc.hint}" if exc.hint else text
    return f"{type(exc).__name__}: {exc}"


class Part:
    """One supervised part: its task, its health and its recent failures."""

    def __init__(self, name: str, run: Run, *, critical: bool, heartbeat: bool) -> None:
        self.name = name
        self.run = run
        self.critical = critical
        self.heartbeat = heartbeat
        self.healthy = False
        self.error: str | None = None
        self.detail: str | None = "starting"
        self.restarts = 0
        self.since = datetime.now(UTC)
        self.failures: deque[float] = deque()
        self.deadline: float | None = None  # monotonic time the next beat is due by
        self.inner: asyncio.Task[None] | None = None
        self.stuck: BaseException | None = None  # why the supervisor cancelled the part
        self.check: Callable[[], str | None] | None = None  # what is wrong, if anything
        self.on_up: Callable[[Part], None] | None = None
        self.last_logged: str | None = None
        self.retry = asyncio.Event()  # set: restart now instead of at the end of the backoff

    def up(self, detail: str | None = None) -> None:
        """The part works (again); `detail` says how, e.g. the address it listens on."""
        self.detail = detail
        if not self.healthy:
            self.healthy = True
            self.error = None
            self.since = datetime.now(UTC)
            if self.on_up is not None:
                self.on_up(self)

    def beat(self, within: float) -> None:
        """The loop turned; it promises its next beat within `within` seconds."""
        self.deadline = time.monotonic() + within
        if not self.healthy:
            self.up()

    def late_by(self, now: float) -> float:
        """Seconds past the promised beat (0 without a heartbeat or when on time)."""
        if not self.heartbeat or self.deadline is None or self.inner is None:
            return 0.0
        return max(0.0, now - self.deadline)

    def view(self) -> dict[str, Any]:
        """The part as `daemon status --json` shows it."""
        healthy = self.healthy and self.late_by(time.monotonic()) <= HEARTBEAT_SLACK
        return {
            "healthy": healthy,
            "error": self.error,
            "restarts": self.restarts,
            "since": self.since.isoformat(timespec="seconds"),
            "detail": self.detail,
        }


class Supervisor:
    """Runs parts, restarts the ones that die, and says whether the daemon is healthy.

    `on_event(kind, detail)` records a ledger event; `on_give_up(reason)` is called once
    when a critical part cannot recover (the daemon then stops with exit code 1).
    """

    def __init__(
        self,
        *,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        on_give_up: Callable[[str], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        lag: LoopLag | None = None,
    ) -> None:
        self.lag = lag or LoopLag()
        self.parts: dict[str, Part] = {}
        self.sources: dict[str, HealthSource] = {}
        self._source_since: dict[str, tuple[bool, datetime]] = {}
        self.on_event = on_event
        self.on_give_up = on_give_up
        self.on_tick = on_tick
        self.stopping = False
        self.gave_up: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._next_check = 0.0

    # -- parts ------------------------------------------------------------------------

    def start(
        self, name: str, run: Run, *, critical: bool = False, heartbeat: bool = False
    ) -> Part:
        """Run `run(part)` under supervision from now on; the part is listed as `name`."""
        part = Part(name, run, critical=critical, heartbeat=heartbeat)
        part.on_up = self._recovered
        self.parts[name] = part
        loop = asyncio.get_running_loop()
        if self._timer is None:
            self._timer = loop.call_at(loop.time() + MONITOR_INTERVAL, self._tick)
            self._next_check = loop.time() + CHECK_INTERVAL
        self._tasks.append(loop.create_task(self._keep(part), name=name))
        return part

    def retry(self, name: str) -> None:
        """Restart a failed part now (its cause may be gone: a reload changed the port)."""
        part = self.parts.get(name)
        if part is not None:
            part.retry.set()

    def watch(self, name: str, source: HealthSource) -> None:
        """Show `source` (e.g. the state writer) as the part `name`."""
        self.sources[name] = source

    async def settled(self, names: list[str], timeout: float) -> None:
        """Wait until each named part is up or has failed once (at most `timeout` s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            parts = [self.parts[n] for n in names]
            if all(p.healthy or p.failures for p in parts):
                return
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Cancel every part (the daemon is stopping) and wait for them to end."""
        self.stopping = True
        if self._timer is not None:
            self._timer.cancel()
        self.lag.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- health -----------------------------------------------------------------------

    def loop_healthy(self) -> bool:
        """Whether every critical part (the scheduler loop) is up and beating on time."""
        now = time.monotonic()
        return all(
            p.healthy and p.late_by(now) <= HEARTBEAT_SLACK
            for p in self.parts.values()
            if p.critical
        )

    def view(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """`"parts"` of `daemon status --json`: each named part or watched source."""
        out: dict[str, dict[str, Any]] = {}
        for name in names:
            if name in self.parts:
                out[name] = self.parts[name].view()
            elif name in self.sources:
                out[name] = self._source_view(name)
        return out

    def unhealthy(self, names: list[str]) -> list[str]:
        """The named parts that are not healthy now."""
        return [n for n, v in self.view(names).items() if not v["healthy"]]

    def _source_view(self, name: str) -> dict[str, Any]:
        source = self.sources[name]
        healthy = bool(source.healthy)
        seen = self._source_since.get(name)
        if seen is None or seen[0] != healthy:
            seen = (healthy, datetime.now(UTC))
            self._source_since[name] = seen
        # A source that describes its own state (the state writer: a stall, the writes
        # waiting) says more than its last error.
        described = getattr(source, "health", None)
        error = described().get("error") if callable(described) else source.last_error
        return {
            "healthy": healthy,
            "error": error,
            "restarts": int(getattr(source, "restarts", 0)),
            "since": seen[1].isoformat(timespec="seconds"),
            "detail": getattr(source, "detail", None),
        }

    # -- running and restarting ---------------------------------------------------------

    async def _keep(self, part: Part) -> None:
        me = asyncio.current_task()
        while not self.stopping:
            part.stuck = None
            part.check = None
            part.inner = asyncio.get_running_loop().create_task(part.run(part))
            failure: BaseException
            try:
                await part.inner
            except asyncio.CancelledError:
                if part.stuck is None or (me is not None and me.cancelling()):
                    part.inner.cancel()
                    raise  # the daemon is stopping
                failure = part.stuck
            except Exception as exc:
                failure = exc
            else:
                if self.stopping:
                    return
                failure = RuntimeError("it ended without an error")
            finally:
                part.inner = None
            if self.stopping:
                return
            delay = self._failed(part, failure)
            if delay is None:
                return
            part.retry.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await part.retry.wait()
            part.restarts += 1
            part.detail = "restarting"

    def _failed(self, part: Part, exc: BaseException) -> float | None:
        """Record a failure; the backoff before the restart, or None when giving up."""
        now = time.monotonic()
        part.failures.append(now)
        while part.failures and part.failures[0] < now - FAIL_WINDOW:
            part.failures.popleft()
        n = len(part.failures)
        message = describe(exc)
        was_healthy = part.healthy
        part.healthy = False
        part.error = message
        part.detail = None
        if was_healthy:
            part.since = datetime.now(UTC)
        delay: float = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (n - 1))
        if message != part.last_logged:
            # A bug gets its traceback once; an expected failure (a busy port) its sentence.
            trace = None if isinstance(exc, UserError | Unhealthy) else exc
            log.error(
                "%s failed: %s; restarting it in %.1f s", part.name, message, delay, exc_info=trace
            )
            part.last_logged = message
            self._event(
                "part.failed",
                {"part": part.name, "error": message, "restarts": part.restarts, "retry_in": delay},
            )
        else:
            # The same failure again: one line for the loop (it counts towards giving up),
            # nothing new for the others (`daemon status` shows it and its restarts).
            log.log(
                logging.WARNING if part.critical else logging.DEBUG,
                "%s failed again (%d times in %.0f s): %s; restarting it in %.1f s",
                part.name,
                n,
                FAIL_WINDOW,
                message,
                delay,
            )
        if part.critical and n >= FAIL_LIMIT:
            self._give_up(part, n)
            return None
        return delay

    def _give_up(self, part: Part, n: int) -> None:
        reason = (
            f"{part.name} failed {n} times in {FAIL_WINDOW:.0f} s (last: {part.error}); "
            "the daemon stops with exit code 1 so that its service manager restarts it"
        )
        log.critical("%s", reason)
        self._event("daemon.failed", {"part": part.name, "error": part.error, "failures": n})
        self.gave_up = reason
        if self.on_give_up is not None:
            self.on_give_up(reason)

    def _recovered(self, part: Part) -> None:
        if part.restarts or part.last_logged:
            log.info("%s is up again (restart %d)", part.name, part.restarts)
            self._event("part.recovered", {"part": part.name, "restarts": part.restarts})
        part.last_logged = None

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, detail)
        except Exception as exc:  # the state database may be what failed
            log.warning("could not record %s: %s", kind, exc)

    def _tick(self) -> None:
        """The one periodic timer: the loop's lag; stuck parts; checks; the log's counts.

        A plain timer callback, not a task: an idle daemon's wake-ups cost little.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        assert self._timer is not None
        self.lag.add(now, max(0.0, now - self._timer.when()))
        self._timer = loop.call_at(now + MONITOR_INTERVAL, self._tick)
        if self.lag.busy():
            self.lag.sample_closely(loop, MONITOR_INTERVAL)
        for part in list(self.parts.values()):
            behind = part.late_by(now)
            if behind > HEARTBEAT_SLACK:
                self._cancel(part, Unhealthy(f"no heartbeat for {behind:.0f} s: it is stuck"))
        if now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL
        for part in list(self.parts.values()):
            if part.check is not None and part.healthy:
                try:
                    problem = part.check()
                except Exception as exc:
                    self._cancel(part, exc)
                else:
                    if problem is not None:
                        self._cancel(part, Unhealthy(problem))
        for name in self.sources:
            self._source_view(name)  # notices a change of health, for `since`
        if self.on_tick is not None:
            try:
                self.on_tick()
            except Exception as exc:
                log.warning("the log's counts could not be written: %s", exc)

    @staticmethod
    def _cancel(part: Part, why: BaseException) -> None:
        """Stop a part that is stuck or failed its check; it restarts as after a failure."""
        if part.inner is not None and part.stuck is None:
            part.stuck = why
            part.inner.cancel()


class Unhealthy(Exception):
    """What a check or the heartbeat found wrong with a part (logged without traceback)."""
