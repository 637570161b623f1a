"""Order states: the SDK's status numbers, expiry as callers see it, the transition table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from portex_pay.domain.errors import IllegalTransition
from portex_pay.domain.order import SDK_STATUS, TRANSITIONS, Order, OrderState, check_transition

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
