"""The support commands every bot selling digital goods must answer (Telegram's Bot Developer
Terms, 6.2.1): `/paysupport` and `/terms`, in private chats, answered by portex-pay with
`sendMessage`, once per message (a redelivered update is claimed already)."""

from __future__ import annotations

from typing import Any

from portex_pay.adapters.postgres.applications import Application

SUPPORT_COMMANDS = ("paysupport", "terms")


def support_command(update: object, bot_username: str | None) -> str | None:
    """`paysupport` / `terms` when the update is that command in a private chat, else None."""
    message = update.get("message") if isinstance(update, dict) else None
    if not isinstance(message, dict):
        return None
    chat, text = message.get("chat"), message.get("text")
    if not isinstance(chat, dict) or chat.get("type") != "private" or not isinstance(text, str):
        return None
    words = text.split(maxsplit=1)
    if not words or not words[0].startswith("/"):
        return None
    command, _, addressee = words[0][1:].partition("@")
    if addressee and (bot_username is None or addressee.lower() != bot_username.lower()):
        return None  # addressed to another bot
    return command.lower() if command.lower() in SUPPORT_COMMANDS else None


def support_reply(application: Application, command: str) -> str:
    """The text answered to the command (the defaults, in English, naming the bot)."""
    bot = f"@{application.bot_username}" if application.bot_username else "this bot"
    if command == "paysupport":
        return (
            f"Payment support for {bot}: reply here with your order number and what went "
            "wrong, and we will answer in this chat. Purchases are paid in Telegram Stars; "
            "refunds follow the terms (/terms)."
        )
    return (
        f"Terms of purchase in {bot}: you buy digital goods and services for use in this bot, "
        "paid in Telegram Stars. A purchase is delivered once Telegram confirms the payment. If "
        "something you paid for is not delivered, contact /paysupport and it is refunded to your "
        "Stars balance."
    )


def reply_params(update: dict[str, Any], text: str) -> dict[str, Any]:
    return {"chat_id": update["message"]["chat"]["id"], "text": text}
