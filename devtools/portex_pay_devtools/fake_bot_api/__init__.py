"""A fake Telegram Bot API: a real aiohttp HTTP server speaking the Bot API's wire format
(`{base}/bot{token}/{method}` with JSON, form, multipart or query parameters; `{"ok": true,
"result": ...}` or `{"ok": false, "error_code": N, "description": ...}` with the same HTTP
status) for the Telegram Stars methods portex-pay uses and a chat bot's everyday methods
(sendMessage, sendDocument with uploads, getFile and `/file/bot{token}/{path}` downloads,
sendInvoice, deleteMessage, commands, callback queries). It also plays the users: the paying user
(`pay_invoice`, `pay_sent_invoice`: pre-checkout query, 10-second answer window, successful
payment, refunds; Stars subscriptions: `renew_subscription`, `cancel_subscription`,
`reactivate_subscription`, the `subscription` update and editUserStarSubscription, see
subscriptions.py) and the user who chats with the bot (`send_user_message`,
`send_callback_query`), and delivers updates by webhook or long polling; tests drive it
in-process or, through the `/_fake/` control routes, from another process, and `make run` starts
it as the local Telegram sandbox (`python -m portex_pay_devtools.fake_bot_api`). It enforces the
rules of docs/telegram-stars.md (Bot API 10.1) and follows the reference server
(github.com/tdlib/telegram-bot-api, Client.cpp); where it departs from Telegram on purpose, the
code says so.
"""

from __future__ import annotations

from portex_pay_devtools.fake_bot_api.errors import BotApiError
from portex_pay_devtools.fake_bot_api.model import (
    DEFAULT_ALLOWED_UPDATES as DEFAULT_ALLOWED_UPDATES,
)
from portex_pay_devtools.fake_bot_api.model import (
    DEFAULT_MAX_CONNECTIONS as DEFAULT_MAX_CONNECTIONS,
)
from portex_pay_devtools.fake_bot_api.model import (
    DELETE_MESSAGE_WINDOW as DELETE_MESSAGE_WINDOW,
)
from portex_pay_devtools.fake_bot_api.model import (
    LONG_POLL_MAX_TIMEOUT as LONG_POLL_MAX_TIMEOUT,
)
from portex_pay_devtools.fake_bot_api.model import MAX_BOT_COMMANDS as MAX_BOT_COMMANDS
from portex_pay_devtools.fake_bot_api.model import MAX_CAPTION_LENGTH as MAX_CAPTION_LENGTH
from portex_pay_devtools.fake_bot_api.model import MAX_DOWNLOAD_SIZE as MAX_DOWNLOAD_SIZE
from portex_pay_devtools.fake_bot_api.model import MAX_MESSAGE_LENGTH as MAX_MESSAGE_LENGTH
from portex_pay_devtools.fake_bot_api.model import (
    MAX_SUBSCRIPTION_PRICE as MAX_SUBSCRIPTION_PRICE,
)
from portex_pay_devtools.fake_bot_api.model import MAX_UPLOAD_SIZE as MAX_UPLOAD_SIZE
from portex_pay_devtools.fake_bot_api.model import (
    PRE_CHECKOUT_ANSWER_WINDOW as PRE_CHECKOUT_ANSWER_WINDOW,
)
from portex_pay_devtools.fake_bot_api.model import SECRET_TOKEN_HEADER as SECRET_TOKEN_HEADER
from portex_pay_devtools.fake_bot_api.model import STARS_CURRENCY as STARS_CURRENCY
from portex_pay_devtools.fake_bot_api.model import SUBSCRIPTION_PERIOD as SUBSCRIPTION_PERIOD
from portex_pay_devtools.fake_bot_api.model import UPDATE_TYPES as UPDATE_TYPES
from portex_pay_devtools.fake_bot_api.model import (
    Charge,
    Invoice,
    PaymentOutcome,
    ReceivedRequest,
    RecordedCall,
    Renewal,
    Subscription,
    UploadedFile,
)
from portex_pay_devtools.fake_bot_api.server import FakeBotApi, main

__all__ = [
    "BotApiError",
    "Charge",
    "FakeBotApi",
    "Invoice",
    "PaymentOutcome",
    "ReceivedRequest",
    "RecordedCall",
    "Renewal",
    "Subscription",
    "UploadedFile",
    "main",
]
