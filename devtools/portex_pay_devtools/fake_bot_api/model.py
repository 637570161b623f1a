"""The rules of the Bot API the fake enforces (as constants) and the fake's records: what tests
get back (UploadedFile, RecordedCall, Invoice, Charge, PaymentOutcome) and its own bookkeeping
(pre-checkout queries, files, a bot's state: its Star transactions among it)."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Final

STARS_CURRENCY: Final = "XTR"
# Bot API, createInvoiceLink.subscription_period: "Currently, it must always be 2592000 (30 days)".
SUBSCRIPTION_PERIOD: Final = 2_592_000
# Bot API: "Subscription price must no exceed 10000 Telegram Stars."
MAX_SUBSCRIPTION_PRICE: Final = 10_000
# Bot API, answerPreCheckoutQuery: "The Bot API must receive an answer within 10 seconds".
PRE_CHECKOUT_ANSWER_WINDOW: Final = 10.0
# Reference server: LONG_POLL_MAX_TIMEOUT = 50; getUpdates clamps `timeout` to 0..50.
LONG_POLL_MAX_TIMEOUT: Final = 50
# Reference server's default for setWebhook.max_connections (clamped to 1..100).
DEFAULT_MAX_CONNECTIONS: Final = 40
SECRET_TOKEN_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
# Bot API, sendMessage.text: "1-4096 characters after entities parsing" (code points here; the fake
# parses no entities, so markup counts too).
MAX_MESSAGE_LENGTH: Final = 4096
# Bot API, caption: "0-1024 characters after entities parsing".
MAX_CAPTION_LENGTH: Final = 1024
# Bot API, sendDocument: "Bots can currently send files of any type of up to 50 MB in size"; a
# bigger upload never reaches the Bot API server: Telegram's front end answers 413.
MAX_UPLOAD_SIZE: Final = 50 << 20
# Bot API, getFile: "bots can download files of up to 20MB in size" (reference server:
# MAX_DOWNLOAD_FILE_SIZE = 20 << 20).
MAX_DOWNLOAD_SIZE: Final = 20 << 20
# Bot API, deleteMessage: "A message can only be deleted if it was sent less than 48 hours ago."
DELETE_MESSAGE_WINDOW: Final = 48 * 3600
# Bot API, setMyCommands: "At most 100 commands can be specified."
MAX_BOT_COMMANDS: Final = 100

# Every update type the reference server knows (get_update_type_name); unknown names in
# allowed_updates are ignored, as Telegram does.
UPDATE_TYPES: Final = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
        "message_reaction",
        "message_reaction_count",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "purchased_paid_media",
        "managed_bot",
        "guest_message",
        # Bot API 10.2: BotSubscriptionUpdated (subscriptions.py).
        "subscription",
    }
)
# Bot API, getUpdates.allowed_updates: an empty list means "all update types except chat_member,
# message_reaction, and message_reaction_count (default)".
DEFAULT_ALLOWED_UPDATES: Final = UPDATE_TYPES - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}
# Past updates kept for redeliver(); Telegram keeps updates for at most 24 hours, the sandbox
# just bounds the memory a long session can use.
_HISTORY_LIMIT: Final = 10_000


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart/form-data request: a part with a filename, as the reference
    server's HTTP reader tells files from arguments. Its bytes are kept as they came."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class RecordedCall:
    """One Bot API request as the fake received it (`params` are the raw, undecoded values; a file
    part is an `UploadedFile`)."""

    method: str
    token: str = field(repr=False)  # a credential: keep it out of reprs and assertion output
    params: dict[str, Any]
    time: float  # Unix time
    via_webhook_reply: bool = False
    test_environment: bool = False  # came as /bot{token}/test/{method}


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request the fake received, whatever its path (Bot API methods, file downloads,
    the `/_fake/` control routes, paths that are none of these): the request line as it arrived,
    before any routing, so that tests can tell exactly which paths a client reached."""

    method: str
    path: str = field(repr=False)  # the raw path and query: holds a bot token
    time: float  # Unix time


@dataclass
class Invoice:
    """An invoice created with createInvoiceLink (its link can be paid any number of times) or sent
    with sendInvoice (no link: `chat_id` and `message_id` name the invoice message, which can be
    paid once, with `pay_sent_invoice`; then it shows a receipt)."""

    slug: str
    link: str
    bot_id: int
    title: str
    description: str
    payload: str
    currency: str
    label: str
    amount: int
    subscription_period: int | None
    photo_url: str | None
    photo_size: int | None
    photo_width: int | None
    photo_height: int | None
    params: dict[str, Any]
    created_at: float
    chat_id: int | None = None
    message_id: int | None = None
    start_parameter: str = ""
    paid: bool = False


@dataclass
class Charge:
    """One successful payment; refunds flip `refunded_at`."""

    telegram_payment_charge_id: str
    provider_payment_charge_id: str
    bot_id: int
    user_id: int
    currency: str
    total_amount: int
    invoice_payload: str
    invoice_link: str  # "" for an invoice sent with sendInvoice
    date: int
    subscription_expiration_date: int | None = None
    refunded_at: int | None = None


