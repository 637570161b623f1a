"""The relay to the application's own bot: the update methods of the Bot API proxy
(api/http/botapi_proxy.py) and the delivery of kept updates to the bot's webhook.

An application's bot code points its Bot API URL at portex-pay. Its first getUpdates, setWebhook,
deleteWebhook or getWebhookInfo turns the relay on: from then on every update portex-pay does not
own is kept for it in PostgreSQL (adapters/postgres/relay.py; UpdateProcessor decides what is
owned) until the bot confirms it, as Telegram would: by a higher getUpdates offset, or by a 2xx from
the webhook it registered. Kept updates are bounded by Telegram's 24 hours.

Long polls wait without holding a database connection: a `portex_relay` notification (sent by
whichever replica kept an update or started a newer poll) wakes them, and they re-read. Webhook
delivery is a worker: bots are leased one replica at a time, each bot's updates are POSTed in
order, a failure backs off that bot only, so a dead webhook delays nobody else, and never a
pre-checkout answer or a payment (those are decided before anything is kept). A lease is released
however its round ends (shutdown included), and a setWebhook or deleteWebhook voids it: the new
setting is delivered to at once, never waiting for a lease to lapse, and a POST still in flight to
the old webhook confirms nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import structlog

from portex_pay.domain.application import Application
from portex_pay.domain.relay import (
    RETENTION_SECONDS,
    InvalidAllowedUpdates,
    RelayBadRequest,
    RelayBot,
    RelayConflict,
    RelayedUpdate,
    parse_allowed_updates,
    telegram_allowed_updates,
)
from portex_pay.domain.retry import backoff_seconds
from portex_pay.domain.telegram import TelegramError
from portex_pay.service.ports import HttpPoster, PostFailed, RelayStore, TelegramBot

log = structlog.get_logger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
MAX_POLL_TIMEOUT = 50  # seconds a getUpdates may wait
MAX_LIMIT = 100  # Bot API, getUpdates.limit: 1-100
MAX_WEBHOOK_URL_CHARS = 2048  # Telegram refuses longer webhook URLs; so does the relay
_INT64 = range(-(2**63), 2**63)  # Bot API integers (getUpdates.offset) and PostgreSQL bigint
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # Bot API, setWebhook.secret_token
_DELIVERY_BATCH = 20
_DELIVERY_BOTS = 16  # bots delivered to at once per replica
_RETRY_BASE = 0.5
_RETRY_CAP = 30.0
_ERROR_MAX_CHARS = 200
_INTERNAL_ERROR = "Internal error"  # getWebhookInfo's last_error_message when the relay failed
_REPLY_MAX_BYTES = 1 << 20  # a webhook answer with a method call, read whole (larger: ignored)
_METHOD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
# Bot API: methods a webhook reply may not call (the reference server ignores them there).
_NOT_IN_WEBHOOK_REPLY = ("setwebhook", "deletewebhook", "close", "logout")


_Setting = tuple[str | None, str | None]  # a webhook's URL and secret token


def _integer(params: dict[str, Any], name: str, default: int) -> int:
    """A whole number (a JSON number or its text) in 64 bits, as Telegram's integers are; any
    other value is 400 `invalid {name} specified`."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RelayBadRequest(f"invalid {name} specified")
    try:
        number = int(value)  # a float is cut as Telegram's parser cuts it
    except (ValueError, OverflowError):  # not a number, over 4300 digits, inf or nan
        raise RelayBadRequest(f"invalid {name} specified") from None
    if number not in _INT64:
        raise RelayBadRequest(f"invalid {name} specified")
    return number


def _is_text(value: str) -> bool:
    """Whether `value` can be stored as text: UTF-8 (no lone surrogates) and no NUL."""
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _webhook_url(value: object) -> str | None:
    """setWebhook's `url`: None (or "") deletes the webhook; else an http(s) URL with a host, of
    printable characters, at most MAX_WEBHOOK_URL_CHARS long."""
    if value is None or value == "":
        return None
    invalid = RelayBadRequest("bad webhook: invalid webhook URL specified")
    if not isinstance(value, str) or len(value) > MAX_WEBHOOK_URL_CHARS or not _is_text(value):
        raise invalid
    if any(char.isspace() or not char.isprintable() for char in value):
        raise invalid
    try:
        parts = urlsplit(value)
        _port = parts.port  # ValueError when it is not a port number
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise invalid from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise invalid
    return value


