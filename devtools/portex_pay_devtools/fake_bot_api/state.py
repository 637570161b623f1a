"""What every part of the fake shares: its settings, its records (calls, bots, invoices, charges,
files, pre-checkout queries), the bot registry and the call log. The roles (delivery, users,
methods, ...) are mixins on top of `_State`; `FakeBotApi` combines them."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import ClientSession

from portex_pay_devtools.fake_bot_api.model import (
    Charge,
    Invoice,
    ReceivedRequest,
    RecordedCall,
    Subscription,
    _Bot,
    _File,
    _PreCheckout,
)
from portex_pay_devtools.fake_bot_api.wire import _Args

# One logger for the whole fake, named after the package (portex_pay_devtools.fake_bot_api).
log: Final = logging.getLogger(__package__ or __name__)

_BOT_TOKEN_RE: Final = re.compile(r"(\d+):([A-Za-z0-9_-]+)")
_SANDBOX_TOKEN_RE: Final = re.compile(r"\d+:[A-Za-z0-9_-]{30,}")


# A Bot API method: takes the bot and its arguments, returns the result (or raises BotApiError).
_Handler = Callable[[_Bot, _Args], Awaitable[Any]]


class _State:
    """The fake's shared state and the bookkeeping every role needs."""

    def __init__(
        self,
        *,
        accept_any_token: bool,
        webhook_attempts: int,
        webhook_retry_delay: float,
        webhook_timeout: float,
    ) -> None:
        self._accept_any_token = accept_any_token
        self._webhook_attempts = webhook_attempts
        self._webhook_retry_delay = webhook_retry_delay
        self._webhook_timeout = webhook_timeout
        self.calls: list[RecordedCall] = []
        self.requests: list[ReceivedRequest] = []  # every HTTP request, any path (server.py)
        self._calls_changed = asyncio.Event()
        self._bots: dict[str, _Bot] = {}
        self._bots_by_id: dict[int, _Bot] = {}
        self._invoices: dict[str, Invoice] = {}  # by link slug
        self._sent_invoices: dict[tuple[int, int, int], Invoice] = {}  # (bot, chat, message)
        self._charges: dict[str, Charge] = {}
        # By the first payment's charge id (subscriptions.py).
        self._subscriptions: dict[str, Subscription] = {}
        # Users whose Star balance a test set (set_user_stars); the others never run short.
        self._user_stars: dict[int, int] = {}
        self._files: dict[str, _File] = {}  # by file_id
        self._file_paths: dict[tuple[int, str], _File] = {}  # (bot_id, file_path)
        self._first_names: dict[int, str] = {}  # users who told the fake their name
        self._queries: dict[str, _PreCheckout] = {}
        # Every webhook worker ever started, so that stop() can await even those reset() cancelled.
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: ClientSession | None = None
        self._stopping = False
        # The Bot API methods by lower-case name: (canonical name, handler); see methods.py.
        self._methods: dict[str, tuple[str, _Handler]] = {}
        # Update types of a Bot API newer than this fake (add_update_types).
        self._newer_update_types: frozenset[str] = frozenset()

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

    # ---------------------------------------------------------------------------- calls

    def calls_for(self, method: str, token: str | None = None) -> list[RecordedCall]:
        wanted = method.lower()
        return [
            call
            for call in self.calls
            if call.method.lower() == wanted and (token is None or call.token == token)
        ]

    def call_counts(self, token: str | None = None) -> dict[str, int]:
        """How many calls of each method arrived (of the bot `token`, when given)."""
        return dict(
            Counter(call.method for call in self.calls if token is None or call.token == token)
        )

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
