"""The subscription ports' contract (service/ports.py), on the fake and on PostgreSQL: a
subscription order paid starts ACTIVE on the period its first charge names; `renew` extends it
with a later period (ACTIVE again, whatever it was) and leaves it for an earlier one, each with
`subscription.renewed`; `period_paid` and `paying_amount` count paying charges only;
`set_subscription_state` changes once with its event; `subscription_charges` lists the periods
oldest first, not duplicates, and not another application's; the sweep expires a subscription
past its period end once."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from portex_pay.domain.checkout import Disposition, PaymentOutcome, PaymentRecord
from portex_pay.domain.events import EventType
from portex_pay.domain.order import Order
from portex_pay.domain.subscription import STATE_EVENTS, period_of
from portex_pay.domain.subscription import SubscriptionState as S
from tests.contract.backend import Backend
from tests.contract.steps import charge_of, event_types, events_of, new_charge_id, new_order

MONTH = 2592000
PERIOD = timedelta(seconds=MONTH)
# A period end on a whole second (Telegram's dates are Unix seconds); far ahead of both clocks.
END = datetime(2031, 1, 1, tzinfo=UTC)


def recurring(order: Order, end: datetime | None) -> PaymentRecord:
    """A new recurring charge of the order for the period ending at `end`."""
    return replace(
        charge_of(order, new_charge_id()), is_recurring=True, subscription_expiration_date=end
    )


async def record(
    backend: Backend, order: Order, disposition: Disposition, end: datetime | None
) -> str:
    """A recurring charge of the order for the period ending at `end`, recorded as told."""
    charge = recurring(order, end)
    async with backend.payments.transaction() as tx:
        assert await tx.charges.add(charge, order.tg_payment_id, PaymentOutcome(disposition))
    return charge.telegram_payment_charge_id


async def subscribed(backend: Backend, end: datetime = END) -> tuple[Order, str]:
    """A subscription order paid by its first charge for the period ending at `end`."""
    app = await backend.add_application(None)
    order = await new_order(backend, app, subscription_period=MONTH)
    assert order.subscription_period == MONTH and order.subscription_state is None
    first = recurring(order, end)
    async with backend.payments.transaction() as tx:
        paid = await tx.orders.pay(first)
    assert paid is not None
    return paid, first.telegram_payment_charge_id


async def renew(backend: Backend, order: Order, end: datetime) -> Order:
    charge_id = await record(backend, order, Disposition.RENEWAL, end)
    async with backend.payments.transaction() as tx:
        return await tx.orders.renew(order.tg_payment_id, charge_id, end)


def current(order: Order) -> tuple[S | None, datetime | None, datetime | None]:
    return order.subscription_state, order.current_period_start, order.current_period_end


async def test_the_first_payment_starts_it_on_its_period(backend: Backend) -> None:
    order, first = await subscribed(backend)
    assert current(order) == (S.ACTIVE, END - PERIOD, END)
    assert await backend.subscriptions.get(order.application_id, order.tg_payment_id) == order
    [charge] = await backend.subscriptions.subscription_charges(
        order.application_id, order.tg_payment_id
    )
    assert (charge.telegram_payment_charge_id, charge.amount, charge.period) == (
        first,
        order.amount,
        period_of(END, MONTH),
    )
    assert charge.refunded_at is None


async def test_a_later_renewal_extends_it_and_an_earlier_one_leaves_the_period(
    backend: Backend,
) -> None:
    order, _ = await subscribed(backend)
    later = await renew(backend, order, END + PERIOD)
    assert current(later) == (S.ACTIVE, END, END + PERIOD)
    earlier = await renew(backend, later, END - PERIOD)
    assert current(earlier) == current(later)
    types = await event_types(backend, order.application_id)
    assert types.count(EventType.SUBSCRIPTION_RENEWED) == 2
    renewed = [
        e
        for e in await events_of(backend, order.application_id)
        if e.type == "subscription.renewed"
    ]
    assert all(e.tg_payment_id == order.tg_payment_id for e in renewed)
    periods = await backend.subscriptions.subscription_charges(
        order.application_id, order.tg_payment_id
    )
    assert [c.period.end if c.period else None for c in periods] == [
        END - PERIOD,
        END,
        END + PERIOD,
    ]


@pytest.mark.parametrize("state", [S.CANCELLED, S.LAPSED])
async def test_a_renewal_makes_a_cancelled_or_lapsed_subscription_active(
    backend: Backend, state: S
) -> None:
    order, _ = await subscribed(backend)
    async with backend.payments.transaction() as tx:
        changed = await tx.orders.set_subscription_state(
            order.tg_payment_id, state, STATE_EVENTS[state], {"source": "test"}
        )
    assert changed is not None and changed.subscription_state is state
    # An earlier period paid late leaves it as it is; the next period makes it ACTIVE.
    assert (await renew(backend, changed, END - PERIOD)).subscription_state is state
    assert current(await renew(backend, changed, END + PERIOD)) == (S.ACTIVE, END, END + PERIOD)


async def test_a_state_changes_once_with_its_event(backend: Backend) -> None:
    order, _ = await subscribed(backend)
    for expected in (True, False):  # the same target again changes nothing
        async with backend.payments.transaction() as tx:
            changed = await tx.orders.set_subscription_state(
                order.tg_payment_id,
                S.CANCELLED,
                EventType.SUBSCRIPTION_CANCELLED,
                {"source": "api"},
            )
        assert (changed is not None) is expected
    events = [
        e for e in await events_of(backend, order.application_id) if e.type.startswith("subs")
    ]
    assert [e.type for e in events] == ["subscription.cancelled"]
    stored = await backend.orders.get(order.application_id, order.tg_payment_id)
    assert stored is not None and stored.subscription_state is S.CANCELLED


async def test_only_paying_charges_pay_a_period(backend: Backend) -> None:
    order, first = await subscribed(backend)
    renewal = await record(backend, order, Disposition.RENEWAL, END + PERIOD)
    duplicate = await record(backend, order, Disposition.DUPLICATE, END + 2 * PERIOD)
    async with backend.payments.transaction() as tx:
        paid = [
            await tx.charges.period_paid(order.tg_payment_id, end)
            for end in (END, END + PERIOD, END + 2 * PERIOD, END - PERIOD)
        ]
        amounts = [
            await tx.charges.paying_amount(order.tg_payment_id, charge_id)
            for charge_id in (first, renewal, duplicate, "charge-unknown")
        ]
    assert paid == [True, True, False, False]
    assert amounts == [order.amount, order.amount, None, None]
    charges = await backend.subscriptions.subscription_charges(
        order.application_id, order.tg_payment_id
    )
    assert [c.telegram_payment_charge_id for c in charges] == [first, renewal]


async def test_a_refunded_period_shows_its_refund(backend: Backend) -> None:
    order, _ = await subscribed(backend)
    await renew(backend, order, END + PERIOD)
    [_, renewal] = await backend.subscriptions.subscription_charges(
        order.application_id, order.tg_payment_id
    )
    async with backend.payments.transaction() as tx:
        marked = await tx.charges.mark_refunded(
            order.application_id, renewal.telegram_payment_charge_id
        )
    assert marked == (order.tg_payment_id, Disposition.RENEWAL)
    [first, refunded] = await backend.subscriptions.subscription_charges(
        order.application_id, order.tg_payment_id
    )
    assert first.refunded_at is None and refunded.refunded_at is not None


async def test_another_applications_subscription_is_missing(backend: Backend) -> None:
    order, _ = await subscribed(backend)
    other = await backend.add_application(None)
    assert await backend.subscriptions.get(other, order.tg_payment_id) is None
    assert await backend.subscriptions.subscription_charges(other, order.tg_payment_id) == []


async def test_a_subscription_past_its_period_end_expires_once(backend: Backend) -> None:
    live, _ = await subscribed(backend)
    past, _ = await subscribed(backend, datetime(2001, 1, 1, tzinfo=UTC))
    assert await backend.expire_subscriptions(100) == 1
    assert await backend.expire_subscriptions(100) == 0
    expired = await backend.orders.get(past.application_id, past.tg_payment_id)
    assert expired is not None and expired.subscription_state is S.EXPIRED
    assert (await event_types(backend, past.application_id))[-1] == "subscription.expired"
    still = await backend.orders.get(live.application_id, live.tg_payment_id)
    assert still is not None and still.subscription_state is S.ACTIVE
