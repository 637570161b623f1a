"""Health is SERVING only while the database answers and no background task is failing; a task
turning failing is noticed at once, not after the probe's interval."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from portex_pay.service.health import Health
from portex_pay.service.worker import Wakeup


class World:
    def __init__(self) -> None:
        self.reachable = True
        self.failing: list[str] = []
        self.published: list[bool] = []
        self.changed = asyncio.Event()

    async def database_answers(self) -> bool:
        return self.reachable

    def failing_tasks(self) -> list[str]:
        return self.failing

    async def publish(self, serving: bool) -> None:
        if not self.published or self.published[-1] != serving:
            self.changed.set()
        self.published.append(serving)


async def settles(world: World, expected: bool) -> None:
    while not world.published or world.published[-1] != expected:
        world.changed.clear()
        await asyncio.wait_for(world.changed.wait(), 5)


async def test_serving_needs_the_database_and_no_failing_task() -> None:
    world, wakeup = World(), Wakeup()
    health = Health(
        world.database_answers, world.failing_tasks, world.publish, interval=3600, wakeup=wakeup
    )
    with capture_logs() as logs:
        await health.set(True)
        probe = asyncio.create_task(health.run())
        world.failing = ["refunds"]
        wakeup.wake()  # what the supervisor does when a task turns failing
        await settles(world, False)
        assert not health.is_serving()
        world.failing = []
        wakeup.wake()
        await settles(world, True)
        world.reachable = False
        wakeup.wake()
        await settles(world, False)
        probe.cancel()
        await asyncio.gather(probe, return_exceptions=True)
    changes = [{k: v for k, v in line.items() if k != "log_level"} for line in logs]
    assert changes == [
        {"event": "health", "serving": True},
        {"event": "health", "serving": False, "failing_tasks": ["refunds"]},
        {"event": "health", "serving": True},
        {"event": "health", "serving": False, "database": "unreachable"},
    ]
