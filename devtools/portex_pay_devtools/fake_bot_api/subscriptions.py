"""Telegram Stars subscriptions (Bot API 8.0; the `subscription` update since Bot API 10.2): a
link made by createInvoiceLink with `subscription_period` starts one when paid (users.py), and
from then on the test plays Telegram's clock and the user: `renew_subscription` charges the next
period now (no waiting 30 days), or fails it when the user's Stars run short (`set_user_stars`);
`cancel_subscription` and `reactivate_subscription` are the user's own buttons. Each user action
reaches the bot as a `subscription` update (BotSubscriptionUpdated: `user`, `invoice_payload`,
`state` = "canceled" | "active" | "failed"), filtered by allowed_updates like any other kind.

The bot's side is editUserStarSubscription(user_id, telegram_payment_charge_id, is_canceled),
where the first payment's charge id names the subscription. As the Bot API documents it,
is_canceled=true stops the renewals (the subscription stays paid to the end of its period) and
keeps the user from re-enabling it; is_canceled=false only lifts the bot's cancellation (the Bot
API: "allow the user to re-enable a subscription that was previously canceled by the bot"; the
MTProto method behind it, payments.botCancelStarsSubscription with `restore`, "partially undo[es]"
the cancellation). The bot's own calls bring it no `subscription` update.

Where Telegram's behaviour is unknown the fake decides, and says so: a renewal of a canceled
subscription is refused (ValueError) unless the test forces it (`force=True` plays a charge that
was already under way); errors of editUserStarSubscription are the MTProto method's
(CHARGE_ID_INVALID, USER_ID_INVALID).
"""

from __future__ import annotations

import copy
import secrets
import time
from typing import Any, Final

from portex_pay_devtools.fake_bot_api.delivery import _Delivery
from portex_pay_devtools.fake_bot_api.errors import _bad_request
from portex_pay_devtools.fake_bot_api.model import (
    STARS_CURRENCY,
    Charge,
    Invoice,
    Renewal,
    Subscription,
    _Bot,
)
from portex_pay_devtools.fake_bot_api.star_ledger import _StarLedger
from portex_pay_devtools.fake_bot_api.wire import _Args

# payments.botCancelStarsSubscription's documented errors, as the Bot API server passes them on.
_CHARGE_ID_INVALID: Final = "CHARGE_ID_INVALID"
_USER_ID_INVALID: Final = "USER_ID_INVALID"


