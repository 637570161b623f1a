"""ListOrders' `subscription_state` on the fake and on PostgreSQL: both select what
`OrderFilter.matches` selects, by the state QueryOrder shows (`Order.subscription_state`, as
stored), for every state a subscription can be in; a one-off order and a subscription whose first
payment has not arrived have none (`=` never selects them, `!=` always does); another
application's subscriptions are never listed."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from portex_pay.domain.order import Order
from portex_pay.domain.subscription import STATE_EVENTS, SubscriptionState
from tests.contract.backend import Backend
from tests.contract.steps import new_order, pay
from tests.contract.test_order_listing import expected, listed

PERIOD = 2592000


async def subscription_in(backend: Backend, app: UUID, state: SubscriptionState) -> Order:
    """A paid subscription order (ACTIVE by its first payment) brought to `state`."""
    order = await pay(backend, await new_order(backend, app, subscription_period=PERIOD))
    if state is not SubscriptionState.ACTIVE:
        async with backend.payments.transaction() as tx:
            changed = await tx.orders.set_subscription_state(
                order.tg_payment_id, state, STATE_EVENTS[state], {}
            )
        assert changed is not None
        order = changed
    assert order.subscription_state is state
    return order


async def test_subscription_state_selects_the_state_query_order_shows(backend: Backend) -> None:
    app = await backend.add_application(None)
    subscriptions = [await subscription_in(backend, app, state) for state in SubscriptionState]
    one_off = await pay(backend, await new_order(backend, app))
    unstarted = await new_order(backend, app, subscription_period=PERIOD)
    orders = [*subscriptions, one_off, unstarted]
    stored = [await backend.orders.get(app, o.tg_payment_id) for o in orders]
    assert [o.subscription_state for o in stored if o is not None] == [
        *SubscriptionState,
        None,
        None,
    ]
    as_of = max(o.created_at for o in orders) + timedelta(seconds=1)
    for state in SubscriptionState:
        mine = next(o.tg_payment_id for o in subscriptions if o.subscription_state is state)
        text = f"subscription_state = {state.name}"
        assert await listed(backend, app, text, as_of) == [mine]
        assert await listed(backend, app, text, as_of) == expected(orders, text, as_of)
        text = f"subscription_state != {state.name}"
        others = await listed(backend, app, text, as_of)
        assert mine not in others and len(others) == len(orders) - 1
        assert {one_off.tg_payment_id, unstarted.tg_payment_id} <= set(others)
        assert others == expected(orders, text, as_of)
    combined = "subscription_state = ACTIVE AND state = PAID"
    assert await listed(backend, app, combined, as_of) == [subscriptions[0].tg_payment_id]


async def test_another_applications_subscriptions_are_never_listed(backend: Backend) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    theirs = await subscription_in(backend, other, SubscriptionState.ACTIVE)
    as_of = theirs.created_at + timedelta(seconds=1)
    assert await listed(backend, app, "subscription_state = ACTIVE", as_of) == []
    assert await listed(backend, other, "subscription_state = ACTIVE", as_of) == [
        theirs.tg_payment_id
    ]
