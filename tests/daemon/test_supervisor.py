"""The supervisor in-process: restarts, backoff, giving up, heartbeats, health sources.

The parts here are small coroutines written for the test (they fail on cue); the
supervisor is the real one, with its intervals shortened so the tests take milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from daycare_cli.core.errors import UserError
from daycare_cli.daemon import supervisor as supervision
from daycare_cli.daemon.supervisor import HealthSource, Part, Supervisor


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(supervision, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(supervision, "BACKOFF_MAX", 0.04)
    monkeypatch.setattr(supervision, "HEARTBEAT_SLACK", 0.05)
    monkeypatch.setattr(supervision, "MONITOR_INTERVAL", 0.01)
    monkeypatch.setattr(supervision, "CHECK_INTERVAL", 0.02)
    yield


class Recorder:
    """What the supervisor reported: events and the reason it gave up."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.gave_up: list[str] = []

    def supervisor(self) -> Supervisor:
        return Supervisor(
            on_event=lambda kind, detail: self.events.append((kind, detail)),
            on_give_up=self.gave_up.append,
        )

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


async def until(predicate: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def test_a_failing_part_is_restarted_until_it_works() -> None:
    rec = Recorder()
    calls: list[int] = []

    async def flaky(part: Part) -> None:
        calls.append(part.restarts)
        if len(calls) <= 2:
            raise RuntimeError(f"boom {len(calls)}")
        part.up("working")
        await asyncio.Event().wait()

    async def main() -> dict[str, Any]:
        sup = rec.supervisor()
        sup.start("flaky", flaky)
        await until(lambda: sup.parts["flaky"].healthy)
        view = sup.view(["flaky"])["flaky"]
        await sup.stop()
        return view

    view = asyncio.run(main())
    assert calls == [0, 1, 2]
    assert view["healthy"] is True and view["restarts"] == 2 and view["error"] is None
    assert view["detail"] == "working"
    assert rec.kinds() == ["part.failed", "part.failed", "part.recovered"]
    assert rec.events[0][1]["error"] == "RuntimeError: boom 1"
    assert not rec.gave_up


def test_a_part_that_ends_is_a_failure_too() -> None:
    rec = Recorder()
    runs: list[int] = []

    async def quitter(part: Part) -> None:
        runs.append(1)
        if len(runs) > 1:
            part.up()
            await asyncio.Event().wait()

    async def main() -> None:
        sup = rec.supervisor()
        sup.start("quitter", quitter)
        await until(lambda: sup.parts["quitter"].healthy)
        await sup.stop()

    asyncio.run(main())
    assert len(runs) == 2
    assert rec.events[0][1]["error"] == "RuntimeError: it ended without an error"


def test_a_critical_part_that_cannot_recover_gives_up_once() -> None:
    rec = Recorder()
    attempts: list[int] = []

    async def broken(part: Part) -> None:
        attempts.append(1)
        raise ValueError("always")

    async def main() -> bool:
        sup = rec.supervisor()
        sup.start("loop", broken, critical=True, heartbeat=True)
        await until(lambda: rec.gave_up)
        await asyncio.sleep(0.1)  # nothing more happens once it gave up
        healthy = sup.loop_healthy()
        await sup.stop()
        return healthy

    assert asyncio.run(main()) is False
    assert len(attempts) == supervision.FAIL_LIMIT
    assert len(rec.gave_up) == 1 and "loop failed 5 times" in rec.gave_up[0]
    assert rec.kinds().count("daemon.failed") == 1
    # One event for a failure, not one per repeat of the same failure.
    assert rec.kinds().count("part.failed") == 1


def test_a_part_that_stops_beating_is_cancelled_and_restarted() -> None:
    rec = Recorder()
    runs: list[int] = []

    async def loop(part: Part) -> None:
        runs.append(1)
        part.beat(0.01)
        if len(runs) == 1:
            await asyncio.Event().wait()  # stuck: never beats again
        while True:
            part.beat(0.01)
            await asyncio.sleep(0.005)

    async def main() -> list[bool]:
        sup = rec.supervisor()
        sup.start("loop", loop, critical=True, heartbeat=True)
        await until(lambda: runs)
        seen = [sup.loop_healthy()]
        await until(lambda: not sup.loop_healthy())
        seen.append(sup.loop_healthy())
        await until(lambda: len(runs) == 2 and sup.loop_healthy())
        seen.append(sup.loop_healthy())
        await sup.stop()
        return seen

    assert asyncio.run(main()) == [True, False, True]
    failed = [d for k, d in rec.events if k == "part.failed"]
    assert len(failed) == 1 and "no heartbeat" in failed[0]["error"]


def test_a_part_that_fails_its_check_is_restarted_and_the_timer_measures_lag() -> None:
    rec = Recorder()
    runs: list[int] = []
    broken = [True]

    async def server(part: Part) -> None:
        runs.append(1)
        part.check = lambda: "its socket is gone" if broken[0] else None
        part.up()
        if len(runs) > 1:
            broken[0] = False
        await asyncio.Future()

    async def main() -> dict[str, float | int]:
        sup = rec.supervisor()
        sup.start("control", server)
        await until(lambda: len(runs) == 2 and sup.parts["control"].healthy)
        await asyncio.sleep(0.1)  # checked again, and fine now
        assert len(runs) == 2
        await sup.stop()
        return sup.lag.summary()

    lag = asyncio.run(main())
    (failed,) = [d for k, d in rec.events if k == "part.failed"]
    assert failed["error"] == "Unhealthy: its socket is gone"
    assert lag["samples"] >= 5


def test_a_user_error_is_its_sentence_and_a_retry_cuts_the_backoff_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervision, "BACKOFF_FIRST", 30.0)
    monkeypatch.setattr(supervision, "BACKOFF_MAX", 30.0)
    rec = Recorder()
    runs: list[int] = []

    async def listener(part: Part) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise UserError("port 8765 is in use", hint="set webhook.port")
        part.up()
        await asyncio.Event().wait()

    async def main() -> dict[str, Any]:
        sup = rec.supervisor()
        sup.start("webhooks", listener)
        await until(lambda: runs)
        await asyncio.sleep(0.02)
        down = sup.view(["webhooks"])["webhooks"]
        sup.retry("webhooks")  # instead of waiting 30 s
        await until(lambda: sup.parts["webhooks"].healthy)
        await sup.stop()
        return down

    down = asyncio.run(main())
    assert down["healthy"] is False
    assert down["error"] == "port 8765 is in use; fix: set webhook.port"


@dataclass
class Writer:
    """Anything with `healthy` and `last_error` is a health source (the state writer)."""

    healthy: bool = True
    last_error: str | None = None


def test_a_health_source_is_shown_as_a_part() -> None:
    writer = Writer()
    assert isinstance(writer, HealthSource)

    async def main() -> list[dict[str, Any]]:
        sup = Supervisor()
        sup.watch("state", writer)
        views = [sup.view(["state"])["state"]]
        writer.healthy, writer.last_error = False, "disk full"
        await asyncio.sleep(0.01)
        views.append(sup.view(["state"])["state"])
        assert sup.unhealthy(["state"]) == ["state"]
        return views

    up, down = asyncio.run(main())
    assert up == {**up, "healthy": True, "error": None, "restarts": 0}
    assert down["healthy"] is False and down["error"] == "disk full"
    assert down["since"] >= up["since"]
