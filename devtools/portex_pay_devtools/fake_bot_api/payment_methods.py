"""The Bot API methods of Telegram Stars payments: createInvoiceLink (with subscription_period for
a subscription link), sendInvoice, answerPreCheckoutQuery and refundStarPayment (of any charge: a
one-off payment or one period of a subscription); getStarTransactions and getMyStarBalance are in
star_ledger.py, editUserStarSubscription in subscriptions.py."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Final

from portex_pay_devtools.fake_bot_api.content import _message_options
from portex_pay_devtools.fake_bot_api.errors import (
    _QUERY_ID_INVALID,
    _QUERY_TOO_OLD,
    BotApiError,
    _bad_request,
)
from portex_pay_devtools.fake_bot_api.model import (
    MAX_SUBSCRIPTION_PRICE,
    STARS_CURRENCY,
    SUBSCRIPTION_PERIOD,
    Invoice,
    _Bot,
)
from portex_pay_devtools.fake_bot_api.subscriptions import _Subscriptions
from portex_pay_devtools.fake_bot_api.wire import _Args

# docs/telegram-stars.md: "max_tip_amount, suggested_tip_amounts, need_*, is_flexible,
# send_*_to_provider: not supported / ignored for Stars; do not send them".
_UNSUPPORTED_STARS_FLAGS: Final = (
    "need_name",
    "need_phone_number",
    "need_email",
    "need_shipping_address",
    "send_phone_number_to_provider",
    "send_email_to_provider",
    "is_flexible",
)


class _PaymentMethods(_Subscriptions):
    """Invoices, pre-checkout answers and refunds (the Stars themselves: star_ledger.py)."""

    async def _create_invoice_link(self, bot: _Bot, args: _Args) -> str:
        invoice = self._invoice_from_args(bot, args, method="createInvoiceLink")
        invoice.slug = secrets.token_urlsafe(18)
        invoice.link = f"https://t.me/${invoice.slug}"
        self._invoices[invoice.slug] = invoice
        return invoice.link

    def _invoice_from_args(self, bot: _Bot, args: _Args, *, method: str) -> Invoice:
        """The checks createInvoiceLink and sendInvoice share (get_input_message_invoice in the
        reference server); the caller gives the invoice its link or its message."""
        # Required parameters first, in the reference server's order (get_input_message_invoice).
        title = args.required("title")
        description = args.required("description")
        payload = args.required("payload")
        currency = args.required("currency")
        prices_text = args.required("prices")

        # Bot API: title 1-32 characters, description 1-255 characters (code points here).
        if len(title) > 32:
            raise _bad_request("invoice title must be 1-32 characters long")
        if len(description) > 255:
            raise _bad_request("invoice description must be 1-255 characters long")
        # Bot API: payload "1-128 bytes", so UTF-8 bytes, not characters.
        if len(payload.encode("utf-8")) > 128:
            raise _bad_request("invoice payload must be 1-128 bytes long in UTF-8")
        # Bot API: "Pass 'XTR' for payments in Telegram Stars"; the fake sells nothing else.
        if currency != STARS_CURRENCY:
            raise _bad_request("currency must be XTR for payments in Telegram Stars")
        # Bot API, provider_token: "Pass an empty string for payments in Telegram Stars."
        if args.text("provider_token"):
            raise _bad_request("provider_token must be empty for payments in Telegram Stars")
        label, amount = self._parse_prices(prices_text)

        _refuse_what_stars_do_not_support(args)
        photo = _photo(args)
        subscription_period = _subscription_period(args, method, amount)

        return Invoice(
            slug="",
            link="",
            bot_id=bot.id,
            title=title,
            description=description,
            payload=payload,
            currency=currency,
            label=label,
            amount=amount,
            subscription_period=subscription_period,
            photo_url=args.text("photo_url") or None,
            photo_size=photo["photo_size"],
            photo_width=photo["photo_width"],
            photo_height=photo["photo_height"],
            params=dict(args.raw),
            created_at=time.time(),
        )

    @staticmethod
    def _parse_prices(text: str) -> tuple[str, int]:
        # Error wording of the reference server's get_labeled_price_parts where it exists.
        try:
            prices = json.loads(text)
        except ValueError:
            raise _bad_request("can't parse prices JSON object") from None
        if not isinstance(prices, list):
            raise _bad_request("expected an Array of labeled prices")
        if not prices:
            raise _bad_request("there must be at least one price")
        # docs/telegram-stars.md: exactly ONE LabeledPrice for Stars.
        if len(prices) != 1:
            raise _bad_request(
                "prices must contain exactly one item for payments in Telegram Stars"
            )
        price = prices[0]
        if not isinstance(price, dict):
            raise _bad_request("can't parse labeled price: LabeledPrice must be an Object")
        label = price.get("label")
        if not isinstance(label, str) or not label:
            raise _bad_request("can't parse labeled price: LabeledPrice label must be non-empty")
        amount = price.get("amount")
        # XTR has no fractional unit: amount is an integer number of Stars. Telegram also reads
        # digit strings; the fake refuses them (and floats, and booleans) so sloppy encoding shows.
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise _bad_request('can\'t parse labeled price: Field "amount" must be an integer')
        if amount <= 0:
            raise _bad_request("the amount must be a positive number of Telegram Stars")
        return label, amount

    async def _answer_pre_checkout_query(self, bot: _Bot, args: _Args) -> bool:
        query_id = args.text("pre_checkout_query_id").strip()
        ok = args.flag("ok")
        error_message: str | None = None
        if not ok:
            # Bot API: error_message is "Required if ok is False" (it is shown to the user).
            error_message = args.required("error_message")
        query = self._queries.get(query_id)
        if query is None or query.bot_id != bot.id or query.answered:
            # The reference server words QUERY_ID_INVALID like a timeout; the fake keeps the two
            # apart so that tests can tell "unknown or answered twice" from "too late".
            raise BotApiError(400, _QUERY_ID_INVALID)
        if query.expired or time.monotonic() > query.deadline:
            # Bot API: "must receive an answer within 10 seconds after the pre-checkout query
            # was sent"; later, the payment is already cancelled.
            query.expired = True
            raise BotApiError(400, _QUERY_TOO_OLD)
        query.answered = True
        if not query.future.done():
            query.future.set_result((ok, error_message, time.monotonic()))
        return True

    async def _refund_star_payment(self, bot: _Bot, args: _Args) -> bool:
        user_id = args.user_id()
        charge_id = args.required("telegram_payment_charge_id")
        charge = self._charges.get(charge_id)
        if charge is None or charge.bot_id != bot.id or charge.user_id != user_id:
            raise _bad_request("CHARGE_NOT_FOUND")
        if charge.refunded_at is not None:
            # docs/telegram-stars.md: clients treat CHARGE_ALREADY_REFUNDED as done.
            raise _bad_request("CHARGE_ALREADY_REFUNDED")
        now = int(time.time())
        charge.refunded_at = now
        self._append_refund(bot, charge, now)
        refunded_payment = {
            "currency": charge.currency,
            "total_amount": charge.total_amount,
            "invoice_payload": charge.invoice_payload,
            "telegram_payment_charge_id": charge.telegram_payment_charge_id,
        }
        # Bot API: the bot then gets a service message with `refunded_payment`.
        self._enqueue(
            bot, {"message": self._message(bot, user_id, refunded_payment=refunded_payment)}
        )
        return True

    async def _send_invoice(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        invoice = self._invoice_from_args(bot, args, method="sendInvoice")
        outgoing = self._outgoing(bot, args)
        markup = outgoing.reply_markup
        if markup is not None:
            # Bot API, sendInvoice.reply_markup: an inline keyboard; "If not empty, the first
            # button must be a Pay button."
            rows = markup.get("inline_keyboard") or [[]]
            if not rows[0] or rows[0][0].get("pay") is not True:
                raise _bad_request("the first button of an invoice's keyboard must be a Pay button")
        invoice.start_parameter = args.text("start_parameter")
        content = {
            "invoice": {
                "title": invoice.title,
                "description": invoice.description,
                "start_parameter": invoice.start_parameter,
                "currency": invoice.currency,
                "total_amount": invoice.amount,
            }
        }
        message = self._bot_message(bot, outgoing.chat_id, **_message_options(outgoing), **content)
        invoice.chat_id = outgoing.chat_id
        invoice.message_id = message["message_id"]
        self._sent_invoices[(bot.id, invoice.chat_id, invoice.message_id)] = invoice
        return message


def _refuse_what_stars_do_not_support(args: _Args) -> None:
    # docs/telegram-stars.md: tips, need_*, send_*_to_provider and is_flexible are not
    # supported for Stars; Telegram would ignore or reject them, the fake makes them loud.
    if args.integer("max_tip_amount", 0) != 0:
        raise _bad_request("max_tip_amount is not supported for payments in Telegram Stars")
    tips = args.text("suggested_tip_amounts").strip()
    if tips and tips != "[]":
        raise _bad_request("suggested_tip_amounts is not supported for payments in Telegram Stars")
    for name in _UNSUPPORTED_STARS_FLAGS:
        if args.flag(name):
            raise _bad_request(f"{name} is not supported for payments in Telegram Stars")


def _photo(args: _Args) -> dict[str, int | None]:
    photo: dict[str, int | None] = {}
    for name in ("photo_size", "photo_width", "photo_height"):
        value = args.integer(name, -1) if args.text(name) else None
        if value is not None and value < 0:
            raise _bad_request(f"{name} must be a non-negative integer")
        photo[name] = value
    return photo


def _subscription_period(args: _Args, method: str, amount: int) -> int | None:
    subscription_period: int | None = None
    if args.text("subscription_period"):
        if method != "createInvoiceLink":
            # Bot API: only createInvoiceLink has subscription_period; Telegram would send a
            # one-off invoice, the fake makes the mistake loud.
            raise _bad_request(
                f"subscription_period is not supported by {method}; use createInvoiceLink"
            )
        subscription_period = args.integer("subscription_period", 0)
        if subscription_period != SUBSCRIPTION_PERIOD:
            raise _bad_request(
                f"subscription_period must be {SUBSCRIPTION_PERIOD} (30 days) if specified"
            )
        if amount > MAX_SUBSCRIPTION_PRICE:
            raise _bad_request(
                f"subscription price must not exceed {MAX_SUBSCRIPTION_PRICE} Telegram Stars"
            )
    return subscription_period
