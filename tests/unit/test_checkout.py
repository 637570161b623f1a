"""The money decisions, table-driven: every order state x every mismatch x expiry, for the
pre-checkout answer and for what a reported charge does (domain/checkout.py). The expected
outcomes are written out by hand, as the rules say them, not computed."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from portex_pay.domain.checkout import (
    APPROVED,
    CURRENCY,
    Charge,
    DeclineReason,
    Disposition,
    PaymentOutcome,
    RefundReason,
    classify_payment,
    decide_pre_checkout,
    decline,
)
from portex_pay.domain.order import OrderState
from tests.unit.test_order import NOW, order

PAYER, AMOUNT = 42, 5  # what test_order.order() makes: tg_use_id 42, amount 5

# name -> (how the charge differs from the order, the signed amount, the reason it is refused)
MISMATCHES: dict[str, tuple[dict[str, object], int, DeclineReason | None]] = {
    "matching": ({}, AMOUNT, None),
    "other currency": ({"currency": "USD"}, AMOUNT, DeclineReason.CURRENCY_MISMATCH),
    "other charged amount": ({"total_amount": AMOUNT + 1}, AMOUNT, DeclineReason.AMOUNT_MISMATCH),
    "other signed amount": ({}, AMOUNT + 1, DeclineReason.AMOUNT_MISMATCH),
    "other payer": ({"payer_id": PAYER + 1}, AMOUNT, DeclineReason.PAYER_MISMATCH),
    # Several at once: the currency is named first, then the amount.
    "currency and payer": (
        {"currency": "EUR", "payer_id": 7},
        AMOUNT,
        DeclineReason.CURRENCY_MISMATCH,
    ),
    "amount and payer": ({"total_amount": 1, "payer_id": 7}, AMOUNT, DeclineReason.AMOUNT_MISMATCH),
}

# (state, expired?, has a link?) -> the answer to a matching pre-checkout
PRE_CHECKOUT: dict[tuple[OrderState, bool, bool], DeclineReason | None] = {
    (OrderState.PENDING, False, True): None,  # the one approval
    (OrderState.PENDING, False, False): DeclineReason.ORDER_NOT_PAYABLE,  # no invoice yet
    (OrderState.PENDING, True, True): DeclineReason.ORDER_EXPIRED,  # even before the sweep
    (OrderState.PENDING, True, False): DeclineReason.ORDER_EXPIRED,
    (OrderState.FAILED, False, True): DeclineReason.ORDER_NOT_PAYABLE,
    (OrderState.FAILED, False, False): DeclineReason.ORDER_NOT_PAYABLE,
    (OrderState.FAILED, True, True): DeclineReason.ORDER_EXPIRED,
    (OrderState.FAILED, True, False): DeclineReason.ORDER_EXPIRED,
    **{
        (state, expired, link): reason
        for state, reason in (
            (OrderState.PAID, DeclineReason.ORDER_PAID),
            (OrderState.CANCELLED, DeclineReason.ORDER_CANCELLED),
            (OrderState.EXPIRED, DeclineReason.ORDER_EXPIRED),
            (OrderState.REFUNDED, DeclineReason.ORDER_REFUNDED),
        )
        for expired in (False, True)
        for link in (False, True)
    },
}

# state -> what a matching charge does (expiry and link do not matter: Telegram charged only
# after our approval, so a charge that lands after the expiry still pays the order)
PAYMENT: dict[OrderState, PaymentOutcome] = {
    OrderState.PENDING: PaymentOutcome(Disposition.ACCEPTED),
    OrderState.EXPIRED: PaymentOutcome(Disposition.ACCEPTED),
    OrderState.PAID: PaymentOutcome(Disposition.DUPLICATE, refund=RefundReason.DUPLICATE_CHARGE),
    OrderState.REFUNDED: PaymentOutcome(
        Disposition.DUPLICATE, refund=RefundReason.DUPLICATE_CHARGE
    ),
    OrderState.FAILED: PaymentOutcome(Disposition.DUPLICATE, refund=RefundReason.DUPLICATE_CHARGE),
    OrderState.CANCELLED: PaymentOutcome(
        Disposition.DUPLICATE, refund=RefundReason.CANCELLED_ORDER
    ),
}

CASES = list(itertools.product(OrderState, (False, True), (False, True), MISMATCHES))


def _charge(changes: dict[str, object]) -> Charge:
    base = Charge(payer_id=PAYER, currency=CURRENCY, total_amount=AMOUNT, invoice_payload="p")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_the_tables_cover_every_state() -> None:
    assert set(PAYMENT) == set(OrderState)
    assert set(PRE_CHECKOUT) == set(itertools.product(OrderState, (False, True), (False, True)))


@pytest.mark.parametrize(("state", "expired", "link", "mismatch"), CASES)
def test_pre_checkout(state: OrderState, expired: bool, link: bool, mismatch: str) -> None:
    changes, signed, refused = MISMATCHES[mismatch]
    stored = order(
        state, expires_in=-1 if expired else 60, link="https://t.me/$x" if link else None
    )
    # A mismatch is refused whatever the state; otherwise the state decides.
    reason = refused or PRE_CHECKOUT[(state, expired, link)]
    expected = APPROVED if reason is None else decline(reason)
    assert decide_pre_checkout(_charge(changes), stored, signed, NOW) == expected


@pytest.mark.parametrize(("state", "expired", "link", "mismatch"), CASES)
def test_payment(state: OrderState, expired: bool, link: bool, mismatch: str) -> None:
    changes, signed, refused = MISMATCHES[mismatch]
    stored = order(
        state, expires_in=-1 if expired else 60, link="https://t.me/$x" if link else None
    )
    expected = PaymentOutcome(Disposition.ANOMALY, anomaly=refused) if refused else PAYMENT[state]
    assert classify_payment(_charge(changes), stored, signed) == expected


def test_no_order_is_refused_and_an_anomaly() -> None:
    assert decide_pre_checkout(_charge({}), None, AMOUNT, NOW) == decline(
        DeclineReason.ORDER_NOT_FOUND
    )
    assert classify_payment(_charge({}), None, AMOUNT) == PaymentOutcome(
        Disposition.ANOMALY, anomaly=DeclineReason.ORDER_NOT_FOUND
    )


def test_every_decline_has_a_short_message_for_the_user() -> None:
    for reason in DeclineReason:
        message = decline(reason).error_message
        assert message and len(message) <= 64 and "_" not in message
    assert APPROVED.error_message is None
