"""The Bot API relay's rules: which updates the application's own bot receives, and the
`allowed_updates` sent to Telegram.

The app's bot asks for update kinds as Telegram defines them (getUpdates / setWebhook
`allowed_updates`: a list of Update field names; an empty list, or none, means every kind except
chat_member, message_reaction and message_reaction_count). portex-pay needs `message` (payments
arrive as messages) and `pre_checkout_query`; what it asks Telegram for is the union of the two.

Telegram adds update kinds (Bot API 9.6 `managed_bot`, 10.0 `guest_message`, 10.2 `subscription`,
10.3 `stopped_message_generation`), and the relay must not stand between a bot and a kind newer
than this code. So:

- A name the bot asks for is kept when it could be an Update field (`[a-z][a-z0-9_]{0,63}`, in any
  case, as Telegram reads names), known here or not, and is sent on to Telegram in the union:
  Telegram itself ignores the names it does not know. Names that are not even identifiers are
  ignored here (Telegram ignores them too); a list of nothing else is the default set. More than
  64 distinct names (Telegram has about 30 kinds) is refused as not a sane setting.
- The default set (no setting, or an empty list) is Telegram's: every kind except the three it
  names, including kinds newer than this code (Telegram's rule names its exceptions, so a new kind
  is in the default set unless Telegram says otherwise). For it portex-pay asks Telegram for `[]`,
  Telegram's default set, rather than spelling out the kinds it knows.
- An update's kind is its one field besides `update_id`, known here or not; the relay passes an
  update of any kind the bot wants on as the bytes Telegram sent.

One difference remains: a bot that names only kinds that neither Telegram nor this code knows gets
Telegram's default set from Telegram, but nothing from the relay (which cannot tell such a name
from a kind newer than itself).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from portex_pay.domain.errors import DomainError

# Every Update field that names an update kind (Bot API 10.3, Update), for the record: the rules
# below hold for kinds that are not listed too.
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
        "managed_bot",  # Bot API 9.6
        "guest_message",  # Bot API 10.0
        "subscription",  # Bot API 10.2
        "stopped_message_generation",  # Bot API 10.3
    }
)
# Bot API, getUpdates: an empty list means all update types except chat_member,
# message_reaction, and message_reaction_count; "If not specified, the previous setting will be
# used".
DEFAULT_EXCLUDED: Final = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
# What portex-pay itself must receive: payments arrive as messages, checkouts as queries, a
# subscription's changes (Bot API 10.2) as `subscription`.
OWN_KINDS: Final = ("message", "pre_checkout_query", "subscription")
# Telegram keeps an unconfirmed update for 24 hours (Bot API, "Getting updates"); so does the relay.
RETENTION_SECONDS: Final = 24 * 3600
# A name that can be an Update field, and how many distinct ones a setting may hold.
KIND_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_ALLOWED_UPDATES: Final = 64
_MAX_ENTRIES = 1024  # entries in the list as given (duplicates and ignored names included)


class RelayError(DomainError):
    """A request of the app's own bot that the relay refuses, with Telegram's description of it
    (`description`, as Telegram words it). Each kind is answered with Telegram's HTTP status for
    it, at the HTTP door (api/http/botapi_proxy.py)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class RelayBadRequest(RelayError):
    """The request itself is wrong (Telegram's 400): `problem` as Telegram names it."""

    reason = "RELAY_BAD_REQUEST"

    def __init__(self, problem: str) -> None:
        super().__init__(f"Bad Request: {problem}")


class RelayConflict(RelayError):
    """Another consumer of the bot's updates stands in the way: a webhook, or a newer
    getUpdates (Telegram's 409)."""

    reason = "RELAY_CONFLICT"

    def __init__(self, problem: str) -> None:
        super().__init__(f"Conflict: {problem}")


class RelayTooLarge(RelayError):
    """The request's body is larger than the relay reads (Telegram's 413)."""

    reason = "RELAY_TOO_LARGE"

    def __init__(self) -> None:
        super().__init__("Request Entity Too Large")


class InvalidAllowedUpdates(ValueError):
    """`allowed_updates` is not a JSON array of strings, or not a sane one."""


def parse_allowed_updates(value: object) -> tuple[str, ...] | None:
    """The kinds asked for, lower-cased, sorted, kinds unknown here included; None when not
    given (keep the previous setting); () for an empty list or one of ignored names only
    (Telegram's default set). Accepts the decoded JSON value or its text (form-encoded requests
    carry JSON-serialized arrays). Raises InvalidAllowedUpdates and nothing else."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # all json.loads raises for a str: not JSON, or
            # nested deeper than the parser goes
            raise InvalidAllowedUpdates("allowed_updates is not a JSON array") from None
    if not isinstance(value, list) or not all(isinstance(kind, str) for kind in value):
        raise InvalidAllowedUpdates("allowed_updates must be an array of strings")
    if len(value) > _MAX_ENTRIES:
        raise InvalidAllowedUpdates("allowed_updates is too long")
    names = {
        name
        for name in (kind.lower() for kind in value if len(kind) <= 64)
        if KIND_NAME.fullmatch(name)
    }
    if len(names) > MAX_ALLOWED_UPDATES:
        raise InvalidAllowedUpdates(
            f"allowed_updates names more than {MAX_ALLOWED_UPDATES} update types"
        )
    return tuple(sorted(names))


def wants(allowed: tuple[str, ...] | list[str] | None, kind: str | None) -> bool:
    """Whether a bot with this setting receives an update of this kind: one it named; with no
    setting (None or empty) any kind but Telegram's three exceptions, kinds newer than this code
    included. An update without a kind is nobody's. (adapters/postgres/relay.py `keep` applies
    the same rule in SQL.)"""
    if not kind:
        return False
    return kind in allowed if allowed else kind not in DEFAULT_EXCLUDED


def telegram_allowed_updates(app_bot: tuple[str, ...] | list[str] | None) -> list[str]:
    """`allowed_updates` for Telegram: portex-pay's own kinds, plus the app bot's when its code
    uses the relay (None: it does not). A bot on the default set gets `[]`, Telegram's default
    set, which holds portex-pay's kinds and every kind newer than this code."""
    if app_bot is None:
        return list(OWN_KINDS)
    if not app_bot:
        return []
    return sorted(set(app_bot) | set(OWN_KINDS))


def update_kind(update: object) -> str | None:
    """The update's kind: its field other than update_id, a kind this code knows first, else
    its only other field when that is named like an Update field (a kind newer than this code);
    None when it has none."""
    if not isinstance(update, dict):
        return None
    others = [key for key in update if key != "update_id"]
    for key in others:
        if isinstance(key, str) and key in UPDATE_KINDS:
            return key
    if len(others) == 1 and isinstance(others[0], str) and KIND_NAME.fullmatch(others[0]):
        return others[0]
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
class Kept:
    """What keeping an update for a bot found: whether it is kept, and whether the bot's relay
    is on at all (it may be on for a bot that did not ask for this kind of update)."""

    kept: bool
    relay_on: bool


@dataclass(frozen=True, slots=True)
class RelayedUpdate:
    update_id: int
    raw: bytes
