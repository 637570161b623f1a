"""What the Telegram port speaks: the values the service hands to the Bot API and the errors it
gets back, independent of any HTTP client.

The adapter (adapters/telegram) maps Telegram's answers onto these: `ok: false` answers become
`TelegramApiError`, with the subclasses the service acts on (`TelegramTooManyRequests` for HTTP
429 and its `retry_after`, `ChargeAlreadyRefunded` for refundStarPayment's
CHARGE_ALREADY_REFUNDED); no usable answer at all becomes `TelegramNetworkError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A bot token: the bot's id, a colon, a secret of base64url characters (Bot API, "Authorizing your
# bot": `123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11`).
_BOT_TOKEN = re.compile(r"[0-9]{1,18}:[A-Za-z0-9_-]{1,255}")


class TelegramError(Exception):
    """A Bot API call did not succeed."""

    method: str


class TelegramApiError(TelegramError):
    """Telegram answered `ok: false`."""

    def __init__(
        self, method: str, error_code: int, description: str, retry_after: int | None = None
    ) -> None:
        super().__init__(f"{method}: {error_code} {description}")
        self.method = method
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after


class TelegramTooManyRequests(TelegramApiError):
    """HTTP 429: flood control; `retry_after` seconds to wait (1 when Telegram gave none)."""


class ChargeAlreadyRefunded(TelegramApiError):
    """refundStarPayment: the charge was refunded before (a repeat of a refund that landed)."""


class TelegramNetworkError(TelegramError):
    """No usable answer: timeout, connection error or a non-JSON (e.g. proxy 5xx) response."""

    def __init__(self, method: str, reason: str) -> None:
        super().__init__(f"{method}: {reason}")
        self.method = method
        self.reason = reason


@dataclass(frozen=True, slots=True)
class InvoiceRequest:
    """createInvoiceLink for Telegram Stars: currency XTR, exactly one price, no provider token
    (Bot API, createInvoiceLink). `payload` is our signed reference, never the app's."""

    title: str
    description: str
    payload: str
    label: str
    amount: int
    photo_url: str | None = None
    photo_size: int | None = None
    photo_width: int | None = None
    photo_height: int | None = None


@dataclass(frozen=True, slots=True)
class BotProfile:
    """getMe: who a token belongs to."""

    id: int
    username: str | None


def bot_id_of_token(token: str) -> int | None:
    """The bot id of a token of Telegram's shape (`<digits>:<base64url>`), else None."""
    if not _BOT_TOKEN.fullmatch(token):
        return None
    return int(token.partition(":")[0])
