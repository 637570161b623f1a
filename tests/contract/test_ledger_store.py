"""The Payments port's contract (service/ports.py: Payments and the parts of its unit of work),
on the fake and on PostgreSQL: what the money use cases (service/ledger.py) rely on. An update is
claimed once; a charge counts once, whoever reports it; a unit of work commits all it did or, when
it raises, nothing; the order's changes follow the transition table and carry their events; and
another application's order or charge is not found."""

from __future__ import annotations

import pytest

from portex_pay.domain.checkout import Disposition, PaymentOutcome
from portex_pay.domain.events import EventType
from portex_pay.domain.order import OrderState, sources
from tests.contract.backend import Backend
from tests.contract.steps import (
    BOT_ID,
    add_charge,
    announced,
    charge_of,
    event_types,
    events_of,
    new_charge_id,
    new_order,
    new_update_id,
    order_in,
    pay,
    unleased,
)

ACCEPTED = PaymentOutcome(Disposition.ACCEPTED)


class Boom(Exception):
    """A failure inside a unit of work."""


async def test_an_update_is_claimed_once_per_bot(backend: Backend) -> None:
    update_id = new_update_id()
    async with backend.payments.transaction() as tx:
        assert await tx.updates.claim(BOT_ID, update_id, "successful_payment")
    async with backend.payments.transaction() as tx:
        assert not await tx.updates.claim(BOT_ID, update_id, "successful_payment")
    assert not await backend.payments.claim(BOT_ID, update_id, "support_command")
    assert await backend.payments.claim(BOT_ID + 1, update_id, "support_command")
    assert not await backend.payments.claim(BOT_ID + 1, update_id, "support_command")


async def test_an_update_claimed_with_its_event_is_announced_once(backend: Backend) -> None:
    """The pre-checkout's record: the claim and its event in one step; a redelivery adds
    nothing, and the event carries the order as it is."""
    app = await backend.add_application(None)
    order = await new_order(backend, app)
    update = (BOT_ID, new_update_id(), "pre_checkout_query")
    data = {"reason": "", "payer_id": 7}
    for fresh in (True, False):
        claimed = await backend.payments.claim_with_event(
            update, app, order.tg_payment_id, EventType.CHECKOUT_APPROVED, data
        )
        assert claimed is fresh
    [event] = [e for e in await events_of(backend, app) if e.type.startswith("checkout.")]
    assert (event.type, event.tg_payment_id) == ("checkout.approved", order.tg_payment_id)
    assert (event.data["reason"], event.data["payer_id"]) == ("", 7)
    assert announced(event) == unleased(order)
    assert not await backend.payments.claim(*update)


async def test_the_checkout_context_says_whether_the_update_was_seen_and_finds_the_order(
    backend: Backend,
) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    order = await new_order(backend, app)
    update_id = new_update_id()
    order_id = order.tg_payment_id
    assert await backend.payments.checkout_context(BOT_ID, update_id, app, order_id) == (
        False,
        order,
    )
    assert await backend.payments.claim(BOT_ID, update_id, "pre_checkout_query")
    assert await backend.payments.checkout_context(BOT_ID, update_id, app, order_id) == (
        True,
        order,
    )
    assert await backend.payments.checkout_context(BOT_ID, update_id, other, order_id) == (
        True,
        None,
    )
    assert await backend.payments.checkout_context(BOT_ID, update_id, app, 2**62) == (True, None)


async def test_a_unit_of_work_that_raises_leaves_nothing_behind(backend: Backend) -> None:
    app = await backend.add_application(None)
    order = await new_order(backend, app)
    charge_id, update_id = new_charge_id(), new_update_id()
    with pytest.raises(Boom):
        async with backend.payments.transaction() as tx:
            assert await tx.updates.claim(BOT_ID, update_id, "successful_payment")
            assert await tx.orders.lock(app, order.tg_payment_id) == order
            assert await tx.orders.pay(charge_of(order, charge_id)) is not None
            await tx.events.add(app, None, EventType.PAYMENT_ANOMALY, {"reason": "x"})
            raise Boom
    assert await backend.orders.get(app, order.tg_payment_id) == order
    assert await event_types(backend, app) == ["order.created"]
    async with backend.payments.transaction() as tx:
        assert await tx.updates.claim(BOT_ID, update_id, "successful_payment")
        assert await tx.charges.owner(charge_id) is None
        assert await tx.orders.paid_by(app, charge_id) is None


async def test_a_charge_counts_once_whoever_reports_it(backend: Backend) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    order = await new_order(backend, app)
    theirs = await new_order(backend, other)
    charge_id = new_charge_id()
    await add_charge(backend, order, charge_id)
    async with backend.payments.transaction() as tx:
        assert not await tx.charges.add(charge_of(order, charge_id), order.tg_payment_id, ACCEPTED)
        assert not await tx.charges.add(
            charge_of(theirs, charge_id), theirs.tg_payment_id, ACCEPTED
        )
        assert await tx.charges.owner(charge_id) == app
        assert await tx.charges.owner(new_charge_id()) is None


