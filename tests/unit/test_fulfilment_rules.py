"""Fulfilment's rules (domain/fulfilment.py) and a refund's reason (domain/refunds.py): what a
repeated acknowledgement answers and why one is refused, the policy's deadline as an operator
writes it, and the caller's reason code and text."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from uuid import uuid4

import pytest

from portex_pay.domain.checkout import RefundReason
from portex_pay.domain.errors import (
    IllegalTransition,
    InvalidArgument,
    OrderAlreadyFulfilled,
    OrderNotPaid,
    OrderRefunded,
)
from portex_pay.domain.fulfilment import (
    acknowledgement_refusal,
    format_deadline,
    parse_deadline,
)
from portex_pay.domain.order import OrderState
from portex_pay.domain.refunds import OWN_REASON_CODES, RefundCause, RefundReasonCode
from tests.unit.fakes import NOW, make_order

APP = uuid4()


def test_a_repeat_of_the_acknowledgement_is_answered_with_the_order() -> None:
    for state in (OrderState.PAID, OrderState.REFUNDED):
        order = replace(make_order(1, APP, state), fulfilled_at=NOW, fulfilment_request_id="d-1")
        assert acknowledgement_refusal(order, "d-1") is None
        assert acknowledgement_refusal(order, None) is None
        assert isinstance(acknowledgement_refusal(order, "d-2"), OrderAlreadyFulfilled)
    without_id = replace(make_order(1, APP, OrderState.PAID), fulfilled_at=NOW)
    assert acknowledgement_refusal(without_id, None) is None
    assert isinstance(acknowledgement_refusal(without_id, "d-1"), OrderAlreadyFulfilled)


@pytest.mark.parametrize(
    ("state", "error"),
    [
        (OrderState.PENDING, OrderNotPaid),
        (OrderState.FAILED, OrderNotPaid),
        (OrderState.CANCELLED, OrderNotPaid),
        (OrderState.EXPIRED, OrderNotPaid),
        (OrderState.REFUNDED, OrderRefunded),
        (OrderState.PAID, IllegalTransition),  # the compare-and-set would have applied
    ],
)
def test_why_an_unacknowledged_order_is_refused(state: OrderState, error: type) -> None:
    assert isinstance(acknowledgement_refusal(make_order(1, APP, state), "d-1"), error)


@pytest.mark.parametrize(
    ("text", "deadline", "shown"),
    [
        ("72h", timedelta(hours=72), "3d"),
        ("3d", timedelta(days=3), "3d"),
        ("1d12h", timedelta(hours=36), "1d12h"),
        ("90m", timedelta(minutes=90), "1h30m"),
        ("1m", timedelta(minutes=1), "1m"),
        ("365d", timedelta(days=365), "365d"),
        ("1h30s", timedelta(seconds=3630), "1h30s"),
    ],
)
def test_a_deadline_is_read_and_shown_in_whole_units(
    text: str, deadline: timedelta, shown: str
) -> None:
    assert parse_deadline(text) == deadline
    assert format_deadline(deadline) == shown
    assert parse_deadline(shown) == deadline


@pytest.mark.parametrize(
    "text", ["", "72", "h", "-1h", "1.5h", "59s", "366d", "1w", "７２h", "1h "]
)
def test_a_deadline_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_deadline(text)


def test_a_callers_reason_defaults_to_requested_by_the_customer() -> None:
    assert RefundCause.requested(None, "") == RefundCause(
        RefundReason.REQUESTED, RefundReasonCode.REQUESTED_BY_CUSTOMER, None
    )
    fraud = RefundCause.requested(RefundReasonCode.FRAUDULENT, "line one\nline\ttwo")
    assert (fraud.code, fraud.text) == (RefundReasonCode.FRAUDULENT, "line one\nline\ttwo")
    assert RefundCause.requested(None, "é" * 500).text == "é" * 500


@pytest.mark.parametrize("text", ["x" * 501, "bell\x07", "nul\x00", "del\x7f", "\ud800"])
def test_a_callers_reason_text_breaking_the_rules_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        RefundCause.requested(None, text)
    (violation,) = raised.value.violations
    assert violation.field == "reason_text"
    assert text not in violation.description  # never echoed


def test_every_refund_portex_pay_starts_has_its_code() -> None:
    assert set(OWN_REASON_CODES) == set(RefundReason)
    assert RefundCause.own(RefundReason.UNFULFILLED).code is RefundReasonCode.NOT_FULFILLED
    assert RefundCause.own(RefundReason.OUTSIDE).code is RefundReasonCode.OTHER
