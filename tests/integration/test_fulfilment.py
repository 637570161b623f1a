"""AcknowledgeOrder and the unfulfilled-order policy, through real gRPC, PostgreSQL and the fake
Bot API: an acknowledgement is recorded once with its `order.fulfilled` event (also under
concurrent calls) and delivered as a callback; only a paid order is acknowledged; another
application's order is not found; the policy refunds a paid order nobody acknowledged once its
deadline passes on a clock the test controls, once, and never an acknowledged order or one of an
application without the policy."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.http_guard import HttpPoster
from portex_pay.adapters.postgres.callbacks import CallbackRepository
from portex_pay.adapters.postgres.ledger_store import LedgerStore
from portex_pay.adapters.postgres.orders import OrderRepository
from portex_pay.adapters.telegram.client import BotApiClient
from portex_pay.app import PortexApp, application_admin
from portex_pay.service.callbacks import CallbackDispatcher
from portex_pay.service.clock import utcnow
from portex_pay.service.fulfilment import UnfulfilledRefunds
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, TestApp
from tests.integration.helpers import details, eventually, pay_request
from tests.integration.test_callbacks import Receiver, drain

Order = payment_pb2.Order
Refund = payment_pb2.Refund
USER = 4242


@pytest.fixture
async def shop(make_app) -> TestApp:
    created: TestApp = await make_app(updates="webhook")
    return created


async def paid_order(stub: Any, shop: TestApp, fake: FakeBotApi, **fields: Any) -> int:
    paid = await stub.Pay(pay_request(tg_use_id=USER, **fields), metadata=shop.metadata)
    outcome = await fake.pay_invoice(paid.tg_payment_url, USER)
    assert outcome.approved
    await fake.drain(shop.bot_token)
    return int(paid.tg_payment_id)


async def acknowledge(stub: Any, app: TestApp, tg_payment_id: int, request_id: str = "") -> Order:
    order: Order = await stub.AcknowledgeOrder(
        payment_pb2.AcknowledgeOrderRequest(tg_payment_id=tg_payment_id, request_id=request_id),
        metadata=app.metadata,
    )
    return order


async def refused(stub: Any, app: TestApp, tg_payment_id: int, request_id: str = "") -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await acknowledge(stub, app, tg_payment_id, request_id)
    return raised.value


async def event_types(service: PortexApp, tg_payment_id: int) -> list[str]:
    rows = await service.pool.fetch(
        "SELECT type FROM events WHERE tg_payment_id = $1 ORDER BY id", tg_payment_id
    )
    return [row["type"] for row in rows]


async def test_acknowledging_twice_records_one_delivery_and_one_event(
    stub, service, shop, fake_telegram
):
    tg_payment_id = await paid_order(stub, shop, fake_telegram)
    first = await acknowledge(stub, shop, tg_payment_id, "delivery-1")
    assert (first.state, first.HasField("fulfilled_time")) == (Order.PAID, True)
    again = await acknowledge(stub, shop, tg_payment_id, "delivery-1")
    without_id = await acknowledge(stub, shop, tg_payment_id)
    assert again == first and without_id == first
    queried = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id), metadata=shop.metadata
    )
    assert queried.fulfilled_time == first.fulfilled_time
    assert (await event_types(service, tg_payment_id)).count("order.fulfilled") == 1

    other_delivery = await refused(stub, shop, tg_payment_id, "delivery-2")
    assert other_delivery.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(other_delivery)["ErrorInfo"].reason == "ORDER_ALREADY_FULFILLED"

    page = await stub.ListEvents(
        payment_pb2.ListEventsRequest(
            start=payment_pb2.RETENTION_START,
            tg_payment_id=tg_payment_id,
            types=["order.fulfilled"],
        ),
        metadata=shop.metadata,
    )
    (event,) = page.events
    assert event.order.fulfilled_time == first.fulfilled_time
    assert event.order.state == Order.PAID


async def test_an_acknowledgement_without_an_id_is_not_another_delivery_of_none(
    stub, service, shop, fake_telegram
):
    """Recorded without a request id, a repeat without one is the same acknowledgement; a
    request id given afterwards names another delivery."""
    tg_payment_id = await paid_order(stub, shop, fake_telegram)
    first = await acknowledge(stub, shop, tg_payment_id)
    assert await acknowledge(stub, shop, tg_payment_id) == first
    later = await refused(stub, shop, tg_payment_id, "delivery-1")
    assert later.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_an_order_never_paid_is_not_acknowledged(stub, service, shop, fake_telegram):
    pending = (await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)).tg_payment_id
    cancelled = (await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)).tg_payment_id
    await stub.CancelOrder(
        payment_pb2.CancelOrderRequest(tg_payment_id=cancelled), metadata=shop.metadata
    )
    # Past its time, swept or not: expired as QueryOrder sees it.
    expired = (await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)).tg_payment_id
    await service.pool.execute(
        "UPDATE orders SET expires_at = now() - interval '1 second' WHERE tg_payment_id = $1",
        expired,
    )
    for tg_payment_id, state in ((pending, "pending"), (cancelled, "cancelled"), (expired, None)):
        error = await refused(stub, shop, tg_payment_id, "d-1")
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = details(error)["ErrorInfo"]
        assert info.reason == "ORDER_NOT_PAID"
        if state is not None:
            assert info.metadata["state"] == state
        assert "order.fulfilled" not in await event_types(service, tg_payment_id)


async def test_a_refunded_order_is_acknowledged_only_if_it_was_before(
    stub, service, shop, fake_telegram
):
    async def refunded(tg_payment_id: int) -> None:
        await stub.RefundPayment(
            payment_pb2.RefundPaymentRequest(tg_payment_id=tg_payment_id), metadata=shop.metadata
        )

        async def state() -> int:
            order = await stub.QueryOrder(
                payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id), metadata=shop.metadata
            )
            return int(order.state)

        await eventually(state, equals=Order.REFUNDED)

    never_delivered = await paid_order(stub, shop, fake_telegram)
    await refunded(never_delivered)
    error = await refused(stub, shop, never_delivered, "d-1")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)["ErrorInfo"].reason == "ORDER_REFUNDED"

    delivered = await paid_order(stub, shop, fake_telegram)
    first = await acknowledge(stub, shop, delivered, "d-1")
    await refunded(delivered)
    again = await acknowledge(stub, shop, delivered, "d-1")
    assert (again.state, again.fulfilled_time) == (Order.REFUNDED, first.fulfilled_time)
    assert (await event_types(service, delivered)).count("order.fulfilled") == 1


async def test_concurrent_acknowledgements_record_one_delivery(stub, service, shop, fake_telegram):
    same = await paid_order(stub, shop, fake_telegram)
    answers = await asyncio.gather(*(acknowledge(stub, shop, same, "d-1") for _ in range(20)))
    assert len({answer.fulfilled_time.ToJsonString() for answer in answers}) == 1
    assert (await event_types(service, same)).count("order.fulfilled") == 1

    contested = await paid_order(stub, shop, fake_telegram)
    outcomes = await asyncio.gather(
        *(acknowledge(stub, shop, contested, f"d-{n}") for n in range(20)), return_exceptions=True
    )
    won = [o for o in outcomes if isinstance(o, payment_pb2.Order)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert (len(won), len(lost)) == (1, 19)
    assert {error.code() for error in lost} == {grpc.StatusCode.ALREADY_EXISTS}
    assert (await event_types(service, contested)).count("order.fulfilled") == 1
    stored = await service.pool.fetchval(
        "SELECT fulfilment_request_id FROM orders WHERE tg_payment_id = $1", contested
    )
    assert stored == f"d-{outcomes.index(won[0])}"


async def test_another_applications_order_answers_as_missing(stub, make_app, shop, fake_telegram):
    other = await make_app()
    tg_payment_id = await paid_order(stub, shop, fake_telegram)
    for order_id in (tg_payment_id, 2**62):
        error = await refused(stub, other, order_id, "d-1")
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert details(error)["ErrorInfo"].reason == "ORDER_NOT_FOUND"
    untouched = await acknowledge(stub, shop, tg_payment_id, "d-1")  # still the owner's to do
    assert untouched.HasField("fulfilled_time")


@pytest.mark.parametrize(
    ("tg_payment_id", "request_id", "field"),
    [
        (0, "", "tg_payment_id"),
        (-5, "d-1", "tg_payment_id"),
        (1, "has space", "request_id"),
        (1, "line\nbreak", "request_id"),
        (1, "x" * 129, "request_id"),
        (1, "é", "request_id"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    stub, app, tg_payment_id, request_id, field
):
    error = await refused(stub, app, tg_payment_id, request_id)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(error)["BadRequest"].field_violations
    assert violation.field == field


async def test_the_acknowledgement_reaches_the_orders_callback(stub, service, shop, fake_telegram):
    await service.pool.execute(  # earlier tests' deliveries are not this dispatcher's to make
        "UPDATE callback_deliveries SET next_attempt_at = 'infinity' WHERE state = 'pending'"
    )
    receiver = Receiver()
    await receiver.start()
    try:
        tg_payment_id = await paid_order(stub, shop, fake_telegram, callback_url=receiver.url("cb"))
        async with aiohttp.ClientSession() as session:
            dispatcher = CallbackDispatcher(
                CallbackRepository(service.pool, DATA_KEYS), HttpPoster(session), timeout=2.0
            )
            await drain(dispatcher)
            await acknowledge(stub, shop, tg_payment_id, "d-1")
            assert await drain(dispatcher) == 1
    finally:
        await receiver.stop()
    last = receiver.at("cb")[-1].json
    assert (last["type"], last["tg_payment_id"]) == ("order.fulfilled", tg_payment_id)
    assert last["order"]["state"] == "paid"
    fulfilled_at = await service.pool.fetchval(
        "SELECT fulfilled_at FROM orders WHERE tg_payment_id = $1", tg_payment_id
    )
    assert last["order"]["fulfilled_time"] == fulfilled_at.astimezone(UTC).isoformat().replace(
        "+00:00", "Z"
    )
    assert receiver.at("cb")[0].json["order"]["fulfilled_time"] is None


# --- The unfulfilled-order policy, on a clock the test controls --------------------------------


@pytest.fixture
async def admin(service: PortexApp, fake_telegram: FakeBotApi) -> AsyncIterator[Any]:
    session = aiohttp.ClientSession()
    try:
        yield application_admin(
            service.pool, BotApiClient(session, fake_telegram.base_url, 5.0), data_keys=DATA_KEYS
        )
    finally:
        await session.close()


class Clock:
    """The sweep's clock: now, or as far ahead as the test moves it."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.ahead


