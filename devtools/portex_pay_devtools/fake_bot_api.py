"""A fake Telegram Bot API: a real aiohttp HTTP server speaking the Bot API's wire format
(`{base}/bot{token}/{method}` with JSON, form, multipart or query parameters; `{"ok": true,
"result": ...}` or `{"ok": false, "error_code": N, "description": ...}` with the same HTTP
status) for the Telegram Stars methods portex-pay uses and a chat bot's everyday methods
(sendMessage, sendDocument with uploads, getFile and `/file/bot{token}/{path}` downloads,
sendInvoice, deleteMessage, commands, callback queries). It also plays the users: the paying user
(`pay_invoice`, `pay_sent_invoice`: pre-checkout query, 10-second answer window, successful
payment, refunds) and the user who chats with the bot (`send_user_message`,
`send_callback_query`), and delivers updates by webhook or long polling; tests drive it
in-process or, through the `/_fake/` control routes, from another process, and `make run` starts
it as the local Telegram sandbox (`python -m portex_pay_devtools.fake_bot_api`). It enforces the
rules of docs/telegram-stars.md (Bot API 10.1) and follows the reference server
(github.com/tdlib/telegram-bot-api, Client.cpp); where it departs from Telegram on purpose, the
code says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import json
import logging
import mimetypes
import re
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import unquote, urlsplit

from aiohttp import (
    ClientConnectorError,
    ClientError,
    ClientSession,
    ClientTimeout,
    ServerDisconnectedError,
    web,
)

__all__ = [
    "BotApiError",
    "Charge",
    "FakeBotApi",
    "Invoice",
    "PaymentOutcome",
    "RecordedCall",
    "UploadedFile",
    "main",
]

log = logging.getLogger(__name__)

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
    }
)
# Bot API, getUpdates.allowed_updates: an empty list means "all update types except chat_member,
# message_reaction, and message_reaction_count (default)".
DEFAULT_ALLOWED_UPDATES: Final = UPDATE_TYPES - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}
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

_BOT_TOKEN_RE: Final = re.compile(r"(\d+):([A-Za-z0-9_-]+)")
_SANDBOX_TOKEN_RE: Final = re.compile(r"\d+:[A-Za-z0-9_-]{30,}")
# Reference server: the secret token must be base64url characters, at most 256 of them.
# Past updates kept for redeliver(); Telegram keeps updates for at most 24 hours, the sandbox
# just bounds the memory a long session can use.
_HISTORY_LIMIT: Final = 10_000
_SECRET_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")
_INTEGER_RE: Final = re.compile(r"[+-]?\d+")
# Bot API, BotCommand.command: "1-32 characters. Can contain only lowercase English letters, digits
# and underscores."
_BOT_COMMAND_RE: Final = re.compile(r"[a-z0-9_]{1,32}")
# A bot command in a message, as Telegram's apps mark it (a bot_command entity): "/" + up to 64
# word characters, optionally "@botusername", not glued to other word characters.
_COMMAND_IN_TEXT_RE: Final = re.compile(
    r"(?<![\w/<>])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/<>])"
)
# Bot API, InlineKeyboardButton: exactly one of these optional fields must be used.
_INLINE_BUTTON_ACTIONS: Final = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
# Other form fields (caption, reply_markup, ...) travel beside an upload in the same body.
_FORM_OVERHEAD: Final = 1 << 20

_QUERY_ID_INVALID: Final = "Bad Request: QUERY_ID_INVALID"
_QUERY_TOO_OLD: Final = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
_CONFLICT_WEBHOOK_ACTIVE: Final = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_CONFLICT_OTHER_GET_UPDATES: Final = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
_CONFLICT_SET_WEBHOOK: Final = "Conflict: terminated by setWebhook request"
_REQUEST_TOO_LARGE: Final = "Request Entity Too Large"


class BotApiError(Exception):
    """A failed Bot API answer; the HTTP status equals `error_code`, as Telegram does."""

    def __init__(self, error_code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        # Bot API: on flood control Telegram adds ResponseParameters.retry_after.
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad_request(reason: str) -> BotApiError:
    return BotApiError(400, f"Bad Request: {reason}")


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


@dataclass(frozen=True)
class PaymentOutcome:
    """What the paying user saw: approved at pre-checkout or not, and how fast the bot answered."""

    approved: bool
    error_message: str | None
    answered: bool
    answer_latency: float | None
    charge_id: str | None


@dataclass
class _Fault:
    kind: Literal["fail", "delay", "drop"]
    method: str  # lower-case method name, or "*" for every method
    token: str | None
    remaining: int | None  # None: until cleared
    error_code: int = 0
    description: str = ""
    retry_after: int | None = None
    seconds: float = 0.0

    def matches(self, method: str, token: str) -> bool:
        return (self.method in ("*", method.lower())) and self.token in (None, token)


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
class _LedgerEntry:
    charge: Charge
    refund: bool
    date: int


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
        self.ledger: list[_LedgerEntry] = []
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


def _as_arg(value: Any) -> str | None:
    # The reference server turns a JSON body into string arguments (non-strings as their JSON
    # text), so `"user_id": 5` and `"user_id": "5"` are the same request, and `prices` may be an
    # array or a JSON-encoded string. Doing the same keeps JSON, form and query bodies equivalent.
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class _Args:
    """Bot API arguments as strings; an empty string counts as absent, as in Telegram."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self._values: dict[str, str] = {}
        for name, value in raw.items():
            if isinstance(value, UploadedFile):
                continue  # a file, not an argument: see file()
            text = _as_arg(value)
            if text is not None:
                self._values[name] = text

    def text(self, name: str) -> str:
        return self._values.get(name, "")

    def file(self, name: str) -> UploadedFile | None:
        value = self.raw.get(name)
        return value if isinstance(value, UploadedFile) else None

    def required(self, name: str) -> str:
        value = self.text(name)
        if not value:
            # Reference server, get_required_string_arg.
            raise _bad_request(f'parameter "{name}" is required')
        return value

    def integer(self, name: str, default: int) -> int:
        value = self.text(name).strip()
        if not value:
            return default
        # Telegram silently reads garbage as 0; the fake refuses it so that client bugs show.
        if not _INTEGER_RE.fullmatch(value):
            raise _bad_request(f'parameter "{name}" must be an integer')
        return int(value)

    def flag(self, name: str) -> bool:
        # Reference server, to_bool: "true", "yes" and "1" (any case) are true, the rest false.
        return self.text(name).strip().lower() in ("true", "yes", "1")

    def user_id(self, name: str = "user_id") -> int:
        value = self.text(name).strip()
        if not _INTEGER_RE.fullmatch(value) or int(value) <= 0:
            raise _bad_request(f"invalid {name} specified")
        return int(value)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _update_kind(update: dict[str, Any]) -> str | None:
    return next((key for key in update if key != "update_id"), None)


