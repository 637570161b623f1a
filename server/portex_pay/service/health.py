"""Whether this replica should get traffic (gRPC health, HTTP /healthz).

SERVING only while the database answers AND no background task is failing: a task that died 5
times within 60 s is failing until it has run 60 s without dying (service/worker.Supervisor). The
health-probe job checks every `interval` seconds (PORTEX_HEALTH_INTERVAL), and at once when a task
turns failing (the supervisor gives `wakeup`). A change is logged (`health`, with why).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from portex_pay.service.worker import Wakeup

log = structlog.get_logger(__name__)


class Health:
    def __init__(
        self,
        database_answers: Callable[[], Awaitable[bool]],
        failing: Callable[[], list[str]],
        publish: Callable[[bool], Awaitable[None]],
        *,
        interval: float,
        wakeup: Wakeup,
    ) -> None:
        self._database_answers = database_answers
        self._failing = failing
        self._publish = publish
        self._interval = interval
        self._wakeup = wakeup
        self._serving = False

    def is_serving(self) -> bool:
        return self._serving

    async def set(self, serving: bool, **why: object) -> None:
        """Publishes `serving` (logged when it changes)."""
        if serving != self._serving:
            log.info("health", serving=serving, **why)
        self._serving = serving
        await self._publish(serving)

    def shutting_down(self) -> None:
        """Not serving from now on (the gRPC health service is told by its own shutdown)."""
        self._serving = False

    async def run(self) -> None:
        """The health-probe job: follows the database and the background tasks."""
        while True:
            await self._wakeup.wait(self._interval)
            reachable = await self._database_answers()
            failing = self._failing()
            why: dict[str, object] = {} if reachable else {"database": "unreachable"}
            if failing:
                why["failing_tasks"] = failing
            await self.set(reachable and not failing, **why)
