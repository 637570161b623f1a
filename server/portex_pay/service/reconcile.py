"""The Star ledger's reader: each bot's getStarTransactions read incrementally, one page a call,
from a checkpoint stored with each page, by one reader per bot across replicas.

Telegram lists a bot's Star transactions oldest first (Bot API, getStarTransactions: "in
chronological order"; `offset`: "Number of transactions to skip"), so the number read so far is
where to read next: the checkpoint. A run (`LedgerReader.catch_up`) claims the bot's lease in
PostgreSQL (refused while another replica reads the bot, or when it was read less than an
interval ago), then, with no connection held, asks for a page at the checkpoint (limit 100, the
largest) and hands it to the ledger, which stores it, its new checkpoint and what it settles in
one transaction (service/star_ledger.py). A full page is followed at once by the next; the page
that comes back short (caught up) ends the run and releases the lease. A crash re-reads at most
one page, which stores nothing twice. Withdrawals still pending when stored are read again (one
more call a run, while there are any), as Fragment settles them later in place.

Updates are kept by Telegram for 24 hours only, so this list is how a payment whose update never
reached us is found. `BotLedgerJob` runs a catch-up every PORTEX_LEDGER_INTERVAL seconds for one
bot, under the supervisor (a job per bot, service/worker.py PerBotJobs); `portex-pay admin
reconcile` runs one at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog

from portex_pay.domain.application import Application, Bot
from portex_pay.domain.star_ledger import PAGE_LIMIT, LedgerClaim
from portex_pay.domain.telegram import TelegramApiError, TelegramError
from portex_pay.service.outage import is_unavailable
from portex_pay.service.ports import StarLedgerStore, TelegramBot
from portex_pay.service.star_ledger import PageReport, StarLedger

log = structlog.get_logger(__name__)

# A bot read less than this share of the interval ago is left alone: the replicas share the
# reading, one run an interval, and the margin absorbs their clocks and timers.
_RECENT = 0.9
# After a failed run (Telegram or PostgreSQL away), the next comes this soon at most.
_RETRY_CAP = 30.0


@dataclass
class ReconcileReport(PageReport):
    """What one catch-up run did."""

    start: int = 0  # the checkpoint it read from
    checkpoint: int = 0  # the checkpoint it left
    pages: int = 0  # getStarTransactions calls
    withdrawals_updated: int = 0  # stored withdrawals Fragment settled since
    lease_lost: bool = False  # another reader took over mid-run
    error: str | None = None  # Telegram failed: the run stopped there
    retry_after: int | None = None  # Telegram's flood control asked to wait this long


class LedgerReader:
    def __init__(
        self,
        ledger: StarLedger,
        store: StarLedgerStore,
        bot_api: TelegramBot,
        *,
        interval: float,
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._bot_api = bot_api
        self._interval = interval

    @property
    def owner(self) -> str:
        return self._store.owner

    async def catch_up(
        self, application: Application, *, force: bool = False
    ) -> ReconcileReport | None:
        """Reads the bot's new transactions until caught up; None when another replica reads
        the bot now or (unless `force`) read it less than an interval ago. Telegram's failures
        end the run early (`error`); the next run goes on from the checkpoint."""
        bot = application.require_bot()
        claim = await self._store.claim(bot.id, min_age=0.0 if force else self._interval * _RECENT)
        if claim is None:
            return None
        report = ReconcileReport(start=claim.checkpoint, checkpoint=claim.checkpoint)
        held = True
        try:
            held = await self._read_new(application, bot, claim, report)
            if held and claim.pending_from is not None:
                page = await self._page(bot, claim.pending_from, report)
                report.withdrawals_updated = await self._ledger.refresh_withdrawals(bot, page)
                held = False  # released with the refresh
        except TelegramError as error:
            report.error = str(error)
            if isinstance(error, TelegramApiError):
                report.retry_after = error.retry_after
        finally:
            if held:
                # Not caught up: another replica (or the next run) goes on from the checkpoint.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._store.release(bot.id))
        return report

    async def _page(self, bot: Bot, offset: int, report: ReconcileReport) -> list[object]:
        report.pages += 1
        return await self._bot_api.get_star_transactions(bot, offset=offset, limit=PAGE_LIMIT)

    async def _read_new(
        self, application: Application, bot: Bot, claim: LedgerClaim, report: ReconcileReport
    ) -> bool:
        """Pages from the checkpoint until one comes back short; whether the lease is still
        held (kept for the pending withdrawals' read, else released with the last page)."""
        offset = claim.checkpoint
        keep = claim.pending_from is not None
        while True:
            page = await self._page(bot, offset, report)
            last = len(page) < PAGE_LIMIT
            stored = await self._ledger.record_page(
                application, bot, offset, page, release=last and not keep
            )
            if stored is None:
                report.lease_lost = True
                log.warning("star ledger lease lost", bot_id=bot.id, owner=self.owner)
                return False
            report.add(stored)
            offset += len(page)
            report.checkpoint = offset
            if last:
                return keep


class BotLedgerJob:
    """One bot's reader, for the life of the process: a catch-up every `interval` seconds (the
    replicas take turns; a bot never read is read at once)."""

    def __init__(self, application: Application, reader: LedgerReader, *, interval: float) -> None:
        self.application = application
        self._reader = reader
        self._interval = interval
        self.attempts = 0  # catch-ups this replica tried (observability; tests count them)
        self.runs = 0  # catch-ups this replica made (it held the bot's lease)

    async def run(self) -> None:
        bot = self.application.require_bot()
        structlog.contextvars.bind_contextvars(worker="star-ledger", bot_id=bot.id)
        while True:
            delay = self._interval
            self.attempts += 1
            try:
                report = await self._reader.catch_up(self.application)
            except Exception as error:
                if not is_unavailable(error):
                    raise  # a bug: the supervisor logs it and starts the job again
                log.warning("star ledger run failed", bot_id=bot.id, error=repr(error))
                delay = min(self._interval, _RETRY_CAP)
            else:
                if report is not None:
                    self.runs += 1
                    delay = self._after(bot, report)
            await asyncio.sleep(delay)

    def _after(self, bot: Bot, report: ReconcileReport) -> float:
        """Logs the run; the seconds until the next."""
        if report.error is not None:
            log.warning("star ledger run stopped", bot_id=bot.id, error=report.error)
            return min(self._interval, float(report.retry_after or _RETRY_CAP))
        if report.stored or report.withdrawals_updated:
            log.info(
                "star ledger read",
                bot_id=bot.id,
                checkpoint=report.checkpoint,
                stored=report.stored,
                recorded=report.recorded,
                outside_refunds=report.outside_refunds,
                unmatched=report.unmatched,
                withdrawals_updated=report.withdrawals_updated,
            )
        return self._interval
