"""Telegram's checkout, decided: pre-checkout approvals and what each reported charge means.

Pure functions over the order as stored. Telegram's rules (Bot API, "Payments"; Stars guide):
the bot must answer every `pre_checkout_query` within 10 seconds, and only `successful_payment`
proves a charge. An invoice link can be paid more than once, so a further charge of an order that
is already settled is expected and must be refunded, never dropped; a charge whose payload, amount,
currency or payer does not match its order is an anomaly to record and announce.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from portex_pay.domain.order import Order, OrderState, allows
from portex_pay.domain.text import single_line_problem

CURRENCY = "XTR"
# Telegram's `telegram_payment_charge_id`: no length is documented; ours are kept to 256.
CHARGE_ID_MAX_CHARS = 256


class DeclineReason(enum.StrEnum):
    PAYLOAD_INVALID = "PAYLOAD_INVALID"
    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    PAYER_MISMATCH = "PAYER_MISMATCH"
    ORDER_PAID = "ORDER_PAID"
    ORDER_CANCELLED = "ORDER_CANCELLED"
    ORDER_EXPIRED = "ORDER_EXPIRED"
    ORDER_REFUNDED = "ORDER_REFUNDED"
    ORDER_NOT_PAYABLE = "ORDER_NOT_PAYABLE"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


# Shown to the user by Telegram (answerPreCheckoutQuery's error_message): short, no internals.
USER_MESSAGES: dict[DeclineReason, str] = {
    DeclineReason.PAYLOAD_INVALID: "This invoice is not valid.",
    DeclineReason.ORDER_NOT_FOUND: "This invoice is not valid.",
    DeclineReason.CURRENCY_MISMATCH: "This invoice is not valid.",
    DeclineReason.AMOUNT_MISMATCH: "The price of this order has changed.",
    DeclineReason.PAYER_MISMATCH: "This order belongs to another user.",
    DeclineReason.ORDER_PAID: "This order has already been paid.",
    DeclineReason.ORDER_CANCELLED: "This order was cancelled.",
    DeclineReason.ORDER_EXPIRED: "This order has expired.",
    DeclineReason.ORDER_REFUNDED: "This order was refunded.",
    DeclineReason.ORDER_NOT_PAYABLE: "This order cannot be paid.",
    DeclineReason.SERVICE_UNAVAILABLE: "Payments are temporarily unavailable. Please try again.",
}


@dataclass(frozen=True, slots=True)
class CheckoutDecision:
    ok: bool
    reason: DeclineReason | None = None

    @property
    def error_message(self) -> str | None:
        return None if self.reason is None else USER_MESSAGES[self.reason]


APPROVED = CheckoutDecision(ok=True)


def decline(reason: DeclineReason) -> CheckoutDecision:
    return CheckoutDecision(ok=False, reason=reason)


@dataclass(frozen=True, slots=True)
class Charge:
    """What Telegram says was (or is about to be) paid."""

    payer_id: int
    currency: str
    total_amount: int
    invoice_payload: str


def _mismatch(charge: Charge, order: Order, signed_amount: int) -> DeclineReason | None:
    if charge.currency != CURRENCY:
        return DeclineReason.CURRENCY_MISMATCH
    if charge.total_amount != order.amount or signed_amount != order.amount:
        return DeclineReason.AMOUNT_MISMATCH
    if charge.payer_id != order.tg_use_id:
        return DeclineReason.PAYER_MISMATCH
    return None


_STATE_DECLINES = {
    OrderState.PAID: DeclineReason.ORDER_PAID,
    OrderState.CANCELLED: DeclineReason.ORDER_CANCELLED,
    OrderState.EXPIRED: DeclineReason.ORDER_EXPIRED,
    OrderState.REFUNDED: DeclineReason.ORDER_REFUNDED,
    OrderState.FAILED: DeclineReason.ORDER_NOT_PAYABLE,
}


def decide_pre_checkout(
    charge: Charge, order: Order | None, signed_amount: int, now: datetime
) -> CheckoutDecision:
    """Approve only a checkout of our own, untampered, matching and still payable order.

    `order` is None when the payload's order does not exist or belongs to another application
    (the caller looks it up scoped to the bot's application).
    """
    if order is None:
        return decline(DeclineReason.ORDER_NOT_FOUND)
    mismatch = _mismatch(charge, order, signed_amount)
    if mismatch is not None:
        return decline(mismatch)
    state = order.state_at(now)
    if state in _STATE_DECLINES:
        return decline(_STATE_DECLINES[state])
    if not order.is_payable(now):
        return decline(DeclineReason.ORDER_NOT_PAYABLE)
    return APPROVED


class Disposition(enum.StrEnum):
    ACCEPTED = "accepted"  # pays the order (a subscription's first payment starts it)
    RENEWAL = "renewal"  # a subscription's charge for a period not paid yet: kept, never refunded
    DUPLICATE = "duplicate"  # a further charge of a settled order: kept, refunded
    ANOMALY = "anomaly"  # does not match any order of ours: kept, announced


class RefundReason(enum.StrEnum):
    """Who started a refund, and on what ground (`refunds.reason`); why, in the caller's terms,
    is its reason code (domain/refunds.py)."""

    REQUESTED = "requested"  # RefundPayment's caller
    DUPLICATE_CHARGE = "duplicate_charge"  # a further charge of a settled order
    CANCELLED_ORDER = "cancelled_order"  # a charge of an order withdrawn before it was paid
    ANOMALY = "anomaly"  # a charge that matches no order of ours
    UNFULFILLED = "unfulfilled"  # the application's unfulfilled-order policy
    OUTSIDE = "outside"  # refunded outside portex-pay, found by the Star ledger


@dataclass(frozen=True, slots=True)
class PaymentOutcome:
    disposition: Disposition
    anomaly: DeclineReason | None = None
    refund: RefundReason | None = None


def classify_payment(
    charge: Charge, order: Order | None, signed_amount: int, *, renewal: bool = False
) -> PaymentOutcome:
    """What a successful_payment means for its order (already de-duplicated by charge id).

    A charge for an order that is pending, or that expired after its checkout was approved, pays
    it: Telegram only charges after our approval, so the user paid in good faith. A charge for a
    settled order (paid, refunded) is a multi-use link paid again: refund it, unless it is a
    subscription's recurring charge for a period not paid yet (`renewal`, domain/subscription.py):
    a renewal, kept. A second charge for a period already paid is a true duplicate. A charge for a
    cancelled order is refunded too. Anything that does not match is an anomaly.
    """
    if order is None:
        return PaymentOutcome(Disposition.ANOMALY, anomaly=DeclineReason.ORDER_NOT_FOUND)
    mismatch = _mismatch(charge, order, signed_amount)
    if mismatch is not None:
        return PaymentOutcome(Disposition.ANOMALY, anomaly=mismatch)
    if allows(order.state, OrderState.PAID):  # pending, or expired after its approval
        return PaymentOutcome(Disposition.ACCEPTED)
    if order.state is OrderState.CANCELLED:
        return PaymentOutcome(Disposition.DUPLICATE, refund=RefundReason.CANCELLED_ORDER)
    if renewal and order.state is OrderState.PAID and order.subscription_period is not None:
        return PaymentOutcome(Disposition.RENEWAL)
    return PaymentOutcome(Disposition.DUPLICATE, refund=RefundReason.DUPLICATE_CHARGE)


@dataclass(frozen=True, slots=True)
class CheckoutRecord:
    bot_id: int
    update_id: int
    application_id: UUID
    tg_payment_id: int | None
    query_id: str
    charge: Charge


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """A charge Telegram reported, with what its invoice payload proves: the order and amount
    it signed (`tg_payment_id`, `signed_amount`), both None when the payload is not one of ours
    (forged, or an invoice the app's own bot created)."""

    bot_id: int
    update_id: int | None  # None: found by reconciliation, de-duplicated by charge id alone
    application_id: UUID
    tg_payment_id: int | None
    signed_amount: int | None
    charge: Charge
    telegram_payment_charge_id: str
    provider_payment_charge_id: str | None
    raw: dict[str, Any]
    # A subscription's charge (successful_payment's is_recurring, is_first_recurring), and the end
    # of the period it paid (subscription_expiration_date); False and None for a one-off charge.
    is_recurring: bool = False
    is_first_recurring: bool = False
    subscription_expiration_date: datetime | None = None
    # A charge the Star ledger found: its transaction's date. Its transaction names no period
    # (TransactionPartnerUser has subscription_period, not the expiration date), so a recurring
    # one's period is derived from this date and the subscription's periods (service/ledger.py).
    charged_at: datetime | None = None

    def renews_period(self, period_paid: bool) -> bool:
        """Whether this charge can be a renewal: a recurring charge that names a period, one not
        paid yet (`period_paid`: the order has a paying charge for that period already)."""
        return (
            self.is_recurring and self.subscription_expiration_date is not None and not period_paid
        )


def charge_id_problem(charge_id: str) -> str | None:
    """Why `charge_id` cannot be a Telegram charge id given by a caller (1-256 characters on one
    line, domain/text.py), as a field violation's description, or None."""
    problem = single_line_problem(charge_id)
    if problem is None and not 0 < len(charge_id) <= CHARGE_ID_MAX_CHARS:
        problem = f"must be 1-{CHARGE_ID_MAX_CHARS} characters"
    return problem


def classify_record(
    record: PaymentRecord, order: Order | None, *, period_paid: bool = False
) -> PaymentOutcome:
    """What a reported charge means for the order its payload names (`order`, as stored): an
    anomaly when the payload is not ours, else `classify_payment`. `period_paid`: the order has
    a paying charge for the period this one names already (a redelivered renewal under a new
    charge id is then a duplicate)."""
    if record.signed_amount is None:
        return PaymentOutcome(Disposition.ANOMALY, anomaly=DeclineReason.PAYLOAD_INVALID)
    return classify_payment(
        record.charge, order, record.signed_amount, renewal=record.renews_period(period_paid)
    )


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """What processing a successful_payment did; `outcome` is None for a repeat."""

    outcome: PaymentOutcome | None
    order: Order | None
    refund_requested: bool = False


@dataclass(frozen=True, slots=True)
class RefundedCharge:
    """What a refunded_payment update settled: whether the charge was the application's, and
    the order it had paid (now refunded), if any."""

    known: bool
    order: Order | None