def _is_secret_token(value: object) -> bool:
    return isinstance(value, str) and _SECRET_TOKEN.fullmatch(value) is not None


def _flag(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _allowed(params: dict[str, Any]) -> tuple[str, ...] | None:
    try:
        # Only names shaped like an Update field are kept: nothing else needs checking here.
        return parse_allowed_updates(params.get("allowed_updates"))
    except InvalidAllowedUpdates as error:
        raise RelayBadRequest(str(error)) from None


@dataclass(frozen=True, slots=True)
class WebhookReply:
    """A method call in a webhook's answer: the method, and the body as the webhook sent it."""

    method: str
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one POST to the app bot's webhook: `error` is None when it took the
    update."""

    error: str | None
    reply: WebhookReply | None = None


class RelayService:
    def __init__(
        self,
        relay: RelayStore,
        bot_api: TelegramBot,
        load_bot_application: Callable[[int], Awaitable[Application | None]],
        *,
        default_updates_mode: str,
        webhook_timeout: float,
        webhook_poster: HttpPoster | None = None,
        wake_delivery: Callable[[], None] = lambda: None,
    ) -> None:
        """`webhook_poster` POSTs to the app bots' webhooks (guarded: whoever holds a bot token
        chooses its URL; None where nothing delivers, the CLI); `wake_delivery` wakes the
        delivery worker (service/worker.Wakeup)."""
        self._relay = relay
        self._bot_api = bot_api
        self._load = load_bot_application
        self._default_mode = default_updates_mode
        self._webhook_timeout = webhook_timeout
        self._signals: dict[int, asyncio.Event] = {}
        self._enabled: set[int] = set()  # bots this process knows the relay is on for
        # Bots found without a relay: their updates need no lookup until a notification says a
        # relay may have been turned on (see keep). `_news` counts notifications.
        self._no_relay: set[int] = set()
        self._news = 0
        self.webhook_poster = webhook_poster
        self.wake_delivery = wake_delivery
        # Webhook POSTs in flight, by bot: the POST and the setting (URL, secret) it goes to.
        self._posting: dict[int, tuple[asyncio.Future[Delivery], _Setting]] = {}
        self._unreleased = False  # a lease release failed: release them all next round

    # ------------------------------------------------------------------ wake-ups

    def notified(self, payload: str) -> None:
        """A `portex_relay` notification (a bot id), or "" to wake every waiting poll (after
        the listener reconnected: anything may have happened meanwhile)."""
        self._news += 1
        if payload:
            with contextlib.suppress(ValueError):
                self._no_relay.discard(int(payload))
                self._wake(int(payload))
        else:
            self._no_relay.clear()
            for bot_id in list(self._signals):
                self._wake(bot_id)
        self.wake_delivery()

    def _wake(self, bot_id: int) -> None:
        signal = self._signals.pop(bot_id, None)
        if signal is not None:
            signal.set()

    # ------------------------------------------------------------------ keeping updates

    async def keep(
        self, application: Application, update_id: int, kind: str | None, raw: bytes
    ) -> bool:
        """Keeps an update for the app's bot; False when its relay is off or it did not ask
        for this kind (then portex-pay handles the update as it would without a relay).

        A bot found without a relay is remembered, so that its payments cost no lookup; turning
        a relay on (on any replica) notifies every replica, which forgets it, as it forgets all
        after its listener reconnects. An answer is remembered only if no notification came
        while the lookup ran: one that crossed it may announce this very bot. Between the
        relay's commit and its notification an update is handled as one that came just before
        the relay was turned on: not kept, as it would not be without the cache."""
        bot_id = application.require_bot().id
        if bot_id in self._no_relay:
            return False
        news = self._news
        found = await self._relay.keep(bot_id, update_id, kind, raw)
        if not found.relay_on and news == self._news:
            self._no_relay.add(bot_id)
        return found.kept

    async def _enable(self, application: Application) -> RelayBot:
        bot_id = application.require_bot().id
        bot = await self._relay.enable(bot_id, application.id)
        self._no_relay.discard(bot_id)
        if bot_id not in self._enabled:
            self._enabled.add(bot_id)
            log.info("relay on", bot_id=bot_id)
        return bot

    async def _set_allowed(self, application: Application, allowed: tuple[str, ...] | None) -> None:
        """Stores the bot's `allowed_updates` and, when it changed, asks Telegram for the union
        of it and portex-pay's own kinds."""
        bot_id = application.require_bot().id
        if allowed is None:
            return
        changed, _bot = await self._relay.set_allowed_updates(bot_id, allowed)
        if changed:
            await self.apply_allowed_updates(application, allowed)

    async def apply_allowed_updates(
        self, application: Application, allowed: tuple[str, ...] | None
    ) -> None:
        """In webhook mode, sets portex-pay's webhook at Telegram again with the union (a
        polling portex-pay sends the union with its next getUpdates)."""
        mode = application.updates_mode or self._default_mode
        bot = application.bot
        if mode != "webhook" or bot is None:
            return
        try:
            url = await self._bot_api.webhook_url(bot)
            if url:
                await self._bot_api.set_webhook(
                    bot,
                    url,
                    secret_token=application.webhook_secret,
                    allowed_updates=telegram_allowed_updates(allowed),
                )
        except TelegramError as error:
            log.warning("allowed_updates not applied", bot_id=bot.id, error=str(error))

    # ------------------------------------------------------------------ the update methods

    async def get_updates(self, application: Application, params: dict[str, Any]) -> list[bytes]:
        """getUpdates as Telegram serves it: offset confirms, `timeout` long-polls, `limit`
        bounds; 409 while a webhook is set or when a newer getUpdates takes over."""
        bot_id = application.require_bot().id
        offset = _integer(params, "offset", 0) if params.get("offset") not in (None, "") else None
        limit = min(max(_integer(params, "limit", MAX_LIMIT), 1), MAX_LIMIT)
        timeout = min(max(_integer(params, "timeout", 0), 0), MAX_POLL_TIMEOUT)
        allowed = _allowed(params)
        bot = await self._enable(application)
        if bot.webhook_url is not None:
            raise RelayConflict(
                "can't use getUpdates method while webhook is active; use deleteWebhook to "
                "delete the webhook first"
            )
        await self._set_allowed(application, allowed)
        generation, _bot = await self._relay.start_poll(bot_id, offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            signal = self._signals.setdefault(bot_id, asyncio.Event())
            current, bot_now, updates = await self._relay.poll(bot_id, generation, limit)
            if not current:
                if bot_now is not None and bot_now.webhook_url is not None:
                    raise RelayConflict("webhook was set")
                raise RelayConflict(
                    "terminated by other getUpdates request; make sure that only one bot "
                    "instance is running"
                )
            remaining = deadline - loop.time()
            if updates or remaining <= 0:
                return [update.raw for update in updates]
            with contextlib.suppress(TimeoutError):
                # A lost notification costs at most a few seconds: re-read now and then anyway.
                await asyncio.wait_for(signal.wait(), min(remaining, 5.0))

    async def set_webhook(self, application: Application, params: dict[str, Any]) -> None:
        bot_id = application.require_bot().id
        url = _webhook_url(params.get("url"))
        secret = params.get("secret_token")
        if secret is not None and secret != "" and not _is_secret_token(secret):
            raise RelayBadRequest("secret token contains unallowed characters")
        allowed = _allowed(params)
        await self._enable(application)
        await self._set_allowed(application, allowed)
        secret = (secret or None) if url else None
        await self._relay.set_webhook(
            bot_id, url, secret, drop_pending=_flag(params, "drop_pending_updates")
        )
        self._webhook_changed(bot_id, (url, secret))

    async def delete_webhook(self, application: Application, params: dict[str, Any]) -> None:
        bot_id = application.require_bot().id
        await self._enable(application)
        await self._relay.set_webhook(
            bot_id, None, None, drop_pending=_flag(params, "drop_pending_updates")
        )
        self._webhook_changed(bot_id, (None, None))

    async def webhook_info(self, application: Application) -> dict[str, Any]:
        bot_id = application.require_bot().id
        await self._enable(application)
        bot = await self._relay.get(bot_id)
        assert bot is not None
        info: dict[str, Any] = {
            "url": bot.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": bot.pending,
        }
        if bot.webhook_url is not None:
            info["max_connections"] = 1  # updates of a bot go out one at a time, in order
            if bot.last_error is not None and bot.last_error_at is not None:
                info["last_error_date"] = int(bot.last_error_at.timestamp())
                info["last_error_message"] = bot.last_error
        if bot.allowed_updates:
            info["allowed_updates"] = list(bot.allowed_updates)
        return info

    # ------------------------------------------------------------------ webhook delivery

    async def deliver_step(self) -> int:
        """One round of webhook delivery: leased bots, concurrently, each in update order.

        Every lease taken here is released before the round ends, however it ends (delivered,
        failed, stopped by a webhook change, broken by an error, cancelled by shutdown), so that
        no bot waits for a lease to lapse (22 webhook timeouts)."""
        if self._unreleased:
            # A release failed earlier (the database was away). Between rounds no lease of this
            # replica is in use, so all of them can go.
            await self._relay.release_all()
            self._unreleased = False
        lease = self._webhook_timeout * (_DELIVERY_BATCH + 2)
        try:
            bots = await self._relay.claim_deliveries(_DELIVERY_BOTS, lease)
            if not bots:
                return 0
            done = await asyncio.gather(*(self._deliver_bot(bot) for bot in bots))
        except asyncio.CancelledError:
            # Shutdown. Each delivery released its own lease; this also frees those of a claim
            # cut short (taken in the database, never read here).
            await self._release_shielded(self._relay.release_all())
            raise
        return sum(done)

    async def _deliver_bot(self, bot: RelayBot) -> int:
        structlog.contextvars.bind_contextvars(bot_id=bot.bot_id)  # gather gave it its own task
        delivered = 0
        try:
            for update in await self._relay.due_updates(bot, _DELIVERY_BATCH):
                outcome = await self._post_abandonable(bot, update)
                if outcome is None:
                    return delivered  # its webhook was changed here meanwhile: stop here
                if outcome.error is not None:
                    retry_in = backoff_seconds(bot.attempts + 1, base=_RETRY_BASE, cap=_RETRY_CAP)
                    log.info(
                        "relay webhook failed",
                        bot_id=bot.bot_id,
                        update_id=update.update_id,
                        error=outcome.error,
                        retry_in=retry_in,
                    )
                    await self._relay.delivery_failed(bot, outcome.error, retry_in)
                    return delivered
                if not await self._relay.delivered(bot, update.update_id):
                    return delivered  # the webhook changed or the lease lapsed: stop here
                delivered += 1
                if outcome.reply is not None:
                    await self._webhook_reply(bot, outcome.reply)
        except Exception as error:
            # The database went away mid-batch, or a bug: retried after a backoff, as a failed
            # POST is (when the database can still record that).
            log.warning("relay delivery failed", bot_id=bot.bot_id, error=repr(error))
            retry_in = backoff_seconds(bot.attempts + 1, base=_RETRY_BASE, cap=_RETRY_CAP)
            with contextlib.suppress(Exception):
                await self._relay.delivery_failed(bot, _INTERNAL_ERROR, retry_in)
        finally:
            await self._release_shielded(self._relay.release(bot))
        return delivered

    async def _post_abandonable(self, bot: RelayBot, update: RelayedUpdate) -> Delivery | None:
        """POSTs the update; None when the bot's webhook was set or deleted through this replica
        meanwhile: the POST to the old webhook is abandoned (Telegram, too, drops its
        connections to a webhook that was replaced)."""
        post = asyncio.ensure_future(self._post(bot, update))
        self._posting[bot.bot_id] = (post, (bot.webhook_url, bot.webhook_secret))
        try:
            await asyncio.wait([post])
        finally:
            if self._posting.get(bot.bot_id, (None,))[0] is post:
                del self._posting[bot.bot_id]
            post.cancel()  # nothing once done; a cancelled delivery abandons its POST
        if post.cancelled():
            return None
        return post.result()

    def _webhook_changed(self, bot_id: int, setting: _Setting) -> None:
        """The bot's webhook was set or deleted (the store voided its delivery lease): a POST in
        flight here to another setting is abandoned, and delivery starts again at once (the
        store's notification wakes the other replicas).

        A POST to this very setting is left alone: it may have been claimed after the change
        committed (this replica's worker can wake before this call runs), and abandoning it
        once sent would deliver the update twice. One claimed before the change cannot confirm
        its update (its lease is void), which is then delivered again, as after any retry."""
        posting = self._posting.get(bot_id)
        if posting is not None and posting[1] != setting:
            posting[0].cancel()
        self.wake_delivery()

    async def _release_shielded(self, release: Awaitable[None]) -> None:
        """Runs a lease release to its end even while the caller is being cancelled (shutdown),
        as asyncpg returns connections; its own failure is logged and retried by the next round,
        never raised over whatever ended the delivery."""
        task = asyncio.ensure_future(release)
        task.add_done_callback(self._released)
        with contextlib.suppress(Exception):
            await asyncio.shield(task)

    def _released(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            self._unreleased = True
        elif (error := task.exception()) is not None:
            self._unreleased = True
            log.warning("relay lease not released", error=repr(error))

    async def _post(self, bot: RelayBot, update: RelayedUpdate) -> Delivery:
        assert bot.webhook_url is not None and self.webhook_poster is not None
        headers = {"Content-Type": "application/json"}
        if bot.webhook_secret:
            headers[SECRET_HEADER] = bot.webhook_secret
        try:
            answer = await self.webhook_poster.post(
                bot.webhook_url,
                update.raw,
                headers,
                timeout=self._webhook_timeout,
                read_limit=_REPLY_MAX_BYTES,
            )
        except PostFailed as failure:
            if failure.kind == "timeout":
                return Delivery("Read timeout expired")
            return Delivery(f"Connection failed: {failure.reason}"[:_ERROR_MAX_CHARS])
        if not 200 <= answer.status <= 299:
            return Delivery(f"Wrong response from the webhook: {answer.status}")
        return Delivery(None, webhook_reply(answer.body, answer.content_type))

    async def _webhook_reply(self, bot: RelayBot, reply: WebhookReply) -> None:
        """Bot API: a webhook may answer with a method call in its body (JSON or form data);
        Telegram runs it and discards the result. So does the relay, sending the body on as it
        came (the extra `method` field is ignored by Telegram)."""
        lowered = reply.method.lower()
        if lowered.startswith("get") or lowered in _NOT_IN_WEBHOOK_REPLY:
            return
        application = await self._load(bot.bot_id)
        if application is None or application.bot is None:
            return
        try:
            await self._bot_api.run_webhook_reply(
                application.bot,
                reply.method,
                reply.body,
                reply.content_type,
                timeout=self._webhook_timeout,
            )
        except TelegramError as error:
            log.info("webhook reply failed", bot_id=bot.bot_id, error=str(error))

    async def prune(self) -> int:
        return await self._relay.prune(RETENTION_SECONDS)


def webhook_reply(body: bytes, content_type: str) -> WebhookReply | None:
    """The method call in a webhook's answer, if any: a JSON object, or form data (aiogram
    answers multipart/form-data), with a `method` field."""
    if not body.strip() or len(body) >= _REPLY_MAX_BYTES:
        return None
    media_type = content_type.partition(";")[0].strip().lower()
    method: object = None
    if media_type == "multipart/form-data":
        message = email.message_from_bytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body,
            policy=email.policy.HTTP,
        )
        if message.is_multipart():
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition") == "method":
                    payload = part.get_payload(decode=True)
                    if isinstance(payload, bytes):
                        method = payload.decode("utf-8", "replace").strip()
                    break
    elif media_type == "application/x-www-form-urlencoded":
        method = dict(parse_qsl(body.decode("utf-8", "replace"))).get("method")
    else:
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            return None
        method = decoded.get("method") if isinstance(decoded, dict) else None
        content_type = "application/json"
    if not isinstance(method, str) or not _METHOD_NAME.fullmatch(method):
        return None
    return WebhookReply(method, body, content_type)
