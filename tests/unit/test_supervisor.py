"""Background tasks are supervised: a death is logged loudly and the task starts again after a
backoff; cancellation (shutdown) ends it. A task that keeps dying is failing (health turns
NOT_SERVING) until it has run a while; a worker's bug reaches the supervisor, an outage does not."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from portex_pay.service.outage import StoreUnavailable
from portex_pay.service.worker import PeriodicWorker, Supervisor, Wakeup


async def test_a_task_that_dies_is_logged_and_started_again_until_cancelled() -> None:
    runs: list[int] = []
    settled = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("a bug")
        if len(runs) == 2:
            return  # ending is a fault too: background tasks run for the life of the process
        settled.set()
        await asyncio.sleep(3600)

    with capture_logs() as logs:
        task = asyncio.create_task(Supervisor(base=0.01, cap=0.02).supervise("flaky", flaky))
        await asyncio.wait_for(settled.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert runs == [0, 1, 2]
    died, ended = [line for line in logs if line["log_level"] == "error"]
    assert died["event"] == "background task died; restarting" and died["task"] == "flaky"
    assert isinstance(died["exc_info"], RuntimeError) and died["restarts"] == 1
    assert ended["event"] == "background task ended; restarting" and ended["restarts"] == 2


async def test_the_restart_delay_backs_off() -> None:
    fourth = asyncio.Event()
    runs = 0

    async def dies() -> None:
        nonlocal runs
        runs += 1
        if runs == 5:
            fourth.set()  # four deaths logged before this fifth start
        raise OSError("down")

    with capture_logs() as logs:
        task = asyncio.create_task(Supervisor(base=0.001, cap=0.004).supervise("dies", dies))
        await asyncio.wait_for(fourth.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    delays = [line["restart_in"] for line in logs[:4]]
    assert delays == [0.001, 0.002, 0.004, 0.004]


class Clock:
    """Monotonic seconds the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_task_that_keeps_dying_is_failing_until_it_has_run_a_window_without_dying() -> None:
    """3 deaths within 10 s (the numbers a test picks; production: 5 within 60 s) make the task
    failing, which health turns into NOT_SERVING; running 10 s without dying clears it."""
    clock = Clock()
    alerts: list[bool] = []
    supervisor = Supervisor(
        base=0.001,
        cap=0.001,
        max_restarts=3,
        window=10.0,
        clock=clock,
        on_failing=lambda: alerts.append(True),
    )
    running = asyncio.Event()
    runs = 0

    async def dies_three_times() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            clock.now += 1.0  # dies after a second
            raise RuntimeError("a bug")
        running.set()
        await asyncio.sleep(3600)

    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.supervise("refunds", dies_three_times))
        await asyncio.wait_for(running.wait(), 5)
        assert supervisor.failing() == ["refunds"] and alerts == [True]
        clock.now += 9.0
        assert supervisor.failing() == ["refunds"]  # 9 s of the 10 without dying
        clock.now += 1.0
        assert supervisor.failing() == []
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [failing] = [line for line in logs if line["event"] == "background task failing"]
    assert failing["task"] == "refunds" and failing["log_level"] == "error"


async def test_deaths_further_apart_than_the_window_are_not_failing() -> None:
    clock = Clock()
    supervisor = Supervisor(base=0.001, cap=0.004, max_restarts=2, window=10.0, clock=clock)
    runs = 0
    settled = asyncio.Event()

    async def dies_now_and_then() -> None:
        nonlocal runs
        runs += 1
        if runs > 3:
            settled.set()
            await asyncio.sleep(3600)
        clock.now += 11.0  # ran longer than the window before dying
        raise RuntimeError("a rare bug")

    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.supervise("expiry", dies_now_and_then))
        await asyncio.wait_for(settled.wait(), 5)
        assert supervisor.failing() == []
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    delays = [line["restart_in"] for line in logs if "restart_in" in line]
    assert delays == [0.001, 0.001, 0.001]  # the backoff starts again after a long run


async def test_a_stopped_task_is_not_failing() -> None:
    supervisor = Supervisor(base=0.001, cap=0.001, max_restarts=1, window=60.0)
    died = asyncio.Event()

    async def dies() -> None:
        died.set()
        raise RuntimeError("a bug")

    with capture_logs():
        task = asyncio.create_task(supervisor.supervise("poll-42", dies))
        await asyncio.wait_for(died.wait(), 5)
        await asyncio.sleep(0)
        assert supervisor.failing() == ["poll-42"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert supervisor.failing() == []


async def test_a_bug_in_a_workers_step_reaches_the_supervisor_with_its_traceback() -> None:
    supervisor = Supervisor(base=0.001, cap=0.001)
    steps = 0
    restarted = asyncio.Event()

    async def step() -> int:
        nonlocal steps
        steps += 1
        if steps == 2:
            restarted.set()
        raise KeyError("a bug")

    worker = PeriodicWorker("callbacks", step, idle=3600)
    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.supervise("callbacks", worker.run))
        await asyncio.wait_for(restarted.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    died = next(line for line in logs if line["log_level"] == "error")
    assert died["event"] == "background task died; restarting" and died["task"] == "callbacks"
    assert isinstance(died["exc_info"], KeyError)
    assert [line for line in logs if line["event"] == "worker step failed"] == []


async def test_a_store_outage_in_a_workers_step_is_a_warning_and_the_worker_goes_on() -> None:
    wakeup = Wakeup()
    steps = 0
    second = asyncio.Event()

    async def step() -> int:
        nonlocal steps
        steps += 1
        if steps == 1:
            raise StoreUnavailable("connection refused")
        second.set()
        return 0

    worker = PeriodicWorker("refunds", step, idle=3600, wakeup=wakeup)
    with capture_logs() as logs:
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.01)
        wakeup.wake()  # the service that wrote work wakes the worker past its idle wait
        await asyncio.wait_for(second.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [(line["event"], line["log_level"]) for line in logs] == [
        ("worker step failed", "warning")
    ]
    assert "exc_info" not in logs[0] and task.cancelled()
