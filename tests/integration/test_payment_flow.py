"""Payments complete, through the webhook: pre-checkout decisions, successful and refunded
payments, duplicates, anomalies — with Telegram played by the fake Bot API over real HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.app import PortexApp
from portex_pay.domain.pay import sign_invoice_payload
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import PAYLOAD_SECRET, TestApp, stored_secret
from tests.integration.helpers import details, eventually, pay_request

Order = payment_pb2.Order
USER = 4242


@pytest.fixture
async def shop(make_app) -> TestApp:
    created: TestApp = await make_app(updates="webhook")
    return created


async def query(stub, app: TestApp, tg_payment_id: int) -> payment_pb2.Order:
    request = payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id)
    order: payment_pb2.Order = await stub.QueryOrder(request, metadata=app.metadata)
    return order


async def events(service: PortexApp, tg_payment_id: int) -> list[dict[str, Any]]:
    rows = await service.pool.fetch(
        "SELECT type, data FROM events WHERE tg_payment_id = $1 ORDER BY id", tg_payment_id
    )
    return [{"type": r["type"], **r["data"]} for r in rows]


async def test_a_user_pays_and_the_order_is_paid_status_1_success(
    stub, service, shop: TestApp, fake_telegram: FakeBotApi
):
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
    assert outcome.approved and outcome.charge_id
    await fake_telegram.drain(shop.bot_token)

    order = await query(stub, shop, paid.tg_payment_id)
    assert (order.state, order.status, order.status_description) == (Order.PAID, 1, "success")
    assert order.telegram_payment_charge_id == outcome.charge_id
    assert order.HasField("paid_time")
    types = [e["type"] for e in await events(service, paid.tg_payment_id)]
    assert types[-2:] == ["checkout.approved", "order.paid"]
    resumed = await stub.ResumePayment(
        payment_pb2.ResumePaymentRequest(tg_use_id=USER), metadata=shop.metadata
    )
    assert resumed.tg_payment_id != paid.tg_payment_id


async def _declined(
    fake: FakeBotApi, app: TestApp, link: str, user: int = USER, **tamper: Any
) -> str:
    outcome = await fake.pay_invoice(link, user, **tamper)
    # The decision is recorded after the answer, before the webhook call returns.
    await fake.drain(app.bot_token)
    assert outcome.answered and not outcome.approved
    assert outcome.charge_id is None
    assert outcome.error_message
    return outcome.error_message


async def _last_decision(service: PortexApp, tg_payment_id: int | None) -> dict[str, Any]:
    row = await service.pool.fetchrow(
        "SELECT type, data FROM events WHERE type LIKE 'checkout.%' "
        "AND tg_payment_id IS NOT DISTINCT FROM $1 ORDER BY id DESC LIMIT 1",
        tg_payment_id,
    )
    assert row is not None
    return {"type": row["type"], **row["data"]}


@pytest.mark.parametrize(
    ("reason", "tamper"),
    [
        ("AMOUNT_MISMATCH", {"total_amount": 4}),
        ("CURRENCY_MISMATCH", {"currency": "USD"}),
        ("PAYER_MISMATCH", {"user": USER + 1}),
    ],
)
async def test_checkout_declines_a_mismatch(stub, service, shop, fake_telegram, reason, tamper):
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    user = tamper.pop("user", USER)
    await _declined(fake_telegram, shop, paid.tg_payment_url, user, **tamper)
    decision = await _last_decision(service, paid.tg_payment_id)
    assert (decision["type"], decision["reason"]) == ("checkout.declined", reason)
    assert (await query(stub, shop, paid.tg_payment_id)).state == Order.PENDING


async def test_checkout_declines_a_forged_payload_before_any_lookup(
    stub, service, shop, fake_telegram
):
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    forged = f"v1.{paid.tg_payment_id}.5.AAAAAAAAAAAAAAAAAAAAAA"
    await _declined(fake_telegram, shop, paid.tg_payment_url, invoice_payload=forged)
    decision = await _last_decision(service, None)
    assert decision["reason"] == "PAYLOAD_INVALID"


async def test_checkout_declines_another_applications_order(
    stub, service, make_app, shop, fake_telegram
):
    other = await make_app(updates="webhook")
    foreign = await stub.Pay(pay_request(tg_use_id=USER), metadata=other.metadata)
    own = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    # A validly signed payload of the other application's order, presented to this bot.
    payload = sign_invoice_payload(PAYLOAD_SECRET.encode(), foreign.tg_payment_id, 5)
    await _declined(fake_telegram, shop, own.tg_payment_url, invoice_payload=payload)
    decision = await _last_decision(service, foreign.tg_payment_id)
    assert decision["reason"] == "ORDER_NOT_FOUND"


async def test_checkout_declines_expired_cancelled_and_already_paid_orders(
    stub, service, shop, fake_telegram
):
    expired = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    await service.pool.execute(
        "UPDATE orders SET expires_at = now() - interval '1 second' WHERE tg_payment_id = $1",
        expired.tg_payment_id,
    )
    await _declined(fake_telegram, shop, expired.tg_payment_url)
    assert (await _last_decision(service, expired.tg_payment_id))["reason"] == "ORDER_EXPIRED"

    cancelled = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    await stub.CancelOrder(
        payment_pb2.CancelOrderRequest(tg_payment_id=cancelled.tg_payment_id),
        metadata=shop.metadata,
    )
    await _declined(fake_telegram, shop, cancelled.tg_payment_url)
    assert (await _last_decision(service, cancelled.tg_payment_id))["reason"] == "ORDER_CANCELLED"

    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    assert (await fake_telegram.pay_invoice(paid.tg_payment_url, USER)).approved
    await fake_telegram.drain(shop.bot_token)
    await _declined(fake_telegram, shop, paid.tg_payment_url)
    assert (await _last_decision(service, paid.tg_payment_id))["reason"] == "ORDER_PAID"


async def test_checkout_is_answered_in_time_while_the_database_is_stalled(
    stub, service, shop, fake_telegram, database_url
):
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    blocker = await asyncpg.connect(database_url)
    try:
        # Any read of orders now waits for this lock: the database is, for us, stalled.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
        elapsed = time.monotonic() - started
        await transaction.rollback()
    finally:
        await blocker.close()
    assert outcome.answered and not outcome.approved
    assert elapsed < 5.0  # decision budget 1 s in tests; Telegram allows 10 s
    assert "temporarily unavailable" in (outcome.error_message or "")
    assert (await query(stub, shop, paid.tg_payment_id)).state == Order.PENDING


async def test_a_redelivered_successful_payment_changes_nothing(stub, service, shop, fake_telegram):
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
    await fake_telegram.drain(shop.bot_token)
    before = await events(service, paid.tg_payment_id)
    updates = await service.pool.fetch(
        "SELECT update_id FROM telegram_updates WHERE kind = 'successful_payment' "
        "ORDER BY received_at DESC LIMIT 1"
    )
    await fake_telegram.redeliver(updates[0]["update_id"], token=shop.bot_token)
    await fake_telegram.drain(shop.bot_token)
    assert await events(service, paid.tg_payment_id) == before
    count = await service.pool.fetchval(
        "SELECT count(*) FROM payments WHERE telegram_payment_charge_id = $1", outcome.charge_id
    )
    assert count == 1


async def test_a_second_charge_of_a_paid_order_is_recorded_and_refunded(
    stub, service, shop, fake_telegram
):
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    # The multi-use link opened twice: both checkouts are approved (the order is still pending
    # when each is decided), so Telegram charges twice.
    first, second = await asyncio.gather(
        fake_telegram.pay_invoice(paid.tg_payment_url, USER),
        fake_telegram.pay_invoice(paid.tg_payment_url, USER),
    )
    assert first.approved and second.approved
    await fake_telegram.drain(shop.bot_token)
    charges = {first.charge_id, second.charge_id}
    order = await query(stub, shop, paid.tg_payment_id)
    second_charge = (charges - {order.telegram_payment_charge_id}).pop()
    first_charge = order.telegram_payment_charge_id

    rows = await service.pool.fetch(
        "SELECT telegram_payment_charge_id, disposition FROM payments WHERE tg_payment_id = $1",
        paid.tg_payment_id,
    )
    assert {(r["telegram_payment_charge_id"], r["disposition"]) for r in rows} == {
        (first_charge, "accepted"),
        (second_charge, "duplicate"),
    }
    await eventually(lambda: _refund_state(service, second_charge), equals="succeeded")
    refunds = fake_telegram.calls_for("refundStarPayment", token=shop.bot_token)
    assert [c.params["telegram_payment_charge_id"] for c in refunds] == [second_charge]
    order = await query(stub, shop, paid.tg_payment_id)
    assert (order.state, order.telegram_payment_charge_id) == (Order.PAID, first_charge)


async def _refund_state(service: PortexApp, charge_id: str) -> str | None:
    state: str | None = await service.pool.fetchval(
        "SELECT state FROM refunds WHERE telegram_payment_charge_id = $1", charge_id
    )
    return state


async def test_a_payment_that_matches_no_order_is_an_announced_anomaly(
    stub, service, shop, fake_telegram
):
    paid = await stub.Pay(pay_request(tg_use_id=USER, amount=5), metadata=shop.metadata)
    charge_id = f"stxANOMALY{time.monotonic_ns()}"
    await fake_telegram.deliver_update(
        shop.bot_token,
        {
            "message": {
                "message_id": 2,
                "date": int(time.time()),
                "chat": {"id": USER, "type": "private"},
                "from": {"id": USER, "is_bot": False, "first_name": "U"},
                "successful_payment": {
                    "currency": "XTR",
                    "total_amount": 1,
                    "invoice_payload": sign_invoice_payload(
                        PAYLOAD_SECRET.encode(), paid.tg_payment_id, 5
                    ),
                    "telegram_payment_charge_id": charge_id,
                    "provider_payment_charge_id": "",
                },
            }
        },
    )
    await fake_telegram.drain(shop.bot_token)
    row = await service.pool.fetchrow(
        "SELECT disposition, anomaly FROM payments WHERE telegram_payment_charge_id = $1",
        charge_id,
    )
    assert (row["disposition"], row["anomaly"]) == ("anomaly", "AMOUNT_MISMATCH")
    anomaly = [
        e for e in await events(service, paid.tg_payment_id) if e["type"] == "payment.anomaly"
    ]
    assert anomaly and anomaly[0]["telegram_payment_charge_id"] == charge_id
    assert (await query(stub, shop, paid.tg_payment_id)).state == Order.PENDING


async def test_a_wrong_webhook_secret_is_refused_and_nothing_is_processed(
    service, shop, fake_telegram
):
    import aiohttp

    update = {"update_id": 1, "pre_checkout_query": {"id": "x"}}
    url = f"http://127.0.0.1:{service.http_port}/telegram/webhook/{shop.id}"
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
            async with session.post(url, json=update, headers=headers) as response:
                assert response.status == 401
        secret = await stored_secret(service.pool, shop.id, "webhook_secret")
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
        async with session.post(url, data=b"{not json", headers=headers) as response:
            assert response.status == 400
        async with session.post(url, data=b"x" * (2 * 1024 * 1024), headers=headers) as response:
            assert response.status == 413
        # Authenticated but unusable: dead-lettered and acknowledged (200), not retried forever.
        async with session.post(url, json={"update_id": "nope"}, headers=headers) as response:
            assert response.status == 200
    bot_id = int(shop.bot_token.split(":")[0])
    seen = await service.pool.fetchval(
        "SELECT count(*) FROM telegram_updates WHERE bot_id = $1", bot_id
    )
    assert seen == 0
    assert fake_telegram.calls_for("answerPreCheckoutQuery", token=shop.bot_token) == []


async def test_refund_payment_refunds_through_telegram_and_marks_the_order_refunded(
    stub, service, shop, fake_telegram
):
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
    await fake_telegram.drain(shop.bot_token)
    request = payment_pb2.RefundPaymentRequest(tg_payment_id=paid.tg_payment_id)
    first = await stub.RefundPayment(request, metadata=shop.metadata)
    assert first.refund.telegram_payment_charge_id == outcome.charge_id
    assert first.refund.reason == "requested"

    async def order_state() -> int:
        return (await query(stub, shop, paid.tg_payment_id)).state

    await eventually(order_state, equals=Order.REFUNDED)
    again = await stub.RefundPayment(request, metadata=shop.metadata)
    assert again.refund.state == payment_pb2.Refund.SUCCEEDED
    assert again.order.status == 5
    calls = fake_telegram.calls_for("refundStarPayment", token=shop.bot_token)
    assert len(calls) == 1
    await fake_telegram.drain(shop.bot_token)  # the refunded_payment update changes nothing more
    assert [e["type"] for e in await events(service, paid.tg_payment_id)].count(
        "order.refunded"
    ) == 1


async def test_refund_of_an_unpaid_order_is_a_failed_precondition(stub, shop):
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RefundPayment(
            payment_pb2.RefundPaymentRequest(tg_payment_id=paid.tg_payment_id),
            metadata=shop.metadata,
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(raised.value)["ErrorInfo"].reason == "ILLEGAL_STATE_TRANSITION"


async def test_client_reports_are_recorded_but_never_pay_or_end_an_order(
    stub, service, shop, fake_telegram
):
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    for status in ("paid", "cancelled", "failed"):
        report = await stub.ReportInvoiceClosed(
            payment_pb2.ReportInvoiceClosedRequest(tg_payment_id=paid.tg_payment_id, status=status),
            metadata=shop.metadata,
        )
        assert (report.order.state, report.order.client_report) == (Order.PENDING, status)
    resumed = await stub.ResumePayment(
        payment_pb2.ResumePaymentRequest(tg_use_id=USER), metadata=shop.metadata
    )
    assert resumed.tg_payment_id == paid.tg_payment_id
    assert (await fake_telegram.pay_invoice(paid.tg_payment_url, USER)).approved
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ReportInvoiceClosed(
            payment_pb2.ReportInvoiceClosedRequest(tg_payment_id=paid.tg_payment_id, status="ok"),
            metadata=shop.metadata,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_withdraws_an_unpaid_order_and_refuses_a_paid_one(
    stub, service, shop, fake_telegram
):
    pending = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    request = payment_pb2.CancelOrderRequest(tg_payment_id=pending.tg_payment_id)
    cancelled = await stub.CancelOrder(request, metadata=shop.metadata)
    assert (cancelled.state, cancelled.status) == (Order.CANCELLED, 2)
    assert (await stub.CancelOrder(request, metadata=shop.metadata)).state == Order.CANCELLED

    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
    await fake_telegram.drain(shop.bot_token)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelOrder(
            payment_pb2.CancelOrderRequest(tg_payment_id=paid.tg_payment_id),
            metadata=shop.metadata,
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_the_sweeper_expires_due_orders_once(stub, service, shop):
    from portex_pay.adapters.postgres.orders import OrderRepository

    created = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    await service.pool.execute(
        "UPDATE orders SET expires_at = now() - interval '1 second' WHERE tg_payment_id = $1",
        created.tg_payment_id,
    )
    repository = OrderRepository(service.pool)

    async def stored_state() -> str:
        state: str = await service.pool.fetchval(
            "SELECT state FROM orders WHERE tg_payment_id = $1", created.tg_payment_id
        )
        return state

    await eventually(stored_state, equals="expired")  # the service's own sweeper
    await repository.expire_due(100)
    types = [e["type"] for e in await events(service, created.tg_payment_id)]
    assert types.count("order.expired") == 1


async def _paid_order(stub, shop: TestApp, fake_telegram: FakeBotApi) -> tuple[int, str]:
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
    assert outcome.approved and outcome.charge_id
    await fake_telegram.drain(shop.bot_token)
    return paid.tg_payment_id, outcome.charge_id


async def test_charge_already_refunded_counts_as_done(stub, shop, fake_telegram):
    tg_payment_id, _ = await _paid_order(stub, shop, fake_telegram)
    fake_telegram.fail_next(
        "refundStarPayment",
        error_code=400,
        description="Bad Request: CHARGE_ALREADY_REFUNDED",
        token=shop.bot_token,
    )
    await stub.RefundPayment(
        payment_pb2.RefundPaymentRequest(tg_payment_id=tg_payment_id), metadata=shop.metadata
    )

    async def state() -> int:
        return (await query(stub, shop, tg_payment_id)).state

    await eventually(state, equals=Order.REFUNDED)
    assert len(fake_telegram.calls_for("refundStarPayment", token=shop.bot_token)) == 1


async def test_a_refund_made_elsewhere_marks_the_order_refunded(stub, service, shop, fake_telegram):
    import aiohttp

    tg_payment_id, charge_id = await _paid_order(stub, shop, fake_telegram)
    # Refunded by someone else with the bot's token: we learn it from refunded_payment.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake_telegram.base_url}/bot{shop.bot_token}/refundStarPayment",
            json={"user_id": USER, "telegram_payment_charge_id": charge_id},
        ) as response,
    ):
        assert (await response.json())["ok"] is True
    await fake_telegram.drain(shop.bot_token)
    order = await query(stub, shop, tg_payment_id)
    assert (order.state, order.status, order.status_description) == (
        Order.REFUNDED,
        5,
        "refunded",
    )
    assert [e["type"] for e in await events(service, tg_payment_id)][-1] == "order.refunded"
