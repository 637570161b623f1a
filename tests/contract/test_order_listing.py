"""The Orders port's reads (issue 18), on the fake and on PostgreSQL: ListOrders' pages select what
`OrderFilter.matches` selects (the fake IS that rule, so on PostgreSQL this holds the SQL to it),
state by `Order.state_at` for every state before and after expiry, newest first with keyset
paging, never another application's orders; an order is found by any charge recorded for it."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import pytest

from portex_pay.domain.checkout import Disposition, PaymentOutcome
from portex_pay.domain.order import Order, OrderState
from portex_pay.domain.order_filter import OrderListQuery, parse_order_filter, sort_key
from tests.contract.backend import Backend
from tests.contract.steps import (
    add_charge,
    charge_of,
    command,
    new_charge_id,
    new_order,
    order_in,
    pay,
)


async def listed(
    backend: Backend,
    app: UUID,
    text: str,
    as_of: datetime,
    *,
    after: tuple[datetime, int] | None = None,
    limit: int = 1000,
) -> list[int]:
    query = OrderListQuery(parse_order_filter(text), as_of, after, limit)
    return [order.tg_payment_id for order in await backend.orders.list(app, query)]


def expected(orders: list[Order], text: str, as_of: datetime) -> list[int]:
    chosen = [o for o in orders if parse_order_filter(text).matches(o, as_of)]
    return [o.tg_payment_id for o in sorted(chosen, key=sort_key, reverse=True)]


async def one_in_every_state(backend: Backend, app: UUID) -> list[Order]:
    made = [await order_in(backend, app, state) for state in OrderState]
    return [await backend.orders.get(app, o.tg_payment_id) or o for o in made]


async def test_state_filters_agree_with_state_at_for_every_state_before_and_after_expiry(
    backend: Backend,
) -> None:
    """One definition of the seen state: the SQL predicate is made from the domain's EXPIRABLE,
    and for every state (x before / after the expiry time) it selects what state_at says."""
    app = await backend.add_application(None)
    orders = await one_in_every_state(backend, app)
    before = max(o.created_at for o in orders) + timedelta(seconds=1)
    after = max(o.expires_at for o in orders) + timedelta(seconds=1)
    assert {o.state_at(before) for o in orders} == set(OrderState)
    assert OrderState.PENDING not in {o.state_at(after) for o in orders}
    for as_of in (before, after):
        for state in OrderState:
            for text in (f"state = {state.name}", f"state != {state.name}"):
                seen = [o.tg_payment_id for o in orders if (o.state_at(as_of) is state)]
                if "!=" in text:
                    seen = [o.tg_payment_id for o in orders if o.tg_payment_id not in seen]
                found = await listed(backend, app, text, as_of)
                assert sorted(found) == sorted(seen), (text, as_of)
                assert found == expected(orders, text, as_of)


async def test_each_comparison_selects_what_the_filter_means(backend: Backend) -> None:
    app = await backend.add_application(None)
    gems = await new_order(backend, app, tg_use_id=1, label="gems", metadata={"sku": "G-1"})
    coins = await new_order(backend, app, tg_use_id=2, label="coins", metadata={"gift card": "y"})
    paid = await pay(backend, await new_order(backend, app, tg_use_id=1, label="gems"))
    orders = [gems, coins, paid]
    assert paid.paid_at is not None
    paid_at = paid.paid_at.isoformat()
    middle = coins.created_at.isoformat()
    as_of = paid.created_at + timedelta(seconds=1)
    for text in [
        "",
        "tg_use_id = 1",
        "tg_use_id != 1",
        'label = "gems"',
        'label != "gems"',
        "state = PAID",
        "state = PENDING AND tg_use_id = 1",
        f'create_time >= "{middle}"',
        f'create_time < "{middle}"',
        f'create_time = "{middle}"',
        f'paid_time = "{paid_at}"',
        f'paid_time != "{paid_at}"',
        f'paid_time <= "{paid_at}"',
        f'paid_time > "{paid_at}"',
        "fulfilled = false",
        "fulfilled = true",
        'metadata.sku = "G-1"',
        'metadata.sku != "G-1"',
        'metadata."gift card" = "y" AND label = "coins"',
        'metadata.sku = "G-2"',
    ]:
        assert await listed(backend, app, text, as_of) == expected(orders, text, as_of), text
    assert await listed(backend, app, "fulfilled = false", as_of) == [
        paid.tg_payment_id,
        coins.tg_payment_id,
        gems.tg_payment_id,
    ]


async def test_pages_go_newest_first_strictly_after_the_last_one(backend: Backend) -> None:
    app = await backend.add_application(None)
    orders = [await new_order(backend, app) for _ in range(7)]
    newest_first = sorted(orders, key=sort_key, reverse=True)
    as_of = newest_first[0].created_at
    seen: list[int] = []
    after = None
    while True:
        page = await listed(backend, app, "", as_of, after=after, limit=3)
        seen.extend(page)
        if len(page) < 3:
            break
        last = next(o for o in orders if o.tg_payment_id == page[-1])
        after = sort_key(last)
    assert seen == [o.tg_payment_id for o in newest_first]


async def test_another_applications_orders_are_never_listed(backend: Backend) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    mine = await new_order(backend, app, tg_use_id=77)
    await new_order(backend, other, tg_use_id=77)
    as_of = mine.created_at + timedelta(days=2)
    assert await listed(backend, app, "tg_use_id = 77", as_of) == [mine.tg_payment_id]
    assert await listed(backend, app, "", as_of) == [mine.tg_payment_id]


async def test_an_order_is_found_by_its_paying_duplicate_or_refunded_charge(
    backend: Backend,
) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    paid = await pay(backend, await new_order(backend, app))
    duplicate = new_charge_id()
    await add_charge(backend, paid, duplicate, Disposition.DUPLICATE)
    refunded = await order_in(backend, app, OrderState.REFUNDED)
    assert paid.telegram_payment_charge_id and refunded.telegram_payment_charge_id
    assert await backend.orders.find_by_charge(app, paid.telegram_payment_charge_id) == paid
    assert await backend.orders.find_by_charge(app, duplicate) == paid
    found = await backend.orders.find_by_charge(app, refunded.telegram_payment_charge_id)
    assert found is not None and found.state is OrderState.REFUNDED
    # Another application's charge is not found; nor an unknown one.
    assert await backend.orders.find_by_charge(other, paid.telegram_payment_charge_id) is None
    assert await backend.orders.find_by_charge(app, new_charge_id()) is None


async def test_a_charge_recorded_without_an_order_finds_none(backend: Backend) -> None:
    app = await backend.add_application(None)
    order = await new_order(backend, app)
    anomaly = new_charge_id()
    async with backend.payments.transaction() as tx:
        assert await tx.charges.add(
            charge_of(order, anomaly), None, PaymentOutcome(Disposition.ANOMALY)
        )
    assert await backend.orders.find_by_charge(app, anomaly) is None


@pytest.mark.parametrize("metadata", [{}, {"k": "v", "ключ": "значение"}])
async def test_metadata_is_stored_and_read_back(backend: Backend, metadata: dict[str, str]) -> None:
    app = await backend.add_application(None)
    created = await backend.orders.create(
        app, command(metadata=metadata), ttl_seconds=60, lease_seconds=0
    )
    assert created.metadata == metadata
    assert (await backend.orders.get(app, created.tg_payment_id)) == created