def _parse_allowed_updates(text: str) -> frozenset[str] | None:
    """Reference server, get_allowed_update_types: None means "keep the previous setting"."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    names = frozenset(item.lower() for item in value) & UPDATE_TYPES
    return names or DEFAULT_ALLOWED_UPDATES


def _ok_response(result: Any, description: str | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": True, "result": result}
    if description is not None:
        body["description"] = description
    return _json_response(body)


def _error_response(error: BotApiError) -> web.Response:
    return _json_response(error.to_json(), status=error.error_code)


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False),
        status=status,
        content_type="application/json",
    )


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Query string, then the body (JSON, urlencoded or multipart form) on top: Telegram accepts
    them all. A multipart part with a filename is a file and becomes an `UploadedFile` (its bytes
    untouched); any other part is a string argument."""
    params: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return params
    try:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise _bad_request("can't parse JSON request body") from None
            if not isinstance(body, dict):
                raise _bad_request("JSON request body must be an object")
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            try:
                form = await request.post()
            except ValueError:
                raise _bad_request("can't parse the form request body") from None
            files = [value for value in form.values() if isinstance(value, web.FileField)]
            try:
                for name, value in form.items():
                    if isinstance(value, web.FileField):
                        params[name] = await asyncio.to_thread(_read_upload, value)
                    elif isinstance(value, str):
                        params[name] = value
                    else:
                        # A part without a filename but with a non-text Content-Type: the
                        # reference server reads it as an argument all the same.
                        params[name] = bytes(value).decode("utf-8", errors="replace")
            finally:
                for upload in files:
                    upload.file.close()
    except web.HTTPRequestEntityTooLarge:
        # The body is over the application's client_max_size (see start()).
        raise BotApiError(413, _REQUEST_TOO_LARGE) from None
    return params


def _read_upload(part: web.FileField) -> UploadedFile:
    # aiohttp has spooled the part to a temporary file (on disk once it is big): read it off the
    # event loop.
    part.file.seek(0, 2)
    if part.file.tell() > MAX_UPLOAD_SIZE:
        raise BotApiError(413, _REQUEST_TOO_LARGE)
    part.file.seek(0)
    return UploadedFile(part.filename, part.content_type, part.file.read())


def _control(
    handler: Callable[[FakeBotApi, web.Request], Awaitable[Any]],
) -> Callable[[FakeBotApi, web.Request], Awaitable[web.Response]]:
    """Wraps a `/_fake/` handler: its result becomes `{"ok": true, "result": ...}`, bad input a 400
    and unknown things (a link, an update) a 404, in the Bot API's error shape."""

    async def wrapped(self: FakeBotApi, request: web.Request) -> web.Response:
        try:
            result = await handler(self, request)
        except _ControlError as exc:
            return _json_response(
                {"ok": False, "error_code": exc.status, "description": exc.description},
                status=exc.status,
            )
        except LookupError as exc:
            return _json_response(
                {"ok": False, "error_code": 404, "description": str(exc)}, status=404
            )
        except ValueError as exc:
            return _json_response(
                {"ok": False, "error_code": 400, "description": str(exc)}, status=400
            )
        return _ok_response(result)

    return wrapped


_Handler = Callable[["_Bot", _Args], Awaitable[Any]]


