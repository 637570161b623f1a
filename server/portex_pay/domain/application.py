"""Applications: the tenants of portex-pay, each with at most one bot.

An application's bot is a value of its own: code that needs one takes a `Bot`, not an
`Application` whose optional bot fields it would narrow by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from portex_pay.domain.catalog import PricingMode
from portex_pay.domain.errors import BotNotConfigured


@dataclass(frozen=True, slots=True)
class Bot:
    """A Telegram bot bound to an application: its id (the token's prefix), its token and its
    @username (None until Telegram told us)."""

    id: int
    token: str
    username: str | None = None

    def __repr__(self) -> str:  # never print the token
        return f"Bot(id={self.id}, username={self.username!r})"


@dataclass(frozen=True, slots=True)
class Application:
    id: UUID
    name: str
    bot: Bot | None = None
    webhook_secret: str = ""
    updates_mode: str | None = None
    # The Mini App edge: how browser Pays are priced, which origins may call, where browser
    # callback URLs may point (domain/catalog.py).
    pricing_mode: PricingMode = PricingMode.CATALOG
    allowed_origins: tuple[str, ...] = ()
    callback_prefixes: tuple[str, ...] = ()
    # The bot beside portex-pay (service/support.py): texts answered to /paysupport and /terms,
    # and the optional buyer messages (None: the defaults).
    support_text: str | None = None
    terms_text: str | None = None
    buyer_messages: bool = False
    paid_message: str | None = None
    refunded_message: str | None = None
    # The unfulfilled-order policy (domain/fulfilment.py): paid orders left unacknowledged this
    # long are refunded, those paid since it was switched on; None: off (the default).
    unfulfilled_refund_after: timedelta | None = None
    unfulfilled_refund_since: datetime | None = None

    def require_bot(self) -> Bot:
        """The bound bot, or BotNotConfigured (FAILED_PRECONDITION to a caller)."""
        if self.bot is None:
            raise BotNotConfigured(
                "the application has no bot: run `portex-pay admin set-bot-token`"
            )
        return self.bot

    # Read-only views for callers that only report (the CLI, the tests).
    @property
    def bot_id(self) -> int | None:
        return None if self.bot is None else self.bot.id

    @property
    def bot_token(self) -> str | None:
        return None if self.bot is None else self.bot.token

    @property
    def bot_username(self) -> str | None:
        return None if self.bot is None else self.bot.username

    def __repr__(self) -> str:  # never print the bot token
        return f"Application(id={self.id}, name={self.name!r}, bot={self.bot!r})"


class AlreadyTaken(Exception):
    """A unique rule of applications refused the change: `what` is "name" (one name, one
    application) or "bot" (one bot, one application)."""

    def __init__(self, what: Literal["name", "bot"]) -> None:
        super().__init__(f"the {what} is taken")
        self.what = what


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApplicationListing:
    application: Application
    keys: list[ApiKeyInfo]
    created_at: datetime


# The per-application bot message settings (set_bot_messages); the names are column names.
BOT_MESSAGE_FIELDS = (
    "support_text",
    "terms_text",
    "buyer_messages",
    "paid_message",
    "refunded_message",
)
