"""The client methods of issue 18's reads and writes, through both clients against a real server.

ListOrders (every order of a 250-order user once, newest first, across pages and concurrent
inserts; the filters), QueryOrder by Telegram charge id (paid, refunded and duplicate charges),
Pay's metadata (stored, returned, in events, part of idempotency, Stripe's limits),
AcknowledgeOrder, refund reasons with ListRefunds and RetryRefund (a refund that failed with
BALANCE_TOO_LOW), and the Star ledger's ListStarTransactions and GetStarBalance. Each test states
what payment.proto promises for the RPC; every read is shown to be tenant-isolated.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.app import PortexApp
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp
from tests.e2e.clients import Client, Connect, code_and_reason, failure, orders_cli, paid_order
from tests.e2e.conftest import ServerFactory
from tests.e2e.test_admin_cli import admin
from tests.integration.helpers import eventually, pay_fields, pay_request

Order = payment_pb2.Order
Refund = payment_pb2.Refund
StarTransaction = payment_pb2.StarTransaction


@pytest.fixture
async def shop(make_app: Any) -> TestApp:
    """An application whose bot's updates reach the in-process server by webhook, so that its
    orders can be paid."""
    created: TestApp = await make_app(updates="webhook")
    return created


async def make_orders(stub: Any, app: TestApp, count: int, **fields: Any) -> list[int]:
    """`count` pending orders of `app` (Pay through the raw stub, 25 at a time); their ids."""
    ids: list[int] = []
    for start in range(0, count, 25):
        batch = [
            stub.Pay(pay_request(**fields), metadata=app.metadata)
            for _ in range(min(25, count - start))
        ]
        ids += [paid.tg_payment_id for paid in await asyncio.gather(*batch)]
    return ids


async def newest_first(service: PortexApp, app: TestApp, tg_use_id: int) -> list[int]:
    """The user's order ids in ListOrders' promised order: create_time, then id, descending."""
    rows = await service.pool.fetch(
        "SELECT tg_payment_id FROM orders WHERE application_id = $1::uuid AND tg_use_id = $2 "
        "ORDER BY created_at DESC, tg_payment_id DESC",
        app.id,
        tg_use_id,
    )
    return [row["tg_payment_id"] for row in rows]


def ids(orders: Any) -> list[int]:
    return [order.tg_payment_id for order in orders]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------- ListOrders


async def test_the_page_iterator_visits_every_order_of_a_250_order_user_once_newest_first(
    connect: Connect, app: TestApp, make_app: Any, stub: Any, service: PortexApp
):
    """With page_size 100, list_orders_pages reads the user's 250 orders as pages of 100, 100
    and 50 (only the last without a next_page_token), each order once, newest first (create_time,
    then tg_payment_id); iter_orders yields the same orders; without page_size a page holds 100.
    Another user's and another application's orders never appear."""
    user = 9101
    await make_orders(stub, app, 250, tg_use_id=user)
    await make_orders(stub, app, 3, tg_use_id=user + 1)
    other: TestApp = await make_app()
    theirs = await make_orders(stub, other, 2, tg_use_id=user)
    expected = await newest_first(service, app, user)
    assert len(expected) == 250
    client = connect(app.api_key)

    pages = await client.collect("list_orders_pages", filter=f"tg_use_id = {user}", page_size=100)
    assert [len(page.orders) for page in pages] == [100, 100, 50]
    assert [bool(page.next_page_token) for page in pages] == [True, True, False]
    listed = [order for page in pages for order in page.orders]
    assert ids(listed) == expected
    assert {(order.application_id, order.tg_use_id) for order in listed} == {(app.id, user)}

    iterated = await client.collect("iter_orders", filter=f"tg_use_id = {user}", page_size=100)
    assert ids(iterated) == expected
    first = await client.call("list_orders", filter=f"tg_use_id = {user}")
    assert ids(first.orders) == expected[:100] and first.next_page_token

    assert sorted(theirs) == sorted(await newest_first(service, other, user))
    theirs_listed = await connect(other.api_key).collect("iter_orders")
    assert ids(theirs_listed) == await newest_first(service, other, user)


async def test_paging_goes_on_across_orders_created_between_pages_without_gaps_or_repeats(
    connect: Connect, app: TestApp, stub: Any, service: PortexApp
):
    """Orders created while a caller pages (newer than the first page) change nothing in the pages
    that follow: the pages hold exactly the orders there were, once each, newest first."""
    user = 9102
    await make_orders(stub, app, 30, tg_use_id=user)
    expected = await newest_first(service, app, user)
    client = connect(app.api_key)

    page = await client.call("list_orders", filter=f"tg_use_id = {user}", page_size=10)
    seen = ids(page.orders)
    while page.next_page_token:
        await make_orders(stub, app, 5, tg_use_id=user)
        token = page.next_page_token
        page = await client.call(
            "list_orders", filter=f"tg_use_id = {user}", page_size=10, page_token=token
        )
        seen += ids(page.orders)
    assert seen == expected


async def test_filters_narrow_the_orders_by_state_label_time_fulfilment_and_metadata(
    connect: Connect, shop: TestApp, fake_telegram: FakeBotApi, service: PortexApp
):
    """`state = PAID`, `label`, a create_time range, `fulfilled = false` and `metadata.KEY`,
    alone and joined by AND, each select exactly the orders they describe; an unpaid order past
    its expiry is EXPIRED to the filter as to QueryOrder."""
    client = connect(shop.api_key)
    user = 9103
    gem, _ = await paid_order(
        client, shop, fake_telegram, tg_use_id=user, label="gem", metadata={"tier": "gold"}
    )
    sword, _ = await paid_order(client, shop, fake_telegram, tg_use_id=user, label="sword")
    pending = await client.pay(**pay_fields(tg_use_id=user, label="gem", metadata={"tier": "tin"}))
    late = await client.pay(**pay_fields(tg_use_id=user, label="sword"))
    await service.pool.execute(
        "UPDATE orders SET expires_at = now() - interval '1 second' WHERE tg_payment_id = $1",
        late.tg_payment_id,
    )
    await client.call("acknowledge_order", sword.tg_payment_id)

    async def found(text: str) -> list[int]:
        return ids(await client.collect("iter_orders", filter=f"tg_use_id = {user} AND {text}"))

    assert await found("state = PAID") == [sword.tg_payment_id, gem.tg_payment_id]
    assert await found("state != PAID") == [late.tg_payment_id, pending.tg_payment_id]
    assert await found("state = EXPIRED") == [late.tg_payment_id]
    assert await found('label = "gem"') == [pending.tg_payment_id, gem.tg_payment_id]
    assert await found('label = "gem" AND state = PAID') == [gem.tg_payment_id]
    assert await found("state = PAID AND fulfilled = false") == [gem.tg_payment_id]
    assert await found("fulfilled = true") == [sword.tg_payment_id]
    assert await found('metadata.tier = "gold"') == [gem.tg_payment_id]
    assert await found('metadata.tier = "tin"') == [pending.tg_payment_id]
    assert await found('metadata.tier = "tin" AND state = PAID') == []
    middle = (await client.query_order(sword.tg_payment_id)).create_time.ToDatetime(tzinfo=UTC)
    since = f'create_time >= "{rfc3339(middle)}"'
    assert await found(since) == [late.tg_payment_id, pending.tg_payment_id, sword.tg_payment_id]
    before = f'create_time < "{rfc3339(middle)}"'
    assert await found(before) == [gem.tg_payment_id]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"filter": "tg_use_id = "}, "filter"),
        ({"filter": "colour = 3"}, "filter"),
        ({"filter": "state = SOLD"}, "filter"),
        ({"filter": 'create_time > "yesterday"'}, "filter"),
        ({"filter": "tg_use_id = 1 AND " * 60 + "tg_use_id = 1"}, "filter"),  # over 1000 chars
        ({"page_size": 1001}, "page_size"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "not-a-token"}, "page_token"),
    ],
)
async def test_a_bad_filter_page_size_or_token_is_invalid_argument_naming_the_field(
    connect: Connect, app: TestApp, fields: dict[str, Any], field: str
):
    """A malformed filter, an unknown field or enum name, a bad time, a filter over 1000
    characters, a page size outside 1-1000 and a token the server never made each answer
    INVALID_ARGUMENT with a violation of that field, from the page iterator too."""
    client = connect(app.api_key)
    for read, method in ((client.call, "list_orders"), (client.collect, "iter_orders")):
        error = await failure(read(method, **fields))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(error.field_violations) == {field}
        assert error.field_violations[field]


# ------------------------------------------------------------------- QueryOrder by charge id


async def test_query_order_finds_the_order_by_its_paid_duplicate_and_refunded_charges(
    connect: Connect, shop: TestApp, fake_telegram: FakeBotApi, make_app: Any
):
    """The order is found by the charge that paid it, by a second (duplicate) charge of the same
    invoice and, once refunded, still by its charge; an unknown charge and another application's
    charge are NOT_FOUND alike; an empty charge id is INVALID_ARGUMENT."""
    client = connect(shop.api_key)
    paid = await client.pay(**pay_fields(tg_use_id=9104))
    first, second = await asyncio.gather(
        fake_telegram.pay_invoice(paid.tg_payment_url, 9104),
        fake_telegram.pay_invoice(paid.tg_payment_url, 9104),
    )
    assert first.approved and second.approved
    assert first.charge_id and second.charge_id
    await fake_telegram.drain(shop.bot_token)
    order = await client.query_order(paid.tg_payment_id)
    assert order.state == Order.PAID
    for charge in (first.charge_id, second.charge_id):
        assert await client.query_order(telegram_payment_charge_id=charge) == order

    await client.call("refund_payment", paid.tg_payment_id)

    async def refunded() -> Order:
        return await client.query_order(telegram_payment_charge_id=order.telegram_payment_charge_id)

    found = await eventually(lambda: _state_is(refunded, Order.REFUNDED))
    assert found.tg_payment_id == paid.tg_payment_id
    request = payment_pb2.QueryOrderRequest(telegram_payment_charge_id=second.charge_id)
    assert (await client.call("query_order", request)).tg_payment_id == paid.tg_payment_id

    other: TestApp = await make_app()
    stranger = connect(other.api_key)
    for charge in (first.charge_id, "stxNoSuchCharge"):
        error = await failure(stranger.query_order(telegram_payment_charge_id=charge))
        assert code_and_reason(error) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    error = await failure(client.query_order(telegram_payment_charge_id=""))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == {"telegram_payment_charge_id"}


async def _state_is(read: Any, state: int) -> Order | None:
    order: Order = await read()
    return order if order.state == state else None


# ------------------------------------------------------------------------------------ metadata


async def test_pay_metadata_is_stored_returned_in_events_and_part_of_the_request(
    connect: Connect, app: TestApp
):
    """Metadata given to Pay comes back on Pay's order, on QueryOrder's and on the order of its
    order.created event; the same request_id with the same metadata is the same order, with
    other metadata ALREADY_EXISTS (IDEMPOTENCY_KEY_REUSED)."""
    client = connect(app.api_key)
    metadata = {"sku": "gem-42", "campaign": "spring", "note": "ünïcode ✓"}
    fields = pay_fields(tg_use_id=9105, metadata=metadata)
    paid = await client.pay(**fields)
    assert dict(paid.order.metadata) == metadata
    assert dict((await client.query_order(paid.tg_payment_id)).metadata) == metadata
    created = await client.collect(
        "iter_events", tg_payment_id=paid.tg_payment_id, types=["order.created"]
    )
    assert [dict(event.order.metadata) for event in created] == [metadata]

    assert (await client.pay(**fields)).tg_payment_id == paid.tg_payment_id
    error = await failure(client.pay(**{**fields, "metadata": {**metadata, "sku": "gem-43"}}))
    assert code_and_reason(error) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    plain = await client.pay(**pay_fields(tg_use_id=9105))
    assert dict(plain.order.metadata) == {}


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{n}": "v" for n in range(51)},  # 51 keys
        {"k" * 41: "v"},  # a key over 40 characters
        {"": "v"},  # an empty key
        {"k": "v" * 501},  # a value over 500 characters
        {"k\n": "v"},  # a control character
        {"k": "v\x00"},
    ],
)
async def test_metadata_over_stripes_limits_is_invalid_argument_and_creates_nothing(
    connect: Connect, app: TestApp, service: PortexApp, metadata: dict[str, str]
):
    """More than 50 keys, a key outside 1-40 characters, a value over 500 characters or a control
    character answer INVALID_ARGUMENT with a violation of metadata, and no order is made."""
    client = connect(app.api_key)
    error = await failure(client.pay(**pay_fields(metadata=metadata)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations
    assert all(field.startswith("metadata") for field in error.field_violations)
    count = await service.pool.fetchval(
        "SELECT count(*) FROM orders WHERE application_id = $1::uuid", app.id
    )
    assert count == 0


async def test_metadata_at_stripes_limits_is_accepted(connect: Connect, app: TestApp):
    """50 keys, a 40-character key and a 500-character value are within the limits."""
    client = connect(app.api_key)
    metadata = {f"k{n}": "v" for n in range(48)} | {"k" * 40: "v", "long": "v" * 500}
    paid = await client.pay(**pay_fields(metadata=metadata))
    assert dict(paid.order.metadata) == metadata


# -------------------------------------------------------------------------------- fulfilment


async def test_acknowledge_order_records_the_delivery_once(
    connect: Connect, shop: TestApp, fake_telegram: FakeBotApi, make_app: Any
):
    """A paid order acknowledged gets fulfilled_time and one order.fulfilled event; again with
    the same request_id or none it comes back unchanged; another request_id is ALREADY_EXISTS
    (ORDER_ALREADY_FULFILLED); an unpaid order is FAILED_PRECONDITION (ORDER_NOT_PAID); another
    application's order is NOT_FOUND."""
    client = connect(shop.api_key)
    paid, _ = await paid_order(client, shop, fake_telegram, tg_use_id=9106)
    assert not paid.order.HasField("fulfilled_time")

    done = await client.call("acknowledge_order", paid.tg_payment_id, request_id="delivery-1")
    assert done.state == Order.PAID and done.HasField("fulfilled_time")
    assert await client.query_order(paid.tg_payment_id) == done
    again = await client.call("acknowledge_order", paid.tg_payment_id, request_id="delivery-1")
    assert again == done
    request = payment_pb2.AcknowledgeOrderRequest(tg_payment_id=paid.tg_payment_id)
    assert await client.call("acknowledge_order", request) == done
    error = await failure(
        client.call("acknowledge_order", paid.tg_payment_id, request_id="delivery-2")
    )
    assert code_and_reason(error) == (grpc.StatusCode.ALREADY_EXISTS, "ORDER_ALREADY_FULFILLED")
    fulfilled = await client.collect(
        "iter_events", tg_payment_id=paid.tg_payment_id, types=["order.fulfilled"]
    )
    assert [event.order.fulfilled_time for event in fulfilled] == [done.fulfilled_time]

    unpaid = await client.pay(**pay_fields(tg_use_id=9106))
    error = await failure(client.call("acknowledge_order", unpaid.tg_payment_id))
    assert code_and_reason(error) == (grpc.StatusCode.FAILED_PRECONDITION, "ORDER_NOT_PAID")
    other: TestApp = await make_app()
    error = await failure(connect(other.api_key).call("acknowledge_order", paid.tg_payment_id))
    assert code_and_reason(error) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    assert not (await client.query_order(unpaid.tg_payment_id)).HasField("fulfilled_time")