async def refunds_of(service: PortexApp, tg_payment_id: int) -> list[tuple[str, str]]:
    rows = await service.pool.fetch(
        "SELECT reason, reason_code FROM refunds WHERE tg_payment_id = $1", tg_payment_id
    )
    return [(row["reason"], row["reason_code"]) for row in rows]


async def test_the_policy_refunds_an_unacknowledged_order_once_after_its_deadline(
    stub, service, make_app, admin, fake_telegram
):
    shop = await make_app(updates="webhook")
    bystander = await make_app(updates="webhook")  # the policy is off unless switched on
    await admin.set_unfulfilled_refund(uuid.UUID(shop.id), "72h")
    forgotten = await paid_order(stub, shop, fake_telegram)
    delivered = await paid_order(stub, shop, fake_telegram)
    await acknowledge(stub, shop, delivered, "d-1")
    elsewhere = await paid_order(stub, bystander, fake_telegram)
    clock = Clock()
    sweep = UnfulfilledRefunds(
        OrderRepository(service.pool), LedgerStore(service.pool, DATA_KEYS), clock=clock
    )

    clock.ahead = timedelta(hours=71, minutes=59)
    await sweep.step()
    assert await refunds_of(service, forgotten) == []

    clock.ahead = timedelta(hours=72, minutes=1)
    await sweep.step()
    await sweep.step()
    clock.ahead = timedelta(days=400)
    await sweep.step()
    assert await refunds_of(service, forgotten) == [("unfulfilled", "not_fulfilled")]
    assert await refunds_of(service, delivered) == []
    assert await refunds_of(service, elsewhere) == []
    assert (await event_types(service, forgotten)).count("refund.requested") == 1

    async def state() -> int:
        order = await stub.QueryOrder(
            payment_pb2.QueryOrderRequest(tg_payment_id=forgotten), metadata=shop.metadata
        )
        return int(order.state)

    await eventually(state, equals=Order.REFUNDED)  # the service's own refund worker sent it
    listed = await stub.ListRefunds(
        payment_pb2.ListRefundsRequest(tg_payment_id=forgotten), metadata=shop.metadata
    )
    (refund,) = listed.refunds
    assert (refund.reason, refund.reason_code, refund.state) == (
        "unfulfilled",
        Refund.NOT_FULFILLED,
        Refund.SUCCEEDED,
    )
    # Asked for again by a caller: the same refund, its first reason standing.
    again = await stub.RefundPayment(
        payment_pb2.RefundPaymentRequest(tg_payment_id=forgotten, reason_code=Refund.FRAUDULENT),
        metadata=shop.metadata,
    )
    assert (again.refund.reason, again.refund.reason_code) == ("unfulfilled", Refund.NOT_FULFILLED)


async def test_the_policy_never_reaches_back_to_orders_paid_before_it(
    stub, service, make_app, admin, fake_telegram
):
    shop = await make_app(updates="webhook")
    before = await paid_order(stub, shop, fake_telegram)
    await admin.set_unfulfilled_refund(uuid.UUID(shop.id), "1h")
    after = await paid_order(stub, shop, fake_telegram)
    clock = Clock()
    clock.ahead = timedelta(days=30)
    sweep = UnfulfilledRefunds(
        OrderRepository(service.pool), LedgerStore(service.pool, DATA_KEYS), clock=clock
    )
    await sweep.step()
    assert await refunds_of(service, before) == []
    assert await refunds_of(service, after) == [("unfulfilled", "not_fulfilled")]
    # Switched off: nothing more is refunded, whatever the time.
    await admin.set_unfulfilled_refund(uuid.UUID(shop.id), None)
    later = await paid_order(stub, shop, fake_telegram)
    clock.ahead = timedelta(days=60)
    await sweep.step()
    assert await refunds_of(service, later) == []
