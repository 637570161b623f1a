"""The background jobs of the process, the supervisor they run under, and the worker loop shared
by the outboxes, the sweeps and the relay's delivery.

Every background task is a `Job` (a name and what it runs), started under one `Supervisor`:
background tasks are meant to run for the life of the process, so ending is always a fault. A task
that dies (a bug) or returns is logged as an ERROR with its traceback and started again after a
backoff (1 s, 2 s, 4 s, ... at most 30 s; back to 1 s once it has run a `window` without dying).
A task that dies `max_restarts` times (5) within `window` seconds (60) is *failing*: health
answers NOT_SERVING (service/health.py) until it has run `window` seconds without dying, so that an
orchestrator sees a replica whose refunds, callbacks or polling are stuck in a crash loop.

`PeriodicWorker.step()` does one batch of work and returns how many items it handled. While it
finds work the loop runs again at once; when it finds none it waits `idle` seconds or until its
`Wakeup` is given (a request that just wrote work wakes the worker instead of waiting). A step
that fails because the store is unavailable (service/outage.is_unavailable) is a quiet warning and
is tried again after `idle`: a database outage must not kill the worker. Any other failure is a
bug: it is raised, so the supervisor logs its traceback, restarts the worker and counts it. Work
items are claimed in the database (`FOR UPDATE SKIP LOCKED`, leases), so any number of replicas
can run the same worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import structlog

from portex_pay.domain.application import Application
from portex_pay.domain.retry import FAILING_WINDOW, RESTART_BASE, RESTART_CAP, backoff_seconds
from portex_pay.service.outage import is_unavailable
from portex_pay.service.ports import Applications

log = structlog.get_logger(__name__)

# A task that died 5 times within FAILING_WINDOW (60 s) is failing (health NOT_SERVING) until it
# has run that long without dying; RESTART_BASE and RESTART_CAP (domain/retry.py) its backoff.
FAILING_RESTARTS = 5

Run = Callable[[], Coroutine[Any, Any, None]]


class Wakeup:
    """A signal from a use case that has just written work to the worker that does it: the
    worker runs at once instead of after its idle wait. Made before both, so that each gets it
    through its constructor (the service calls `wake`, the worker waits on it)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Returns when woken (since the last wait), or after `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


@dataclass
class _Record:
    """One supervised task's recent history."""

    name: str
    started: float  # when run() last started
    running: bool = True
    restarts: int = 0  # deaths since it last ran `window` seconds (the backoff's count)
    deaths: deque[float] = field(default_factory=deque)  # within the last `window` seconds
    failing: bool = False


class Supervisor:
    """Runs background tasks, restarting each that dies, and knows which keep dying.

    `on_failing` is called when a task turns failing (health re-checks at once). The numbers are
    parameters so that a test can use small ones; `clock` is monotonic seconds."""

    def __init__(
        self,
        *,
        base: float = RESTART_BASE,
        cap: float = RESTART_CAP,
        max_restarts: int = FAILING_RESTARTS,
        window: float = FAILING_WINDOW,
        on_failing: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = base
        self._cap = cap
        self._max_restarts = max_restarts
        self._window = window
        self._on_failing = on_failing
        self._clock = clock
        self._records: list[_Record] = []

    def failing(self) -> list[str]:
        """The names of the tasks failing now: died `max_restarts` times within `window`
        seconds, and not run `window` seconds without dying since."""
        now = self._clock()
        for record in self._records:
            if record.failing and record.running and now - record.started >= self._window:
                record.failing = False
        return sorted({record.name for record in self._records if record.failing})

    async def supervise(self, name: str, run: Run) -> None:
        """Runs `run()` until cancelled (shutdown, or its owner stopping it): an exception or a
        return is logged as an error, with the traceback, and `run()` is started again after a
        backoff, so that one bad moment does not silently stop refunds, callbacks or polling."""
        structlog.contextvars.bind_contextvars(task=name)
        record = _Record(name, self._clock())
        self._records.append(record)
        try:
            while True:
                record.started, record.running = self._clock(), True
                try:
                    await run()
                except Exception as error:
                    delay = self._died(record)
                    log.error(
                        "background task died; restarting",
                        task=name,
                        restarts=record.restarts,
                        restart_in=delay,
                        exc_info=error,
                    )
                else:
                    delay = self._died(record)
                    log.error(
                        "background task ended; restarting",
                        task=name,
                        restarts=record.restarts,
                        restart_in=delay,
                    )
                await asyncio.sleep(delay)
        finally:  # cancelled: no longer running, so no longer failing
            self._records.remove(record)

    def _died(self, record: _Record) -> float:
        """Counts a death; returns the delay before the restart."""
        now = self._clock()
        record.running = False
        if now - record.started >= self._window:
            record.restarts = 0  # it had run a while: start the backoff again
        record.restarts += 1
        record.deaths.append(now)
        while record.deaths and now - record.deaths[0] > self._window:
            record.deaths.popleft()
        if len(record.deaths) >= self._max_restarts and not record.failing:
            record.failing = True
            log.error(
                "background task failing",
                task=record.name,
                deaths=len(record.deaths),
                window_seconds=self._window,
            )
            self._on_failing()
        return backoff_seconds(record.restarts, base=self._base, cap=self._cap)


@dataclass(frozen=True)
class Job:
    """A background task of the process: its name (on every line it logs), what it runs for the
    life of the process, and the supervisor it runs under."""

    name: str
    run: Run
    supervisor: Supervisor

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.supervisor.supervise(self.name, self.run), name=self.name)


class PeriodicWorker:
    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[int]],
        *,
        idle: float,
        wakeup: Wakeup | None = None,
    ) -> None:
        self.name = name
        self._step = step
        self._idle = idle
        self._wakeup = wakeup if wakeup is not None else Wakeup()

    def wake(self) -> None:
        self._wakeup.wake()

    async def run(self) -> None:
        # The worker's task is its own context: every line it logs names it.
        structlog.contextvars.bind_contextvars(worker=self.name)
        while True:
            try:
                handled = await self._step()
            except Exception as error:
                if not is_unavailable(error):
                    raise  # a bug: the supervisor logs its traceback and restarts the worker
                log.warning("worker step failed", worker=self.name, error=repr(error))
                handled = 0
            if handled:
                continue
            await self._wakeup.wait(self._idle)


class BotWorker(Protocol):
    """What runs for one bot for the life of the process (a poller, a Star ledger reader)."""

    async def run(self) -> None: ...


W = TypeVar("W", bound=BotWorker)


class PerBotJobs(Generic[W]):
    """Keeps one task per bot that `wanted` selects among the applications with a bot,
    following their changes every `refresh` seconds: a new bot gets its worker (`make`), one
    gone (or changed: another token) loses it. Each task runs under `supervisor` as
    `<prefix>-<bot id>`; `workers` are the current ones, by bot id."""

    def __init__(
        self,
        applications: Applications,
        wanted: Callable[[Application], bool],
        make: Callable[[Application], W],
        supervisor: Supervisor,
        *,
        prefix: str,
        refresh: float = 5.0,
    ) -> None:
        self._applications = applications
        self._wanted = wanted
        self._make = make
        self._supervisor = supervisor
        self._prefix = prefix
        self._refresh = refresh
        self._tasks: dict[int, tuple[Application, asyncio.Task[None]]] = {}
        self.workers: dict[int, W] = {}

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._sync()
                except Exception as error:
                    if not is_unavailable(error):
                        raise
                    log.warning("bot workers refresh failed", jobs=self._prefix, error=repr(error))
                await asyncio.sleep(self._refresh)
        finally:
            tasks = [task for _, task in self._tasks.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _sync(self) -> None:
        wanted = {
            app.bot.id: app
            for app in await self._applications.with_bots()
            if app.bot is not None and self._wanted(app)
        }
        for bot_id, (app, task) in list(self._tasks.items()):
            current = wanted.get(bot_id)
            if current is None or current.bot != app.bot:
                task.cancel()  # the supervisor restarts a worker that died; this one is done
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                del self._tasks[bot_id]
                self.workers.pop(bot_id, None)
        for bot_id, app in wanted.items():
            if bot_id not in self._tasks:
                worker = self._make(app)
                self.workers[bot_id] = worker
                name = f"{self._prefix}-{bot_id}"
                run = self._supervisor.supervise(name, worker.run)
                self._tasks[bot_id] = (app, asyncio.create_task(run, name=name))
