"""Fulfilment's contract (service/ports.py: Orders.acknowledge and UnfulfilledOrders), on the fake
and on PostgreSQL. An acknowledgement applies once, to a paid order of the caller's application,
and is announced with the order as it is after it; the unfulfilled-order sweep finds the paid
orders nobody acknowledged within their application's deadline, paid since the policy was
switched on, whose charge has no refund, oldest payment first, and nothing while the policy is
off."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import pytest

from portex_pay.domain.fulfilment import UnfulfilledOrder
from portex_pay.domain.order import Order, OrderState
from portex_pay.domain.telegram import bot_id_of_token
from tests.contract.backend import Backend
from tests.contract.steps import (
    announced,
    events_of,
    new_bot_token,
    new_order,
    order_in,
    pay,
    request_refund,
)

DEADLINE = timedelta(hours=72)


async def test_a_paid_order_is_acknowledged_once_and_announced(backend: Backend) -> None:
    app = await backend.add_application(None)
    order = await pay(backend, await new_order(backend, app))
    acknowledged = await backend.orders.acknowledge(app, order.tg_payment_id, "delivery-1")
    assert acknowledged is not None
    assert acknowledged.fulfilled_at is not None
    assert (acknowledged.state, acknowledged.fulfilment_request_id) == (
        OrderState.PAID,
        "delivery-1",
    )
    assert await backend.orders.get(app, order.tg_payment_id) == acknowledged
    # Applied once: neither the same id nor another one changes it again.
    assert await backend.orders.acknowledge(app, order.tg_payment_id, "delivery-1") is None
    assert await backend.orders.acknowledge(app, order.tg_payment_id, None) is None
    assert await backend.orders.get(app, order.tg_payment_id) == acknowledged
    fulfilled = [e for e in await events_of(backend, app) if e.type == "order.fulfilled"]
    assert len(fulfilled) == 1
    assert fulfilled[0].tg_payment_id == order.tg_payment_id
    assert announced(fulfilled[0]) == acknowledged


async def test_an_acknowledgement_without_a_request_id_records_none(backend: Backend) -> None:
    app = await backend.add_application(None)
    order = await pay(backend, await new_order(backend, app))
    acknowledged = await backend.orders.acknowledge(app, order.tg_payment_id, None)
    assert acknowledged is not None
    assert (acknowledged.fulfilment_request_id, acknowledged.fulfilled_at is not None) == (
        None,
        True,
    )


@pytest.mark.parametrize(
    "state",
    [
        OrderState.PENDING,
        OrderState.FAILED,
        OrderState.CANCELLED,
        OrderState.EXPIRED,
        OrderState.REFUNDED,
    ],
)
async def test_only_a_paid_order_is_acknowledged(backend: Backend, state: OrderState) -> None:
    app = await backend.add_application(None)
    order = await order_in(backend, app, state)
    assert await backend.orders.acknowledge(app, order.tg_payment_id, "d") is None
    assert await backend.orders.get(app, order.tg_payment_id) == order
    assert "order.fulfilled" not in [e.type for e in await events_of(backend, app)]


async def test_another_applications_order_is_not_acknowledged(backend: Backend) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    order = await pay(backend, await new_order(backend, app))
    assert await backend.orders.acknowledge(other, order.tg_payment_id, "d") is None
    assert await backend.orders.acknowledge(other, 2**62, "d") is None
    assert await backend.orders.get(app, order.tg_payment_id) == order


# --- The unfulfilled-order policy's sweep -------------------------------------------------------


async def policy_app(backend: Backend, deadline: timedelta | None = DEADLINE) -> tuple[UUID, int]:
    """An application with a bot (its id) and, unless `deadline` is None, the policy on."""
    token = new_bot_token()
    app = await backend.add_application(token)
    if deadline is not None:
        await backend.set_unfulfilled_refund(app, deadline)
        backend.pass_time()
    bot_id = bot_id_of_token(token)
    assert bot_id is not None
    return app, bot_id


async def paid(backend: Backend, app: UUID) -> Order:
    order = await pay(backend, await new_order(backend, app))
    assert order.paid_at is not None
    backend.pass_time()
    return order


def due_at(order: Order, deadline: timedelta = DEADLINE) -> datetime:
    assert order.paid_at is not None
    return order.paid_at + deadline


async def test_the_sweep_finds_an_order_once_its_deadline_has_passed(backend: Backend) -> None:
    app, bot_id = await policy_app(backend)
    order = await paid(backend, app)
    sweep = backend.unfulfilled.unfulfilled_past_deadline
    assert await sweep(due_at(order) - timedelta(microseconds=1), 10) == []
    expected = [UnfulfilledOrder(app, order.tg_payment_id, bot_id)]
    assert await sweep(due_at(order), 10) == expected
    assert await sweep(due_at(order) + timedelta(days=400), 10) == expected


async def test_the_sweep_skips_acknowledged_refunded_and_refund_asked_orders(
    backend: Backend,
) -> None:
    app, _ = await policy_app(backend)
    acknowledged = await paid(backend, app)
    assert await backend.orders.acknowledge(app, acknowledged.tg_payment_id, None) is not None
    asked = await paid(backend, app)
    await request_refund(backend, asked)
    refunded = await order_in(backend, app, OrderState.REFUNDED)
    backend.pass_time()
    later = max(due_at(order) for order in (acknowledged, asked, refunded))
    assert await backend.unfulfilled.unfulfilled_past_deadline(later, 10) == []


async def test_the_sweep_finds_nothing_while_the_policy_is_off(backend: Backend) -> None:
    never, _ = await policy_app(backend, deadline=None)
    switched_off, _ = await policy_app(backend)
    await backend.set_unfulfilled_refund(switched_off, None)
    orders = [await paid(backend, never), await paid(backend, switched_off)]
    later = max(due_at(order) for order in orders) + timedelta(days=1)
    assert await backend.unfulfilled.unfulfilled_past_deadline(later, 10) == []


async def test_the_sweep_never_reaches_back_before_the_policy(backend: Backend) -> None:
    """An order paid before the policy was switched on was sold under no such promise; one paid
    after it is due, also when the deadline changes later (it keeps the time it was switched
    on)."""
    app, bot_id = await policy_app(backend, deadline=None)
    before = await paid(backend, app)
    await backend.set_unfulfilled_refund(app, DEADLINE)
    backend.pass_time()
    after = await paid(backend, app)
    await backend.set_unfulfilled_refund(app, timedelta(hours=1))
    later = due_at(after) + timedelta(days=1)
    found = await backend.unfulfilled.unfulfilled_past_deadline(later, 10)
    assert found == [UnfulfilledOrder(app, after.tg_payment_id, bot_id)]
    assert before.tg_payment_id not in [order.tg_payment_id for order in found]


async def test_the_sweep_reads_a_bounded_batch_oldest_payment_first(backend: Backend) -> None:
    first_app, first_bot = await policy_app(backend)
    second_app, second_bot = await policy_app(backend, deadline=timedelta(hours=1))
    oldest = await paid(backend, first_app)
    middle = await paid(backend, second_app)
    newest = await paid(backend, first_app)
    later = due_at(newest) + timedelta(days=1)
    sweep = backend.unfulfilled.unfulfilled_past_deadline
    assert await sweep(later, 2) == [
        UnfulfilledOrder(first_app, oldest.tg_payment_id, first_bot),
        UnfulfilledOrder(second_app, middle.tg_payment_id, second_bot),
    ]
    assert len(await sweep(later, 10)) == 3
    # The shorter deadline is due first.
    assert await sweep(due_at(middle, timedelta(hours=1)), 10) == [
        UnfulfilledOrder(second_app, middle.tg_payment_id, second_bot)
    ]
