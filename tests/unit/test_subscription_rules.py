"""Subscriptions' pure rules (domain/subscription.py), what a subscription's charge means
(domain/checkout.py classify_record), and how a subscription's charge and Telegram's
`subscription` update are read (domain/updates.py). Expected outcomes are written out by hand."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portex_pay.domain.checkout import (
    CURRENCY,
    Charge,
    Disposition,
    PaymentOutcome,
    PaymentRecord,
    RefundReason,
    classify_record,
)
from portex_pay.domain.order import Order, OrderState
from portex_pay.domain.subscription import (
    EditRefusal,
    Period,
    SubscriptionState,
    edit_refusal,
    edit_target,
    first_end_after,
    period_of,
    update_target,
)
from portex_pay.domain.updates import (
    MAX_UNIX_TIME,
    MalformedUpdate,
    SubscriptionUpdate,
    SuccessfulPayment,
    parse_update,
)
from tests.unit.test_order import NOW, order

MONTH = 2592000
S = SubscriptionState
END = NOW + timedelta(days=10)  # the current period's end of the subscriptions below


def subscription_order(state: OrderState, sub: SubscriptionState | None) -> Order:
    one_off: Order = order(state)
    return dataclasses.replace(
        one_off,
        subscription_period=MONTH,
        subscription_state=sub,
        current_period_start=None if sub is None else END - timedelta(seconds=MONTH),
        current_period_end=None if sub is None else END,
    )


def record(
    *, recurring: bool = True, first: bool = False, expiration: datetime | None = END
) -> PaymentRecord:
    """A charge of order 1 for 5 Stars by user 42 (what test_order.order() makes), its payload
    ours; a renewal of the period ending at `expiration` unless told otherwise."""
    return PaymentRecord(
        bot_id=1,
        update_id=10,
        application_id=uuid.uuid4(),
        tg_payment_id=1,
        signed_amount=5,
        charge=Charge(42, CURRENCY, 5, "v2.x"),
        telegram_payment_charge_id="stx-1",
        provider_payment_charge_id=None,
        raw={},
        is_recurring=recurring,
        is_first_recurring=first,
        subscription_expiration_date=expiration if recurring else None,
    )


RENEWAL = PaymentOutcome(Disposition.RENEWAL)
DUPLICATE = PaymentOutcome(Disposition.DUPLICATE, refund=RefundReason.DUPLICATE_CHARGE)


# ------------------------------------------------------------------- what a charge means


def test_the_first_payment_of_a_subscription_order_pays_it() -> None:
    pending = subscription_order(OrderState.PENDING, None)
    outcome = classify_record(record(first=True, expiration=NOW + timedelta(days=30)), pending)
    assert outcome == PaymentOutcome(Disposition.ACCEPTED)


def test_a_renewal_of_a_new_period_is_kept_never_refunded() -> None:
    paid = subscription_order(OrderState.PAID, S.ACTIVE)
    next_end = END + timedelta(seconds=MONTH)
    outcome = classify_record(record(expiration=next_end), paid, period_paid=False)
    assert outcome == RENEWAL and outcome.refund is None


def test_a_second_charge_for_a_period_already_paid_is_a_duplicate_refunded() -> None:
    paid = subscription_order(OrderState.PAID, S.ACTIVE)
    assert classify_record(record(), paid, period_paid=True) == DUPLICATE


def test_a_further_charge_of_a_paid_one_off_order_is_a_duplicate_even_if_recurring() -> None:
    one_off = order(OrderState.PAID)
    assert classify_record(record(recurring=False), one_off) == DUPLICATE
    # A recurring charge whose payload names a one-off order renews nothing either.
    assert classify_record(record(), one_off) == DUPLICATE


def test_a_recurring_charge_without_a_period_end_is_a_duplicate() -> None:
    paid = subscription_order(OrderState.PAID, S.ACTIVE)
    assert classify_record(record(expiration=None), paid) == DUPLICATE


@pytest.mark.parametrize("sub", [S.CANCELLED, S.LAPSED, S.EXPIRED])
def test_a_renewal_after_cancellation_lapse_or_expiry_is_recorded(sub: SubscriptionState) -> None:
    # Telegram charged the user, which it does only for a subscription it renews (the adapter's
    # renew makes it ACTIVE again: tests/contract/test_subscriptions.py).
    paid = subscription_order(OrderState.PAID, sub)
    assert classify_record(record(expiration=END + timedelta(seconds=MONTH)), paid) == RENEWAL


def test_a_renewal_for_an_older_period_not_paid_is_recorded() -> None:
    paid = subscription_order(OrderState.PAID, S.ACTIVE)
    older = END - timedelta(seconds=MONTH)
    assert classify_record(record(expiration=older), paid, period_paid=False) == RENEWAL


def test_a_charge_of_a_refunded_or_cancelled_subscription_order_is_refunded() -> None:
    refunded = subscription_order(OrderState.REFUNDED, S.ACTIVE)
    assert classify_record(record(), refunded) == DUPLICATE
    cancelled = subscription_order(OrderState.CANCELLED, None)
    assert classify_record(record(), cancelled) == PaymentOutcome(
        Disposition.DUPLICATE, refund=RefundReason.CANCELLED_ORDER
    )


def test_a_renewal_with_another_amount_is_an_anomaly() -> None:
    paid = subscription_order(OrderState.PAID, S.ACTIVE)
    other = dataclasses.replace(record(), charge=Charge(42, CURRENCY, 6, "v2.x"))
    assert classify_record(other, paid).disposition is Disposition.ANOMALY


# ------------------------------------------------------------ the subscription update

# (current, Telegram's state) -> the state it brings, None: no change
UPDATES: dict[tuple[SubscriptionState | None, str], SubscriptionState | None] = {
    (None, "canceled"): None,
    (None, "active"): None,
    (None, "failed"): None,
    (S.ACTIVE, "canceled"): S.CANCELLED,
    (S.ACTIVE, "active"): None,
    (S.ACTIVE, "failed"): S.LAPSED,
    (S.CANCELLED, "canceled"): None,
    (S.CANCELLED, "active"): S.ACTIVE,
    (S.CANCELLED, "failed"): S.LAPSED,
    (S.LAPSED, "canceled"): S.CANCELLED,
    (S.LAPSED, "active"): S.ACTIVE,
    (S.LAPSED, "failed"): None,
    (S.EXPIRED, "canceled"): None,  # only a renewal charge pays a new period
    (S.EXPIRED, "active"): None,
    (S.EXPIRED, "failed"): None,
}


@pytest.mark.parametrize(("current", "telegram_state"), list(UPDATES))
def test_the_subscription_update_moves_the_state_as_the_table_says(
    current: SubscriptionState | None, telegram_state: str
) -> None:
    assert update_target(current, telegram_state) is UPDATES[(current, telegram_state)]


def test_cancel_makes_it_cancelled_and_resume_changes_nothing_until_telegram_says() -> None:
    assert [edit_target(state, True) for state in (S.ACTIVE, S.CANCELLED, S.LAPSED)] == [
        S.CANCELLED,
        None,
        S.CANCELLED,
    ]
    # editUserStarSubscription(is_canceled=false) only lets the user re-enable it.
    assert [edit_target(state, False) for state in (S.ACTIVE, S.CANCELLED, S.LAPSED)] == [None] * 3


def test_what_cannot_be_cancelled_or_resumed() -> None:
    assert edit_refusal(None, None) is EditRefusal.NOT_A_SUBSCRIPTION
    assert edit_refusal(MONTH, None) is EditRefusal.SUBSCRIPTION_NOT_STARTED
    assert edit_refusal(MONTH, S.EXPIRED) is EditRefusal.SUBSCRIPTION_EXPIRED
    assert [edit_refusal(MONTH, s) for s in (S.ACTIVE, S.CANCELLED, S.LAPSED)] == [None] * 3


# ---------------------------------------------------------------------------- periods


def test_a_period_ends_at_the_expiration_date() -> None:
    assert period_of(END, MONTH) == Period(END - timedelta(days=30), END)


def test_the_first_period_end_after_a_charge_on_the_grid() -> None:
    period = timedelta(seconds=MONTH)
    # Charged a second before the current period's end: that end (the caller steps past it
    # when it is paid); charged at or after it: the next one.
    assert first_end_after(END - timedelta(seconds=1), END, MONTH) == END
    assert first_end_after(END, END, MONTH) == END + period
    assert first_end_after(END + timedelta(hours=1), END, MONTH) == END + period
    # Long before: an earlier period of the grid.
    assert first_end_after(END - period - timedelta(days=1), END, MONTH) == END - period


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(min_value=1, max_value=10 * MONTH),
)
def test_first_end_after_is_on_the_grid_and_the_first_after_the_charge(
    charged: datetime, period_seconds: int
) -> None:
    charged = charged.replace(tzinfo=UTC)
    period = timedelta(seconds=period_seconds)
    end = first_end_after(charged, END, period_seconds)
    assert end - period <= charged < end
    assert (end - END) % period == timedelta(0)


# --------------------------------------------------------------------- reading updates


def payment_update(**payment: object) -> dict[str, object]:
    body: dict[str, object] = {
        "currency": "XTR",
        "total_amount": 5,
        "invoice_payload": "p",
        "telegram_payment_charge_id": "stx1",
        **payment,
    }
    return {"update_id": 1, "message": {"from": {"id": 9}, "successful_payment": body}}


def test_a_renewal_is_read_with_its_flags_and_period_end() -> None:
    parsed = parse_update(
        payment_update(is_recurring=True, subscription_expiration_date=1_800_000_000)
    )
    assert isinstance(parsed, SuccessfulPayment)
    assert (parsed.is_recurring, parsed.is_first_recurring) == (True, False)
    assert parsed.subscription_expiration_date == datetime.fromtimestamp(1_800_000_000, UTC)
    first = parse_update(payment_update(is_recurring=True, is_first_recurring=True))
    assert isinstance(first, SuccessfulPayment) and first.is_first_recurring
    one_off = parse_update(payment_update(subscription_expiration_date=None))
    assert isinstance(one_off, SuccessfulPayment)
    assert (one_off.is_recurring, one_off.subscription_expiration_date) == (False, None)


@pytest.mark.parametrize(
    "bad",
    [
        {"is_recurring": "true"},
        {"is_recurring": 1},
        {"is_first_recurring": None},
        {"is_first_recurring": "yes"},
        {"subscription_expiration_date": 0},
        {"subscription_expiration_date": -5},
        {"subscription_expiration_date": MAX_UNIX_TIME + 1},
        {"subscription_expiration_date": 2**70},
        {"subscription_expiration_date": 1.8e9},
        {"subscription_expiration_date": "1800000000"},
        {"subscription_expiration_date": True},
    ],
)
def test_a_malformed_subscription_field_of_a_payment_is_malformed(bad: dict[str, object]) -> None:
    with pytest.raises(MalformedUpdate):
        parse_update(payment_update(**bad))


def subscription_update(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {"user": {"id": 9}, "invoice_payload": "p", "state": "active"}
    body.update(changes)
    return {"update_id": 3, "subscription": body}


@pytest.mark.parametrize("state", ["canceled", "active", "failed"])
def test_the_subscription_update_is_read_in_its_three_states(state: str) -> None:
    assert parse_update(subscription_update(state=state)) == SubscriptionUpdate(3, 9, "p", state)


@pytest.mark.parametrize(
    "bad",
    [
        {"state": "cancelled"},
        {"state": "ACTIVE"},
        {"state": 1},
        {"state": None},
        {"user": {"id": "9"}},
        {"user": {"id": 0}},
        {"user": {"id": 2**64}},
        {"user": None},
        {"user": [9]},
        {"invoice_payload": ""},
        {"invoice_payload": 5},
        {"invoice_payload": "p\x00"},
    ],
)
def test_a_malformed_subscription_update_is_malformed(bad: dict[str, object]) -> None:
    with pytest.raises(MalformedUpdate):
        parse_update(subscription_update(**bad))


def test_a_subscription_update_that_is_no_object_is_malformed() -> None:
    body: object
    for body in (None, [], "active", 5):
        with pytest.raises(MalformedUpdate):
            parse_update({"update_id": 3, "subscription": body})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=4,
)


# A shared machine may be slow to draw nested JSON: slowness is no failure here.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["user", "invoice_payload", "state", "id"]), json_values, max_size=4
    ),
    st.dictionaries(
        st.sampled_from(
            ["is_recurring", "is_first_recurring", "subscription_expiration_date", "total_amount"]
        ),
        json_values,
        max_size=4,
    ),
)
def test_subscription_shaped_updates_raise_only_malformed_update(
    subscription: dict[str, object], payment: dict[str, object]
) -> None:
    for update in (
        {"update_id": 3, "subscription": subscription},
        payment_update(**payment),
    ):
        with contextlib.suppress(MalformedUpdate):
            parse_update(update)
