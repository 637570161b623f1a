"""Subscriptions as callers see them: QueryOrder's periods and charges, and CancelSubscription /
ResumeSubscription through Telegram's editUserStarSubscription.

The Telegram call is made with no database connection held: the order is read, Telegram is
asked, and only then is the change recorded with its event in one unit of work
(Ledger.edit_subscription), which re-reads the order under its lock. Both RPCs are idempotent:
Telegram accepts the same edit again, and a subscription already in the target state records
nothing. A `subscription` update that Telegram sends for our own edit finds the state already
there and records nothing either (domain/subscription.update_target). ResumeSubscription
records no state: Telegram only lets the user re-enable the subscription
(domain/subscription.edit_target), and its `subscription` update tells when they do.
"""

from __future__ import annotations

import structlog

from portex_pay.domain.application import Application
from portex_pay.domain.errors import OrderNotFound, SubscriptionNotEditable
from portex_pay.domain.order import Order
from portex_pay.domain.subscription import (
    SubscriptionCharge,
    edit_refusal,
    edit_target,
)
from portex_pay.domain.telegram import TelegramError, failure_error
from portex_pay.service.ledger import Ledger
from portex_pay.service.ports import Payments, SubscriptionReads, TelegramBot

log = structlog.get_logger(__name__)


class SubscriptionService:
    def __init__(self, orders: SubscriptionReads, payments: Payments, bot_api: TelegramBot) -> None:
        self._orders = orders
        self._ledger = Ledger(payments)
        self._bot_api = bot_api

    async def charges(self, application: Application, order: Order) -> list[SubscriptionCharge]:
        """The order's period charges (none for a one-off order)."""
        if order.subscription_period is None:
            return []
        return await self._orders.subscription_charges(application.id, order.tg_payment_id)

    async def edit(
        self, application: Application, tg_payment_id: int, *, cancel: bool
    ) -> tuple[Order, list[SubscriptionCharge]]:
        """CancelSubscription (`cancel`) or ResumeSubscription: Telegram is asked first, then
        the state is recorded with its event; the order after, with its charges."""
        order = None
        if tg_payment_id > 0:
            order = await self._orders.get(application.id, tg_payment_id)
        if order is None:
            raise OrderNotFound(f"order {tg_payment_id} not found")
        refusal = edit_refusal(order.subscription_period, order.subscription_state)
        if refusal is not None:
            raise SubscriptionNotEditable(
                f"order {tg_payment_id}: {refusal.value.lower().replace('_', ' ')}",
                reason=refusal.value,
            )
        assert order.subscription_state is not None
        assert order.telegram_payment_charge_id is not None, "a started subscription was paid"
        bot = application.require_bot()
        try:
            # The first payment's charge id names the subscription (Bot API).
            await self._bot_api.edit_user_star_subscription(
                bot.token, order.tg_use_id, order.telegram_payment_charge_id, is_canceled=cancel
            )
        except TelegramError as error:
            raise failure_error(error, "Telegram refused editUserStarSubscription") from None
        target = edit_target(order.subscription_state, cancel)
        if target is not None:
            changed = await self._ledger.edit_subscription(application.id, tg_payment_id, target)
            order = changed if changed is not None else order
            log.info(
                "subscription edited",
                tg_payment_id=tg_payment_id,
                subscription_state=order.subscription_state,
            )
        return order, await self.charges(application, order)
