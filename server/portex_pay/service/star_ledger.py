"""The Star ledger's use cases: a page of getStarTransactions stored with everything it settles,
in one unit of work, and the reads (ListStarTransactions, GetStarBalance).

Telegram's word is the truth about the money, so each new transaction is reconciled with what we
hold, through the same ledger functions the updates use (service/ledger.py):

- an incoming invoice payment whose payload is one of ours is the successful_payment it stands
  for (`record_charge`): a charge no update brought pays its order, and one we have already
  changes nothing (the charge id's unique key);
- an outgoing refund of one of the application's charges settles it as a refunded_payment update
  would (`settle`); when we had no refund of that charge on record, it was made outside
  portex-pay and is recorded as such (reason `outside`);
- a payment or refund that matches nothing of ours (a forged or foreign payload, a refund of a
  charge we never had) is kept as `unmatched` and announced (`ledger.unmatched`);
- withdrawals, ads, API fees, commissions and kinds newer than this code are kept (`none`).

The page, its checkpoint, the charges, refunds and orders it settles and their events commit
together (service/ports.py, rule 1), so a crash re-reads at most that page and stores nothing
twice. No connection is held while Telegram is called: the reader (service/reconcile.py) calls,
then hands the page here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from portex_pay.domain.application import Application, Bot
from portex_pay.domain.errors import FieldViolation, InvalidArgument
from portex_pay.domain.events import EventType
from portex_pay.domain.paging import decode_page_token, encode_page_token
from portex_pay.domain.pay import PayloadKeys
from portex_pay.domain.star_ledger import (
    LedgerEntry,
    Match,
    Role,
    StarBalance,
    StarTransaction,
    StarTransactionQuery,
    Unreadable,
    read_star_transaction,
)
from portex_pay.domain.telegram import TelegramError, failure_error
from portex_pay.domain.text import single_line_problem
from portex_pay.domain.updates import verify_payload
from portex_pay.logging import RateLimitedWarnings
from portex_pay.service.clock import Clock
from portex_pay.service.ledger import record_charge, settle
from portex_pay.service.ports import StarLedgerStore, StarLedgerTransaction, TelegramBot

log = structlog.get_logger(__name__)

PARTNER_TYPES_MAX = 16  # kinds in one request (Telegram has seven today)
PARTNER_TYPE_MAX_CHARS = 64


@dataclass
class PageReport:
    """What storing pages did (summed over a run by service/reconcile.py)."""

    transactions: int = 0  # listed by Telegram: the checkpoint moved by this many
    stored: int = 0  # new to the ledger
    payments: int = 0  # order payments listed
    recorded: int = 0  # charges recorded here: no update had brought them
    already_known: int = 0  # charges we had already
    refunds: int = 0  # refunds of order payments listed
    outside_refunds: int = 0  # refunds made outside portex-pay, recorded here
    unmatched: int = 0  # new ones that match nothing of ours (announced)
    malformed: int = 0  # listed but unreadable (counted, logged, not stored)
    refund_requested: bool = False  # an auto-refund was queued (the refund worker is woken)

    def add(self, other: PageReport) -> None:
        for name in PageReport.__dataclass_fields__:
            value = getattr(other, name)
            if isinstance(value, bool):
                setattr(self, name, getattr(self, name) or value)
            else:
                setattr(self, name, getattr(self, name) + value)


class StarLedger:
    def __init__(
        self,
        store: StarLedgerStore,
        bot_api: TelegramBot,
        payload_keys: PayloadKeys,
        *,
        auto_refund: bool,
        clock: Clock,
        refund_requested: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._bot_api = bot_api
        self._payload_keys = payload_keys
        self._auto_refund = auto_refund
        self._clock = clock
        self._refund_requested = refund_requested
        # Telegram's garbage in a loop must not flood the log: one line per bot a minute.
        self._warnings = RateLimitedWarnings(log)

    # ---------------------------------------------------------------------- the reader's pages

    async def record_page(
        self, application: Application, bot: Bot, offset: int, page: list[object], *, release: bool
    ) -> PageReport | None:
        """Stores the page read at `offset` with its new checkpoint (and, `release`, the end of
        the run's lease), reconciling each new transaction; None, storing nothing, when the
        reader no longer holds the bot's lease or another reader moved the checkpoint."""
        readings = [read_star_transaction(item) for item in page]
        report = PageReport(transactions=len(page))
        readable = [
            (offset + i, t) for i, t in enumerate(readings) if isinstance(t, StarTransaction)
        ]
        report.malformed = len(page) - len(readable)
        if report.malformed:
            reasons = sorted({t.reason for t in readings if isinstance(t, Unreadable)})
            self._warnings.warn(
                bot.id, "star transactions unreadable", bot_id=bot.id, count=report.malformed,
                reasons=reasons,
            )  # fmt: skip
        checkpoint = offset + len(page)
        if not readable:  # one statement: an idle reader's cost
            moved = await self._store.advance(bot.id, offset, checkpoint, release=release)
            return report if moved else None
        async with self._store.transaction() as tx:
            if not await tx.star_transactions.advance(bot.id, offset, checkpoint, release=release):
                return None
            for position, transaction in readable:
                entry = await self._reconcile(tx, application, bot, transaction, report)
                if not await tx.star_transactions.add(application.id, bot.id, position, entry):
                    continue  # stored before: this page was read again after a crash
                report.stored += 1
                if entry.match is Match.UNMATCHED:
                    report.unmatched += 1
                    await tx.events.add(
                        application.id, None, EventType.LEDGER_UNMATCHED, entry.event_data()
                    )
        if report.unmatched:
            log.warning("star transactions match no order", bot_id=bot.id, count=report.unmatched)
        if report.refund_requested:
            self._refund_requested()
        return report

    async def _reconcile(
        self,
        tx: StarLedgerTransaction,
        application: Application,
        bot: Bot,
        transaction: StarTransaction,
        report: PageReport,
    ) -> LedgerEntry:
        """What the transaction means for our orders, applied in `tx` (idempotent: a page read
        again changes nothing)."""
        role = transaction.role()
        if role is Role.ORDER_PAYMENT:
            report.payments += 1
            return await self._payment(tx, application, bot, transaction, report)
        if role is Role.ORDER_REFUND:
            report.refunds += 1
            return await self._refund(tx, application, bot, transaction, report)
        return LedgerEntry(transaction, Match.NONE)

    async def _payment(
        self,
        tx: StarLedgerTransaction,
        application: Application,
        bot: Bot,
        transaction: StarTransaction,
        report: PageReport,
    ) -> LedgerEntry:
        """An invoice payment: recorded as the successful_payment it stands for when its
        payload is ours; unmatched when not, or when it names no order of the application."""
        payment = transaction.as_payment()
        if payment is None:
            return LedgerEntry(transaction, Match.UNMATCHED)
        signed = verify_payload(self._payload_keys, payment.charge.invoice_payload)
        if signed is None:
            return LedgerEntry(transaction, Match.UNMATCHED)
        record = payment.record(
            bot.id, application.id, signed, {"reconciled_transaction": transaction.raw}
        )
        result = await record_charge(tx, record, auto_refund=self._auto_refund)
        order = result.order
        if result.outcome is None:
            report.already_known += 1
        else:
            report.recorded += 1
            log.info(
                "payment found by the star ledger",
                disposition=result.outcome.disposition,
                tg_payment_id=None if order is None else order.tg_payment_id,
                application_id=str(application.id),
            )
        report.refund_requested |= result.refund_requested
        if order is None:
            return LedgerEntry(transaction, Match.UNMATCHED)
        return LedgerEntry(transaction, Match.PAYMENT, order.tg_payment_id)

    async def _refund(
        self,
        tx: StarLedgerTransaction,
        application: Application,
        bot: Bot,
        transaction: StarTransaction,
        report: PageReport,
    ) -> LedgerEntry:
        """A refund to a user: it settles the application's charge of its id (and the order it
        paid), recorded as made outside portex-pay when we had not asked for it; unmatched when
        the charge is not the application's."""
        # Recorded first, as succeeded, so that the settlement completes nothing twice.
        outside = await tx.star_transactions.record_outside_refund(
            application.id, bot.id, transaction.id
        )
        settled = await settle(tx, application.id, transaction.id)
        if settled is None:
            return LedgerEntry(transaction, Match.UNMATCHED)
        if outside:
            report.outside_refunds += 1
            log.info(
                "refund made outside portex-pay recorded",
                tg_payment_id=settled[0],
                application_id=str(application.id),
            )
        return LedgerEntry(transaction, Match.REFUND, settled[0])

    async def refresh_withdrawals(self, bot: Bot, page: list[object]) -> int:
        """Stores the states of withdrawals read again and ends the run's lease; how many
        changed (a pending withdrawal that Fragment has since settled)."""
        readings = map(read_star_transaction, page)
        transactions = [t for t in readings if isinstance(t, StarTransaction)]
        return await self._store.refresh_withdrawals(bot.id, transactions)

    # ----------------------------------------------------------------------------- the reads

    async def list_transactions(
        self,
        application: Application,
        query: StarTransactionQuery,
        *,
        page_size: int,
        page_token: str,
    ) -> tuple[list[LedgerEntry], str]:
        """A page of the application's bot's transactions, newest first, and the next page's
        token ("" on the last page)."""
        bot = application.require_bot()
        query = checked_query(query)
        filters = {
            "date_start": query.date_start,
            "date_end": query.date_end,
            "partner_types": list(query.partner_types),
        }
        after = None
        if page_token:
            date, transaction_id, direction = decode_page_token(
                page_token, filters, (int, str, str)
            )
            after = (int(date), str(transaction_id), str(direction))
        entries = await self._store.page(application.id, bot.id, query, after, page_size + 1)
        if len(entries) <= page_size:
            return entries, ""
        last = entries[page_size - 1].transaction
        position = (int(last.date.timestamp()), last.id, last.direction.value)
        return entries[:page_size], encode_page_token(position, filters)

    async def balance(self, application: Application) -> StarBalance:
        """Telegram's balance (getMyStarBalance, no connection held meanwhile) and the
        ledger's figures."""
        bot = application.require_bot()
        try:
            telegram = await self._bot_api.get_my_star_balance(bot)
        except TelegramError as error:
            raise failure_error(error, "Telegram refused getMyStarBalance") from None
        figures = await self._store.figures(application.id, bot.id, self._clock())
        return StarBalance(telegram, figures)


def checked_query(query: StarTransactionQuery) -> StarTransactionQuery:
    """The query as listed: its kinds without repeats, in order; INVALID_ARGUMENT naming each bad
    field."""
    violations = []
    start, end = query.date_start, query.date_end
    if start is not None and end is not None and end <= start:
        violations.append(FieldViolation("date_end", "must be after date_start"))
    kinds = tuple(dict.fromkeys(query.partner_types))
    if len(kinds) > PARTNER_TYPES_MAX:
        violations.append(
            FieldViolation("partner_types", f"must name at most {PARTNER_TYPES_MAX} kinds")
        )
    for index, kind in enumerate(query.partner_types):
        problem = single_line_problem(kind)
        if not kind or len(kind) > PARTNER_TYPE_MAX_CHARS:
            problem = f"must be 1-{PARTNER_TYPE_MAX_CHARS} characters"
        if problem is not None:
            violations.append(FieldViolation(f"partner_types[{index}]", problem))
    if violations:
        raise InvalidArgument(violations)
    return StarTransactionQuery(start, end, kinds)
