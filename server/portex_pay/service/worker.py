"""A background worker loop shared by the outboxes, the sweeper and the pollers, and the
supervisor every background task of the process runs under.

`step()` does one batch of work and returns how many items it handled. While it finds work the
loop runs again at once; when it finds none it sleeps `idle` seconds or until `wake()` is called
(a request that just wrote work can wake the worker instead of waiting). A failing step is logged
and retried after `idle`: a database outage must not kill the worker. Work items are claimed in the
database (`FOR UPDATE SKIP LOCKED`, leases), so any number of replicas can run the same worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from portex_pay.domain.retry import backoff_seconds

log = structlog.get_logger(__name__)

# A task that died is started again after 1 s, 2 s, 4 s, ... at most 30 s.
RESTART_BASE = 1.0
RESTART_CAP = 30.0


async def supervise(
    name: str,
    run: Callable[[], Coroutine[Any, Any, None]],
    *,
    base: float = RESTART_BASE,
    cap: float = RESTART_CAP,
) -> None:
    """Runs `run()` until cancelled. Background tasks are meant to run for the life of the
    process, so ending is always a fault: an exception (a bug) or a return is logged as an
    error, with the traceback, and the task is started again after a backoff, so that one bad
    moment does not silently stop refunds, callbacks or polling until the next restart.
    Cancellation (shutdown) ends it."""
    structlog.contextvars.bind_contextvars(task=name)
    restarts = 0
    while True:
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            restarts += 1
            delay = backoff_seconds(restarts, base=base, cap=cap)
            log.error(
                "background task died; restarting",
                task=name,
                restarts=restarts,
                restart_in=delay,
                exc_info=error,
            )
        else:
            restarts += 1
            delay = backoff_seconds(restarts, base=base, cap=cap)
            log.error(
                "background task ended; restarting", task=name, restarts=restarts, restart_in=delay
            )
        await asyncio.sleep(delay)


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
