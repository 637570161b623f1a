"""Background tasks are supervised: a death is logged loudly and the task starts again after a
backoff; cancellation (shutdown) ends it."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from portex_pay.service.worker import supervise


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
        task = asyncio.create_task(supervise("flaky", flaky, base=0.01, cap=0.02))
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
        task = asyncio.create_task(supervise("dies", dies, base=0.001, cap=0.004))
        await asyncio.wait_for(fourth.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    delays = [line["restart_in"] for line in logs[:4]]
    assert delays == [0.001, 0.002, 0.004, 0.004]
