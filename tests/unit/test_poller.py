"""BotPoller on an in-memory Telegram port: a webhook set behind portex-pay's back (getUpdates'
409 "webhook is active") is deleted and polling goes on at once; other refusals wait. A poller
that dies is supervised like every background task."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, cast

import pytest
import structlog

from portex_pay.domain.application import Application, Bot
from portex_pay.domain.telegram import TelegramApiError, TelegramNetworkError
from portex_pay.service.polling import BotPoller, PollerManager
from portex_pay.service.worker import Supervisor
from tests.unit.fakes import FakeTelegram

BOT = Bot(42, "42:secret-secret-secret-secret-secret")
WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
    "delete the webhook first"
)


class PollingTelegram(FakeTelegram):
    def __init__(self, poll_error: Exception, delete_error: Exception | None = None) -> None:
        super().__init__()
        self.poll_error = poll_error
        self.delete_error = delete_error
        self.deleted = 0

    async def get_updates(
        self, bot: Bot, *, offset: int, timeout: int, allowed_updates: Sequence[str]
    ) -> list[Any]:
        raise self.poll_error

    async def delete_webhook(self, bot: Bot) -> None:
        self.deleted += 1
        if self.delete_error is not None:
            raise self.delete_error


async def finishes_at_once(poll: Coroutine[Any, Any, None]) -> bool:
    """Whether the poll returned at once (False: it is waiting before the next one)."""
    try:
        await asyncio.wait_for(poll, 0.3)
    except TimeoutError:
        return False
    return True


def poller(telegram: FakeTelegram) -> BotPoller:
    application = Application(uuid.uuid4(), "shop", bot=BOT)
    return BotPoller(
        application,
        cast(Any, None),  # the lease is not touched by a refused poll
        telegram,
        cast(Any, None),  # nor the processor
        poll_timeout=1,
        lease_seconds=3.0,
    )


async def test_an_active_webhook_is_deleted_and_the_next_poll_comes_at_once() -> None:
    telegram = PollingTelegram(TelegramApiError("getUpdates", 409, WEBHOOK_ACTIVE))
    with structlog.testing.capture_logs() as logs:
        assert await finishes_at_once(poller(telegram)._poll_once(BOT, 0, ["message"]))
    assert telegram.deleted == 1
    assert [(e["event"], e["log_level"], e["bot_id"]) for e in logs] == [
        ("webhook set behind portex-pay's back: deleted", "warning", BOT.id)
    ]


async def test_a_failed_deletion_waits_before_the_next_poll() -> None:
    telegram = PollingTelegram(
        TelegramApiError("getUpdates", 409, WEBHOOK_ACTIVE),
        TelegramNetworkError("deleteWebhook", "timed out"),
    )
    with structlog.testing.capture_logs() as logs:
        assert not await finishes_at_once(poller(telegram)._poll_once(BOT, 0, ["message"]))
    assert telegram.deleted == 1
    assert [e["event"] for e in logs] == ["webhook set behind portex-pay's back: not deleted"]


@pytest.mark.parametrize(
    "error",
    [
        TelegramApiError("getUpdates", 409, "Conflict: terminated by other getUpdates request"),
        TelegramApiError("getUpdates", 401, "Unauthorized"),
        TelegramApiError("getUpdates", 429, "Too Many Requests: retry after 7", 7),
    ],
    ids=["other-getUpdates", "unauthorized", "flood"],
)
async def test_other_refusals_delete_nothing_and_wait(error: TelegramApiError) -> None:
    telegram = PollingTelegram(error)
    assert not await finishes_at_once(poller(telegram)._poll_once(BOT, 0, ["message"]))
    assert telegram.deleted == 0


class Leases:
    """A lease store whose first `acquire` hits a bug (not an outage); later ones hang."""

    owner = "replica-a"

    def __init__(self) -> None:
        self.acquired = 0
        self.again = asyncio.Event()

    async def acquire(self, bot_id: int) -> tuple[int, tuple[str, ...] | None] | None:
        self.acquired += 1
        if self.acquired == 1:
            raise KeyError("a bug")
        self.again.set()
        await asyncio.Event().wait()
        return None

    async def advance(self, bot_id: int, next_offset: int) -> bool:
        return True

    async def release(self, bot_id: int) -> None:
        return None


class PollingApplications:
    def __init__(self, *applications: Application) -> None:
        self.applications = list(applications)

    async def with_bots(self) -> list[Application]:
        return self.applications


async def test_a_poller_that_dies_is_logged_and_restarted_under_the_supervisor() -> None:
    application = Application(uuid.uuid4(), "shop", bot=BOT, updates_mode="polling")
    leases = Leases()
    supervisor = Supervisor(base=0.001, cap=0.001, max_restarts=1, window=60.0)
    manager = PollerManager(
        cast(Any, PollingApplications(application)),
        lambda app: BotPoller(
            app, leases, FakeTelegram(), cast(Any, None), poll_timeout=1, lease_seconds=3.0
        ),
        supervisor,
        default_mode="webhook",
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(manager.run())
        await asyncio.wait_for(leases.again.wait(), 5)
        assert supervisor.failing() == [f"poll-{BOT.id}"]  # counted like every other task
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [died] = [line for line in logs if line["log_level"] == "error" and "exc_info" in line]
    assert died["event"] == "background task died; restarting"
    assert died["task"] == f"poll-{BOT.id}" and isinstance(died["exc_info"], KeyError)
    assert supervisor.failing() == []  # stopped with the manager
