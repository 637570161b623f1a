"""QueryOrder by `telegram_payment_charge_id` (issue 18), through real gRPC, PostgreSQL and the
fake Bot API: the charge that paid an order, a duplicate charge of it and a refunded one all find
the order; another application's charge answers exactly as an unknown one; a charge id that
cannot be one is INVALID_ARGUMENT; requests by `tg_payment_id` (or neither) answer as before."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp
from tests.integration.helpers import details, eventually, pay_request

Order = payment_pb2.Order
USER = 4242


@pytest.fixture
async def shop(make_app) -> TestApp:
    created: TestApp = await make_app(updates="webhook")
    return created


async def by_charge(stub: Any, app: TestApp, charge_id: str) -> Order:
    order: Order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(telegram_payment_charge_id=charge_id), metadata=app.metadata
    )
    return order


async def by_id(stub: Any, app: TestApp, tg_payment_id: int) -> Order:
    order: Order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id), metadata=app.metadata
    )
    return order


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


async def test_the_charge_that_paid_an_order_finds_it(stub, shop, fake_telegram: FakeBotApi):
    created = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    outcome = await fake_telegram.pay_invoice(created.tg_payment_url, USER)
    await fake_telegram.drain(shop.bot_token)
    assert outcome.charge_id
    found = await by_charge(stub, shop, outcome.charge_id)
    assert found == await by_id(stub, shop, created.tg_payment_id)
    assert (found.state, found.telegram_payment_charge_id) == (Order.PAID, outcome.charge_id)


async def test_a_duplicate_charge_finds_the_order_it_paid_twice(
    stub, shop, fake_telegram: FakeBotApi
):
    created = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    # The multi-use link opened twice: both checkouts are approved, Telegram charges twice, the
    # second charge is recorded as a duplicate (and refunded).
    first, second = await asyncio.gather(
        fake_telegram.pay_invoice(created.tg_payment_url, USER),
        fake_telegram.pay_invoice(created.tg_payment_url, USER),
    )
    await fake_telegram.drain(shop.bot_token)
    order = await by_id(stub, shop, created.tg_payment_id)
    duplicate = ({first.charge_id, second.charge_id} - {order.telegram_payment_charge_id}).pop()
    assert duplicate
    found = await by_charge(stub, shop, duplicate)
    assert found.tg_payment_id == created.tg_payment_id
    # The order shows the charge that paid it, not the one it was found by.
    assert found.telegram_payment_charge_id == order.telegram_payment_charge_id != duplicate


async def test_a_refunded_charge_finds_its_refunded_order(stub, shop, fake_telegram: FakeBotApi):
    created = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    outcome = await fake_telegram.pay_invoice(created.tg_payment_url, USER)
    await fake_telegram.drain(shop.bot_token)
    charge_id = outcome.charge_id
    assert charge_id
    await stub.RefundPayment(
        payment_pb2.RefundPaymentRequest(tg_payment_id=created.tg_payment_id),
        metadata=shop.metadata,
    )

    async def state() -> int:
        return (await by_charge(stub, shop, charge_id)).state

    await eventually(state, equals=Order.REFUNDED)
    assert (await by_charge(stub, shop, charge_id)).tg_payment_id == created.tg_payment_id


async def test_another_applications_charge_is_not_found_exactly_like_an_unknown_one(
    stub, make_app, shop, fake_telegram: FakeBotApi
):
    stranger: TestApp = await make_app()
    created = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    outcome = await fake_telegram.pay_invoice(created.tg_payment_url, USER)
    await fake_telegram.drain(shop.bot_token)
    assert outcome.charge_id
    foreign = await failure(by_charge(stub, stranger, outcome.charge_id))
    unknown = await failure(by_charge(stub, stranger, "stxUNKNOWN"))
    assert foreign.code() == unknown.code() == grpc.StatusCode.NOT_FOUND
    assert details(foreign)["ErrorInfo"] == details(unknown)["ErrorInfo"]
    assert details(foreign)["ErrorInfo"].reason == "ORDER_NOT_FOUND"
    assert foreign.details() == unknown.details()


@pytest.mark.parametrize(
    ("charge_id", "description"),
    [
        ("", "must be 1-256 characters"),
        ("c" * 257, "must be 1-256 characters"),
        ("stx\x00", "must be a single line without control characters (found U+0000 at index 3)"),
        ("stx\nx", "must be a single line without control characters (found U+000A at index 3)"),
    ],
)
async def test_a_charge_id_that_cannot_be_one_is_invalid(stub, shop, charge_id, description):
    error = await failure(by_charge(stub, shop, charge_id))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(error)["BadRequest"].field_violations
    assert (violation.field, violation.description) == ("telegram_payment_charge_id", description)


async def test_requests_by_id_or_with_no_lookup_answer_as_before(stub, shop):
    created = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    assert (await by_id(stub, shop, created.tg_payment_id)).tg_payment_id == created.tg_payment_id
    for request in (
        payment_pb2.QueryOrderRequest(),
        payment_pb2.QueryOrderRequest(tg_payment_id=0),
    ):
        error = await failure(stub.QueryOrder(request, metadata=shop.metadata))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert details(error)["ErrorInfo"].reason == "ORDER_NOT_FOUND"
