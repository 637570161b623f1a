"""Pay, QueryOrder and ResumePayment through real gRPC, PostgreSQL and the fake Bot API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.postgres.orders import OrderRepository
from portex_pay.app import PortexApp
from portex_pay.domain.pay import verify_invoice_payload
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import PAYLOAD_KEYS, TestApp
from tests.integration.helpers import details, eventually, pay_request

Order = payment_pb2.Order


async def test_pay_creates_a_stars_invoice_and_a_pending_order(stub, app: TestApp, fake_telegram):
    request = pay_request(
        payload="app data, never sent to Telegram",
        photo_url="https://example.com/book.png",
        photo_size=1234,
        photo_width=640,
        photo_height=480,
    )
    response = await stub.Pay(request, metadata=app.metadata)

    assert response.tg_payment_url.startswith("https://t.me/$")
    assert response.order.tg_payment_id == response.tg_payment_id > 0
    assert response.order.state == Order.PENDING
    assert (response.order.status, response.order.status_description) == (0, "pending")
    calls = fake_telegram.calls_for("createInvoiceLink", token=app.bot_token)
    assert len(calls) == 1
    params = calls[0].params
    assert params["currency"] == "XTR"
    assert params["prices"] in (
        [{"label": "item", "amount": 5}],
        '[{"label": "item", "amount": 5}]',
    )
    assert not params.get("provider_token")
    assert (params["photo_url"], params["photo_size"], params["photo_width"]) == (
        "https://example.com/book.png",
        1234,
        640,
    )
    assert "app data" not in json.dumps(params)
    assert verify_invoice_payload(PAYLOAD_KEYS, params["payload"]) == (
        response.tg_payment_id,
        5,
    )


async def test_query_order_returns_every_field(stub, app: TestApp):
    created = await stub.Pay(
        pay_request(payload="p1", callback_url="https://game.example/cb"), metadata=app.metadata
    )
    order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=created.tg_payment_id), metadata=app.metadata
    )
    assert order.application_id == app.id
    assert (order.tg_use_id, order.amount, order.label, order.title, order.description) == (
        4242,
        5,
        "item",
        "Book",
        "Magic book",
    )
    assert order.payload == "p1"
    assert order.callback_url == "https://game.example/cb"
    assert order.tg_payment_url == created.tg_payment_url
    assert not order.HasField("photo_url")
    expires = order.expire_time.ToDatetime() - order.create_time.ToDatetime()
    assert expires.total_seconds() == pytest.approx(3600, abs=1)
    assert not order.HasField("paid_time")


async def test_the_same_request_id_returns_the_same_order_without_a_second_invoice(
    stub, app: TestApp, fake_telegram
):
    request = pay_request()
    first = await stub.Pay(request, metadata=app.metadata)
    second = await stub.Pay(request, metadata=app.metadata)
    assert (second.tg_payment_id, second.tg_payment_url) == (
        first.tg_payment_id,
        first.tg_payment_url,
    )
    assert len(fake_telegram.calls_for("createInvoiceLink", token=app.bot_token)) == 1


async def test_a_request_id_reused_with_other_fields_is_refused(stub, app: TestApp):
    request = pay_request()
    await stub.Pay(request, metadata=app.metadata)
    changed = payment_pb2.PayRequest()
    changed.CopyFrom(request)
    changed.amount = 6
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Pay(changed, metadata=app.metadata)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = details(raised.value)["ErrorInfo"]
    assert (info.reason, info.domain) == ("IDEMPOTENCY_KEY_REUSED", "pay.portex.dev")


async def test_request_ids_are_scoped_per_application(stub, make_app):
    first, second = await make_app(), await make_app()
    request = pay_request()
    a = await stub.Pay(request, metadata=first.metadata)
    b = await stub.Pay(request, metadata=second.metadata)
    assert a.tg_payment_id != b.tg_payment_id


async def test_concurrent_duplicates_make_one_order_and_one_invoice(
    stub, app: TestApp, fake_telegram: FakeBotApi
):
    # A slow Telegram widens the window in which the duplicates overlap.
    fake_telegram.delay("createInvoiceLink", 0.3)
    request = pay_request()
    responses = await asyncio.gather(*(stub.Pay(request, metadata=app.metadata) for _ in range(20)))
    assert len({r.tg_payment_id for r in responses}) == 1
    assert len({r.tg_payment_url for r in responses}) == 1
    assert len(fake_telegram.calls_for("createInvoiceLink", token=app.bot_token)) == 1


async def test_without_request_id_every_call_is_a_new_order(stub, app: TestApp):
    request = pay_request(request_id="")
    a = await stub.Pay(request, metadata=app.metadata)
    b = await stub.Pay(request, metadata=app.metadata)
    assert a.tg_payment_id != b.tg_payment_id


async def test_invalid_input_lists_every_bad_field(stub, app: TestApp, fake_telegram):
    request = pay_request(tg_use_id=0, amount=0, title="t" * 33, description="", photo_width=-1)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Pay(request, metadata=app.metadata)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(raised.value)
    assert found["ErrorInfo"].reason == "INVALID_ARGUMENT"
    violations = {v.field for v in found["BadRequest"].field_violations}
    assert violations == {"tg_use_id", "amount", "title", "description", "photo_width"}
    assert fake_telegram.calls_for("createInvoiceLink", token=app.bot_token) == []


async def _failed_pay(stub, app: TestApp, request=None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Pay(request or pay_request(), metadata=app.metadata)
    return raised.value


async def _only_order(service: PortexApp, app: TestApp) -> dict[str, Any]:
    rows = await service.pool.fetch("SELECT * FROM orders WHERE application_id = $1::uuid", app.id)
    assert len(rows) == 1
    return dict(rows[0])


async def test_telegram_429_is_resource_exhausted_with_retry_info(
    stub, service, app: TestApp, fake_telegram
):
    fake_telegram.fail_next(
        "createInvoiceLink", error_code=429, description="Too Many Requests: retry after 9",
        retry_after=9,
    )  # fmt: skip
    error = await _failed_pay(stub, app)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    found = details(error)
    assert found["ErrorInfo"].reason == "TELEGRAM_RATE_LIMITED"
    assert found["RetryInfo"].retry_delay.seconds == 9
    order = await _only_order(service, app)
    assert (order["state"], order["failure_code"]) == ("failed", "TELEGRAM_RATE_LIMITED")


async def test_telegram_400_is_failed_precondition_with_its_description(
    stub, service, app: TestApp, fake_telegram
):
    fake_telegram.fail_next(
        "createInvoiceLink", error_code=400, description="Bad Request: STARS_INVOICE_INVALID"
    )
    error = await _failed_pay(stub, app)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "STARS_INVOICE_INVALID" in (error.details() or "")
    assert details(error)["ErrorInfo"].reason == "TELEGRAM_REJECTED"
    order = await _only_order(service, app)
    assert order["state"] == "failed"
    assert "STARS_INVOICE_INVALID" in order["failure_reason"]


@pytest.mark.parametrize("fault", ["500", "drop", "timeout"])
async def test_telegram_outages_are_unavailable_and_recorded(
    stub, service, app: TestApp, fake_telegram, fault: str
):
    if fault == "500":
        fake_telegram.fail_next(
            "createInvoiceLink", error_code=500, description="Internal Server Error"
        )
    elif fault == "drop":
        fake_telegram.drop_connection("createInvoiceLink")
    else:
        fake_telegram.delay("createInvoiceLink", 5.0, times=1)  # telegram_timeout is 2 s
    error = await _failed_pay(stub, app)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert details(error)["ErrorInfo"].reason == "TELEGRAM_UNAVAILABLE"
    order = await _only_order(service, app)
    assert (order["state"], order["failure_code"]) == ("failed", "TELEGRAM_UNAVAILABLE")


async def test_a_retry_after_a_transient_failure_gets_a_working_invoice(
    stub, app: TestApp, fake_telegram
):
    request = pay_request()
    fake_telegram.fail_next("createInvoiceLink", error_code=502, description="Bad Gateway")
    error = await _failed_pay(stub, app, request)
    assert error.code() == grpc.StatusCode.UNAVAILABLE

    retried = await stub.Pay(request, metadata=app.metadata)
    assert retried.tg_payment_url.startswith("https://t.me/$")
    assert retried.order.state == Order.PENDING
    assert retried.order.failure_reason == ""
    again = await stub.Pay(request, metadata=app.metadata)
    assert again.tg_payment_id == retried.tg_payment_id
    assert len(fake_telegram.calls_for("createInvoiceLink", token=app.bot_token)) == 2


async def test_every_state_change_writes_its_event(stub, service, app: TestApp, fake_telegram):
    request = pay_request()
    fake_telegram.fail_next("createInvoiceLink", error_code=500, description="oops")
    await _failed_pay(stub, app, request)
    response = await stub.Pay(request, metadata=app.metadata)
    rows = await service.pool.fetch(
        "SELECT type, data FROM events WHERE tg_payment_id = $1 ORDER BY id",
        response.tg_payment_id,
    )
    assert [r["type"] for r in rows] == ["order.created", "order.failed", "order.invoice_created"]
    assert rows[-1]["data"]["order"]["invoice_link"] == response.tg_payment_url


async def test_an_application_without_a_bot_cannot_pay(stub, make_app):
    botless = await make_app(bot=False)
    error = await _failed_pay(stub, botless)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)["ErrorInfo"].reason == "BOT_NOT_CONFIGURED"


async def test_query_order_of_a_missing_order_is_not_found(stub, app: TestApp):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryOrder(
            payment_pb2.QueryOrderRequest(tg_payment_id=2**62), metadata=app.metadata
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(raised.value)["ErrorInfo"].reason == "ORDER_NOT_FOUND"


async def _expire(service: PortexApp, tg_payment_id: int) -> None:
    # Time passing, without waiting for it: move the expiry into the past.
    await service.pool.execute(
        "UPDATE orders SET expires_at = now() - interval '1 second' WHERE tg_payment_id = $1",
        tg_payment_id,
    )


async def test_an_order_past_its_expiry_shows_expired(stub, service, app: TestApp):
    created = await stub.Pay(pay_request(), metadata=app.metadata)
    await _expire(service, created.tg_payment_id)
    order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=created.tg_payment_id), metadata=app.metadata
    )
    assert (order.state, order.status, order.status_description) == (Order.EXPIRED, 3, "expired")


async def test_resume_offers_the_users_newest_payable_order(stub, service, app: TestApp):
    user = 777001
    older = await stub.Pay(pay_request(tg_use_id=user), metadata=app.metadata)
    newer = await stub.Pay(pay_request(tg_use_id=user), metadata=app.metadata)
    await stub.Pay(pay_request(tg_use_id=user + 1), metadata=app.metadata)

    resumed = await stub.ResumePayment(
        payment_pb2.ResumePaymentRequest(tg_use_id=user), metadata=app.metadata
    )
    assert resumed.has_pending_payment
    assert (resumed.tg_payment_id, resumed.tg_payment_url) == (
        newer.tg_payment_id,
        newer.tg_payment_url,
    )

    await _expire(service, newer.tg_payment_id)
    resumed = await stub.ResumePayment(
        payment_pb2.ResumePaymentRequest(tg_use_id=user), metadata=app.metadata
    )
    assert resumed.tg_payment_id == older.tg_payment_id

    await _expire(service, older.tg_payment_id)
    resumed = await stub.ResumePayment(
        payment_pb2.ResumePaymentRequest(tg_use_id=user), metadata=app.metadata
    )
    assert resumed == payment_pb2.ResumePaymentResponse(has_pending_payment=False)


async def test_resume_never_offers_a_failed_order(stub, app: TestApp, fake_telegram):
    fake_telegram.fail_next("createInvoiceLink", error_code=400, description="Bad Request: x")
    await _failed_pay(stub, app, pay_request(tg_use_id=888001))
    resumed = await stub.ResumePayment(
        payment_pb2.ResumePaymentRequest(tg_use_id=888001), metadata=app.metadata
    )
    assert not resumed.has_pending_payment


async def test_a_client_deadline_cancels_the_telegram_call_behind_it(
    stub, service, app: TestApp, fake_telegram
):
    fake_telegram.delay("createInvoiceLink", 0.5, times=1)
    request = pay_request()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Pay(request, metadata=app.metadata, timeout=0.2)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    # The lease goes back with the cancellation. Had the server carried on instead, the lease
    # would end only with the link stored (one statement, once Telegram answered at 0.5 s).
    async def lease_released() -> dict[str, Any] | None:
        order = await _only_order(service, app)
        return order if order["invoice_lease_until"] is None else None

    order = await eventually(lease_released, timeout=5, what="the invoice lease released")
    assert (order["state"], order["invoice_link"]) == ("pending", None)
    # A retry creates the invoice at once.
    retried = await stub.Pay(request, metadata=app.metadata, timeout=5)
    assert retried.tg_payment_id == order["tg_payment_id"]
    assert retried.tg_payment_url


async def test_idempotency_keys_are_kept_for_their_ttl_then_pruned(stub, service, app: TestApp):
    old, recent = pay_request(), pay_request()
    await stub.Pay(old, metadata=app.metadata)
    await stub.Pay(recent, metadata=app.metadata)
    await service.pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' "
        "WHERE request_id = $1",
        old.request_id,
    )
    await OrderRepository(service.pool).prune_idempotency_keys(86_400)
    kept = await service.pool.fetch(
        "SELECT request_id FROM idempotency_keys WHERE application_id = $1::uuid", app.id
    )
    assert [row["request_id"] for row in kept] == [recent.request_id]