@dataclass
class Subscription:
    """A user's Stars subscription to a bot, named (as editUserStarSubscription names it) by the
    charge id of its first payment; `charge_ids` are every period's charges, oldest first.
    `canceled_by_user` stops renewals until the user re-enables it; `canceled_by_bot`
    (editUserStarSubscription is_canceled=true) stops them and keeps the user from re-enabling
    it until the bot passes is_canceled=false."""

    telegram_payment_charge_id: str
    bot_id: int
    user_id: int
    invoice_payload: str
    invoice_link: str
    amount: int
    period: int
    expiration_date: int
    charge_ids: list[str]
    canceled_by_user: bool = False
    canceled_by_bot: bool = False

    @property
    def canceled(self) -> bool:
        return self.canceled_by_user or self.canceled_by_bot


@dataclass(frozen=True)
class Renewal:
    """What a renewal attempt did: `charged` (then the new charge id, the successful_payment's
    update id and the new expiration date) or not (the user's Stars ran short: a `subscription`
    update with state "failed", whose update id is given when allowed_updates let it through)."""

    charged: bool
    telegram_payment_charge_id: str | None
    subscription_expiration_date: int
    update_id: int | None


@dataclass(frozen=True)
class PaymentOutcome:
    """What the paying user saw: approved at pre-checkout or not, and how fast the bot answered."""

    approved: bool
    error_message: str | None
    answered: bool
    answer_latency: float | None
    charge_id: str | None


@dataclass
class _PreCheckout:
    id: str
    bot_id: int
    sent_at: float  # time.monotonic()
    deadline: float
    future: asyncio.Future[tuple[bool, str | None, float]]
    answered: bool = False
    expired: bool = False


@dataclass
class _Poll:
    conflict: str | None = None


@dataclass
class _File:
    """A file the bot sent (uploaded, or by URL); file ids belong to one bot, as in Telegram."""

    file_id: str
    file_unique_id: str
    bot_id: int
    file_name: str | None
    mime_type: str | None
    data: bytes | None  # None: sent by URL, which the fake never fetches
    file_path: str | None = None  # assigned by the first getFile


@dataclass
class _Outgoing:
    """What every send* method resolves before it sends: the chat and the message options."""

    chat_id: int
    reply_to: dict[str, Any] | None
    reply_markup: dict[str, Any] | None


@dataclass
class _Ok:
    """A successful result plus the optional `description` Telegram adds (setWebhook does)."""

    result: Any
    description: str | None = None


class _Bot:
    def __init__(self, bot_id: int, token: str, username: str) -> None:
        self.id = bot_id
        self.token = token
        self.username = username
        self.first_name = f"Fake Bot {bot_id}"
        # Telegram's update_id values are per bot and only ever increase. Starting from the clock
        # keeps that true across restarts of the sandbox (a service that stored its getUpdates
        # offset must not see ids go back); the random part keeps bots' ids apart.
        self.next_update_id = int(time.time() * 1000) * 1000 + secrets.randbelow(1000)
        # Message ids count per chat, shared by both sides of a private chat, as in Telegram.
        self.next_message_ids: dict[int, int] = {}
        self.next_file_number = 0
        # Users who have talked to the bot (or paid it): the private chats it can write to.
        self.chats: set[int] = set()
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}  # (chat_id, message_id)
        self.sent: list[dict[str, Any]] = []  # what the bot sent, in order
        self.callback_queries: dict[str, bool] = {}  # id -> answered
        self.commands: dict[tuple[str, str], list[dict[str, str]]] = {}  # (scope, language)
        self.pending: list[dict[str, Any]] = []
        self.history: dict[int, dict[str, Any]] = {}
        self.allowed_updates: frozenset[str] = DEFAULT_ALLOWED_UPDATES
        self.webhook_url = ""
        self.secret_token = ""
        self.max_connections = 0
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None
        self.worker: asyncio.Task[None] | None = None
        self.poll: _Poll | None = None
        # Star transactions as getStarTransactions lists them, oldest first (star_ledger.py).
        self.ledger: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def notify(self) -> None:
        # Wake everyone waiting on the current event, then start a new generation; waiters take
        # `self.changed` before checking their condition, with no await in between, so no wake-up
        # is lost.
        self.changed.set()
        self.changed = asyncio.Event()

    def clear_state(self) -> None:
        self.pending.clear()
        self.history.clear()
        self.allowed_updates = DEFAULT_ALLOWED_UPDATES
        self.webhook_url = ""
        self.secret_token = ""
        self.max_connections = 0
        self.last_error_date = None
        self.last_error_message = None
        self.ledger.clear()
        # Message ids, like update ids, keep counting.
        self.chats.clear()
        self.messages.clear()
        self.sent.clear()
        self.callback_queries.clear()
        self.commands.clear()
        self.notify()
