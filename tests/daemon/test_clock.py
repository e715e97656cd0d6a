"""The scheduler's clocks: the machine's, and the virtual one the loop tests run on."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from daycare_cli.daemon.clock import SystemClock, VirtualClock


def test_system_clock_waits_out_its_timeout_or_returns_when_woken() -> None:
    async def main() -> tuple[bool, float, bool]:
        clock, event = SystemClock(), asyncio.Event()
        start = time.monotonic()
        timed_out = await clock.wait(event, 0.05)
        waited = time.monotonic() - start
        asyncio.get_running_loop().call_later(0.01, event.set)
        woken = await clock.wait(event, 30)
        return timed_out, waited, woken

    timed_out, waited, woken = asyncio.run(main())
    assert timed_out is False
    assert waited >= 0.05  # never early: a fire must not start before its time
    assert woken is True


def test_virtual_clock_moves_to_the_earliest_deadline_of_its_waiters() -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    clock = VirtualClock(start)

    async def main() -> list[tuple[str, float]]:
        seen: list[tuple[str, float]] = []
        event = asyncio.Event()

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            seen.append((name, clock.monotonic()))

        async def waiter() -> None:
            woken = await clock.wait(event, 3600)
            seen.append((f"waiter woken={woken}", clock.monotonic()))

        w = asyncio.get_running_loop().create_task(waiter())
        await asyncio.gather(sleeper("b", 20), sleeper("a", 5))
        event.set()
        await w
        return seen

    seen = asyncio.run(main())
    assert seen == [("a", 5.0), ("b", 20.0), ("waiter woken=True", 20.0)]
    assert clock.now() == datetime(2026, 3, 1, 12, 0, 20, tzinfo=UTC)


def test_virtual_clock_jump_moves_wall_time_alone() -> None:
    clock = VirtualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    clock.jump(300)
    assert clock.now() == datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    assert clock.monotonic() == 0.0
