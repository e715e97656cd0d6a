"""The daemon's event bus: fan-out per run and to all, bounded queues, end of stream."""

from __future__ import annotations

import asyncio

from daycare_cli.daemon.events import EventBus


def test_records_reach_their_run_and_the_all_runs_subscribers_only() -> None:
    async def main() -> None:
        bus = EventBus()
        one, other, every = bus.subscribe("r1"), bus.subscribe("r2"), bus.subscribe()
        bus.publish({"run": "r1", "event": "run.start"})
        assert await one.get(timeout=1) == {"run": "r1", "event": "run.start"}
        assert await every.get(timeout=1) == {"run": "r1", "event": "run.start"}
        assert other.queue.empty()

    asyncio.run(main())


def test_close_ends_every_stream_even_a_full_one() -> None:
    async def main() -> list[list[str]]:
        bus = EventBus(maxsize=2)
        full, idle = bus.subscribe(), bus.subscribe("r9")
        for i in range(5):  # more than the queue holds: the extra ones are dropped
            bus.publish({"run": "r1", "event": f"e{i}"})
        bus.close()
        late = bus.subscribe()  # subscribing after close ends at once
        return [[r["event"] async for r in s] for s in (full, idle, late)]

    got = asyncio.run(main())
    assert got == [["e1"], [], []]


def test_unsubscribed_queues_receive_nothing() -> None:
    async def main() -> None:
        bus = EventBus()
        sub = bus.subscribe("r1")
        sub.close()
        sub.close()  # idempotent
        bus.publish({"run": "r1"})
        assert sub.queue.empty()

    asyncio.run(main())
