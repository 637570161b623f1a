"""Update delivery: the per-bot queue of pending updates, pushed to the webhook (one worker per
bot, retries, webhook replies) or handed out by getUpdates (see update_methods.py), plus the
test hooks deliver_update, redeliver and drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import ClientConnectorError, ClientError, ClientTimeout, ServerDisconnectedError

from portex_pay_devtools.fake_bot_api.errors import BotApiError
from portex_pay_devtools.fake_bot_api.model import (
    _HISTORY_LIMIT,
    DEFAULT_ALLOWED_UPDATES,
    SECRET_TOKEN_HEADER,
    UPDATE_TYPES,
    RecordedCall,
    _Bot,
)
from portex_pay_devtools.fake_bot_api.state import _State, log
from portex_pay_devtools.fake_bot_api.wire import _Args, _update_kind


class _Delivery(_State):
    """Queues updates per bot and delivers them."""

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

    def add_update_types(self, *names: str) -> None:
        """Plays a Telegram newer than the code under test: update types the Bot API gained
        after this fake was written. Bots may name them in allowed_updates, and they are in the
        default set (Telegram's default set names its exceptions, not its members)."""
        self._newer_update_types |= frozenset(names)

    def _update_types(self) -> frozenset[str]:
        return UPDATE_TYPES | self._newer_update_types

    def _wants(self, bot: _Bot, kind: str) -> bool:
        if kind in bot.allowed_updates:
            return True
        default = bot.allowed_updates == DEFAULT_ALLOWED_UPDATES
        return default and kind in self._newer_update_types

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
        if kind is not None and not self._wants(bot, kind):
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
