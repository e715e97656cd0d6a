"""The daemon's parts as the supervisor runs them (`supervisor.py`): one coroutine each.

Each is given its `Part`, says when it is up, and raises (or returns) when it can no
longer do its job; the supervisor logs that, shows it and starts the part again. What
the parts do is elsewhere (the loop in `scheduler.py`, watching in `watcher.py`, the
servers in `server.py`); here is only how each is started, checked and stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from daycare_cli.daemon.faults import fault_point
from daycare_cli.daemon.plan import Plan
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.daemon.supervisor import Part, Supervisor

if TYPE_CHECKING:  # aiohttp's modules: the start imports them in a thread (service.py)
    from daycare_cli.daemon.control import ControlServer
    from daycare_cli.daemon.server import WebhookServer

log = logging.getLogger("daycare.daemon")


async def run_scheduler(part: Part, scheduler: Scheduler) -> None:
    """The scheduler loop; after a failure, first re-plan what the failure lost."""
    if part.restarts:
        scheduler.replan_lost()
    await scheduler.run_forever(heartbeat=part.beat)


async def run_watcher(part: Part, plan: Plan, stop: asyncio.Event) -> None:
    """Watch the tasks directory; after a failure, first rescan what changed meanwhile."""
    from daycare_cli.daemon.watcher import rescan, watch

    if part.restarts:
        await rescan(plan)  # parsed off the loop; a task that fails to plan is reported
    part.up()
    await watch(plan, stop)


async def run_control(part: Part, control: ControlServer) -> None:
    """The control API; restarted when its socket stops listening or its file is removed."""

    def check() -> str | None:
        fault_point("control")
        return control.problem()

    try:
        if not control.listening:
            await control.start()
        part.check = check
        part.up(f"listening on {control.paths.socket}")
        await asyncio.Future()  # serves until cancelled; `check` watches it
    except BaseException:
        await control.stop()
        raise


async def run_webhooks(part: Part, webhooks: WebhookServer, plan: Plan) -> None:
    """Listen for webhooks while some task has a webhook trigger, with the config's settings.

    Starts and stops the listener as tasks change (`plan.webhooks_changed`) and starts it
    again when a reload changes its host, port or connection cap. A busy port raises
    `PortInUse`, which the supervisor shows and retries with its backoff; the scheduler
    goes on meanwhile.
    """

    def check() -> str | None:
        fault_point("webhooks")
        if webhooks.bound is not None and not webhooks.listening:
            return "the webhook listener stopped listening"
        return None

    part.check = check
    try:
        while True:
            plan.webhooks_changed.clear()
            wanted = bool(plan.webhook_tasks)
            if webhooks.listening and (not wanted or webhooks.bound != webhooks.wanted()):
                await webhooks.stop()
                log.info("webhook listener stopped")
            if wanted and not webhooks.listening:
                await webhooks.start()
                log.info("webhooks listening on %s", webhooks.url)
            if webhooks.listening:
                part.up(f"listening on {webhooks.url}")
            else:
                part.up("not listening: no task has a webhook trigger")
            await plan.webhooks_changed.wait()
    except BaseException:
        await webhooks.stop()
        raise


async def run_watchdog(part: Part, supervisor: Supervisor, notify: Callable[[str], bool]) -> None:
    """Ping systemd's watchdog every half WatchdogSec, only while the loop is healthy.

    An unhealthy loop (failed and waiting for its restart, or stuck) gets no ping, so
    systemd restarts the daemon if the supervisor does not bring the loop back in time.
    """
    interval = max(int(os.environ["WATCHDOG_USEC"]) / 2e6, 0.05)
    withheld = False
    part.up()
    while True:
        if supervisor.loop_healthy():
            if withheld:
                withheld = False
                log.info("the scheduler loop is healthy again: watchdog pings resumed")
                notify("STATUS=running")
            notify("WATCHDOG=1")
        elif not withheld:
            withheld = True
            error = supervisor.parts["scheduler"].error or "no heartbeat"
            log.error("the scheduler loop is unhealthy (%s): watchdog pings withheld", error)
            notify(f"STATUS=scheduler loop unhealthy: {error}")
        await asyncio.sleep(interval)
