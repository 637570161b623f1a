"""Refunds as objects, through real gRPC, PostgreSQL and the fake Bot API: RefundPayment's reason
(a code and free text, validated, kept on the refund and in its events), ListRefunds (filters,
keyset pages that neither repeat nor skip while refunds are added, tokens bound to their filters,
another application's refunds never listed) and RetryRefund (a refund Telegram refused with
BALANCE_TOO_LOW until its attempts ran out is sent again and succeeds)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import timestamp_pb2

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.telegram.client import BotApiClient
from portex_pay.app import PortexApp, application_admin
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, TestApp, create_test_app, make_settings
from tests.integration.helpers import details, eventually, pay_request

Order = payment_pb2.Order
Refund = payment_pb2.Refund
USER = 4242


@pytest.fixture
async def shop(make_app) -> TestApp:
    created: TestApp = await make_app(updates="webhook")
    return created


async def paid_order(stub: Any, shop: TestApp, fake: FakeBotApi) -> tuple[int, str]:
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    outcome = await fake.pay_invoice(paid.tg_payment_url, USER)
    assert outcome.approved and outcome.charge_id
    await fake.drain(shop.bot_token)
    return int(paid.tg_payment_id), outcome.charge_id


async def refund(stub: Any, app: TestApp, tg_payment_id: int, **reason: Any) -> Any:
    return await stub.RefundPayment(
        payment_pb2.RefundPaymentRequest(tg_payment_id=tg_payment_id, **reason),
        metadata=app.metadata,
    )


async def order_state(stub: Any, app: TestApp, tg_payment_id: int) -> int:
    order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id), metadata=app.metadata
    )
    return int(order.state)


async def refund_events(stub: Any, app: TestApp, tg_payment_id: int) -> list[Any]:
    page = await stub.ListEvents(
        payment_pb2.ListEventsRequest(
            start=payment_pb2.RETENTION_START,
            tg_payment_id=tg_payment_id,
            types=["refund.requested", "refund.failed", "refund.retried"],
        ),
        metadata=app.metadata,
    )
    return list(page.events)


# --- RefundPayment's reason --------------------------------------------------------------------


async def test_a_refunds_reason_is_kept_on_it_and_in_its_events(stub, shop, fake_telegram):
    tg_payment_id, charge_id = await paid_order(stub, shop, fake_telegram)
    text = "Bought twice by mistake.\nSee ticket #42 🎫"
    asked = await refund(stub, shop, tg_payment_id, reason_code=Refund.OTHER, reason_text=text)
    assert (asked.refund.reason, asked.refund.reason_code, asked.refund.reason_text) == (
        "requested",
        Refund.OTHER,
        text,
    )
    assert (asked.refund.tg_use_id, asked.refund.telegram_payment_charge_id) == (USER, charge_id)
    # Asked again with another reason: the same refund, its first reason standing.
    again = await refund(stub, shop, tg_payment_id, reason_code=Refund.FRAUDULENT)
    assert (again.refund.reason_code, again.refund.reason_text) == (Refund.OTHER, text)

    (event,) = await refund_events(stub, shop, tg_payment_id)
    assert event.type == "refund.requested"
    assert event.refund.telegram_payment_charge_id == charge_id
    assert (event.refund.reason_code, event.refund.reason_text, event.refund.tg_use_id) == (
        Refund.OTHER,
        text,
        USER,
    )
    assert event.refund.state == Refund.PENDING  # as it was right after it was asked for
    assert event.order.tg_payment_id == tg_payment_id


async def test_a_refund_without_a_reason_was_requested_by_the_customer(stub, shop, fake_telegram):
    tg_payment_id, _ = await paid_order(stub, shop, fake_telegram)
    asked = await refund(stub, shop, tg_payment_id)
    assert (asked.refund.reason_code, asked.refund.reason_text) == (
        Refund.REQUESTED_BY_CUSTOMER,
        "",
    )


@pytest.mark.parametrize(
    ("reason", "field"),
    [
        ({"reason_text": "x" * 501}, "reason_text"),
        ({"reason_text": "bell \x07"}, "reason_text"),
        ({"reason_text": "nul \x00"}, "reason_text"),
        ({"reason_text": "c1 \x85"}, "reason_text"),
        ({"reason_code": 99}, "reason_code"),
        ({"reason_code": -1}, "reason_code"),
    ],
)
async def test_a_bad_reason_is_invalid_argument_and_asks_for_nothing(
    stub, service, shop, fake_telegram, reason, field
):
    tg_payment_id, _ = await paid_order(stub, shop, fake_telegram)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await refund(stub, shop, tg_payment_id, **reason)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(raised.value)["BadRequest"].field_violations
    assert violation.field == field
    assert await refund_events(stub, shop, tg_payment_id) == []


async def test_a_reason_of_500_characters_of_any_script_is_taken(stub, shop, fake_telegram):
    tg_payment_id, _ = await paid_order(stub, shop, fake_telegram)
    text = "🎫\t" * 250  # 500 characters, 1250 bytes of UTF-8, tabs allowed
    asked = await refund(stub, shop, tg_payment_id, reason_text=text)
    assert asked.refund.reason_text == text


# --- ListRefunds ---------------------------------------------------------------------------------


async def list_refunds(stub: Any, app: TestApp, **request: Any) -> Any:
    return await stub.ListRefunds(payment_pb2.ListRefundsRequest(**request), metadata=app.metadata)


async def all_pages(stub: Any, app: TestApp, token: str = "", **request: Any) -> list[str]:
    """The charge ids of every page from `token` on, following the tokens."""
    seen: list[str] = []
    while True:
        page = await list_refunds(stub, app, page_token=token, **request)
        seen += [r.telegram_payment_charge_id for r in page.refunds]
        token = page.next_page_token
        if not token:
            return seen


async def test_refunds_are_listed_newest_first_filtered_and_paged(stub, make_app, fake_telegram):
    shop = await make_app(updates="webhook")
    other = await make_app(updates="webhook")
    charges: list[tuple[int, str]] = []
    for _ in range(5):
        charges.append(await paid_order(stub, shop, fake_telegram))
        await refund(stub, shop, charges[-1][0])
    foreign_order, foreign_charge = await paid_order(stub, other, fake_telegram)
    await refund(stub, other, foreign_order)
    newest_first = [charge for _, charge in reversed(charges)]

    everything = await list_refunds(stub, shop)
    assert [r.telegram_payment_charge_id for r in everything.refunds] == newest_first
    assert everything.next_page_token == ""
    assert await all_pages(stub, shop, page_size=2) == newest_first
    assert await all_pages(stub, shop, page_size=1) == newest_first
    # Another application's refunds are never listed, also not by their order.
    assert foreign_charge not in [r.telegram_payment_charge_id for r in everything.refunds]
    assert (await list_refunds(stub, shop, tg_payment_id=foreign_order)).refunds == []
    assert [r.telegram_payment_charge_id for r in (await list_refunds(stub, other)).refunds] == [
        foreign_charge
    ]

    by_order = await list_refunds(stub, shop, tg_payment_id=charges[2][0])
    assert [r.telegram_payment_charge_id for r in by_order.refunds] == [charges[2][1]]

    async def all_refunded() -> bool:  # the worker sends them; each settles
        states = [await order_state(stub, shop, order_id) for order_id, _ in charges]
        return states == [Order.REFUNDED] * len(charges)

    await eventually(all_refunded)
    assert await all_pages(stub, shop, state=Refund.SUCCEEDED, page_size=2) == newest_first
    assert await all_pages(stub, shop, state=Refund.FAILED) == []

    created = {r.telegram_payment_charge_id: r.create_time for r in everything.refunds}
    start, end = created[newest_first[3]], created[newest_first[1]]
    ranged = await all_pages(stub, shop, create_time_start=start, create_time_end=end)
    assert ranged == newest_first[2:4]  # the start inclusive, the end exclusive


async def test_pages_neither_repeat_nor_skip_while_refunds_are_added(stub, make_app, fake_telegram):
    shop = await make_app(updates="webhook")
    before = []
    for _ in range(4):
        tg_payment_id, charge = await paid_order(stub, shop, fake_telegram)
        await refund(stub, shop, tg_payment_id)
        before.append(charge)
    first = await list_refunds(stub, shop, page_size=2)
    # Newer refunds come in between pages: they belong before the first page, not in the next.
    for _ in range(2):
        tg_payment_id, _ = await paid_order(stub, shop, fake_telegram)
        await refund(stub, shop, tg_payment_id)
    rest = await all_pages(stub, shop, first.next_page_token, page_size=2)
    listed = [r.telegram_payment_charge_id for r in first.refunds] + rest
    assert listed == list(reversed(before))


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": 1001}, "page_size"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"page_token": "eyJ4IjoxfQ"}, "page_token"),  # base64url JSON, not ours
        ({"state": 9}, "state"),
        ({"tg_payment_id": 0}, "tg_payment_id"),
        (
            {"create_time_start": timestamp_pb2.Timestamp(seconds=-62_135_596_801)},
            "create_time_start",
        ),
        ({"create_time_end": timestamp_pb2.Timestamp(seconds=1, nanos=-1)}, "create_time_end"),
        ({"create_time_end": timestamp_pb2.Timestamp(seconds=253_402_300_800)}, "create_time_end"),
    ],
)
async def test_bad_list_requests_are_invalid_argument(stub, app, request_fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await list_refunds(stub, app, **request_fields)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(raised.value)["BadRequest"].field_violations
    assert violation.field == field


async def test_a_page_token_is_refused_with_other_filters(stub, shop, fake_telegram):
    for _ in range(2):
        tg_payment_id, _ = await paid_order(stub, shop, fake_telegram)
        await refund(stub, shop, tg_payment_id)
    since = timestamp_pb2.Timestamp(seconds=1)
    first = await list_refunds(stub, shop, page_size=1, create_time_start=since)
    assert first.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await list_refunds(stub, shop, page_size=1, page_token=first.next_page_token)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(raised.value)["BadRequest"].field_violations
    assert (violation.field, "other filters" in violation.description) == ("page_token", True)
    # The page size may change between pages; the filters may not.
    rest = await list_refunds(
        stub, shop, page_size=5, page_token=first.next_page_token, create_time_start=since
    )
    assert len(rest.refunds) == 1


# --- RetryRefund ---------------------------------------------------------------------------------


@pytest.fixture
async def impatient(empty_db: str, fake_telegram: FakeBotApi) -> AsyncIterator[PortexApp]:
    """A service of its own (its own database, so no other refund worker sends its refunds)
    that gives a refund up after two attempts."""
    service = PortexApp(
        make_settings(empty_db, fake_telegram.base_url, refund_max_attempts=2, refund_interval=0.1)
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def test_a_refund_refused_for_balance_too_low_is_retried_and_succeeds(
    impatient: PortexApp, fake_telegram: FakeBotApi
):
    async with (
        aiohttp.ClientSession() as session,
        grpc.aio.insecure_channel(f"127.0.0.1:{impatient.grpc_port}") as channel,
    ):
        admin = application_admin(
            impatient.pool, BotApiClient(session, fake_telegram.base_url, 5), data_keys=DATA_KEYS
        )
        url = f"http://127.0.0.1:{impatient.http_port}"
        shop = await create_test_app(admin, fake_telegram, updates="webhook", public_url=url)
        other = await create_test_app(admin, fake_telegram, updates="webhook", public_url=url)
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        tg_payment_id, charge_id = await paid_order(stub, shop, fake_telegram)
        fake_telegram.fail_next(
            "refundStarPayment",
            error_code=400,
            description="Bad Request: BALANCE_TOO_LOW",
            times=2,
            token=shop.bot_token,
        )
        await refund(stub, shop, tg_payment_id)

        async def refund_state() -> int:
            (listed,) = (await list_refunds(stub, shop, tg_payment_id=tg_payment_id)).refunds
            return int(listed.state)

        await eventually(refund_state, equals=Refund.FAILED)
        (failed,) = (await list_refunds(stub, shop, state=Refund.FAILED)).refunds
        assert (failed.attempts, failed.last_error) == (2, "400 Bad Request: BALANCE_TOO_LOW")
        assert await order_state(stub, shop, tg_payment_id) == Order.PAID

        retry = payment_pb2.RetryRefundRequest(telegram_payment_charge_id=charge_id)
        for stranger in (other,):  # another application's refund is not found
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.RetryRefund(retry, metadata=stranger.metadata)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        retried = await stub.RetryRefund(retry, metadata=shop.metadata)
        assert (retried.state, retried.attempts) == (Refund.PENDING, 0)

        await eventually(lambda: order_state(stub, shop, tg_payment_id), equals=Order.REFUNDED)
        assert await refund_state() == Refund.SUCCEEDED
        calls = fake_telegram.calls_for("refundStarPayment", token=shop.bot_token)
        assert len(calls) == 3
        types = [e.type for e in await refund_events(stub, shop, tg_payment_id)]
        assert types == ["refund.requested", "refund.failed", "refund.retried"]
        failed_event, retried_event = (await refund_events(stub, shop, tg_payment_id))[1:]
        assert (failed_event.refund.state, retried_event.refund.state) == (
            Refund.FAILED,
            Refund.PENDING,
        )

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.RetryRefund(retry, metadata=shop.metadata)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details(raised.value)["ErrorInfo"].reason == "REFUND_SUCCEEDED"


async def test_a_pending_refund_is_returned_as_it_is(stub, service, shop, fake_telegram):
    tg_payment_id, charge_id = await paid_order(stub, shop, fake_telegram)
    fake_telegram.delay("refundStarPayment", 3.0, times=1, token=shop.bot_token)
    asked = await refund(stub, shop, tg_payment_id)
    retried = await stub.RetryRefund(
        payment_pb2.RetryRefundRequest(telegram_payment_charge_id=charge_id), metadata=shop.metadata
    )
    assert retried.state == Refund.PENDING
    assert retried.telegram_payment_charge_id == asked.refund.telegram_payment_charge_id
    assert "refund.retried" not in [e.type for e in await refund_events(stub, shop, tg_payment_id)]


@pytest.mark.parametrize(
    ("charge_id", "code"),
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("x" * 257, grpc.StatusCode.INVALID_ARGUMENT),
        ("line\nbreak", grpc.StatusCode.INVALID_ARGUMENT),
        ("never-charged", grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_retry_refund_checks_the_charge_id(stub, app, charge_id, code):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RetryRefund(
            payment_pb2.RetryRefundRequest(telegram_payment_charge_id=charge_id),
            metadata=app.metadata,
        )
    assert raised.value.code() == code
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        (violation,) = details(raised.value)["BadRequest"].field_violations
        assert violation.field == "telegram_payment_charge_id"
    else:
        assert details(raised.value)["ErrorInfo"].reason == "REFUND_NOT_FOUND"
