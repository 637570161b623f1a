"""A background worker loop shared by the outboxes, the sweeper and the pollers.

`step()` does one batch of work and returns how many items it handled. While it finds work the
loop runs again at once; when it finds none it sleeps `idle` seconds or until `wake()` is called
(a request that just wrote work can wake the worker instead of waiting). A failing step is logged
and retried after `idle`: a database outage must not kill the worker. Work items are claimed in the
database (`FOR UPDATE SKIP LOCKED`, leases), so any number of replicas can run the same worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class PeriodicWorker:
    def __init__(self, name: str, step: Callable[[], Awaitable[int]], *, idle: float) -> None:
        self.name = name
        self._step = step
        self._idle = idle
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        # The worker's task is its own context: every line it logs names it.
        structlog.contextvars.bind_contextvars(worker=self.name)
        while True:
            try:
                handled = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("worker step failed", worker=self.name, error=repr(error))
                handled = 0
            if handled:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle)
            self._wake.clear()