async def test_a_charge_is_marked_refunded_for_its_application_only(backend: Backend) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    order = await new_order(backend, app)
    charge_id = new_charge_id()
    await add_charge(backend, order, charge_id, Disposition.DUPLICATE)
    async with backend.payments.transaction() as tx:
        assert await tx.charges.mark_refunded(other, charge_id) is None
        assert await tx.charges.mark_refunded(app, new_charge_id()) is None
        marked = await tx.charges.mark_refunded(app, charge_id)
        assert marked == (order.tg_payment_id, Disposition.DUPLICATE)
    async with backend.payments.transaction() as tx:  # again: the same answer
        assert await tx.charges.mark_refunded(app, charge_id) == marked


async def test_an_order_is_locked_for_its_application_only(backend: Backend) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    order = await new_order(backend, app)
    async with backend.payments.transaction() as tx:
        assert await tx.orders.lock(app, order.tg_payment_id) == order
        assert await tx.orders.lock(other, order.tg_payment_id) is None
        assert await tx.orders.lock(app, 2**62) is None


async def test_a_paid_order_carries_its_charge_and_announces_it(backend: Backend) -> None:
    app = await backend.add_application(None)
    order = await new_order(backend, app, lease=30)
    charge_id = new_charge_id()
    paid = await pay(backend, order, charge_id)
    assert (paid.state, paid.telegram_payment_charge_id) == (OrderState.PAID, charge_id)
    assert paid.paid_at is not None and paid.invoice_lease_until is None
    assert paid.updated_at >= order.updated_at
    assert await backend.orders.get(app, order.tg_payment_id) == paid
    event = (await events_of(backend, app))[-1]
    assert (event.type, event.tg_payment_id) == ("order.paid", order.tg_payment_id)
    assert event.data["telegram_payment_charge_id"] == charge_id
    assert announced(event) == paid
    async with backend.payments.transaction() as tx:
        assert await tx.orders.paid_by(app, charge_id) == paid


@pytest.mark.parametrize("state", list(OrderState))
async def test_paying_follows_the_table(backend: Backend, state: OrderState) -> None:
    app = await backend.add_application(None)
    order = await order_in(backend, app, state)
    before = await event_types(backend, app)
    charge_id = new_charge_id()
    async with backend.payments.transaction() as tx:
        paid = await tx.orders.pay(charge_of(order, charge_id))
        owner = await tx.charges.owner(charge_id)
    if state.value in sources(OrderState.PAID):
        assert paid is not None and paid.state is OrderState.PAID
        assert paid.telegram_payment_charge_id == charge_id and owner == app
        assert await event_types(backend, app) == [*before, "order.paid"]
    else:  # nothing recorded: neither the charge nor a change
        assert paid is None and owner is None
        assert await backend.orders.get(app, order.tg_payment_id) == order
        assert await event_types(backend, app) == before


@pytest.mark.parametrize("state", list(OrderState))
async def test_refunding_follows_the_table_and_only_the_paying_charge(
    backend: Backend, state: OrderState
) -> None:
    app = await backend.add_application(None)
    order = await order_in(backend, app, state)
    before = await event_types(backend, app)
    async with backend.payments.transaction() as tx:
        assert await tx.orders.mark_refunded(order.tg_payment_id, new_charge_id()) is None
        refunded = None
        if order.telegram_payment_charge_id is not None:
            refunded = await tx.orders.mark_refunded(
                order.tg_payment_id, order.telegram_payment_charge_id
            )
    if state.value in sources(OrderState.REFUNDED):
        assert refunded is not None and refunded.state is OrderState.REFUNDED
        assert refunded.telegram_payment_charge_id == order.telegram_payment_charge_id
        event = (await events_of(backend, app))[-1]
        assert (event.type, event.data["telegram_payment_charge_id"]) == (
            "order.refunded",
            order.telegram_payment_charge_id,
        )
        assert announced(event) == refunded
    else:
        assert refunded is None
        assert await backend.orders.get(app, order.tg_payment_id) == order
        assert await event_types(backend, app) == before


async def test_the_order_a_charge_paid_is_found_for_its_application_only(
    backend: Backend,
) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    paid = await pay(backend, await new_order(backend, app))
    charge_id = paid.telegram_payment_charge_id
    assert charge_id is not None
    async with backend.payments.transaction() as tx:
        assert await tx.orders.paid_by(app, charge_id) == paid
        assert await tx.orders.paid_by(other, charge_id) is None
        assert await tx.orders.paid_by(app, new_charge_id()) is None


async def test_an_event_carries_its_order_as_it_is_then(backend: Backend) -> None:
    app = await backend.add_application(None)
    order = await new_order(backend, app)
    async with backend.payments.transaction() as tx:
        await tx.events.add(app, order.tg_payment_id, EventType.CHECKOUT_APPROVED, {"a": 1})
        await tx.events.add(app, None, EventType.PAYMENT_ANOMALY, {"reason": "X", "n": None})
    *_, beside, alone = await events_of(backend, app)
    assert (beside.type, beside.tg_payment_id, beside.data["a"]) == (
        "checkout.approved",
        order.tg_payment_id,
        1,
    )
    assert announced(beside) == unleased(order)
    assert (alone.type, alone.tg_payment_id, alone.data) == (
        "payment.anomaly",
        None,
        {"reason": "X", "n": None},
    )
