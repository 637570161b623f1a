"""What the Telegram port speaks: the values the service hands to the Bot API and the errors it
gets back, independent of any HTTP client.

The adapter (adapters/telegram) maps Telegram's answers onto these: `ok: false` answers become
`TelegramApiError`, with the subclasses the service acts on (`TelegramTooManyRequests` for HTTP
429 and its `retry_after`, `ChargeAlreadyRefunded` for refundStarPayment's
CHARGE_ALREADY_REFUNDED); no usable answer at all becomes `TelegramNetworkError`.

The Bot API proxy forwards the app's own bot's other requests as they are: a `ForwardRequest` in,
a `ForwardResponse` out, each with its body as a stream of bytes (never read whole).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal

from portex_pay.domain.application import Bot
from portex_pay.domain.errors import (
    DomainError,
    TelegramRateLimited,
    TelegramRejected,
    TelegramUnavailable,
)

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


class ForwardRefused(TelegramError):
    """The request would not go to the bot's own method or file path as it was checked (the
    endpoint builds another URL): nothing was sent."""

    def __init__(self, method: str) -> None:
        super().__init__(f"{method}: not forwarded")
        self.method = method


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """A request of the app's own bot, sent on to the Bot API as it came (the Bot API proxy):
    to `/bot{token}/{path}` (`target` "method": one method name, after `test/` in Telegram's test
    environment) or `/file/bot{token}/{path}` ("file": a file path of plain segments), with
    the query string as it was sent (`raw_query`, its percent-escapes kept). `path` was checked
    by the caller; the URL is built from it and nothing else."""

    bot: Bot
    target: Literal["method", "file"]
    path: str
    raw_query: str
    http_method: str
    headers: Mapping[str, str]  # those that describe the body, and Accept-Encoding
    body: AsyncIterator[bytes] | None  # None: the request has no body


@dataclass(frozen=True, slots=True)
class ForwardResponse:
    """Telegram's answer to a forwarded request, as it came: status, headers (looked up by
    name, case-insensitively, as HTTP names are) and the body as Telegram sent it (encoded, if
    it was). Reading `body` raises TelegramNetworkError when the answer is cut off."""

    status: int
    reason: str | None
    headers: Mapping[str, str]
    body: AsyncIterator[bytes]


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
    # A subscription's period in seconds (createInvoiceLink's subscription_period); None: one-off.
    subscription_period: int | None = None


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


def failure_error(error: TelegramError, refused: str) -> DomainError:
    """What a caller is told when a Bot API call it asked for failed: Telegram's rate limit
    (with its retry_after), its refusal of the request (`refused`, then Telegram's description),
    or Telegram's absence (retry)."""
    if isinstance(error, TelegramTooManyRequests):
        retry_after = error.retry_after if error.retry_after is not None else 1
        return TelegramRateLimited(
            f"Telegram rate limit: {error.description}; retry after {retry_after} s", retry_after
        )
    if isinstance(error, TelegramApiError):
        if 400 <= error.error_code < 500:
            return TelegramRejected(f"{refused}: {error.description}")
        return TelegramUnavailable(f"Telegram failed ({error.error_code}): {error.description}")
    reason = error.reason if isinstance(error, TelegramNetworkError) else type(error).__name__
    return TelegramUnavailable(f"Telegram is unreachable ({reason}); retry")
