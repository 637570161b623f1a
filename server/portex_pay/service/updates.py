"""Telegram updates, handled: pre-checkout decisions, successful and refunded payments, support
commands, buyer messages, the hand-over to the app's own bot (the relay, service/relay.py), and
the updates that cannot be processed.

What portex-pay owns it does first: its own pre-checkouts are answered and never relayed; its
payments and refunds are recorded, and only then relayed. Checkouts and payments of invoices the
app's bot created itself (the payload is not ours) go to the bot untouched when its relay is on,
and are declined / recorded as anomalies as before when it is not. Everything else is the bot's.

Webhook and poller both hand each update to `UpdateProcessor.handle`, which reads it once into a
typed value (domain/updates.py, read_update: its kinds, chat, command, content and whether its
invoice payload is ours) that everything below acts on. A pre-checkout query must be answered
within 10 seconds or Telegram cancels the payment (Bot API, answerPreCheckoutQuery), so
the decision has its own short budget: a forged payload is refused before any database lookup
(HMAC), and when the database does not answer in time the checkout is declined rather than left
unanswered. The answer goes out before the decision is recorded. Payments are recorded exactly
once in one transaction each (adapters/postgres/ledger_store.py).

An update that cannot be processed for a reason that will not go away (it is malformed, or a bug
trips on it) must never block the bot's later updates: it is recorded as a dead letter (the raw
update, the error, an event, a log line) and acknowledged. Only a transient failure (PostgreSQL
unreachable) is retried, by the caller (the webhook answers 503, the poller backs off); an update
that keeps failing is dead-lettered after `max_attempts` tries (counted per replica).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from portex_pay.domain.application import Application, Bot
from portex_pay.domain.checkout import (
    CheckoutDecision,
    CheckoutRecord,
    DeclineReason,
    Disposition,
    PaymentResult,
    decide_pre_checkout,
    decline,
)
from portex_pay.domain.events import EventType
from portex_pay.domain.order import Order
from portex_pay.domain.pay import PayloadKeys
from portex_pay.domain.telegram import TelegramError
from portex_pay.domain.updates import (
    DeadLetter,
    IncomingUpdate,
    MalformedUpdate,
    OtherUpdate,
    PreCheckoutQuery,
    RefundedPayment,
    SignedPayload,
    SubscriptionUpdate,
    SuccessfulPayment,
    read_update,
    storable,
)
from portex_pay.logging import RateLimitedWarnings
from portex_pay.service.ledger import Ledger
from portex_pay.service.outage import is_unavailable
from portex_pay.service.ports import NO_METRICS, DeadLetters, Metrics, Payments, TelegramBot
from portex_pay.service.relay import RelayService
from portex_pay.service.support import buyer_message, support_command, support_reply

log = structlog.get_logger(__name__)

# Telegram requires the answer within 10 s; keep the call itself well inside that.
_ANSWER_TIMEOUT = 5.0
_ERROR_MAX_CHARS = 500
_TRACKED_FAILURES = 10_000


class UpdateRetry(Exception):
    """The update failed for a transient reason and was not dead-lettered: deliver it again."""


def dead_letter_reason(error: BaseException) -> str:
    """Why an update was given up on, as a stable reason."""
    if isinstance(error, MalformedUpdate | RecursionError):
        return "MALFORMED_UPDATE"
    if is_unavailable(error):
        return "RETRIES_EXHAUSTED"  # failed transiently PORTEX_UPDATE_MAX_ATTEMPTS times
    return "PROCESSING_ERROR"  # a bug: its traceback is logged


def describe_error(error: BaseException) -> str:
    """The error as stored and announced: its type and message, storable and bounded."""
    text = f"{type(error).__name__}: {error}"
    return str(storable(text))[:_ERROR_MAX_CHARS]


def encode_update(update: object) -> bytes:
    """The raw bytes of an update we only have parsed (polling): ASCII JSON, whatever it holds
    (ensure_ascii escapes NUL and lone surrogates)."""
    try:
        return json.dumps(update, ensure_ascii=True).encode()
    except (TypeError, ValueError, RecursionError):
        return repr(update).encode("utf-8", "backslashreplace")


class UpdateProcessor:
    def __init__(
        self,
        payments: Payments,
        dead_letters: DeadLetters,
        bot_api: TelegramBot,
        payload_keys: PayloadKeys,
        *,
        decision_timeout: float,
        auto_refund: bool,
        clock: Callable[[], datetime],
        max_attempts: int = 10,
        refund_requested: Callable[[], None] = lambda: None,
        relay: RelayService | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._payments = payments
        self._ledger = Ledger(payments)
        self._dead_letters = dead_letters
        self._bot_api = bot_api
        self._payload_keys = payload_keys
        self._decision_timeout = decision_timeout
        self._auto_refund = auto_refund
        self._clock = clock
        self._max_attempts = max_attempts
        self._refund_requested = refund_requested
        self._relay = relay
        self._metrics = metrics
        # Transient failures so far, per (bot, update id); bounded, oldest forgotten first.
        self._failures: OrderedDict[tuple[int, int | None], int] = OrderedDict()
        # A bot's garbage in a loop must not flood the log: one line per bot a minute.
        self._dead_letter_warnings = RateLimitedWarnings(log)

    async def handle(
        self, application: Application, update: object, raw: bytes | None = None
    ) -> None:
        """Processes one update of `application`'s bot, or dead-letters it. Returns once the
        update may be acknowledged to Telegram; raises UpdateRetry when it must come again.
        `raw` is the update's bytes as received, when there are any (the webhook)."""
        bot = application.require_bot()
        parsed = read_update(update, self._payload_keys)
        key = (bot.id, parsed.update_id)
        try:
            await self._process(application, parsed, update, raw)
        except Exception as error:
            attempts = self._failures.pop(key, 0) + 1
            if is_unavailable(error) and attempts < self._max_attempts:
                self._remember_failure(key, attempts)
                log.warning(
                    "update processing failed, will retry",
                    bot_id=bot.id,
                    update_id=key[1],
                    attempts=attempts,
                    error=describe_error(error),
                )
                raise UpdateRetry(describe_error(error)) from error
            if not isinstance(error, MalformedUpdate | RecursionError) and not (
                is_unavailable(error)
            ):
                # A bug: keep its traceback for whoever fixes it.
                log.error("update processing error", bot_id=bot.id, exc_info=error)
            try:
                await self._dead_letter(application, parsed, update, raw, error, attempts)
            except Exception as failure:
                self._remember_failure(key, attempts)
                raise UpdateRetry(describe_error(failure)) from failure
        else:
            self._failures.pop(key, None)

    def _remember_failure(self, key: tuple[int, int | None], attempts: int) -> None:
        self._failures[key] = attempts
        while len(self._failures) > _TRACKED_FAILURES:
            self._failures.popitem(last=False)

    async def _process(
        self, application: Application, parsed: IncomingUpdate, update: object, raw: bytes | None
    ) -> None:
        """Does what portex-pay owns, and hands the rest to the app's own bot (the relay):
        foreign checkouts and payments (the bot's own invoices) go to the bot untouched; our
        payments and refunds go to it once they are recorded; support commands are answered
        here; anything else is the bot's."""
        content = parsed.content
        if content is None:
            raise MalformedUpdate(parsed.malformed)
        if isinstance(content, PreCheckoutQuery):
            foreign = parsed.signed is None
            if foreign and await self._relay_checkout(application, parsed, update, raw):
                return  # the bot's own invoice: the bot answers it
            await self._pre_checkout(application, content, parsed.signed)
        elif isinstance(content, SuccessfulPayment):
            foreign = parsed.signed is None
            if foreign and await self._keep(application, parsed, update, raw):
                return  # the bot's own sale: not ours to record
            result = await self._record_payment(
                application, content, parsed.signed, raw=storable(update)
            )
            await self._keep(application, parsed, update, raw)
            paid = result.outcome is not None and result.outcome.disposition is Disposition.ACCEPTED
            if paid and result.order is not None:
                await self._tell_buyer(application, parsed, "paid", result.order)
        elif isinstance(content, RefundedPayment):
            settled = await self._ledger.record_refunded_payment(
                application.require_bot().id,
                content.update_id,
                application.id,
                content.telegram_payment_charge_id,
            )
            await self._keep(application, parsed, update, raw)
            if settled is not None and settled.order is not None:
                await self._tell_buyer(application, parsed, "refunded", settled.order)
        elif isinstance(content, SubscriptionUpdate):
            await self._subscription(application, content, parsed.signed)
            await self._keep(application, parsed, update, raw)
        else:
            assert isinstance(content, OtherUpdate)
            command = support_command(parsed, application.bot_username)
            if command is not None:
                await self._support(application, content.update_id, command, parsed)
            else:
                await self._keep(application, parsed, update, raw)

    async def _subscription(
        self, application: Application, content: SubscriptionUpdate, signed: SignedPayload | None
    ) -> None:
        """A `subscription` update: the order its (verified) payload names changes state. One
        whose payload is not ours (the bot's own subscription) or names no subscription of this
        application is only relayed to the bot, with a warning, as a foreign payment is."""
        order = None
        if signed is not None:
            order = await self._ledger.record_subscription_update(
                application.require_bot().id,
                content.update_id,
                application.id,
                signed.tg_payment_id,
                content.state,
            )
        if signed is None:
            log.warning(
                "subscription update for an unknown payload",
                application_id=str(application.id),
                update_id=content.update_id,
            )
        elif order is not None:
            log.info(
                "subscription updated",
                tg_payment_id=order.tg_payment_id,
                state=content.state,
                subscription_state=order.subscription_state,
            )

    async def _keep(
        self, application: Application, parsed: IncomingUpdate, update: object, raw: bytes | None
    ) -> bool:
        """Keeps the update for the app's bot when its relay is on and it wants this kind."""
        if self._relay is None or parsed.update_id is None:
            return False
        raw_bytes = raw if raw is not None else encode_update(update)
        return await self._relay.keep(application, parsed.update_id, parsed.kind, raw_bytes)

    async def _relay_checkout(
        self, application: Application, parsed: IncomingUpdate, update: object, raw: bytes | None
    ) -> bool:
        """Hands a foreign pre-checkout to the bot, within the decision budget: when that
        cannot be done in time, it is declined here rather than left to Telegram's timeout."""
        try:
            async with asyncio.timeout(self._decision_timeout):
                return await self._keep(application, parsed, update, raw)
        except Exception as error:
            log.warning("checkout not relayed", error=repr(error), update_id=parsed.update_id)
            return False

    async def _tell_buyer(
        self, application: Application, parsed: IncomingUpdate, event: str, order: Order
    ) -> None:
        """A buyer message (optional per application); a failure is logged, not retried."""
        text = buyer_message(
            application, event, order_id=order.tg_payment_id, amount=order.amount, title=order.title
        )
        if text is None or application.bot is None:
            return
        try:
            await self._bot_api.send_message(
                application.bot, parsed.reply_chat_id(), text, timeout=_ANSWER_TIMEOUT
            )
        except TelegramError as error:
            log.warning("buyer message failed", error=str(error))

    async def _support(
        self, application: Application, update_id: int, command: str, parsed: IncomingUpdate
    ) -> None:
        """Answers /paysupport or /terms once: the update is claimed before the reply."""
        bot = application.require_bot()
        if not await self._payments.claim(bot.id, update_id, "support_command"):
            return
        try:
            await self._bot_api.send_message(
                bot, parsed.reply_chat_id(), support_reply(application, command)
            )
        except TelegramError as error:
            # Claimed already: not retried (a reply twice is worse than a rare lost one).
            log.warning("support reply failed", command=command, error=str(error))

    async def _dead_letter(
        self,
        application: Application,
        parsed: IncomingUpdate,
        update: object,
        raw: bytes | None,
        error: BaseException,
        attempts: int,
    ) -> None:
        bot = application.require_bot()
        kind = parsed.record_kind
        query_id = parsed.query_id
        if query_id is not None:
            # Never leave the user waiting for Telegram's 10 s timeout.
            await self._answer(bot, query_id, decline(DeclineReason.PAYLOAD_INVALID))
        # A successful_payment we could not use is also a payment anomaly: Telegram says
        # someone paid, so it is money for someone to look at.
        announce = [EventType.UPDATE_DEAD_LETTERED]
        if kind == "successful_payment":
            announce.append(EventType.PAYMENT_ANOMALY)
        letter_id = await self._dead_letters.record(
            DeadLetter(
                application_id=application.id,
                bot_id=bot.id,
                update_id=parsed.update_id,
                kind=kind,
                raw=raw if raw is not None else encode_update(update),
                error=describe_error(error),
                attempts=attempts,
                reason=dead_letter_reason(error),
            ),
            announce,
        )
        # The error names what was wrong, never the update's content. A payment someone made
        # and we could not record is an error (a person must look at it); any other update is
        # input from outside, kept with its event: a warning, one per bot a minute, since a bug
        # behind it was logged as an error above.
        fields = {
            "bot_id": bot.id,
            "update_id": parsed.update_id,
            "kind": kind,
            "dead_letter_id": letter_id,
            "error_type": type(error).__name__,
            "attempts": attempts,
        }
        if EventType.PAYMENT_ANOMALY in announce:
            log.error("update dead-lettered", **fields)
        else:
            self._dead_letter_warnings.warn(bot.id, "update dead-lettered", **fields)

    async def _pre_checkout(
        self, application: Application, query: PreCheckoutQuery, signed: SignedPayload | None
    ) -> CheckoutDecision | None:
        started = time.perf_counter()
        charge = query.charge
        bot = application.require_bot()
        order_id = None
        if signed is None:
            decision = decline(DeclineReason.PAYLOAD_INVALID)
        else:
            order_id = signed.tg_payment_id
            try:
                async with asyncio.timeout(self._decision_timeout):
                    seen, order = await self._payments.checkout_context(
                        bot.id, query.update_id, application.id, order_id
                    )
            except Exception as error:  # a slow or unreachable database must not block the answer
                log.warning("checkout decided without the database", error=repr(error))
                decision = decline(DeclineReason.SERVICE_UNAVAILABLE)
            else:
                if seen:
                    return None  # a repeated delivery: answered already
                decision = decide_pre_checkout(charge, order, signed.amount, self._clock())
        await self._answer(bot, query.query_id, decision)
        self._metrics.pre_checkout_answered(decision.ok, time.perf_counter() - started)
        record = CheckoutRecord(
            bot.id, query.update_id, application.id, order_id, query.query_id, charge
        )
        try:
            async with asyncio.timeout(self._decision_timeout):
                await self._ledger.record_checkout(record, decision)
        except Exception as error:
            log.warning(
                "checkout decision not recorded", error=repr(error), update_id=query.update_id
            )
        log.info(
            "checkout",
            ok=decision.ok,
            reason=decision.reason,
            tg_payment_id=order_id,
            application_id=str(application.id),
        )
        return decision

    async def _answer(self, bot: Bot, query_id: str, decision: CheckoutDecision) -> None:
        try:
            await self._bot_api.answer_pre_checkout_query(
                bot,
                query_id,
                ok=decision.ok,
                error_message=None if decision.ok else decision.error_message,
                timeout=_ANSWER_TIMEOUT,
            )
        except TelegramError as error:
            # Nothing to retry: a late or repeated answer is refused by Telegram anyway.
            log.warning("pre-checkout answer failed", error=str(error))

    async def _record_payment(
        self,
        application: Application,
        payment: SuccessfulPayment,
        signed: SignedPayload | None,
        *,
        raw: dict[str, Any],
    ) -> PaymentResult:
        """Records a charge Telegram reported; `signed` is its payload when that is ours (the
        ledger judges the charge against it and the order)."""
        bot = application.require_bot()
        result = await self._ledger.record_payment(
            payment.record(bot.id, application.id, signed, raw), auto_refund=self._auto_refund
        )
        if result.outcome is not None:
            self._metrics.payment_recorded(result.outcome.disposition)
        if result.outcome is not None and result.outcome.disposition not in (
            Disposition.ACCEPTED,
            Disposition.RENEWAL,
        ):
            log.warning(
                "payment not accepted",
                disposition=result.outcome.disposition,
                reason=result.outcome.anomaly or result.outcome.refund,
                application_id=str(application.id),
            )
        if result.refund_requested:
            self._refund_requested()
        return result