# ----------------------------------------------------------------------------------- refunds


async def test_refunds_carry_their_reason_and_list_by_order_state_and_time(
    connect: Connect, shop: TestApp, fake_telegram: FakeBotApi, make_app: Any
):
    """Refunds asked with a reason code and text show them (and the buyer) on the Refund and in
    refund.requested; unset is REQUESTED_BY_CUSTOMER. list_refunds lists them newest first, by
    order, state and time (start inclusive, end exclusive), in pages; another application sees
    none; a reason text over 500 characters is INVALID_ARGUMENT."""
    client = connect(shop.api_key)
    user = 9107
    orders = [(await paid_order(client, shop, fake_telegram, tg_use_id=user))[0] for _ in range(3)]
    asked = [
        await client.call(
            "refund_payment",
            orders[0].tg_payment_id,
            reason_code="FRAUDULENT",
            reason_text="stolen card",
        ),
        await client.call("refund_payment", orders[1].tg_payment_id),
        await client.call(
            "refund_payment", orders[2].tg_payment_id, reason_code=Refund.OTHER, reason_text="test"
        ),
    ]
    reasons = [(a.refund.reason_code, a.refund.reason_text, a.refund.tg_use_id) for a in asked]
    assert reasons == [
        (Refund.FRAUDULENT, "stolen card", user),
        (Refund.REQUESTED_BY_CUSTOMER, "", user),
        (Refund.OTHER, "test", user),
    ]
    requested = await client.collect(
        "iter_events", tg_payment_id=orders[0].tg_payment_id, types=["refund.requested"]
    )
    assert [(e.refund.reason_code, e.refund.reason_text) for e in requested] == [
        (Refund.FRAUDULENT, "stolen card")
    ]

    async def settled() -> bool:
        listed = await client.collect("iter_refunds", state=Refund.SUCCEEDED)
        return len(listed) == 3

    await eventually(settled)
    newest = [a.refund.telegram_payment_charge_id for a in reversed(asked)]
    pages = await client.collect("list_refunds_pages", page_size=2)
    assert [len(page.refunds) for page in pages] == [2, 1]
    assert [r.telegram_payment_charge_id for page in pages for r in page.refunds] == newest
    by_order = await client.call("list_refunds", tg_payment_id=orders[0].tg_payment_id)
    assert [r.telegram_payment_charge_id for r in by_order.refunds] == [newest[2]]
    assert await client.collect("iter_refunds", state="FAILED") == []
    middle = asked[1].refund.create_time.ToDatetime(tzinfo=UTC)
    since = await client.collect("iter_refunds", create_time_start=middle)
    assert [r.telegram_payment_charge_id for r in since] == newest[:2]
    until = await client.collect("iter_refunds", create_time_end=middle)
    assert [r.telegram_payment_charge_id for r in until] == newest[2:]

    other: TestApp = await make_app()
    assert await connect(other.api_key).collect("iter_refunds") == []
    another, _ = await paid_order(client, shop, fake_telegram, tg_use_id=user)
    error = await failure(
        client.call("refund_payment", another.tg_payment_id, reason_text="x" * 501)
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == {"reason_text"}


async def test_retry_refund_sends_a_refund_that_failed_with_balance_too_low_again(
    make_app: Any,
    fake_telegram: FakeBotApi,
    start_server: ServerFactory,
    connect: Connect,
):
    """A refund Telegram refused with BALANCE_TOO_LOW until its one attempt ran out is FAILED
    (last_error says why); retry_refund makes it PENDING again (refund.retried), and once the
    Stars are there it succeeds and the order is REFUNDED. Retrying a succeeded refund is
    FAILED_PRECONDITION (REFUND_SUCCEEDED); another application's refund is NOT_FOUND."""
    shop: TestApp = await make_app(updates="webhook")
    server = await start_server(PORTEX_REFUND_MAX_ATTEMPTS="1", PORTEX_REFUND_INTERVAL="0.1")
    client = connect(shop.api_key, target=server.target)
    paid, charge = await paid_order(client, shop, fake_telegram, tg_use_id=9108)
    fake_telegram.fail_next(
        "refundStarPayment",
        error_code=400,
        description="Bad Request: BALANCE_TOO_LOW",
        times=50,
        token=shop.bot_token,
    )
    await client.call("refund_payment", paid.tg_payment_id)

    async def failed_refund() -> Any:
        listed = await client.collect("iter_refunds", state=Refund.FAILED)
        return listed[0] if listed else None

    failed = await eventually(failed_refund, timeout=20)
    assert failed.telegram_payment_charge_id == charge
    assert "BALANCE_TOO_LOW" in failed.last_error
    fake_telegram.clear_faults()  # the Stars have cleared

    retried = await client.call("retry_refund", charge)
    assert (retried.telegram_payment_charge_id, retried.state) == (charge, Refund.PENDING)

    async def order_state() -> int:
        return (await client.query_order(paid.tg_payment_id)).state

    await eventually(order_state, equals=Order.REFUNDED, timeout=20)
    succeeded = await client.call("list_refunds", tg_payment_id=paid.tg_payment_id)
    assert [r.state for r in succeeded.refunds] == [Refund.SUCCEEDED]
    events = await client.collect(
        "iter_events", tg_payment_id=paid.tg_payment_id, types=["refund.retried"]
    )
    assert [event.refund.telegram_payment_charge_id for event in events] == [charge]

    request = payment_pb2.RetryRefundRequest(telegram_payment_charge_id=charge)
    error = await failure(client.call("retry_refund", request))
    assert code_and_reason(error) == (grpc.StatusCode.FAILED_PRECONDITION, "REFUND_SUCCEEDED")
    other: TestApp = await make_app()
    error = await failure(connect(other.api_key, target=server.target).call("retry_refund", charge))
    assert error.code == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------------------- the Star ledger


async def test_the_ledger_lists_the_bots_star_transactions_and_its_balance(
    connect: Connect,
    shop: TestApp,
    fake_telegram: FakeBotApi,
    make_app: Any,
    database_url: str,
):
    """After the ledger has read Telegram (`portex-pay admin reconcile`, the worker's manual
    trigger): two payments and one refund are listed newest first, matched to their orders, in
    pages, narrowed by partner kind and date; the balance is Telegram's figure (7) beside the
    ledger's (received 12, refunded 5, nothing withdrawn, held Stars summed by the day they become
    available, 21 days on). Another application's bot has no transactions."""
    client = connect(shop.api_key)
    five, five_charge = await paid_order(client, shop, fake_telegram, tg_use_id=9109, amount=5)
    seven, seven_charge = await paid_order(client, shop, fake_telegram, tg_use_id=9109, amount=7)
    await client.call("refund_payment", five.tg_payment_id)

    async def refunded() -> bool:
        return (await client.query_order(five.tg_payment_id)).state == Order.REFUNDED

    await eventually(refunded)
    code, _, err = await admin(database_url, fake_telegram, "reconcile", "--app", shop.id)
    assert code == 0, err

    listed = await client.collect("iter_star_transactions")
    assert {
        (t.id, t.direction, t.amount, t.partner_type, t.transaction_type, t.match, t.tg_payment_id)
        for t in listed
    } == {
        (five_charge, StarTransaction.INCOMING, 5, "user", "invoice_payment",
         StarTransaction.PAYMENT, five.tg_payment_id),
        (seven_charge, StarTransaction.INCOMING, 7, "user", "invoice_payment",
         StarTransaction.PAYMENT, seven.tg_payment_id),
        (five_charge, StarTransaction.OUTGOING, 5, "user", "invoice_payment",
         StarTransaction.REFUND, five.tg_payment_id),
    }  # fmt: skip
    assert len(listed) == 3
    dates = [t.date.ToDatetime(tzinfo=UTC) for t in listed]
    assert dates == sorted(dates, reverse=True)
    assert all(t.partner_id == 9109 and t.raw_json for t in listed)
    pages = await client.collect("list_star_transactions_pages", page_size=2)
    assert [len(page.transactions) for page in pages] == [2, 1]
    assert [t for page in pages for t in page.transactions] == listed
    assert await client.collect("iter_star_transactions", partner_types=["fragment"]) == []
    assert await client.collect("iter_star_transactions", partner_types=["user"]) == listed
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert await client.collect("iter_star_transactions", date_end=an_hour_ago) == []
    assert await client.collect("iter_star_transactions", date_start=an_hour_ago) == listed

    balance = await client.call("get_star_balance")
    assert (balance.amount, balance.nanostar_amount) == (7, 0)
    assert (balance.received, balance.refunded, balance.withdrawn) == (12, 5, 0)
    assert balance.held_total == sum(held.amount for held in balance.held) > 0
    soon, late = datetime.now(UTC) + timedelta(days=20), datetime.now(UTC) + timedelta(days=22)
    assert all(soon < h.available_time.ToDatetime(tzinfo=UTC) < late for h in balance.held)
    assert balance.HasField("ledger_read_time")

    other: TestApp = await make_app()
    assert await connect(other.api_key).collect("iter_star_transactions") == []


# ------------------------------------------------------------------------- portex-pay-orders


async def test_the_orders_command_lists_by_filter_and_finds_an_order_by_its_charge(
    shop: TestApp, stub: Any, service: PortexApp, fake_telegram: FakeBotApi
):
    """`portex-pay-orders list --filter ... --limit 3 --page-size 2` prints the user's 3 newest
    orders as JSON lines (two pages read); `get --charge` prints the order a charge paid; a bad
    filter exits 1 naming the filter's problem."""
    target = f"127.0.0.1:{service.grpc_port}"
    user = 9110
    await make_orders(stub, shop, 4, tg_use_id=user)
    expected = await newest_first(service, shop, user)
    code, printed, err = await orders_cli(
        target, shop.api_key, "list", "--filter", f"tg_use_id = {user}", "--limit", "3",
        "--page-size", "2",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert [int(line["tgPaymentId"]) for line in printed] == expected[:3]

    client = Client("async", target, shop.api_key)
    try:
        paid, charge = await paid_order(client, shop, fake_telegram, tg_use_id=user)
    finally:
        await client.close()
    code, printed, err = await orders_cli(target, shop.api_key, "get", "--charge", charge)
    assert (code, err) == (0, "")
    assert [(line["tgPaymentId"], line["state"]) for line in printed] == [
        (str(paid.tg_payment_id), "PAID")
    ]

    code, printed, err = await orders_cli(target, shop.api_key, "list", "--filter", "colour = 3")
    assert (code, printed) == (1, [])
    assert err.startswith("portex-pay-orders: INVALID_ARGUMENT: ")
    assert "\nportex-pay-orders: filter: " in err


# ---------------------------------------------------------------------------------------- keys


async def test_a_wrong_key_raises_unauthenticated_on_the_new_methods(connect: Connect):
    """A wrong API key fails every RPC of issue 18 with UNAUTHENTICATED, from the iterators too."""
    client: Client = connect("pk_wrong_key_for_issue_18")
    calls = {
        "ListOrders": client.call("list_orders"),
        "ListOrders pages": client.collect("list_orders_pages"),
        "QueryOrder by charge": client.query_order(telegram_payment_charge_id="stx1"),
        "AcknowledgeOrder": client.call("acknowledge_order", 1),
        "ListRefunds": client.collect("iter_refunds"),
        "RetryRefund": client.call("retry_refund", "stx1"),
        "ListStarTransactions": client.collect("iter_star_transactions"),
        "GetStarBalance": client.call("get_star_balance"),
    }
    seen = {name: code_and_reason(await failure(call)) for name, call in calls.items()}
    assert seen == dict.fromkeys(calls, (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"))