class _Subscriptions(_StarLedger, _Delivery):
    """The subscriptions, their renewals, the user's buttons and editUserStarSubscription."""

    # ------------------------------------------------------------------ what tests read and do

    def subscriptions(self, token: str) -> list[Subscription]:
        """The bot's subscriptions, oldest first (copies)."""
        bot = self._bot_for(token)
        return [copy.deepcopy(s) for s in self._subscriptions.values() if s.bot_id == bot.id]

    def set_user_stars(self, user_id: int, stars: int | None) -> None:
        """Gives the user a Star balance that payments and renewals spend (one dearer than it
        fails); None forgets it: the user never runs short again (the default)."""
        if stars is None:
            self._user_stars.pop(user_id, None)
            return
        if stars < 0:
            raise ValueError("stars must not be negative")
        self._user_stars[user_id] = stars

    def user_stars(self, user_id: int) -> int | None:
        return self._user_stars.get(user_id)

    async def renew_subscription(
        self, token: str, telegram_payment_charge_id: str, *, force: bool = False
    ) -> Renewal:
        """Telegram charges the next period now. Paid: a new charge (a new
        telegram_payment_charge_id, its Star transaction with `subscription_period`) and a
        `successful_payment` with `is_recurring` (no `is_first_recurring`), the FIRST invoice's
        payload and the expiration date one period further. Short of Stars: no charge, a
        `subscription` update with state "failed". A canceled subscription is not renewed
        (ValueError) unless `force`. Deliver it twice with `redeliver(renewal.update_id)`."""
        bot = self._bot_for(token)
        subscription = self._subscription_of(bot, telegram_payment_charge_id)
        if subscription.canceled and not force:
            raise ValueError("the subscription is canceled: Telegram does not renew it")
        balance = self._user_stars.get(subscription.user_id)
        if balance is not None and balance < subscription.amount:
            update_id = self._subscription_update(bot, subscription, "failed")
            return Renewal(False, None, subscription.expiration_date, update_id)
        if balance is not None:
            self._user_stars[subscription.user_id] = balance - subscription.amount
        subscription.expiration_date += subscription.period
        charge = self._new_charge(bot, subscription)
        successful_payment: dict[str, Any] = {
            "currency": charge.currency,
            "total_amount": charge.total_amount,
            "invoice_payload": charge.invoice_payload,
            "subscription_expiration_date": subscription.expiration_date,
            "is_recurring": True,
            "telegram_payment_charge_id": charge.telegram_payment_charge_id,
            "provider_payment_charge_id": charge.provider_payment_charge_id,
        }
        message = self._message(bot, subscription.user_id, successful_payment=successful_payment)
        update_id = self._enqueue(bot, {"message": message})
        return Renewal(
            True, charge.telegram_payment_charge_id, subscription.expiration_date, update_id
        )

    async def cancel_subscription(self, token: str, telegram_payment_charge_id: str) -> int | None:
        """The user cancels in their app: no further renewals, a `subscription` update with
        state "canceled" (its update id, or None when allowed_updates leave it out). Canceling a
        canceled subscription changes nothing and sends nothing."""
        bot = self._bot_for(token)
        subscription = self._subscription_of(bot, telegram_payment_charge_id)
        if subscription.canceled_by_user:
            return None
        subscription.canceled_by_user = True
        return self._subscription_update(bot, subscription, "canceled")

    async def reactivate_subscription(
        self, token: str, telegram_payment_charge_id: str
    ) -> int | None:
        """The user re-enables a subscription they canceled: renewals go on, a `subscription`
        update with state "active". ValueError while the bot's cancellation stands (Telegram
        keeps the user from re-enabling it); an active subscription changes nothing."""
        bot = self._bot_for(token)
        subscription = self._subscription_of(bot, telegram_payment_charge_id)
        if subscription.canceled_by_bot:
            raise ValueError("the bot canceled the subscription: the user cannot re-enable it")
        if not subscription.canceled_by_user:
            return None
        subscription.canceled_by_user = False
        return self._subscription_update(bot, subscription, "active")

    # ------------------------------------------------------------- what payments and methods use

    def _start_subscription(self, bot: _Bot, invoice: Invoice, charge: Charge) -> None:
        """The first payment of a subscription link starts a subscription (users.py); a user may
        hold several, also of the same link."""
        assert invoice.subscription_period is not None and charge.subscription_expiration_date
        self._subscriptions[charge.telegram_payment_charge_id] = Subscription(
            telegram_payment_charge_id=charge.telegram_payment_charge_id,
            bot_id=bot.id,
            user_id=charge.user_id,
            invoice_payload=charge.invoice_payload,
            invoice_link=invoice.link,
            amount=charge.total_amount,
            period=invoice.subscription_period,
            expiration_date=charge.subscription_expiration_date,
            charge_ids=[charge.telegram_payment_charge_id],
        )

    def _subscription_of(self, bot: _Bot, charge_id: str) -> Subscription:
        subscription = self._subscriptions.get(charge_id)
        if subscription is None or subscription.bot_id != bot.id:
            raise LookupError("no subscription with that first charge id")
        return subscription

    def _new_charge(self, bot: _Bot, subscription: Subscription) -> Charge:
        charge = Charge(
            telegram_payment_charge_id=f"stx{secrets.token_urlsafe(24)}",
            provider_payment_charge_id="",
            bot_id=bot.id,
            user_id=subscription.user_id,
            currency=STARS_CURRENCY,
            total_amount=subscription.amount,
            # Bot API: a renewal carries the first invoice's payload.
            invoice_payload=subscription.invoice_payload,
            invoice_link=subscription.invoice_link,
            date=int(time.time()),
            subscription_expiration_date=subscription.expiration_date,
        )
        self._charges[charge.telegram_payment_charge_id] = charge
        subscription.charge_ids.append(charge.telegram_payment_charge_id)
        self._append_payment(bot, charge)
        return charge

    def _subscription_update(self, bot: _Bot, subscription: Subscription, state: str) -> int | None:
        return self._enqueue(
            bot,
            {
                "subscription": {
                    "user": self._user(subscription.user_id),
                    "invoice_payload": subscription.invoice_payload,
                    "state": state,
                }
            },
        )

    async def _edit_user_star_subscription(self, bot: _Bot, args: _Args) -> bool:
        user_id = args.user_id()
        charge_id = args.required("telegram_payment_charge_id")
        is_canceled = args.flag("is_canceled")
        subscription = self._subscriptions.get(charge_id)
        if subscription is None or subscription.bot_id != bot.id:
            # A one-off charge, a renewal's charge (not the first) or no charge at all.
            raise _bad_request(_CHARGE_ID_INVALID)
        if subscription.user_id != user_id:
            raise _bad_request(_USER_ID_INVALID)
        # Idempotent: the same call twice leaves the same state and answers True both times.
        subscription.canceled_by_bot = is_canceled
        return True
