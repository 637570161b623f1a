"""Long polling (getUpdates): for development and where no public URL exists.

A `PollerManager` per process watches the applications whose bots receive updates by polling and
runs one `BotPoller` task per bot. Each poller polls only while it holds the bot's lease in
PostgreSQL (adapters/postgres/polling.py), so exactly one replica consumes a bot's updates and
another takes over when the holder dies. An update is confirmed to Telegram (by the next
getUpdates offset) only after it has been processed.

Each poller runs under the process's supervisor (service/worker.py), like every background task:
a poller that dies of a bug is logged with its traceback and started again after a backoff, and
one that keeps dying turns health NOT_SERVING. A store or network outage is a warning, retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from portex_pay.domain.application import Application, Bot
from portex_pay.domain.pay import INT64_MAX
from portex_pay.domain.relay import telegram_allowed_updates
from portex_pay.domain.retry import backoff_seconds
from portex_pay.domain.telegram import TelegramApiError, TelegramError, TelegramNetworkError
from portex_pay.domain.updates import update_id_of
from portex_pay.service.outage import is_unavailable
from portex_pay.service.ports import Applications, PollLeases, TelegramBot
from portex_pay.service.updates import UpdateProcessor, UpdateRetry
from portex_pay.service.worker import PerBotJobs, Supervisor

log = structlog.get_logger(__name__)

# Backoff after an update failed for a transient reason: 0.5 s, 1 s, 2 s, ... at most 30 s.
_RETRY_BASE = 0.5
_RETRY_CAP = 30.0


def updates_mode(application: Application, default: str) -> str:
    return application.updates_mode or default


class BotPoller:
    def __init__(
        self,
        application: Application,
        leases: PollLeases,
        bot_api: TelegramBot,
        processor: UpdateProcessor,
        *,
        poll_timeout: int,
        lease_seconds: float,
    ) -> None:
        self.application = application
        self._leases = leases
        self._bot_api = bot_api
        self._processor = processor
        self._poll_timeout = poll_timeout
        self._lease_seconds = lease_seconds
        self.polls = 0  # getUpdates calls made (observability; tests check who consumes)
        self._failures = 0  # consecutive transient failures, for the backoff

    async def run(self) -> None:
        bot = self.application.require_bot()
        bot_id = bot.id
        structlog.contextvars.bind_contextvars(worker="poller", bot_id=bot_id)
        holding = False
        try:
            while True:
                try:
                    lease = await self._leases.acquire(bot_id)
                except Exception as error:
                    if not is_unavailable(error):
                        raise  # a bug: the supervisor logs it and starts the poller again
                    log.warning("poll lease unavailable", bot_id=bot_id, error=repr(error))
                    lease = None
                if lease is None:
                    holding = False
                    await asyncio.sleep(self._lease_seconds / 3)
                    continue
                if not holding:
                    holding = True
                    log.info("polling", bot_id=bot_id, owner=self._leases.owner)
                    # getUpdates does not work while a webhook is set (Bot API, getUpdates).
                    with contextlib.suppress(TelegramError):
                        await self._bot_api.delete_webhook(bot)
                offset, relay_allowed = lease
                try:
                    # Telegram sends what portex-pay and the app's own bot (relay) both need.
                    await self._poll_once(bot, offset, telegram_allowed_updates(relay_allowed))
                except Exception as error:
                    if not is_unavailable(error):
                        raise
                    # Storing the offset failed (database down): the batch comes again and its
                    # updates, already processed, change nothing the second time.
                    log.warning("poll failed", bot_id=bot_id, error=repr(error))
                    await asyncio.sleep(1.0)
        finally:
            if holding:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._leases.release(bot_id))

    async def _delete_webhook(self, bot: Bot) -> None:
        """Deletes a webhook set behind portex-pay's back; the next poll comes at once (after a
        pause when the deletion failed, so that a failing Telegram is not hammered)."""
        try:
            await self._bot_api.delete_webhook(bot)
        except TelegramError as error:
            log.warning(
                "webhook set behind portex-pay's back: not deleted", bot_id=bot.id, error=str(error)
            )
            await asyncio.sleep(1.0)
            return
        log.warning("webhook set behind portex-pay's back: deleted", bot_id=bot.id)

    async def _poll_once(self, bot: Bot, offset: int, allowed_updates: list[str]) -> None:
        bot_id = bot.id
        self.polls += 1
        try:
            updates = await self._bot_api.get_updates(
                bot, offset=offset, timeout=self._poll_timeout, allowed_updates=allowed_updates
            )
        except TelegramApiError as error:
            if _webhook_active(error):
                # Someone set a webhook with the bot's token (portex-pay deleted any when it took
                # the lease): Telegram would answer every poll 409 until it is gone.
                await self._delete_webhook(bot)
                return
            log.warning("getUpdates refused", bot_id=bot_id, error=str(error))
            await asyncio.sleep(float(error.retry_after or 1))
            return
        except TelegramNetworkError as error:
            log.warning("getUpdates failed", bot_id=bot_id, error=error.reason)
            await asyncio.sleep(1.0)
            return
        next_offset = offset
        for update in updates:
            try:
                await self._processor.handle(self.application, update)
            except UpdateRetry:
                # Not confirmed: it comes again on the next call, after a backoff (a database
                # outage must not turn into a busy loop). Updates after it wait: per bot, Telegram
                # updates are processed in order.
                self._failures += 1
                await asyncio.sleep(
                    backoff_seconds(self._failures, base=_RETRY_BASE, cap=_RETRY_CAP)
                )
                break
            self._failures = 0
            # Handled or dead-lettered: confirmed. An update without a usable id cannot move
            # the offset (Telegram always sends one).
            update_id = update_id_of(update)
            if update_id is not None and update_id < INT64_MAX:
                next_offset = max(next_offset, update_id + 1)
        if next_offset != offset and not await self._leases.advance(bot_id, next_offset):
            log.warning("poll lease lost", bot_id=bot_id)


def _webhook_active(error: TelegramApiError) -> bool:
    """getUpdates' 409 while a webhook is set (Telegram: "Conflict: can't use getUpdates method
    while webhook is active; use deleteWebhook to delete the webhook first")."""
    return error.error_code == 409 and "webhook is active" in error.description.lower()


class PollerManager(PerBotJobs[BotPoller]):
    """Keeps one poller task per polling bot, following changes to the applications; each runs
    under `supervisor` as `poll-<bot id>`."""

    def __init__(
        self,
        applications: Applications,
        make_poller: Callable[[Application], BotPoller],
        supervisor: Supervisor,
        *,
        default_mode: str,
        refresh: float = 5.0,
    ) -> None:
        super().__init__(
            applications,
            lambda app: updates_mode(app, default_mode) == "polling",
            make_poller,
            supervisor,
            prefix="poll",
            refresh=refresh,
        )

    @property
    def pollers(self) -> dict[int, BotPoller]:
        return self.workers
