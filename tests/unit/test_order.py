"""Order states: the SDK's status numbers, expiry as callers see it, the transition table."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from portex_pay.domain.errors import IllegalTransition
from portex_pay.domain.order import (
    EXPIRABLE,
    PAYABLE,
    SDK_STATUS,
    TRANSITIONS,
    Order,
    OrderState,
    check_transition,
    sources,
)

ROOT = Path(__file__).resolve().parents[2]

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def order(state: OrderState, *, expires_in: float = 60, link: str | None = "https://t.me/$x"):
    return Order(
        tg_payment_id=1, application_id=uuid4(), tg_use_id=42, amount=5, label="l", title="t",
        description="d", payload=None, photo_url=None, photo_size=None, photo_width=None,
        photo_height=None, callback_url=None, state=state, invoice_link=link, failure_code=None,
        failure_reason=None, retry_after=None, telegram_payment_charge_id=None, created_at=NOW,
        updated_at=NOW, paid_at=None, expires_at=NOW + timedelta(seconds=expires_in),
        invoice_lease_until=None,
    )  # fmt: skip


def test_paid_is_status_1_success_as_the_sdk_expects() -> None:
    assert SDK_STATUS[OrderState.PAID] == (1, "success")


def test_every_state_has_a_distinct_status_number() -> None:
    numbers = [number for number, _ in SDK_STATUS.values()]
    assert set(SDK_STATUS) == set(OrderState)
    assert len(set(numbers)) == len(numbers)


def test_a_pending_order_past_its_expiry_is_expired_before_any_sweep() -> None:
    assert order(OrderState.PENDING, expires_in=-1).state_at(NOW) is OrderState.EXPIRED
    assert order(OrderState.PENDING, expires_in=0).state_at(NOW) is OrderState.EXPIRED
    assert order(OrderState.PENDING, expires_in=1).state_at(NOW) is OrderState.PENDING


def test_a_paid_order_never_expires() -> None:
    assert order(OrderState.PAID, expires_in=-100).state_at(NOW) is OrderState.PAID


def test_only_a_pending_unexpired_order_with_a_link_is_payable() -> None:
    assert order(OrderState.PENDING).is_payable(NOW)
    assert not order(OrderState.PENDING, link=None).is_payable(NOW)
    assert not order(OrderState.PENDING, expires_in=-1).is_payable(NOW)
    assert not order(OrderState.FAILED).is_payable(NOW)


@pytest.mark.parametrize("terminal", [OrderState.CANCELLED, OrderState.REFUNDED])
def test_terminal_states_allow_no_transition(terminal: OrderState) -> None:
    for target in OrderState:
        with pytest.raises(IllegalTransition):
            check_transition(terminal, target)


def test_a_paid_order_can_only_be_refunded() -> None:
    assert TRANSITIONS[OrderState.PAID] == {OrderState.REFUNDED}
    with pytest.raises(IllegalTransition):
        check_transition(OrderState.PAID, OrderState.PENDING)


def test_an_expired_order_can_only_still_be_paid() -> None:
    """Telegram charges only after our approval: a charge landing after the sweep pays."""
    assert TRANSITIONS[OrderState.EXPIRED] == {OrderState.PAID}


# The SQL guards of the PostgreSQL adapter are `state = ANY(sources(target))`: written out by
# hand here, so that a change to the table shows up as a change to what the database accepts.
@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        (OrderState.PENDING, ["pending", "failed"]),
        (OrderState.FAILED, ["pending", "failed"]),
        (OrderState.CANCELLED, ["pending", "failed"]),
        (OrderState.EXPIRED, ["pending", "failed"]),
        (OrderState.PAID, ["pending", "expired"]),
        (OrderState.REFUNDED, ["paid"]),
    ],
)
def test_the_states_a_change_may_start_from_come_from_the_table(target, allowed) -> None:
    assert sources(target) == allowed
    for state in OrderState:
        legal = state.value in allowed
        try:
            check_transition(state, target)
        except IllegalTransition:
            assert not legal
        else:
            assert legal


def test_what_expires_and_what_is_payable_follow_the_table() -> None:
    assert {OrderState.PENDING, OrderState.FAILED} == EXPIRABLE
    for state in OrderState:
        expired = order(state, expires_in=-1).state_at(NOW)
        assert expired is (OrderState.EXPIRED if state in EXPIRABLE else state)
    assert {OrderState.PENDING} == PAYABLE


def test_the_order_adapter_writes_no_state_guard_of_its_own() -> None:
    """A `state IN (...)` or `state = '<literal>'` condition in the orders SQL would be a second
    copy of the table; its guards are `state = ANY($n)` with `sources()` (or PAYABLE, or
    FULFILLABLE), and ListOrders' seen state is `state = ANY($n)` with EXPIRABLE."""
    text = (ROOT / "server/portex_pay/adapters/postgres/orders.py").read_text()
    assert not re.findall(r"(?:WHERE|AND)\s+(?:o\.)?state\s*(?:IN\s*\(|=\s*'|<>)", text)
    # (a subscription's state is not the order's: its guards are not counted)
    assert len(re.findall(r"(?<!subscription_)state = ANY\(", text)) == 9
