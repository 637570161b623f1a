"""The simulated users: the paying user (pay_invoice, pay_sent_invoice: the pre-checkout query,
its answer window, the charge and successful_payment) and the user who chats with the bot
(send_user_message, send_callback_query)."""

from __future__ import annotations

import asyncio
import copy
import secrets
import time
from typing import Any

from portex_pay_devtools.fake_bot_api.content import _bot_command_entities
from portex_pay_devtools.fake_bot_api.model import (
    MAX_MESSAGE_LENGTH,
    PRE_CHECKOUT_ANSWER_WINDOW,
    STARS_CURRENCY,
    Charge,
    Invoice,
    PaymentOutcome,
    _Bot,
    _PreCheckout,
)
from portex_pay_devtools.fake_bot_api.subscriptions import _Subscriptions


class _Users(_Subscriptions):
    """What the users do; each action becomes an update for the bot."""

    # ------------------------------------------------------------------ the paying user

    async def pay_invoice(
        self,
        link: str,
        user_id: int,
        *,
        total_amount: int | None = None,
        invoice_payload: str | None = None,
        currency: str = STARS_CURRENCY,
        answer_timeout: float = PRE_CHECKOUT_ANSWER_WINDOW,
    ) -> PaymentOutcome:
        """Pays `link` as `user_id`: sends the pre_checkout_query (amount, payload and currency
        come from the invoice unless overridden, so tests can tamper with them), waits for
        answerPreCheckoutQuery, and on approval charges the user and sends successful_payment.
        A user whose Star balance is set (set_user_stars) and short of the amount cannot pay:
        no pre-checkout query, an outcome not approved ("not enough Stars"); a payment spends it.

        `answer_timeout` is the answer window: Telegram's is 10 s (after that the payment is
        cancelled and a late answer gets "query is too old"); tests shorten it.
        """
        return await self._pay(
            self._find_invoice(link),
            user_id,
            total_amount=total_amount,
            invoice_payload=invoice_payload,
            currency=currency,
            answer_timeout=answer_timeout,
        )

    async def pay_sent_invoice(
        self,
        token: str,
        chat_id: int,
        message_id: int,
        *,
        total_amount: int | None = None,
        invoice_payload: str | None = None,
        currency: str = STARS_CURRENCY,
        answer_timeout: float = PRE_CHECKOUT_ANSWER_WINDOW,
    ) -> PaymentOutcome:
        """Pays the invoice message `message_id` the bot sent with sendInvoice to the private chat
        `chat_id`, as that chat's user; otherwise as `pay_invoice`. An invoice message is paid at
        most once (then Telegram shows a receipt instead of the Pay button): paying it again is a
        ValueError; a declined or unanswered attempt leaves it payable."""
        bot = self._bot_for(token)
        invoice = self._sent_invoices.get((bot.id, chat_id, message_id))
        if invoice is None:
            raise LookupError(f"no invoice message {message_id} in chat {chat_id}")
        if invoice.paid:
            raise ValueError("the invoice message is already paid")
        return await self._pay(
            invoice,
            chat_id,
            total_amount=total_amount,
            invoice_payload=invoice_payload,
            currency=currency,
            answer_timeout=answer_timeout,
        )

    async def _pay(
        self,
        invoice: Invoice,
        user_id: int,
        *,
        total_amount: int | None,
        invoice_payload: str | None,
        currency: str,
        answer_timeout: float,
    ) -> PaymentOutcome:
        if answer_timeout <= 0:
            raise ValueError("answer_timeout must be positive")
        bot = self._bots_by_id[invoice.bot_id]
        amount = invoice.amount if total_amount is None else total_amount
        balance = self._user_stars.get(user_id)
        if balance is not None and balance < amount:
            # Telegram checks the balance before it asks the bot: the user is offered to buy
            # Stars, the bot hears nothing, and a Mini App's openInvoice closes as "failed".
            return PaymentOutcome(False, "not enough Stars", False, None, None)
        # Paying opens the private chat: the bot gets successful_payment there and may answer.
        bot.chats.add(user_id)
        loop = asyncio.get_running_loop()
        # Telegram's pre-checkout query ids are decimal strings of a 64-bit number.
        query_id = str(secrets.randbits(63))
        sent_at = time.monotonic()
        query = _PreCheckout(
            id=query_id,
            bot_id=bot.id,
            sent_at=sent_at,
            deadline=sent_at + answer_timeout,
            future=loop.create_future(),
        )
        self._queries[query_id] = query
        payload = invoice.payload if invoice_payload is None else invoice_payload
        # PreCheckoutQuery has no chat: id, from, currency, total_amount, invoice_payload.
        self._enqueue(
            bot,
            {
                "pre_checkout_query": {
                    "id": query_id,
                    "from": self._user(user_id),
                    "currency": currency,
                    "total_amount": amount,
                    "invoice_payload": payload,
                }
            },
        )
        # asyncio.wait leaves the future alone on timeout, so an answer that raced the deadline
        # is still seen below instead of being lost.
        await asyncio.wait({query.future}, timeout=answer_timeout)
        if not query.future.done() or query.future.cancelled():
            query.expired = True
            return PaymentOutcome(False, None, False, None, None)
        ok, error_message, answered_at = query.future.result()
        latency = answered_at - sent_at
        if not ok:
            return PaymentOutcome(False, error_message, True, latency, None)
        if invoice.paid:
            # Two payments of one invoice message raced; the first one won.
            return PaymentOutcome(False, None, True, latency, None)
        if invoice.message_id is not None:
            invoice.paid = True
        if balance is not None:
            self._user_stars[user_id] = self._user_stars.get(user_id, balance) - amount
        charge = self._charge(bot, invoice, user_id, amount, payload, currency)
        successful_payment: dict[str, Any] = {
            "currency": currency,
            "total_amount": amount,
            "invoice_payload": payload,
            "telegram_payment_charge_id": charge.telegram_payment_charge_id,
            "provider_payment_charge_id": charge.provider_payment_charge_id,
        }
        if charge.subscription_expiration_date is not None:
            # The first period of a subscription: renewals follow (subscriptions.py).
            self._start_subscription(bot, invoice, charge)
            successful_payment["subscription_expiration_date"] = charge.subscription_expiration_date
            successful_payment["is_recurring"] = True
            successful_payment["is_first_recurring"] = True
        self._enqueue(
            bot, {"message": self._message(bot, user_id, successful_payment=successful_payment)}
        )
        return PaymentOutcome(True, None, True, latency, charge.telegram_payment_charge_id)

    def _find_invoice(self, link: str) -> Invoice:
        slug = link.rsplit("$", 1)[-1]
        invoice = self._invoices.get(slug)
        if invoice is None:
            raise LookupError("unknown invoice link")
        return invoice

    def _charge(
        self, bot: _Bot, invoice: Invoice, user_id: int, amount: int, payload: str, currency: str
    ) -> Charge:
        now = int(time.time())
        charge = Charge(
            telegram_payment_charge_id=f"stx{secrets.token_urlsafe(24)}",
            # Stars payments have no payment provider, hence no provider charge id.
            provider_payment_charge_id="",
            bot_id=bot.id,
            user_id=user_id,
            currency=currency,
            total_amount=amount,
            invoice_payload=payload,
            invoice_link=invoice.link,
            date=now,
            subscription_expiration_date=(
                now + invoice.subscription_period if invoice.subscription_period else None
            ),
        )
        self._charges[charge.telegram_payment_charge_id] = charge
        self._append_payment(bot, charge)
        return charge

    # ------------------------------------------------------------- the chatting user

    async def send_user_message(
        self, token: str, user_id: int, text: str, *, first_name: str | None = None
    ) -> int | None:
        """The user `user_id` writes `text` to the bot in their private chat: queues a `message`
        update (with bot_command entities, as Telegram's apps mark "/start" and the like) for the
        webhook or getUpdates, and lets the bot write to that chat from now on. `first_name`
        renames the user (default "User {user_id}") in this and later updates. Returns the update
        id, or None when the bot's allowed_updates leave messages out."""
        if user_id <= 0:
            raise ValueError("user_id must be positive")
        if not text.strip() or len(text) > MAX_MESSAGE_LENGTH:
            raise ValueError(f"text must be 1-{MAX_MESSAGE_LENGTH} characters, not only spaces")
        if first_name is not None:
            if not first_name.strip():
                raise ValueError("first_name must not be empty")
            self._first_names[user_id] = first_name
        bot = self._bot_for(token)
        bot.chats.add(user_id)
        content: dict[str, Any] = {"text": text}
        entities = _bot_command_entities(text)
        if entities:
            content["entities"] = entities
        return self._enqueue(bot, {"message": self._message(bot, user_id, **content)})

    async def send_callback_query(
        self, token: str, user_id: int, message_id: int, data: str
    ) -> int | None:
        """The user presses the inline button with callback_data `data` under the bot's message
        `message_id` in their private chat: queues a `callback_query` update, which the bot answers
        with answerCallbackQuery. ValueError when no such button is there. Returns the update id
        (None when allowed_updates leave callback queries out)."""
        bot = self._bot_for(token)
        message = bot.messages.get((user_id, message_id))
        if message is None:
            raise LookupError(f"no message {message_id} in chat {user_id}")
        rows = message.get("reply_markup", {}).get("inline_keyboard", [])
        if not any(button.get("callback_data") == data for row in rows for button in row):
            raise ValueError(f"message {message_id} has no button with callback_data {data!r}")
        # Telegram's callback query ids are decimal strings of a 64-bit number; chat_instance is
        # a stable identifier of the chat.
        query = {
            "id": str(secrets.randbits(63)),
            "from": self._user(user_id),
            "message": copy.deepcopy(message),
            "chat_instance": str((bot.id * 1_000_003 + user_id) % (1 << 63)),
            "data": data,
        }
        return self._enqueue(bot, {"callback_query": query})
