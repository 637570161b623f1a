"""What portex-pay says in the bot's chats.

The support commands every bot selling digital goods must answer (Telegram's Bot Developer Terms,
6.2.1): `/paysupport` and `/terms`, in private chats, answered by portex-pay with `sendMessage`,
once per message (a redelivered update is claimed already). Each application may set its own
texts; the defaults are in English and name the bot.

Buyer messages (optional per application, off by default): a short message to the buyer when an
order is paid and when it is refunded. Templates may use `{bot}`, `{order_id}`, `{amount}` and
`{title}`; any other brace is kept as written.
"""

from __future__ import annotations

import re

from portex_pay.domain.application import Application
from portex_pay.domain.updates import IncomingUpdate

SUPPORT_COMMANDS = ("paysupport", "terms")


def support_command(update: IncomingUpdate, bot_username: str | None) -> str | None:
    """`paysupport` / `terms` when the update is that command in a private chat, else None."""
    command, chat = update.command, update.chat
    if command is None or chat is None or chat.type != "private":
        return None
    addressee = command.addressee
    if addressee and (bot_username is None or addressee.lower() != bot_username.lower()):
        return None  # addressed to another bot
    return command.name if command.name in SUPPORT_COMMANDS else None


def support_reply(application: Application, command: str) -> str:
    """The text answered to the command: the application's, or the default naming the bot."""
    bot = _bot_name(application)
    if command == "paysupport":
        if application.support_text:
            return application.support_text
        return (
            f"Payment support for {bot}: reply here with your order number and what went "
            "wrong, and we will answer in this chat. Purchases are paid in Telegram Stars; "
            "refunds follow the terms (/terms)."
        )
    if application.terms_text:
        return application.terms_text
    return (
        f"Terms of purchase in {bot}: you buy digital goods and services for use in this bot, "
        "paid in Telegram Stars. A purchase is delivered once Telegram confirms the payment. If "
        "something you paid for is not delivered, contact /paysupport and it is refunded to your "
        "Stars balance."
    )


MESSAGE_MAX_CHARS = 4096  # Bot API, sendMessage: 1-4096 characters of text
DEFAULT_PAID_MESSAGE = (
    "Thank you! Your payment of {amount} Stars for {title} is received (order {order_id})."
)
DEFAULT_REFUNDED_MESSAGE = (
    "Your payment for {title} (order {order_id}) was refunded: {amount} Stars are back on your "
    "balance."
)
_PLACEHOLDER = re.compile(r"\{(bot|order_id|amount|title)\}")


def _bot_name(application: Application) -> str:
    return f"@{application.bot_username}" if application.bot_username else "this bot"


def render_buyer_message(
    application: Application, template: str, *, order_id: int, amount: int, title: str
) -> str:
    """The template with its placeholders filled in, within Telegram's message length."""
    values = {
        "bot": _bot_name(application),
        "order_id": str(order_id),
        "amount": str(amount),
        "title": title,
    }
    return _PLACEHOLDER.sub(lambda match: values[match[1]], template)[:MESSAGE_MAX_CHARS]


def buyer_message(
    application: Application, event: str, *, order_id: int, amount: int, title: str
) -> str | None:
    """The message for `paid` / `refunded`, or None when the application sends none."""
    if not application.buyer_messages:
        return None
    if event == "paid":
        template = application.paid_message or DEFAULT_PAID_MESSAGE
    else:
        template = application.refunded_message or DEFAULT_REFUNDED_MESSAGE
    return render_buyer_message(
        application, template, order_id=order_id, amount=amount, title=title
    )
