"""ListOrders' `subscription_state` comparison: parsed from a Subscription.State name (`=`,
`!=`), refused with the position and the reason otherwise, and judged on the order's stored
subscription state; an order without one (one-off, or not started) is selected by `!=` only."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from portex_pay.domain.errors import InvalidArgument
from portex_pay.domain.order import Order, OrderState
from portex_pay.domain.order_filter import (
    Comparison,
    FilterField,
    Operator,
    OrderFilter,
    parse_order_filter,
)
from portex_pay.domain.subscription import SubscriptionState

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
STATES = "ACTIVE, CANCELLED, LAPSED, EXPIRED"


def an_order(**fields: object) -> Order:
    order = Order(
        tg_payment_id=1,
        application_id=uuid4(),
        tg_use_id=7,
        amount=5,
        label="item",
        title="t",
        description="d",
        payload=None,
        photo_url=None,
        photo_size=None,
        photo_width=None,
        photo_height=None,
        callback_url=None,
        state=OrderState.PAID,
        invoice_link=None,
        failure_code=None,
        failure_reason=None,
        retry_after=None,
        telegram_payment_charge_id="c",
        created_at=NOW,
        updated_at=NOW,
        paid_at=NOW,
        expires_at=NOW,
        invoice_lease_until=None,
    )
    return replace(order, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("state", list(SubscriptionState))
@pytest.mark.parametrize("op", [Operator.EQ, Operator.NE])
def test_each_state_name_parses(state: SubscriptionState, op: Operator) -> None:
    parsed = parse_order_filter(f"subscription_state {op.value} {state.name}")
    assert parsed == OrderFilter((Comparison(FilterField.SUBSCRIPTION_STATE, op, state),))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("subscription_state = active", f"position 22: subscription_state takes one of {STATES}"),
        ("subscription_state = STATE_UNSPECIFIED", f"position 22: subscription_state takes one "
         f"of {STATES}"),
        ('subscription_state = "ACTIVE"', f"position 22: subscription_state takes one of {STATES}"),
        ("subscription_state = PAID", f"position 22: subscription_state takes one of {STATES}"),
        ("subscription_state < ACTIVE", "position 20: subscription_state takes = or !=, not <"),
        ("subscription_state =", "position 21: expected a value after '='"),
    ],
)  # fmt: skip
def test_a_bad_comparison_names_the_position_and_the_reason(text: str, expected: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_order_filter(text)
    (violation,) = raised.value.violations
    assert (violation.field, violation.description) == ("filter", expected)


def test_an_order_without_a_subscription_state_is_selected_by_not_equal_only() -> None:
    one_off = an_order()
    unstarted = an_order(subscription_period=2592000)
    cancelled = an_order(
        subscription_period=2592000,
        subscription_state=SubscriptionState.CANCELLED,
        current_period_start=NOW,
        current_period_end=NOW,
    )
    for state in SubscriptionState:
        equal = parse_order_filter(f"subscription_state = {state.name}")
        unequal = parse_order_filter(f"subscription_state != {state.name}")
        for order in (one_off, unstarted):
            assert not equal.matches(order, NOW) and unequal.matches(order, NOW)
        is_it = state is SubscriptionState.CANCELLED
        seen = (equal.matches(cancelled, NOW), unequal.matches(cancelled, NOW))
        assert seen == (is_it, not is_it)
