"""Telegram updates, handled: pre-checkout decisions, successful and refunded payments.

Webhook and poller both hand each update to `UpdateProcessor.handle`. A pre-checkout query must be
answered within 10 seconds or Telegram cancels the payment (Bot API, answerPreCheckoutQuery), so
the decision has its own short budget: a forged payload is refused before any database lookup
(HMAC), and when the database does not answer in time the checkout is declined rather than left
unanswered. The answer goes out before the decision is recorded. Payments are recorded exactly
once in one transaction each (adapters/postgres/payments.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from portex_pay.adapters.postgres.applications import Application
from portex_pay.adapters.postgres.payments import (
    CheckoutRecord,
    PaymentRecord,
    PaymentRepository,
    PaymentResult,
)
from portex_pay.adapters.telegram import BotApiClient, TelegramApiError, TelegramNetworkError
from portex_pay.domain.checkout import (
    Charge,
    CheckoutDecision,
    DeclineReason,
    Disposition,
    PaymentOutcome,
    classify_payment,
    decide_pre_checkout,
    decline,
)
from portex_pay.domain.payments import verify_invoice_payload

log = structlog.get_logger(__name__)

# Telegram requires the answer within 10 s; keep the call itself well inside that.
_ANSWER_TIMEOUT = 5.0


class MalformedUpdate(ValueError):
    """The update lacks what its kind requires; it is refused, not processed."""


def _require(mapping: Any, key: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise MalformedUpdate(f"missing {key!r}")
    return mapping[key]


def _charge(payer: Any, payment: Any) -> Charge:
    try:
        return Charge(
            payer_id=int(_require(payer, "id")),
            currency=str(_require(payment, "currency")),
            total_amount=int(_require(payment, "total_amount")),
            invoice_payload=str(_require(payment, "invoice_payload")),
        )
    except (TypeError, ValueError) as error:
        raise MalformedUpdate(str(error)) from None


class UpdateProcessor:
    def __init__(
        self,
        payments: PaymentRepository,
        bot_api: BotApiClient,
        payload_secret: bytes,
        *,
        decision_timeout: float,
        auto_refund: bool,
        clock: Callable[[], datetime],
        refund_requested: Callable[[], None] = lambda: None,
    ) -> None:
        self._payments = payments
        self._bot_api = bot_api
        self._secret = payload_secret
        self._decision_timeout = decision_timeout
        self._auto_refund = auto_refund
        self._clock = clock
        self._refund_requested = refund_requested

    async def handle(self, application: Application, update: dict[str, Any]) -> None:
        """Processes one update of `application`'s bot. Raises MalformedUpdate for garbage;
        database errors propagate, so the webhook answers 5xx and Telegram delivers again."""
        update_id = _require(update, "update_id")
        if not isinstance(update_id, int):
            raise MalformedUpdate("update_id is not an integer")
        if "pre_checkout_query" in update:
            await self._pre_checkout(application, update_id, update["pre_checkout_query"])
            return
        message = update.get("message")
        if isinstance(message, dict) and "successful_payment" in message:
            await self.successful_payment(application, update_id, message, raw=update)
        elif isinstance(message, dict) and "refunded_payment" in message:
            refunded = message["refunded_payment"]
            charge_id = str(_require(refunded, "telegram_payment_charge_id"))
            assert application.bot_id is not None
            await self._payments.record_refunded_payment(application.bot_id, update_id, charge_id)
        # Anything else (plain messages, other update kinds) is not ours to act on.

    async def _pre_checkout(
        self, application: Application, update_id: int, query: Any
    ) -> CheckoutDecision | None:
        query_id = str(_require(query, "id"))
        charge = _charge(_require(query, "from"), query)
        assert application.bot_id is not None and application.bot_token is not None
        verified = verify_invoice_payload(self._secret, charge.invoice_payload)
        order_id = None
        if verified is None:
            decision = decline(DeclineReason.PAYLOAD_INVALID)
        else:
            order_id, signed_amount = verified
            try:
                async with asyncio.timeout(self._decision_timeout):
                    seen, order = await self._payments.checkout_context(
                        application.bot_id, update_id, application.id, order_id
                    )
            except Exception as error:  # a slow or unreachable database must not block the answer
                log.warning("checkout decided without the database", error=repr(error))
                decision = decline(DeclineReason.SERVICE_UNAVAILABLE)
            else:
                if seen:
                    return None  # a repeated delivery: answered already
                decision = decide_pre_checkout(charge, order, signed_amount, self._clock())
        await self._answer(application.bot_token, query_id, decision)
        record = CheckoutRecord(
            application.bot_id, update_id, application.id, order_id, query_id, charge
        )
        try:
            async with asyncio.timeout(self._decision_timeout):
                await self._payments.record_checkout(record, decision)
        except Exception as error:
            log.warning("checkout decision not recorded", error=repr(error), update_id=update_id)
        log.info(
            "checkout",
            ok=decision.ok,
            reason=decision.reason,
            tg_payment_id=order_id,
            application_id=str(application.id),
        )
        return decision

    async def _answer(self, bot_token: str, query_id: str, decision: CheckoutDecision) -> None:
        params: dict[str, Any] = {"pre_checkout_query_id": query_id, "ok": decision.ok}
        if not decision.ok:
            params["error_message"] = decision.error_message
        try:
            await self._bot_api.call(
                bot_token, "answerPreCheckoutQuery", params, timeout=_ANSWER_TIMEOUT
            )
        except (TelegramApiError, TelegramNetworkError) as error:
            # Nothing to retry: a late or repeated answer is refused by Telegram anyway.
            log.warning("pre-checkout answer failed", error=str(error))

    async def successful_payment(
        self,
        application: Application,
        update_id: int | None,
        message: dict[str, Any],
        *,
        raw: dict[str, Any],
    ) -> PaymentResult:
        payment = message["successful_payment"]
        charge = _charge(_require(message, "from"), payment)
        charge_id = str(_require(payment, "telegram_payment_charge_id"))
        verified = verify_invoice_payload(self._secret, charge.invoice_payload)

        def classify(order: Any) -> PaymentOutcome:
            if verified is None:
                return PaymentOutcome(Disposition.ANOMALY, anomaly=DeclineReason.PAYLOAD_INVALID)
            return classify_payment(charge, order, verified[1])

        assert application.bot_id is not None
        result = await self._payments.record_payment(
            PaymentRecord(
                bot_id=application.bot_id,
                update_id=update_id,
                application_id=application.id,
                tg_payment_id=verified[0] if verified else None,
                charge=charge,
                telegram_payment_charge_id=charge_id,
                provider_payment_charge_id=payment.get("provider_payment_charge_id"),
                raw=raw,
            ),
            classify,
            auto_refund=self._auto_refund,
        )
        if result.outcome is not None and result.outcome.disposition is not Disposition.ACCEPTED:
            log.warning(
                "payment not accepted",
                disposition=result.outcome.disposition,
                reason=result.outcome.anomaly or result.outcome.refund,
                application_id=str(application.id),
            )
        if result.refund_requested:
            self._refund_requested()
        return result