class FakeBotApi:
    """The fake server: `async with FakeBotApi() as fake:`, or `await start()` / `await stop()`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        accept_any_token: bool = False,
        *,
        webhook_attempts: int = 3,
        webhook_retry_delay: float = 0.05,
        webhook_timeout: float = 10.0,
    ) -> None:
        if webhook_attempts < 1:
            raise ValueError("webhook_attempts must be at least 1")
        self._host = host
        self._port = port
        self._accept_any_token = accept_any_token
        self._webhook_attempts = webhook_attempts
        self._webhook_retry_delay = webhook_retry_delay
        self._webhook_timeout = webhook_timeout
        self.calls: list[RecordedCall] = []
        self._calls_changed = asyncio.Event()
        self._bots: dict[str, _Bot] = {}
        self._bots_by_id: dict[int, _Bot] = {}
        self._invoices: dict[str, Invoice] = {}  # by link slug
        self._sent_invoices: dict[tuple[int, int, int], Invoice] = {}  # (bot, chat, message)
        self._charges: dict[str, Charge] = {}
        self._files: dict[str, _File] = {}  # by file_id
        self._file_paths: dict[tuple[int, str], _File] = {}  # (bot_id, file_path)
        self._first_names: dict[int, str] = {}  # users who told the fake their name
        self._queries: dict[str, _PreCheckout] = {}
        self._faults: list[_Fault] = []
        # Every webhook worker ever started, so that stop() can await even those reset() cancelled.
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._bound_port: int | None = None
        self._methods: dict[str, tuple[str, _Handler]] = {
            name.lower(): (name, handler)
            for name, handler in (
                ("getMe", self._get_me),
                ("createInvoiceLink", self._create_invoice_link),
                ("answerPreCheckoutQuery", self._answer_pre_checkout_query),
                ("refundStarPayment", self._refund_star_payment),
                ("setWebhook", self._set_webhook),
                ("deleteWebhook", self._delete_webhook),
                ("getWebhookInfo", self._get_webhook_info),
                ("getUpdates", self._get_updates),
                ("getStarTransactions", self._get_star_transactions),
                ("getMyStarBalance", self._get_my_star_balance),
                ("sendMessage", self._send_message),
                ("sendDocument", self._send_document),
                ("getFile", self._get_file),
                ("sendInvoice", self._send_invoice),
                ("deleteMessage", self._delete_message),
                ("answerCallbackQuery", self._answer_callback_query),
                ("setMyCommands", self._set_my_commands),
                ("getMyCommands", self._get_my_commands),
                ("deleteMyCommands", self._delete_my_commands),
            )
        }

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("fake Bot API already started")
        self._stopping = False
        self._stop_event = asyncio.Event()
        # aiohttp's default body limit is 1 MiB; Telegram takes 50 MB uploads (and their form).
        app = web.Application(client_max_size=MAX_UPLOAD_SIZE + _FORM_OVERHEAD)
        app.router.add_post("/_fake/bots", self._control_add_bot)
        app.router.add_post("/_fake/fail", self._control_fail)
        app.router.add_post("/_fake/delay", self._control_delay)
        app.router.add_post("/_fake/drop", self._control_drop)
        app.router.add_post("/_fake/clear", self._control_clear)
        app.router.add_post("/_fake/reset", self._control_reset)
        app.router.add_get("/_fake/calls", self._control_calls)
        app.router.add_post("/_fake/pay", self._control_pay)
        app.router.add_get("/_fake/invoices", self._control_invoices)
        app.router.add_get("/_fake/charges", self._control_charges)
        app.router.add_post("/_fake/deliver", self._control_deliver)
        app.router.add_post("/_fake/redeliver", self._control_redeliver)
        app.router.add_post("/_fake/user_message", self._control_user_message)
        app.router.add_get("/_fake/sent_messages", self._control_sent_messages)
        # Bot API: "https://api.telegram.org/file/bot<token>/<file_path>" (GET, and so HEAD).
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._handle_file_download)
        # The test environment's path, `/bot{token}/test/{method}`, maps to the same fake.
        app.router.add_route("*", "/bot{token}/test/{method}", self._handle_bot_request)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_bot_request)
        app.router.add_route("*", "/{tail:.*}", self._handle_not_found)
        # No access log: the request path carries the bot token, which must never be logged.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        self._session = ClientSession()

    async def stop(self) -> None:
        runner, session = self._runner, self._session
        if runner is None:
            return
        self._stopping = True
        self._stop_event.set()
        for query in self._queries.values():
            if not query.future.done():
                query.future.cancel()
        workers = list(self._tasks)
        for bot in self._bots.values():
            bot.worker = None
            bot.notify()  # long polls see `_stopping` and answer at once
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await runner.cleanup()
        if session is not None:
            await session.close()
        self._runner = None
        self._session = None

    async def __aenter__(self) -> FakeBotApi:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("fake Bot API not started")
        return self._bound_port

    @property
    def base_url(self) -> str:
        host = self._host
        if host in ("0.0.0.0", "", "::"):  # noqa: S104 - mapping a wildcard bind to loopback
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------------------- bots

    def add_bot(self, token: str, username: str | None = None) -> int:
        """Registers a bot; its id is the token's digits before the colon, as in Telegram."""
        match = _BOT_TOKEN_RE.fullmatch(token)
        if match is None:
            raise ValueError("malformed bot token: expected <bot_id digits>:<secret>")
        bot_id = int(match.group(1))
        existing = self._bots_by_id.get(bot_id)
        if existing is not None:
            if existing.token != token:
                raise ValueError(f"bot {bot_id} is already registered with another token")
            if username is not None:
                existing.username = username
            return bot_id
        bot = _Bot(bot_id, token, username or f"fake_{bot_id}_bot")
        self._bots[token] = bot
        self._bots_by_id[bot_id] = bot
        return bot_id

    def _resolve_token(self, token: str) -> _Bot | None:
        bot = self._bots.get(token)
        if bot is None and self._accept_any_token and _SANDBOX_TOKEN_RE.fullmatch(token):
            try:
                self.add_bot(token)
            except ValueError:
                return None  # same bot id, different token: a revoked token, hence 401
            bot = self._bots[token]
        return bot

    def _bot_for(self, token: str) -> _Bot:
        bot = self._resolve_token(token)
        if bot is None:
            raise LookupError("unknown bot token")
        return bot

    # ---------------------------------------------------------------------- introspection

    def calls_for(self, method: str, token: str | None = None) -> list[RecordedCall]:
        wanted = method.lower()
        return [
            call
            for call in self.calls
            if call.method.lower() == wanted and (token is None or call.token == token)
        ]

    async def wait_for_call(
        self, method: str, *, token: str | None = None, count: int = 1, timeout: float = 5.0
    ) -> RecordedCall:
        """Waits until `count` calls of `method` have arrived and returns the last of them; lets a
        test act while a request is in flight (a long poll, a delayed answer) without sleeping.
        A call is recorded before it waits on anything, so once this returns a long poll is
        already waiting."""
        async with asyncio.timeout(timeout):
            while True:
                found = self.calls_for(method, token)
                if len(found) >= count:
                    return found[count - 1]
                changed = self._calls_changed
                await changed.wait()

    def _record(self, call: RecordedCall) -> None:
        self.calls.append(call)
        self._calls_changed.set()
        self._calls_changed = asyncio.Event()

    @property
    def invoices(self) -> list[Invoice]:
        """Every invoice, by link (createInvoiceLink) or sent (sendInvoice), oldest first."""
        invoices = [*self._invoices.values(), *self._sent_invoices.values()]
        return sorted(invoices, key=lambda invoice: invoice.created_at)

    def sent_messages(self, token: str, chat_id: int | None = None) -> list[dict[str, Any]]:
        """The messages the bot sent (sendMessage, sendDocument, sendInvoice results, as the bot
        got them), oldest first; only those in `chat_id` if given. Deleted ones stay listed."""
        bot = self._bot_for(token)
        return [
            copy.deepcopy(message)
            for message in bot.sent
            if chat_id is None or message["chat"]["id"] == chat_id
        ]

    def uploaded_file(self, file_id: str) -> bytes:
        """The bytes of a file a bot uploaded (LookupError for unknown ids and for files sent by
        URL, which the fake never fetches)."""
        stored = self._files.get(file_id)
        if stored is None or stored.data is None:
            raise LookupError(f"no uploaded file {file_id!r}")
        return stored.data

    @property
    def charges(self) -> list[Charge]:
        return list(self._charges.values())

    def reset(self) -> None:
        """Forgets calls, invoices, charges, faults, webhooks, queued updates, chats, messages,
        files and commands; bots stay registered (their tokens keep working) and update and
        message ids keep increasing, so a client that remembers its getUpdates offset is not
        confused."""
        self.calls.clear()
        self._invoices.clear()
        self._sent_invoices.clear()
        self._charges.clear()
        self._files.clear()
        self._file_paths.clear()
        self._first_names.clear()
        for query in self._queries.values():
            if not query.future.done():
                query.future.cancel()
        self._queries.clear()
        self._faults.clear()
        for bot in self._bots.values():
            if bot.worker is not None:
                bot.worker.cancel()
                bot.worker = None
            bot.clear_state()

    # ------------------------------------------------------------------- fault injection

    def fail_next(
        self,
        method: str,
        *,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
        token: str | None = None,
    ) -> None:
        """The next `times` calls of `method` ("*" = any) answer this error instead of running."""
        if not 400 <= error_code <= 599:
            raise ValueError("error_code must be an HTTP error status (400-599)")
        if times < 1:
            raise ValueError("times must be at least 1")
        self._faults.append(
            _Fault(
                "fail",
                method.lower(),
                token,
                times,
                error_code=error_code,
                description=description,
                retry_after=retry_after,
            )
        )

    def delay(
        self, method: str, seconds: float, times: int | None = None, *, token: str | None = None
    ) -> None:
        """Holds the answer of `method` for `seconds` (`times` calls; None = until cleared)."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        self._faults.append(_Fault("delay", method.lower(), token, times, seconds=seconds))

    def drop_connection(self, method: str, times: int = 1, *, token: str | None = None) -> None:
        """Closes the TCP connection of the next `times` calls without answering."""
        if times < 1:
            raise ValueError("times must be at least 1")
        self._faults.append(_Fault("drop", method.lower(), token, times))

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, kind: str, method: str, token: str) -> _Fault | None:
        for fault in self._faults:
            if fault.kind == kind and fault.matches(method, token):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

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
        amount = invoice.amount if total_amount is None else total_amount
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
        charge = self._charge(bot, invoice, user_id, amount, payload, currency)
        successful_payment: dict[str, Any] = {
            "currency": currency,
            "total_amount": amount,
            "invoice_payload": payload,
            "telegram_payment_charge_id": charge.telegram_payment_charge_id,
            "provider_payment_charge_id": charge.provider_payment_charge_id,
        }
        if charge.subscription_expiration_date is not None:
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
        bot.ledger.append(_LedgerEntry(charge, refund=False, date=now))
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

    def _user(self, user_id: int) -> dict[str, Any]:
        return {
            "id": user_id,
            "is_bot": False,
            "first_name": self._first_names.get(user_id, f"User {user_id}"),
            "username": f"user{user_id}",
            "language_code": "en",
        }

    def _private_chat(self, user_id: int) -> dict[str, Any]:
        user = self._user(user_id)
        return {
            "id": user_id,
            "first_name": user["first_name"],
            "username": user["username"],
            "type": "private",
        }

    @staticmethod
    def _bot_user(bot: _Bot) -> dict[str, Any]:
        return {
            "id": bot.id,
            "is_bot": True,
            "first_name": bot.first_name,
            "username": bot.username,
        }

    def _message(self, bot: _Bot, user_id: int, **content: Any) -> dict[str, Any]:
        """A message from the user to the bot in their private chat."""
        return self._store_message(bot, user_id, self._user(user_id), content)

    def _bot_message(self, bot: _Bot, chat_id: int, **content: Any) -> dict[str, Any]:
        """A message the bot sends to the private chat `chat_id`."""
        message = self._store_message(bot, chat_id, self._bot_user(bot), content)
        bot.sent.append(message)
        if len(bot.sent) > _HISTORY_LIMIT:
            del bot.sent[0]
        return message

    def _store_message(
        self, bot: _Bot, chat_id: int, sender: dict[str, Any], content: dict[str, Any]
    ) -> dict[str, Any]:
        message_id = bot.next_message_ids.get(chat_id, 1)
        bot.next_message_ids[chat_id] = message_id + 1
        message = {
            "message_id": message_id,
            "from": sender,
            "chat": self._private_chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        bot.messages[(chat_id, message_id)] = message
        if len(bot.messages) > _HISTORY_LIMIT:
            del bot.messages[next(iter(bot.messages))]
        return message

    # ------------------------------------------------------------------ update delivery

    async def deliver_update(self, token: str, update: dict[str, Any]) -> int | None:
        """Injects an arbitrary (forged, duplicate, ...) update. Without `update_id` it gets the
        next one. Returns the update id, or None when the bot's allowed_updates filter it out
        (Telegram never creates updates of a type the bot did not ask for). A `from` user in it
        opens that user's private chat to the bot, as a real update would."""
        bot = self._bot_for(token)
        kind = _update_kind(update)
        payload = update.get(kind) if kind is not None else None
        if isinstance(payload, dict):
            sender = payload.get("from")
            user_id = sender.get("id") if isinstance(sender, dict) else None
            if isinstance(user_id, int) and not isinstance(user_id, bool) and user_id > 0:
                bot.chats.add(user_id)
        return self._enqueue(bot, dict(update))

    async def redeliver(self, update_id: int, *, token: str | None = None) -> None:
        """Sends a past update again, same update_id: a duplicate delivery. In getUpdates mode it
        is dropped again by the next call whose offset is above its id, as Telegram would."""
        bots = [self._bot_for(token)] if token is not None else list(self._bots.values())
        found = [bot for bot in bots if update_id in bot.history]
        if not found:
            raise LookupError(f"no update {update_id}")
        if len(found) > 1:
            raise LookupError(f"update {update_id} exists for several bots; pass token")
        bot = found[0]
        bot.pending.append(dict(bot.history[update_id]))
        bot.notify()

    async def drain(self, token: str, *, timeout: float = 5.0) -> None:
        """Waits until none of the bot's updates is pending: with a webhook, each has been
        delivered or given up on; with getUpdates, each has been confirmed."""
        bot = self._bot_for(token)
        async with asyncio.timeout(timeout):
            while bot.pending:
                changed = bot.changed
                await changed.wait()

    def _enqueue(self, bot: _Bot, update: dict[str, Any]) -> int | None:
        kind = _update_kind(update)
        # Reference server, add_update_impl: updates of a type outside allowed_updates are never
        # created, so they reach neither the webhook nor getUpdates.
        if kind is not None and kind not in bot.allowed_updates:
            log.debug("bot %d: skipped %s update (not in allowed_updates)", bot.id, kind)
            return None
        given = update.get("update_id")
        if isinstance(given, int) and not isinstance(given, bool):
            update_id = given
            bot.next_update_id = max(bot.next_update_id, given + 1)
        else:
            update_id = bot.next_update_id
            bot.next_update_id += 1
        stored = {"update_id": update_id, **{k: v for k, v in update.items() if k != "update_id"}}
        query = update.get("callback_query")
        if isinstance(query, dict) and isinstance(query.get("id"), str):
            bot.callback_queries.setdefault(query["id"], False)
        bot.history[update_id] = stored
        if len(bot.history) > _HISTORY_LIMIT:
            del bot.history[next(iter(bot.history))]
        bot.pending.append(stored)
        bot.notify()
        return update_id

    def _start_worker(self, bot: _Bot) -> None:
        if bot.worker is not None:
            bot.worker.cancel()
        bot.worker = None
        if bot.webhook_url and not self._stopping:
            task = asyncio.get_running_loop().create_task(
                self._webhook_worker(bot), name=f"fake-bot-api-webhook-{bot.id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            bot.worker = task

    async def _stop_worker(self, bot: _Bot) -> None:
        task, bot.worker = bot.worker, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _webhook_worker(self, bot: _Bot) -> None:
        # One worker per bot, one update at a time: deliveries happen in update_id order. The
        # update stays queued until delivered or given up, so pending_update_count counts it and
        # a cancelled worker (deleteWebhook) leaves it for getUpdates.
        while True:
            if not bot.pending:
                changed = bot.changed
                await changed.wait()
                continue
            update = bot.pending[0]
            await self._deliver_with_retries(bot, update)
            if bot.pending and bot.pending[0] is update:
                bot.pending.pop(0)
                bot.notify()  # for drain()

    async def _deliver_with_retries(self, bot: _Bot, update: dict[str, Any]) -> bool:
        # docs/telegram-stars.md: "A non-2XX answer makes Telegram retry, then give up."
        for attempt in range(1, self._webhook_attempts + 1):
            error = await self._post_update(bot, update)
            if error is None:
                return True
            # getWebhookInfo reports the latest failure; it stays until the webhook is set again.
            bot.last_error_date = int(time.time())
            bot.last_error_message = error
            # Never log the URL: bots often put their token or a secret in the webhook path.
            log.warning(
                "bot %d: webhook delivery of update %d failed (attempt %d of %d): %s",
                bot.id,
                update["update_id"],
                attempt,
                self._webhook_attempts,
                error,
            )
            if attempt < self._webhook_attempts:
                await asyncio.sleep(self._webhook_retry_delay * 2 ** (attempt - 1))
        log.warning("bot %d: gave up delivering update %d", bot.id, update["update_id"])
        return False

    async def _post_update(self, bot: _Bot, update: dict[str, Any]) -> str | None:
        session = self._session
        if session is None:
            return "Fake Bot API is not running"
        headers = {"Content-Type": "application/json"}
        # Bot API, setWebhook.secret_token: sent "in the header X-Telegram-Bot-Api-Secret-Token
        # in every webhook request".
        if bot.secret_token:
            headers[SECRET_TOKEN_HEADER] = bot.secret_token
        try:
            async with session.post(
                bot.webhook_url,
                data=json.dumps(update, ensure_ascii=False).encode(),
                headers=headers,
                timeout=ClientTimeout(total=self._webhook_timeout),
                allow_redirects=False,
            ) as response:
                body = await response.read()
                if not 200 <= response.status <= 299:
                    # Wording of the reference server's WebhookActor.
                    return f"Wrong response from the webhook: {response.status} {response.reason}"
        except TimeoutError:
            return "Read timeout expired"
        except ClientConnectorError:
            return "Connection refused"
        except ServerDisconnectedError:
            return "Webhook connection closed"
        except ClientError as exc:
            return f"Connection failed: {type(exc).__name__}"
        await self._run_webhook_reply(bot, body)
        return None

    async def _run_webhook_reply(self, bot: _Bot, body: bytes) -> None:
        # Bot API: "you can perform a request to the Bot API while sending an answer to the
        # webhook" (a JSON body with "method"). The reference server ignores get* methods,
        # setWebhook, deleteWebhook, close and logOut there, and discards the result.
        if not body:
            return
        try:
            reply = json.loads(body)
        except ValueError:
            return
        if not isinstance(reply, dict) or not isinstance(reply.get("method"), str):
            return
        method = reply["method"].lower()
        if method.startswith("get") or method in ("setwebhook", "deletewebhook", "close", "logout"):
            return
        params = {k: v for k, v in reply.items() if k != "method"}
        entry = self._methods.get(method)
        self._record(
            RecordedCall(
                entry[0] if entry else reply["method"],
                bot.token,
                params,
                time.time(),
                via_webhook_reply=True,
            )
        )
        if entry is None:
            return
        try:
            await entry[1](bot, _Args(params))
        except BotApiError as exc:
            log.info("bot %d: webhook reply %s failed: %s", bot.id, entry[0], exc.description)

    # -------------------------------------------------------------------- HTTP: Bot API

    async def _handle_not_found(self, request: web.Request) -> web.Response:
        return _error_response(BotApiError(404, "Not Found"))

    async def _handle_file_download(self, request: web.Request) -> web.Response:
        bot = self._resolve_token(request.match_info["token"])
        if bot is None:
            return _error_response(BotApiError(401, "Unauthorized"))
        # The test environment's files live under /file/bot{token}/test/{file_path}.
        path = request.match_info["file_path"]
        stored = self._file_paths.get((bot.id, path)) or self._file_paths.get(
            (bot.id, path.removeprefix("test/"))
        )
        if stored is None or stored.data is None:
            return _error_response(BotApiError(404, "Not Found"))
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def _handle_bot_request(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        bot = self._resolve_token(token)
        if bot is None:
            return _error_response(BotApiError(401, "Unauthorized"))
        try:
            raw = await _read_params(request)
        except BotApiError as exc:
            return _error_response(exc)
        requested = request.match_info["method"]
        # Bot API: "All methods in the Bot API are case-insensitive."
        entry = self._methods.get(requested.lower())
        method = entry[0] if entry else requested
        test_environment = request.path.endswith(f"/test/{requested}")
        self._record(RecordedCall(method, token, raw, time.time(), False, test_environment))

        delay = self._take_fault("delay", method, token)
        if delay is not None:
            # stop() cuts the delay short so that shutdown is not held up.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay.seconds)
        if self._take_fault("drop", method, token) is not None:
            # Close without an answer: the client sees a dropped connection, as when Telegram's
            # front end resets it. Returning afterwards is safe: aiohttp notices the closed
            # transport and writes nothing.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        fail = self._take_fault("fail", method, token)
        if fail is not None:
            return _error_response(BotApiError(fail.error_code, fail.description, fail.retry_after))

        if entry is None:
            return _error_response(BotApiError(404, "Not Found: method not found"))
        try:
            result = await entry[1](bot, _Args(raw))
        except BotApiError as exc:
            return _error_response(exc)
        except Exception:
            log.exception("bot %d: %s failed inside the fake", bot.id, method)
            return _error_response(BotApiError(500, "Internal Server Error"))
        if isinstance(result, _Ok):
            return _ok_response(result.result, result.description)
        return _ok_response(result)

    # ------------------------------------------------------------------------- methods

    async def _get_me(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        return {
            "id": bot.id,
            "is_bot": True,
            "first_name": bot.first_name,
            "username": bot.username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

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

        # docs/telegram-stars.md: tips, need_*, send_*_to_provider and is_flexible are not
        # supported for Stars; Telegram would ignore or reject them, the fake makes them loud.
        if args.integer("max_tip_amount", 0) != 0:
            raise _bad_request("max_tip_amount is not supported for payments in Telegram Stars")
        tips = args.text("suggested_tip_amounts").strip()
        if tips and tips != "[]":
            raise _bad_request(
                "suggested_tip_amounts is not supported for payments in Telegram Stars"
            )
        for name in _UNSUPPORTED_STARS_FLAGS:
            if args.flag(name):
                raise _bad_request(f"{name} is not supported for payments in Telegram Stars")

        photo: dict[str, int | None] = {}
        for name in ("photo_size", "photo_width", "photo_height"):
            value = args.integer(name, -1) if args.text(name) else None
            if value is not None and value < 0:
                raise _bad_request(f"{name} must be a non-negative integer")
            photo[name] = value

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
        bot.ledger.append(_LedgerEntry(charge, refund=True, date=now))
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

    async def _set_webhook(self, bot: _Bot, args: _Args) -> _Ok:
        url = args.text("url")
        if not url:
            # Bot API: "Use an empty string to remove webhook integration".
            return await self._delete_webhook(bot, args)
        parts = urlsplit(url)
        # Telegram insists on HTTPS (and ports 443/80/88/8443); the fake also takes plain HTTP
        # and any port, so that tests and the sandbox can use a loopback receiver.
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise _bad_request("invalid webhook URL specified")
        secret_token = args.text("secret_token")
        if len(secret_token) > 256:
            raise _bad_request("secret token is too long")
        if secret_token and not _SECRET_TOKEN_RE.fullmatch(secret_token):
            raise _bad_request("secret token contains unallowed characters")
        max_connections = _clamp(args.integer("max_connections", DEFAULT_MAX_CONNECTIONS), 1, 100)
        allowed = _parse_allowed_updates(args.text("allowed_updates"))

        if args.flag("drop_pending_updates"):
            bot.pending.clear()
        if allowed is not None:
            bot.allowed_updates = allowed
        if bot.poll is not None:
            # Reference server, abort_long_poll(from_set_webhook=true).
            bot.poll.conflict = _CONFLICT_SET_WEBHOOK
        await self._stop_worker(bot)
        bot.webhook_url = url
        bot.secret_token = secret_token
        bot.max_connections = max_connections
        # Setting a webhook clears the previous delivery error (reference server).
        bot.last_error_date = None
        bot.last_error_message = None
        self._start_worker(bot)
        bot.notify()
        return _Ok(True, "Webhook was set")

    async def _delete_webhook(self, bot: _Bot, args: _Args) -> _Ok:
        if args.flag("drop_pending_updates"):
            bot.pending.clear()
        had_webhook = bool(bot.webhook_url)
        await self._stop_worker(bot)
        bot.webhook_url = ""
        bot.secret_token = ""
        bot.max_connections = 0
        bot.notify()
        return _Ok(True, "Webhook was deleted" if had_webhook else "Webhook is already deleted")

    async def _get_webhook_info(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": bot.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(bot.pending),
        }
        if bot.last_error_date is not None:
            info["last_error_date"] = bot.last_error_date
            info["last_error_message"] = bot.last_error_message
        if bot.max_connections > 0:
            info["max_connections"] = bot.max_connections
        if bot.allowed_updates != DEFAULT_ALLOWED_UPDATES:
            info["allowed_updates"] = sorted(bot.allowed_updates)
        return info

    async def _get_updates(self, bot: _Bot, args: _Args) -> list[dict[str, Any]]:
        if bot.webhook_url:
            raise BotApiError(409, _CONFLICT_WEBHOOK_ACTIVE)
        # The reference server clamps these instead of rejecting them.
        offset = args.integer("offset", 0)
        limit = _clamp(args.integer("limit", 100), 1, 100)
        timeout = _clamp(args.integer("timeout", 0), 0, LONG_POLL_MAX_TIMEOUT)
        allowed = _parse_allowed_updates(args.text("allowed_updates"))
        if allowed is not None:
            # Bot API: affects only updates created after the call.
            bot.allowed_updates = allowed

        if offset < 0:
            # Bot API: a negative offset keeps only the last -offset updates; the rest are
            # forgotten.
            del bot.pending[: max(0, len(bot.pending) + offset)]
        elif offset > 0:
            # Bot API: "An update is considered confirmed as soon as getUpdates is called with
            # an offset higher than its update_id"; confirmed updates are gone for good.
            bot.pending[:] = [u for u in bot.pending if u["update_id"] >= offset]
        bot.notify()  # for drain()

        if bot.poll is not None:
            bot.poll.conflict = _CONFLICT_OTHER_GET_UPDATES
            bot.notify()
        poll = _Poll()
        bot.poll = poll
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                if poll.conflict is not None:
                    raise BotApiError(409, poll.conflict)
                remaining = deadline - loop.time()
                if bot.pending or remaining <= 0 or self._stopping:
                    return [dict(update) for update in bot.pending[:limit]]
                changed = bot.changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
        finally:
            if bot.poll is poll:
                bot.poll = None

    async def _get_star_transactions(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        offset = max(0, args.integer("offset", 0))
        limit = _clamp(args.integer("limit", 100), 1, 100)
        entries = bot.ledger[offset : offset + limit]
        return {"transactions": [self._transaction_json(entry) for entry in entries]}

    def _transaction_json(self, entry: _LedgerEntry) -> dict[str, Any]:
        charge = entry.charge
        # TransactionPartnerUser as the reference server writes it for an invoice payment.
        partner: dict[str, Any] = {
            "type": "user",
            "transaction_type": "invoice_payment",
            "user": self._user(charge.user_id),
            "invoice_payload": charge.invoice_payload,
        }
        if charge.subscription_expiration_date is not None:
            partner["subscription_period"] = SUBSCRIPTION_PERIOD
        # StarTransaction.id of an incoming payment is its telegram_payment_charge_id; money
        # going out (a refund) has a receiver instead of a source.
        return {
            "id": charge.telegram_payment_charge_id,
            "amount": charge.total_amount,
            "date": entry.date,
            ("receiver" if entry.refund else "source"): partner,
        }

    async def _get_my_star_balance(self, bot: _Bot, args: _Args) -> dict[str, int]:
        balance = sum(
            -entry.charge.total_amount if entry.refund else entry.charge.total_amount
            for entry in bot.ledger
        )
        return {"amount": balance, "nanostar_amount": 0}

    # ------------------------------------------------------------------ chat methods

    async def _send_message(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        # Reference server order: the content (get_input_message_text), then do_send_message's
        # options and chat; the length is Telegram's check when it sends.
        text = args.text("text")
        if not text:
            raise _bad_request("message text is empty")
        _check_parse_mode(text, args.text("parse_mode"))
        outgoing = self._outgoing(bot, args)
        if not text.strip():
            # Telegram trims the text; only spaces leave nothing to send.
            raise _bad_request("message must be non-empty")
        if len(text) > MAX_MESSAGE_LENGTH:
            raise _bad_request("message is too long")
        # The text comes back as sent: the fake parses no entities (markup stays in the text).
        return self._bot_message(bot, outgoing.chat_id, **_message_options(outgoing), text=text)

    async def _send_document(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        source = self._document_source(args)
        caption = args.text("caption")
        _check_parse_mode(caption, args.text("parse_mode"))
        outgoing = self._outgoing(bot, args)
        if isinstance(source, UploadedFile):
            if not source.data:
                raise _bad_request("file must be non-empty")
            document = self._new_file(bot, source.filename, source.content_type, source.data)
        elif source.lower().startswith(("http://", "https://")):
            # Telegram fetches the URL; the fake only records it (no bytes, no size), so the file
            # cannot be downloaded back. Which content types Telegram takes is its decision.
            name = unquote(urlsplit(source).path.rsplit("/", 1)[-1]) or None
            document = self._new_file(bot, name, None, None)
        else:
            found = self._files.get(source)
            # Bot API: a file_id "is unique for each individual bot and can't be transferred
            # from one bot to another".
            if found is None or found.bot_id != bot.id:
                raise _bad_request("wrong file identifier/HTTP URL specified")
            document = found
        if len(caption) > MAX_CAPTION_LENGTH:
            raise _bad_request("message caption is too long")
        self._files[document.file_id] = document
        content: dict[str, Any] = {"document": _document_json(document)}
        if caption:
            content["caption"] = caption
        return self._bot_message(bot, outgoing.chat_id, **_message_options(outgoing), **content)

    @staticmethod
    def _document_source(args: _Args) -> UploadedFile | str:
        # Reference server, get_input_file: a string is a file_id, an HTTP URL or
        # "attach://<name>" (the file part <name>, which is how aiogram uploads); otherwise a file
        # part named like the parameter.
        text = args.text("document").strip()
        if text.startswith("attach://"):
            upload = args.file(text.removeprefix("attach://"))
        elif text:
            return text
        else:
            upload = args.file("document")
        if upload is None:
            raise _bad_request("there is no document in the request")
        return upload

    def _new_file(
        self, bot: _Bot, file_name: str | None, content_type: str | None, data: bytes | None
    ) -> _File:
        # The Bot API server hands Telegram the file under its name, so the MIME type comes from
        # the extension; the part's Content-Type is the fake's fallback.
        guessed = mimetypes.guess_type(file_name)[0] if file_name else None
        if guessed is None and content_type and data is not None:
            guessed = content_type
        return _File(
            # Shaped like Telegram's: a document file_id starts "BQAC", a file_unique_id "AgAD".
            file_id=f"BQAC{secrets.token_urlsafe(48)}",
            file_unique_id=f"AgAD{secrets.token_urlsafe(9)}",
            bot_id=bot.id,
            file_name=file_name,
            mime_type=guessed or ("application/octet-stream" if data is not None else None),
            data=data,
        )

    async def _get_file(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        file_id = args.text("file_id")
        if not file_id:
            raise _bad_request("file_id not specified")
        stored = self._files.get(file_id)
        if stored is None or stored.bot_id != bot.id:
            raise _bad_request("invalid file_id")
        result: dict[str, Any] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
        }
        if stored.data is None:
            # Sent by URL: the fake has no bytes to offer, hence no size and no file_path (both
            # optional in File).
            return result
        if len(stored.data) > MAX_DOWNLOAD_SIZE:
            raise _bad_request("file is too big")
        if stored.file_path is None:
            stored.file_path = f"documents/file_{bot.next_file_number}{_file_suffix(stored)}"
            bot.next_file_number += 1
            self._file_paths[(bot.id, stored.file_path)] = stored
        result["file_size"] = len(stored.data)
        result["file_path"] = stored.file_path
        return result

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

    def _outgoing(self, bot: _Bot, args: _Args) -> _Outgoing:
        # do_send_message: reply parameters and markup are parsed before the chat is checked.
        reply = _parse_reply_parameters(args)
        markup = _parse_reply_markup(args.text("reply_markup"))
        chat_id = self._chat_id(bot, args.text("chat_id"))
        reply_to: dict[str, Any] | None = None
        if reply is not None:
            reply_chat, message_id, allow_without_reply = reply
            target = None
            # The fake keeps no cross-chat replies: another chat's message is never found.
            if not reply_chat or self._chat_id(bot, reply_chat) == chat_id:
                target = bot.messages.get((chat_id, message_id))
            if target is None and not allow_without_reply:
                raise _bad_request("message to be replied not found")
            if target is not None:
                # Bot API, Message.reply_to_message: "will not contain further
                # reply_to_message fields even if it itself is a reply".
                reply_to = {k: v for k, v in target.items() if k != "reply_to_message"}
        return _Outgoing(chat_id, reply_to, markup)

    @staticmethod
    def _chat_id(bot: _Bot, text: str) -> int:
        # Reference server, check_chat. A bot reaches a private chat only after its user wrote to
        # it (or paid it); the fake has no groups, channels or public usernames, so "@name" and
        # every other chat is not found, as Telegram says of a chat the bot cannot see.
        text = text.strip()
        if not text:
            raise _bad_request("chat_id is empty")
        if not _INTEGER_RE.fullmatch(text) or int(text) not in bot.chats:
            raise _bad_request("chat not found")
        return int(text)

    async def _delete_message(self, bot: _Bot, args: _Args) -> bool:
        chat_text = args.text("chat_id")
        message_id = args.integer("message_id", 0)
        if not chat_text:
            raise _bad_request("chat identifier is not specified")
        if message_id <= 0:
            raise _bad_request("message identifier is not specified")
        chat_id = self._chat_id(bot, chat_text)
        message = bot.messages.get((chat_id, message_id))
        if message is None:
            raise _bad_request("message to delete not found")
        # Bot API: in private chats a bot deletes both sides' messages, but only for 48 hours.
        if time.time() - message["date"] > DELETE_MESSAGE_WINDOW:
            raise _bad_request("message can't be deleted")
        del bot.messages[(chat_id, message_id)]
        return True

    async def _answer_callback_query(self, bot: _Bot, args: _Args) -> bool:
        query_id = args.text("callback_query_id").strip()
        # Unknown, another bot's, or answered already: Telegram's one answer for them all.
        if bot.callback_queries.get(query_id, True):
            raise BotApiError(400, _QUERY_TOO_OLD)
        # Bot API, answerCallbackQuery.text: "0-200 characters".
        if len(args.text("text")) > 200:
            raise _bad_request("MESSAGE_TOO_LONG")
        bot.callback_queries[query_id] = True
        return True

    async def _set_my_commands(self, bot: _Bot, args: _Args) -> bool:
        commands = _parse_bot_commands(args.text("commands"))
        key = (_parse_command_scope(args.text("scope")), args.text("language_code"))
        # Telegram's own checks, as it answers them (MTProto error names).
        if len(commands) > MAX_BOT_COMMANDS:
            raise _bad_request("BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            if not _BOT_COMMAND_RE.fullmatch(command["command"]):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(command["description"].strip()) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        if commands:
            bot.commands[key] = commands
        else:
            bot.commands.pop(key, None)  # an empty list deletes them, as deleteMyCommands
        return True

    async def _get_my_commands(self, bot: _Bot, args: _Args) -> list[dict[str, str]]:
        key = (_parse_command_scope(args.text("scope")), args.text("language_code"))
        return [dict(command) for command in bot.commands.get(key, [])]

    async def _delete_my_commands(self, bot: _Bot, args: _Args) -> bool:
        key = (_parse_command_scope(args.text("scope")), args.text("language_code"))
        bot.commands.pop(key, None)
        return True

    # ------------------------------------------------------------------- HTTP: control

    async def _control_body(self, request: web.Request) -> dict[str, Any]:
        if not request.body_exists:
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise _ControlError(400, "body must be JSON") from None
        if not isinstance(body, dict):
            raise _ControlError(400, "body must be a JSON object")
        return body

    @_control
    async def _control_add_bot(self, request: web.Request) -> int:
        body = await self._control_body(request)
        return self.add_bot(_field(body, "token", str), _optional(body, "username", str))

    @_control
    async def _control_fail(self, request: web.Request) -> bool:
        body = await self._control_body(request)
        self.fail_next(
            _field(body, "method", str),
            error_code=_field(body, "error_code", int),
            description=_field(body, "description", str),
            retry_after=_optional(body, "retry_after", int),
            times=_optional(body, "times", int) or 1,
            token=_optional(body, "token", str),
        )
        return True

    @_control
    async def _control_delay(self, request: web.Request) -> bool:
        body = await self._control_body(request)
        seconds = _field(body, "seconds", (int, float))
        self.delay(
            _field(body, "method", str),
            float(seconds),
            _optional(body, "times", int),
            token=_optional(body, "token", str),
        )
        return True

    @_control
    async def _control_drop(self, request: web.Request) -> bool:
        body = await self._control_body(request)
        self.drop_connection(
            _field(body, "method", str),
            _optional(body, "times", int) or 1,
            token=_optional(body, "token", str),
        )
        return True

    @_control
    async def _control_clear(self, request: web.Request) -> bool:
        self.clear_faults()
        return True

    @_control
    async def _control_reset(self, request: web.Request) -> bool:
        self.reset()
        return True

    @_control
    async def _control_calls(self, request: web.Request) -> list[dict[str, Any]]:
        method = request.query.get("method")
        bot_id = request.query.get("bot_id")
        calls = self.calls if method is None else self.calls_for(method)
        # Bot ids, not tokens, go out: tokens are credentials.
        return [
            {
                "method": call.method,
                "bot_id": int(call.token.split(":", 1)[0]),
                "params": {name: _jsonable(value) for name, value in call.params.items()},
                "time": call.time,
                "via_webhook_reply": call.via_webhook_reply,
            }
            for call in calls
            if bot_id is None or call.token.split(":", 1)[0] == bot_id
        ]

    @_control
    async def _control_pay(self, request: web.Request) -> dict[str, Any]:
        """Pays {"link", "user_id"} (pay_invoice) or an invoice message {"token", "chat_id",
        "message_id"} (pay_sent_invoice)."""
        body = await self._control_body(request)
        answer_timeout = _optional(body, "answer_timeout", (int, float))
        options: dict[str, Any] = {
            "total_amount": _optional(body, "total_amount", int),
            "invoice_payload": _optional(body, "invoice_payload", str),
            "currency": _optional(body, "currency", str) or STARS_CURRENCY,
            "answer_timeout": (
                PRE_CHECKOUT_ANSWER_WINDOW if answer_timeout is None else float(answer_timeout)
            ),
        }
        if "message_id" in body:
            outcome = await self.pay_sent_invoice(
                _field(body, "token", str),
                _field(body, "chat_id", int),
                _field(body, "message_id", int),
                **options,
            )
        else:
            outcome = await self.pay_invoice(
                _field(body, "link", str), _field(body, "user_id", int), **options
            )
        return dataclasses.asdict(outcome)

    @_control
    async def _control_invoices(self, request: web.Request) -> list[dict[str, Any]]:
        return [dataclasses.asdict(invoice) for invoice in self.invoices]

    @_control
    async def _control_charges(self, request: web.Request) -> list[dict[str, Any]]:
        return [dataclasses.asdict(charge) for charge in self.charges]

    @_control
    async def _control_deliver(self, request: web.Request) -> int | None:
        body = await self._control_body(request)
        return await self.deliver_update(_field(body, "token", str), _field(body, "update", dict))

    @_control
    async def _control_user_message(self, request: web.Request) -> int | None:
        body = await self._control_body(request)
        return await self.send_user_message(
            _field(body, "token", str),
            _field(body, "user_id", int),
            _field(body, "text", str),
            first_name=_optional(body, "first_name", str),
        )

    @_control
    async def _control_sent_messages(self, request: web.Request) -> list[dict[str, Any]]:
        bot_id = request.query.get("bot_id", "")
        chat_id = request.query.get("chat_id")
        bot = self._bots_by_id.get(int(bot_id)) if bot_id.isdigit() else None
        if bot is None:
            raise _ControlError(400, "query parameter bot_id must name a bot")
        if chat_id is not None and not _INTEGER_RE.fullmatch(chat_id):
            raise _ControlError(400, "query parameter chat_id must be an integer")
        return self.sent_messages(bot.token, None if chat_id is None else int(chat_id))

    @_control
    async def _control_redeliver(self, request: web.Request) -> bool:
        body = await self._control_body(request)
        await self.redeliver(_field(body, "update_id", int), token=_optional(body, "token", str))
        return True


class _ControlError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def _optional(body: dict[str, Any], name: str, kind: type[Any] | tuple[type[Any], ...]) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise _ControlError(400, f"field {name!r} has the wrong type")
    return value


def _field(body: dict[str, Any], name: str, kind: type[Any] | tuple[type[Any], ...]) -> Any:
    value = _optional(body, name, kind)
    if value is None:
        raise _ControlError(400, f"field {name!r} is required")
    return value


def _as_tuple(kind: type[Any] | tuple[type[Any], ...]) -> tuple[type[Any], ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _jsonable(value: Any) -> Any:
    # An uploaded file goes out of the control API as its description, not its bytes.
    if isinstance(value, UploadedFile):
        return {"filename": value.filename, "content_type": value.content_type, "size": value.size}
    return value


def _check_parse_mode(text: str, parse_mode: str) -> None:
    # Reference server, get_formatted_text: checked only when there is text to parse.
    if text and parse_mode.lower() not in ("", "none", "markdown", "markdownv2", "html"):
        raise _bad_request("unsupported parse_mode")


def _parse_reply_parameters(args: _Args) -> tuple[str, int, bool] | None:
    """(chat_id or "", message_id, allow_sending_without_reply), or None for no reply; reference
    server, get_reply_parameters (the older reply_to_message_id still works)."""
    text = args.text("reply_parameters")
    if not text:
        message_id = args.integer("reply_to_message_id", 0)
        if message_id <= 0:
            return None
        return "", message_id, args.flag("allow_sending_without_reply")
    try:
        value = json.loads(text)
    except ValueError:
        raise _bad_request("can't parse reply parameters JSON object") from None
    if not isinstance(value, dict):
        raise _bad_request("object expected as reply parameters")
    if not value:
        return None
    target = value.get("message_id")
    if target is None:
        raise _bad_request('can\'t find field "message_id"')
    if not isinstance(target, int) or isinstance(target, bool):
        raise _bad_request('field "message_id" must be of type Number')
    allow = value.get("allow_sending_without_reply", False)
    if not isinstance(allow, bool):
        raise _bad_request('field "allow_sending_without_reply" must be of type Boolean')
    chat_id = value.get("chat_id")
    if target <= 0:
        return None
    return ("" if chat_id is None else str(chat_id)), target, allow


def _parse_reply_markup(text: str) -> dict[str, Any] | None:
    # Reference server, get_reply_markup; the fake checks the shape and the inline buttons.
    if not text:
        return None
    try:
        markup = json.loads(text)
    except ValueError:
        raise _bad_request("can't parse reply keyboard markup JSON object") from None
    if not isinstance(markup, dict):
        raise _bad_request("object expected as reply markup")
    for name in ("keyboard", "inline_keyboard"):
        rows = markup.get(name)
        if rows is None:
            continue
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad_request(f'field "{name}" must be an Array of Arrays')
    for row in markup.get("inline_keyboard") or []:
        for button in row:
            _check_inline_button(button)
    return markup


def _check_inline_button(button: Any) -> None:
    prefix = "can't parse inline keyboard button: "
    if not isinstance(button, dict):
        raise _bad_request(prefix + "InlineKeyboardButton must be an Object")
    if not isinstance(button.get("text"), str):
        raise _bad_request(prefix + 'Field "text" must be of type String')
    actions = [name for name in _INLINE_BUTTON_ACTIONS if button.get(name) is not None]
    if not actions:
        raise _bad_request(prefix + "Text buttons are unallowed in the inline keyboard")
    if len(actions) > 1:
        # Bot API: "Exactly one of the optional fields must be used"; Telegram picks one, the
        # fake says so.
        raise _bad_request(prefix + f"exactly one of {', '.join(actions)} must be used")
    data = button.get("callback_data")
    # Bot API, callback_data: "1-64 bytes".
    if data is not None and (not isinstance(data, str) or not 1 <= len(data.encode()) <= 64):
        raise _bad_request("BUTTON_DATA_INVALID")


def _message_options(outgoing: _Outgoing) -> dict[str, Any]:
    """The fields a sent message gets from its options: the reply, and an inline keyboard (the
    only markup a Message shows)."""
    options: dict[str, Any] = {}
    if outgoing.reply_to is not None:
        options["reply_to_message"] = outgoing.reply_to
    markup = outgoing.reply_markup
    if markup is not None and markup.get("inline_keyboard"):
        options["reply_markup"] = {"inline_keyboard": markup["inline_keyboard"]}
    return options


def _document_json(stored: _File) -> dict[str, Any]:
    # Reference server, JsonDocument then json_store_file: file_name and mime_type when known.
    document: dict[str, Any] = {}
    if stored.file_name:
        document["file_name"] = stored.file_name
    if stored.mime_type:
        document["mime_type"] = stored.mime_type
    document["file_id"] = stored.file_id
    document["file_unique_id"] = stored.file_unique_id
    if stored.data is not None:
        document["file_size"] = len(stored.data)
    return document


def _file_suffix(stored: _File) -> str:
    # Telegram keeps the extension in file_path ("documents/file_0.pdf").
    name = stored.file_name or ""
    suffix = name[name.rfind(".") :] if "." in name else ""
    return suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", suffix) else ""


def _bot_command_entities(text: str) -> list[dict[str, Any]]:
    # MessageEntity offsets and lengths count UTF-16 code units.
    def utf16(part: str) -> int:
        return len(part.encode("utf-16-le")) // 2

    return [
        {
            "offset": utf16(text[: match.start()]),
            "length": utf16(match.group()),
            "type": "bot_command",
        }
        for match in _COMMAND_IN_TEXT_RE.finditer(text)
    ]


def _parse_bot_commands(text: str) -> list[dict[str, str]]:
    # Reference server, get_bot_commands; absent means none.
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        raise _bad_request("can't parse commands JSON object") from None
    if not isinstance(value, list):
        raise _bad_request("expected an Array of BotCommand")
    commands = []
    for item in value:
        if not isinstance(item, dict):
            raise _bad_request("can't parse BotCommand: expected an Object")
        for name in ("command", "description"):
            if name not in item:
                raise _bad_request(f"can't parse BotCommand: Can't find field \"{name}\"")
            if not isinstance(item[name], str):
                raise _bad_request(
                    f'can\'t parse BotCommand: Field "{name}" must be of type String'
                )
        commands.append({"command": item["command"], "description": item["description"]})
    return commands


def _parse_command_scope(text: str) -> str:
    """The scope as canonical JSON (the commands' key); absent means the default scope."""
    if not text:
        return '{"type":"default"}'
    try:
        scope = json.loads(text)
    except ValueError:
        raise _bad_request("can't parse BotCommandScope JSON object") from None
    if not isinstance(scope, dict) or not isinstance(scope.get("type"), str):
        raise _bad_request('can\'t parse BotCommandScope: Field "type" must be of type String')
    return json.dumps(scope, sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------------------------ CLI


async def _serve(host: str, port: int, accept_any_token: bool) -> None:
    fake = FakeBotApi(host, port, accept_any_token)
    await fake.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    display_host = f"[{host}]" if ":" in host else host
    # Parent processes wait for this exact line before they start talking to the fake.
    print(f"fake Bot API listening on http://{display_host}:{fake.port}", flush=True)
    try:
        await stopped.wait()
    finally:
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m portex_pay_devtools.fake_bot_api",
        description="Run the fake Telegram Bot API (the local Telegram sandbox).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument(
        "--accept-any-token",
        action="store_true",
        help=r"register any well-formed token (\d+:[A-Za-z0-9_-]{30,}) on first use",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve(args.host, args.port, args.accept_any_token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
