"""Reconciliation: payments Telegram made that we never heard about.

Telegram keeps undelivered updates for 24 hours only, so a long webhook outage can lose a
successful_payment. getStarTransactions lists the bot's Star transactions; for an incoming payment
`StarTransaction.id` is the `telegram_payment_charge_id` (Bot API, StarTransaction). Each incoming
invoice payment goes through the same path as a successful_payment update, where the charge id's
unique key makes any payment we already have a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from portex_pay.domain.application import Application
from portex_pay.domain.updates import MalformedUpdate, parse_star_transaction, storable
from portex_pay.service.ports import TelegramBot
from portex_pay.service.updates import UpdateProcessor

log = structlog.get_logger(__name__)

_PAGE = 100  # getStarTransactions' largest limit


@dataclass
class ReconcileReport:
    transactions: int = 0
    payments: int = 0
    recorded: int = 0
    already_known: int = 0
    malformed: int = 0


async def reconcile(
    application: Application, bot_api: TelegramBot, processor: UpdateProcessor
) -> ReconcileReport:
    bot = application.require_bot()
    report = ReconcileReport()
    offset = 0
    while True:
        transactions = await bot_api.get_star_transactions(bot, offset=offset, limit=_PAGE)
        if not transactions:
            return report
        offset += len(transactions)
        report.transactions += len(transactions)
        for transaction in transactions:
            try:
                payment = parse_star_transaction(transaction)
            except MalformedUpdate as error:
                report.malformed += 1
                log.warning("star transaction not usable", error=str(error))
                continue
            if payment is None:
                continue
            report.payments += 1
            result = await processor.successful_payment(
                application, payment, raw={"reconciled_transaction": storable(transaction)}
            )
            if result.outcome is None:
                report.already_known += 1
            else:
                report.recorded += 1
