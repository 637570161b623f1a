"""The Bot API relay's rules: which updates the application's own bot receives, and the
`allowed_updates` sent to Telegram.

The app's bot asks for update kinds as Telegram defines them (getUpdates / setWebhook
`allowed_updates`: a list of Update field names; an empty list, or none, means every kind except
chat_member, message_reaction and message_reaction_count; unknown names are ignored). portex-pay
needs `message` (payments arrive as messages) and `pre_checkout_query`; what it asks Telegram for
is the union of the two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

# Every Update field that names an update kind (Bot API, Update).
UPDATE_KINDS: Final = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
# Bot API, getUpdates: "If not specified, the previous setting will be used" and an empty list
# means all update types except chat_member, message_reaction, and message_reaction_count.
DEFAULT_KINDS: Final = UPDATE_KINDS - {"chat_member", "message_reaction", "message_reaction_count"}
# What portex-pay itself must receive: payments arrive as messages, checkouts as queries.
OWN_KINDS: Final = ("message", "pre_checkout_query")
# Telegram keeps an unconfirmed update for 24 hours (Bot API, "Getting updates"); so does the relay.
RETENTION_SECONDS: Final = 24 * 3600


class InvalidAllowedUpdates(ValueError):
    """`allowed_updates` is not a JSON array of strings."""


def parse_allowed_updates(value: object) -> tuple[str, ...] | None:
    """The kinds asked for, known ones only, sorted; None when not given (keep the previous
    setting); () for an empty list (Telegram's default set). Accepts the decoded JSON value or its
    text (form-encoded requests carry JSON-serialized arrays)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidAllowedUpdates("allowed_updates is not a JSON array") from None
    if not isinstance(value, list) or not all(isinstance(kind, str) for kind in value):
        raise InvalidAllowedUpdates("allowed_updates must be an array of strings")
    return tuple(sorted({kind for kind in value if kind in UPDATE_KINDS}))


def effective_kinds(allowed: tuple[str, ...] | list[str] | None) -> frozenset[str]:
    """The kinds a bot receives with this setting (None or empty: Telegram's default set)."""
    return frozenset(allowed) if allowed else DEFAULT_KINDS


def telegram_allowed_updates(app_bot: tuple[str, ...] | list[str] | None) -> list[str]:
    """`allowed_updates` for Telegram: portex-pay's own kinds, plus the app bot's when its code
    uses the relay (None: it does not)."""
    if app_bot is None:
        return list(OWN_KINDS)
    return sorted(effective_kinds(app_bot) | set(OWN_KINDS))


def update_kind(update: object) -> str | None:
    """The update's kind: its field other than update_id (None when it has no known one)."""
    if not isinstance(update, dict):
        return None
    for key in update:
        if isinstance(key, str) and key in UPDATE_KINDS:
            return key
    return None


@dataclass(frozen=True, slots=True)
class RelayBot:
    bot_id: int
    application_id: UUID
    allowed_updates: tuple[str, ...] | None
    confirmed_offset: int
    webhook_url: str | None
    webhook_secret: str | None
    poll_generation: int
    attempts: int = 0  # failed webhook deliveries in a row
    pending: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    # The delivery lease this value was claimed with (RelayStore.claim_deliveries): only that
    # lease confirms, fails or releases; a webhook change voids it.
    lease: str | None = None

    def __repr__(self) -> str:  # never print the webhook secret
        return f"RelayBot(bot_id={self.bot_id}, webhook={self.webhook_url is not None})"


@dataclass(frozen=True, slots=True)
class RelayedUpdate:
    update_id: int
    raw: bytes
