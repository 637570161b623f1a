"""The money use cases: what a checkout, a charge, a refund request and a refund mean, decided
here and recorded atomically through the Payments port's unit of work.

Each use case runs in one `payments.transaction()`, whose parts are the aggregates it touches
(ports.PaymentTransaction: `updates`, `orders`, `charges`, `refunds`, `events`): the
de-duplication of the update, the payment, the order's change, its events and any refund intent
commit together or not at all. Exactly-once rests on the store's unique keys (an update id, a
charge id), never on a read before a write; the order is locked before it is judged, so a
concurrent refund, cancel or second charge waits.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, NamedTuple
from uuid import UUID

from portex_pay.domain.checkout import (
    CheckoutDecision,
    CheckoutRecord,
    Disposition,
    PaymentRecord,
    PaymentResult,
    RefundedCharge,
    RefundReason,
    classify_record,
)
from portex_pay.domain.errors import ChargeNotFound
from portex_pay.domain.events import EventType
from portex_pay.domain.order import Order, OrderState, allows, check_transition
from portex_pay.domain.refunds import Refund, RefundCause
from portex_pay.domain.subscription import (
    STATE_EVENTS,
    SubscriptionState,
    first_end_after,
    update_target,
)
from portex_pay.service.ports import Payments, PaymentTransaction


def refundable(order: Order, reason: RefundReason = RefundReason.REQUESTED) -> bool:
    """A caller may ask to refund an order its charge paid, and only that one (the table says
    which states may become refunded). The unfulfilled-order policy refunds only an order nobody
    acknowledged: judged under the order's lock, so an acknowledgement that commits first
    wins."""
    if reason is RefundReason.UNFULFILLED and order.fulfilled_at is not None:
        return False
    return allows(order.state, OrderState.REFUNDED) and bool(order.telegram_payment_charge_id)


class RefundRequest(NamedTuple):
    """What asking for an order's refund found: the order as locked, the refund of its charge
    (None when there is none), and whether this request recorded it."""

    order: Order
    refund: Refund | None
    recorded: bool


# A caller's refund with no reason given (RefundPayment's defaults).
CUSTOMER_REQUEST = RefundCause.own(RefundReason.REQUESTED)


class Ledger:
    def __init__(self, payments: Payments) -> None:
        self._payments = payments

    async def record_checkout(self, record: CheckoutRecord, decision: CheckoutDecision) -> bool:
        """Records the pre-checkout decision (and the update as processed); False if it was
        recorded before."""
        return await self._payments.claim_with_event(
            (record.bot_id, record.update_id, "pre_checkout_query"),
            record.application_id,
            record.tg_payment_id,
            EventType.CHECKOUT_APPROVED if decision.ok else EventType.CHECKOUT_DECLINED,
            {
                "reason": decision.reason,
                "pre_checkout_query_id": record.query_id,
                "payer_id": record.charge.payer_id,
                "total_amount": record.charge.total_amount,
                "currency": record.charge.currency,
            },
        )

    async def record_payment(self, record: PaymentRecord, *, auto_refund: bool) -> PaymentResult:
        """A successful_payment, exactly once (by update and by charge): it pays its order, or
        is kept as a duplicate or an anomaly, refunded when `auto_refund` and the outcome says
        so. The charge is judged against its order as locked (domain/checkout.classify_record),
        so a concurrent charge, refund or cancel cannot change the order under the judgement."""
        async with self._payments.transaction() as tx:
            if record.update_id is None:
                return await record_charge(tx, record, auto_refund=auto_refund)
            fresh, order = await tx.orders.claim_and_lock(
                (record.bot_id, record.update_id, "successful_payment"),
                record.application_id,
                record.tg_payment_id,
            )
            if not fresh:
                return PaymentResult(None, None)
            return await _record_locked(tx, record, order, auto_refund=auto_refund)

    async def request_refund(
        self,
        application_id: UUID,
        tg_payment_id: int,
        bot_id: int,
        cause: RefundCause = CUSTOMER_REQUEST,
    ) -> RefundRequest | None:
        """Records the intent to refund a paid order's charge, for `cause` (idempotent: asking
        again finds the same refund, also once the order is refunded, and its first cause
        stands). None when the application has no such order; the refund is None when none was
        asked for and the order is not refundable for this cause."""
        async with self._payments.transaction() as tx:
            order = await tx.orders.lock(application_id, tg_payment_id)
            if order is None:
                return None
            recorded = False
            if refundable(order, cause.reason):
                assert order.telegram_payment_charge_id is not None
                recorded = await tx.refunds.add(
                    order.telegram_payment_charge_id,
                    bot_id,
                    application_id,
                    order.tg_payment_id,
                    order.tg_use_id,
                    order.amount,
                    cause,
                )
            # Asked before (the order may be refunded by now): the same refund.
            return RefundRequest(order, await tx.refunds.of_order(tg_payment_id), recorded)

    async def request_charge_refund(
        self,
        application_id: UUID,
        tg_payment_id: int,
        charge_id: str,
        bot_id: int,
        cause: RefundCause = CUSTOMER_REQUEST,
    ) -> Order | None:
        """Records the intent to refund one charge that paid the order (its first payment or a
        renewal: one period of a subscription), for `cause`; idempotent like request_refund.
        None when the application has no such order; ChargeNotFound when the order has no such
        paying charge. The order as locked (the caller reads the refund of the charge)."""
        async with self._payments.transaction() as tx:
            order = await tx.orders.lock(application_id, tg_payment_id)
            if order is None:
                return None
            amount = await tx.charges.paying_amount(tg_payment_id, charge_id)
            if amount is None:
                raise ChargeNotFound("the order has no paying charge with this id")
            if refundable(order, cause.reason):
                await tx.refunds.add(
                    charge_id,
                    bot_id,
                    application_id,
                    tg_payment_id,
                    order.tg_use_id,
                    amount,
                    cause,
                )
            return order

    async def settle_refund(self, application_id: UUID, charge_id: str) -> bool:
        """Telegram refunded the application's charge: the refund succeeds, the payment is marked
        refunded and, if it was the charge that paid the order, the order becomes refunded.
        Idempotent (the worker's confirmation and Telegram's refunded_payment update may both
        arrive). False when the application has no such charge."""
        async with self._payments.transaction() as tx:
            return await settle(tx, application_id, charge_id) is not None

    async def record_refunded_payment(
        self, bot_id: int, update_id: int, application_id: UUID, charge_id: str
    ) -> RefundedCharge | None:
        """A refunded_payment update: settles the refund (whoever initiated it); what was
        refunded, or None for a repeated update. A charge the application does not have (another
        application's, or one never reported to us) changes nothing and is recorded as a
        `payment.anomaly`."""
        async with self._payments.transaction() as tx:
            if not await tx.updates.claim(bot_id, update_id, "refunded_payment"):
                return None
            if await settle(tx, application_id, charge_id) is not None:
                order = await tx.orders.paid_by(application_id, charge_id)
                refunded = order is not None and order.state is OrderState.REFUNDED
                return RefundedCharge(True, order if refunded else None)
            await tx.events.add(
                application_id,
                None,
                EventType.PAYMENT_ANOMALY,
                {
                    "telegram_payment_charge_id": charge_id,
                    "reason": "REFUND_OF_UNKNOWN_CHARGE",
                    "update_id": update_id,
                },
            )
            return RefundedCharge(False, None)

    async def record_subscription_update(
        self,
        bot_id: int,
        update_id: int,
        application_id: UUID,
        tg_payment_id: int,
        telegram_state: str,
    ) -> Order | None:
        """A `subscription` update (Bot API 10.2) for the application's order: its subscription
        becomes what Telegram says (canceled -> CANCELLED, active -> ACTIVE, failed -> LAPSED),
        with its event, exactly once per update and never twice in a row for the same state.
        The order as it is after, or None for a repeated update or an order the application does
        not have (or that is no started subscription)."""
        async with self._payments.transaction() as tx:
            if not await tx.updates.claim(bot_id, update_id, "subscription"):
                return None
            order = await tx.orders.lock(application_id, tg_payment_id)
            if order is None or order.subscription_state is None:
                return None
            target = update_target(order.subscription_state, telegram_state)
            if target is None:
                return order
            extra = {"source": "telegram", "telegram_state": telegram_state}
            return await change_subscription(tx, order, target, extra)

    async def edit_subscription(
        self, application_id: UUID, tg_payment_id: int, target: SubscriptionState
    ) -> Order | None:
        """CancelSubscription / ResumeSubscription after Telegram accepted the change: the
        subscription becomes `target` with its event (unchanged when it is so already, or
        when it expired meanwhile). None when the application has no such order."""
        async with self._payments.transaction() as tx:
            order = await tx.orders.lock(application_id, tg_payment_id)
            if order is None or order.subscription_state in (None, SubscriptionState.EXPIRED):
                return order
            return await change_subscription(tx, order, target, {"source": "api"})


async def settle(
    tx: PaymentTransaction, application_id: UUID, charge_id: str
) -> tuple[int | None, Disposition] | None:
    """Telegram refunded the application's charge, in the caller's unit of work: the refund
    asked for (if any) succeeds, the payment is marked refunded and, if it was the charge that
    paid the order, the order becomes refunded. Idempotent. The charge's order and disposition,
    or None when the application has no such charge. The charge's order is locked first, as
    every use case here does: a refund asked for at the same moment (which locks the order, then
    the refund) waits instead of deadlocking."""
    await tx.orders.lock_charged(application_id, charge_id)
    payment = await tx.charges.mark_refunded(application_id, charge_id)
    if payment is None:
        return None
    await tx.refunds.complete(application_id, charge_id)
    tg_payment_id, disposition = payment
    if tg_payment_id is not None and disposition is Disposition.ACCEPTED:
        # Only the charge that paid the order refunds it (a duplicate's refund does not).
        await tx.orders.mark_refunded(tg_payment_id, charge_id)
    return payment


async def record_charge(
    tx: PaymentTransaction, record: PaymentRecord, *, auto_refund: bool
) -> PaymentResult:
    """A charge Telegram reported, exactly once by its charge id, in the caller's unit of work
    (a successful_payment update's, or the Star ledger's page): it pays its order, or is kept as
    a duplicate or an anomaly, refunded when `auto_refund` and the outcome says so."""
    order = None
    if record.tg_payment_id is not None:
        order = await tx.orders.lock(record.application_id, record.tg_payment_id)
    return await _record_locked(tx, record, order, auto_refund=auto_refund)


async def _record_locked(
    tx: PaymentTransaction, record: PaymentRecord, order: Order | None, *, auto_refund: bool
) -> PaymentResult:
    """record_charge once the record's order (None when it has none) is locked."""
    charge_id = record.telegram_payment_charge_id
    if order is not None and order.subscription_period is not None:
        record = await _with_found_period(tx, order, record)
    period_paid = False
    expiration = record.subscription_expiration_date
    if order is not None and order.subscription_period is not None and expiration is not None:
        period_paid = await tx.charges.period_paid(order.tg_payment_id, expiration)
    outcome = classify_record(record, order, period_paid=period_paid)
    order_id = order.tg_payment_id if order else None
    if outcome.disposition is Disposition.ACCEPTED:
        assert order is not None
        check_transition(order.state, OrderState.PAID)
        paid = await tx.orders.pay(record)  # the record's order: `order`
        if paid is None:  # locked, and the table allows it: the charge was seen before
            return await _seen_before(tx, record, order)
        return PaymentResult(outcome, await _started(tx, paid, record))
    if not await tx.charges.add(record, order_id, outcome):
        return await _seen_before(tx, record, order)
    if outcome.disposition is Disposition.RENEWAL:
        assert order is not None and expiration is not None
        renewed = await tx.orders.renew(order.tg_payment_id, charge_id, expiration)
        return PaymentResult(outcome, renewed)
    await tx.events.add(
        record.application_id,
        order_id,
        EventType.PAYMENT_DUPLICATE
        if outcome.disposition is Disposition.DUPLICATE
        else EventType.PAYMENT_ANOMALY,
        {
            "telegram_payment_charge_id": charge_id,
            "payer_id": record.charge.payer_id,
            "total_amount": record.charge.total_amount,
            "currency": record.charge.currency,
            "reason": outcome.anomaly or outcome.refund,
        },
    )
    refund = outcome.refund is not None and auto_refund
    if refund:
        assert outcome.refund is not None
        await tx.refunds.add(
            charge_id,
            record.bot_id,
            record.application_id,
            order_id,
            record.charge.payer_id,
            record.charge.total_amount,
            RefundCause.own(outcome.refund),
        )
    return PaymentResult(outcome, order, refund_requested=refund)


async def _with_found_period(
    tx: PaymentTransaction, order: Order, record: PaymentRecord
) -> PaymentRecord:
    """The record of a subscription order's recurring charge that the Star ledger found, with
    the end of the period it paid (its transaction has only its date, `charged_at`): one period
    after the date for the first payment, else the first period end after the date on the
    subscription's grid that no other charge paid (domain/subscription.first_end_after). The
    record as it is for any other charge. The charge id stays the key: when the update brought
    the same charge first (or later), one of the two records it and the other changes nothing."""
    charged_at = record.charged_at
    if not record.is_recurring or record.subscription_expiration_date is not None:
        return record
    if charged_at is None or order.subscription_period is None:
        return record
    period = order.subscription_period
    anchor = order.current_period_end
    if anchor is None:  # not started: this charge starts it
        end = charged_at + timedelta(seconds=period)
    else:
        end = first_end_after(charged_at, anchor, period)
        while end <= anchor and await tx.charges.period_paid(order.tg_payment_id, end):
            end += timedelta(seconds=period)
    return replace(record, subscription_expiration_date=end)


async def _seen_before(
    tx: PaymentTransaction, record: PaymentRecord, order: Order | None
) -> PaymentResult:
    """A charge id recorded before: nothing changes. When another application recorded it
    (a charge id reported by this bot that is not its own), the anomaly is kept in this
    application's log for someone to look at; it is never applied."""
    charge_id = record.telegram_payment_charge_id
    if await tx.charges.owner(charge_id) != record.application_id:
        await tx.events.add(
            record.application_id,
            None,
            EventType.PAYMENT_ANOMALY,
            {
                "telegram_payment_charge_id": charge_id,
                "reason": "FOREIGN_CHARGE",
                "update_id": record.update_id,
            },
        )
    return PaymentResult(None, order)


async def _started(tx: PaymentTransaction, paid: Order, record: PaymentRecord) -> Order:
    """A subscription's order paid by its first charge starts its subscription
    (`subscription.started`, in the same unit of work); any other paid order as it is."""
    if paid.subscription_state is not None:
        await tx.events.add(
            paid.application_id,
            paid.tg_payment_id,
            EventType.SUBSCRIPTION_STARTED,
            {"telegram_payment_charge_id": record.telegram_payment_charge_id},
        )
    return paid


async def change_subscription(
    tx: PaymentTransaction, order: Order, target: SubscriptionState, extra: dict[str, Any]
) -> Order:
    """The locked order's subscription becomes `target`, with the event announcing that state
    (domain/subscription.STATE_EVENTS); the order unchanged when it is in that state already."""
    changed = await tx.orders.set_subscription_state(
        order.tg_payment_id, target, STATE_EVENTS[target], extra
    )
    return order if changed is None else changed
