"""Updates that cannot be processed are dead-lettered and never block the bot's later updates;
every update is applied only within the application whose bot received it."""

from __future__ import annotations

from typing import Any

from portex.payment.v1 import payment_pb2
from portex_pay.devtools.fake_bot_api import FakeBotApi
from tests.integration.helpers import pay_request

USER, OTHER_USER = 7101, 7102


async def _state(stub, app, tg_payment_id: int) -> int:
    request = payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id)
    return int((await stub.QueryOrder(request, metadata=app.metadata)).state)


async def test_a_poison_pre_checkout_is_dead_lettered_and_another_users_payment_completes(
    stub, service, make_app, fake_telegram: FakeBotApi
):
    shop = await make_app(updates="webhook")
    bot_id = int(shop.bot_token.split(":")[0])
    poisoned = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    # Payloads and money of the kinds that used to raise or be coerced.
    bad: list[dict[str, Any]] = [
        {"invoice_payload": f"v1.{poisoned.tg_payment_id}.4.é"},
        {"total_amount": "5"},
        {"total_amount": 5.9},
        {"total_amount": 2**64},
    ]
    for tamper in bad:
        outcome = await fake_telegram.pay_invoice(
            poisoned.tg_payment_url, USER, answer_timeout=5.0, **tamper
        )
        assert outcome.answered and not outcome.approved
    await fake_telegram.drain(shop.bot_token)
    assert await _state(stub, shop, poisoned.tg_payment_id) == payment_pb2.Order.PENDING

    fine = await stub.Pay(pay_request(tg_use_id=OTHER_USER), metadata=shop.metadata)
    assert (await fake_telegram.pay_invoice(fine.tg_payment_url, OTHER_USER)).approved
    await fake_telegram.drain(shop.bot_token)
    assert await _state(stub, shop, fine.tg_payment_id) == payment_pb2.Order.PAID

    letters = await service.pool.fetch(
        "SELECT kind, error FROM dead_letters WHERE bot_id = $1 ORDER BY id", bot_id
    )
    assert len(letters) == 3  # the non-ASCII payload is simply declined as not ours
    assert {letter["kind"] for letter in letters} == {"pre_checkout_query"}
    events = await service.pool.fetchval(
        "SELECT count(*) FROM events WHERE application_id = $1::uuid "
        "AND type = 'update.dead_lettered'",
        shop.id,
    )
    assert events == 3


async def test_a_malformed_successful_payment_is_kept_and_announced(
    stub, service, make_app, fake_telegram: FakeBotApi
):
    shop = await make_app(updates="webhook")
    bot_id = int(shop.bot_token.split(":")[0])
    update_id = await fake_telegram.deliver_update(
        shop.bot_token,
        {
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": USER, "type": "private"},
                "from": {"id": USER, "first_name": "a\u0000b"},
                "successful_payment": {
                    "currency": "XTR",
                    "total_amount": "5",
                    "invoice_payload": "x",
                    "telegram_payment_charge_id": "stx-malformed",
                },
            }
        },
    )
    await fake_telegram.drain(shop.bot_token)
    assert update_id is not None
    await fake_telegram.redeliver(update_id, token=shop.bot_token)  # a second delivery
    await fake_telegram.drain(shop.bot_token)
    rows = await service.pool.fetch("SELECT kind, raw FROM dead_letters WHERE bot_id = $1", bot_id)
    assert [row["kind"] for row in rows] == ["successful_payment"]
    types = await service.pool.fetch(
        "SELECT type FROM events WHERE application_id = $1::uuid ORDER BY id", shop.id
    )
    assert [t["type"] for t in types] == ["update.dead_lettered", "payment.anomaly"]
    assert (
        await service.pool.fetchval(
            "SELECT count(*) FROM payments WHERE application_id = $1::uuid", shop.id
        )
        == 0
    )


async def test_a_refunded_payment_on_another_bot_never_touches_this_applications_order(
    stub, service, make_app, fake_telegram: FakeBotApi
):
    a = await make_app(updates="webhook")
    b = await make_app(updates="webhook")
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=a.metadata)
    outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
    await fake_telegram.drain(a.bot_token)
    assert await _state(stub, a, paid.tg_payment_id) == payment_pb2.Order.PAID

    await fake_telegram.deliver_update(
        b.bot_token,
        {
            "message": {
                "message_id": 2,
                "date": 0,
                "chat": {"id": USER, "type": "private"},
                "from": {"id": USER, "first_name": "x"},
                "refunded_payment": {
                    "currency": "XTR",
                    "total_amount": 5,
                    "invoice_payload": "x",
                    "telegram_payment_charge_id": outcome.charge_id,
                },
            }
        },
    )
    await fake_telegram.drain(b.bot_token)
    assert await _state(stub, a, paid.tg_payment_id) == payment_pb2.Order.PAID
    refunded_at = await service.pool.fetchval(
        "SELECT refunded_at FROM payments WHERE telegram_payment_charge_id = $1", outcome.charge_id
    )
    assert refunded_at is None
    anomaly = await service.pool.fetchrow(
        "SELECT data FROM events WHERE application_id = $1::uuid AND type = 'payment.anomaly'",
        b.id,
    )
    assert anomaly is not None and anomaly["data"]["reason"] == "REFUND_OF_UNKNOWN_CHARGE"
