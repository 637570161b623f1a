"""The Bot API methods that choose how updates arrive: setWebhook, deleteWebhook, getWebhookInfo
and getUpdates (long polling, offsets, the conflicts between the two modes)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any, Final
from urllib.parse import urlsplit

from portex_pay_devtools.fake_bot_api.delivery import _Delivery
from portex_pay_devtools.fake_bot_api.errors import (
    _CONFLICT_OTHER_GET_UPDATES,
    _CONFLICT_SET_WEBHOOK,
    _CONFLICT_WEBHOOK_ACTIVE,
    BotApiError,
    _bad_request,
)
from portex_pay_devtools.fake_bot_api.model import (
    DEFAULT_ALLOWED_UPDATES,
    DEFAULT_MAX_CONNECTIONS,
    LONG_POLL_MAX_TIMEOUT,
    _Bot,
    _Ok,
    _Poll,
)
from portex_pay_devtools.fake_bot_api.wire import _Args, _clamp, _parse_allowed_updates

# Reference server: the secret token must be base64url characters, at most 256 of them.
_SECRET_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")


class _UpdateMethods(_Delivery):
    """setWebhook, deleteWebhook, getWebhookInfo and getUpdates."""

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
        allowed = _parse_allowed_updates(args.text("allowed_updates"), self._update_types())

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
        allowed = _parse_allowed_updates(args.text("allowed_updates"), self._update_types())
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
